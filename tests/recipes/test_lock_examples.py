"""The examples run as a user runs them (small sizes): examples/worker_fleet.py and
examples/leader_service.py against a real cluster, each checking its own invariants
and exiting 0 only if they held."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pnyx.clients.testing import LocalCluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PNYX_ENDPOINTS": ",".join(cluster.endpoints)}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_worker_fleet(shared_cluster: LocalCluster) -> None:
    done = _run(shared_cluster, str(EXAMPLES / "worker_fleet.py"), "--workers", "3", "--jobs", "9")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every job processed exactly once" in done.stdout


def test_leader_service_fails_over(shared_cluster: LocalCluster) -> None:
    done = _run(
        shared_cluster,
        str(EXAMPLES / "leader_service.py"),
        "--replicas", "2", "--kills", "1", "--kill-after", "1", "--ttl", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: one active replica per term, failover on kill" in done.stdout
