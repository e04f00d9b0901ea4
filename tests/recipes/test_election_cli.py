"""``pnyx elect`` as a user runs it: ``--listen`` reports no leader, then the campaigner,
then no leader again when it resigns on SIGTERM; ``--inspect``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from pnyx.clients.testing import LocalCluster

PNYX = [sys.executable, "-c", "from pnyx.clients.cli import main; main()"]


def test_listen_campaign_inspect_and_resign(shared_cluster: LocalCluster, name: str) -> None:
    env = {**os.environ, "PNYX_ENDPOINTS": ",".join(shared_cluster.endpoints)}
    listener = subprocess.Popen(
        [*PNYX, "elect", name, "--listen", "-w", "json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    campaigner = None
    try:
        assert listener.stdout is not None
        assert json.loads(listener.stdout.readline()) == {"leader": None}
        campaigner = subprocess.Popen(
            [*PNYX, "elect", name, "host-a:8080", "--ttl", "5"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert campaigner.stdout is not None
        assert campaigner.stdout.readline().startswith(f"leader of {name} (term ")
        leader = json.loads(listener.stdout.readline())["leader"]
        assert leader["value"] == "host-a:8080"
        shown = subprocess.run(
            [*PNYX, "elect", name, "--inspect", "-w", "json"],
            env=env,
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
        inspected = json.loads(shown.stdout)
        assert inspected["leader"]["token"] == leader["token"]
        campaigner.send_signal(signal.SIGTERM)
        assert campaigner.wait(30) == 0
        assert json.loads(listener.stdout.readline()) == {"leader": None}
        listener.send_signal(signal.SIGINT)
        assert listener.wait(30) == 0
    finally:
        for process in (listener, campaigner):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
