"""``pnyx lock`` as a user runs it: CMD under the lock with its key and fencing token in
the environment, CMD's exit code, CMD terminated when the lock is lost, an interrupted
waiter removing its key, ``--inspect``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from pnyx.clients import Client
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Lock, Session

PNYX = [sys.executable, "-c", "from pnyx.clients.cli import main; main()"]


def _env(cluster: LocalCluster) -> dict[str, str]:
    return {**os.environ, "PNYX_ENDPOINTS": ",".join(cluster.endpoints)}


def test_runs_cmd_under_the_lock_with_key_and_token(
    shared_cluster: LocalCluster, kv: Client, name: str
) -> None:
    script = (
        "import json, os, sys; "
        "print(json.dumps({k: os.environ[k] for k in ('PNYX_LOCK_KEY', 'PNYX_FENCING_TOKEN')}));"
        "sys.exit(7)"
    )
    done = subprocess.run(
        [*PNYX, "lock", name, "--ttl", "5", "--", sys.executable, "-c", script],
        env=_env(shared_cluster),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode == 7, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["PNYX_LOCK_KEY"].startswith(f"{name}/")
    token = int(seen["PNYX_FENCING_TOKEN"])
    assert token > 0
    # Released afterwards; the next holder gets a higher token.
    assert not kv.get(f"{name}/", prefix=True).kvs
    with Session(kv, ttl=5) as session, Lock(session, name) as lock:
        assert lock.token > token


def test_cmd_is_terminated_when_the_lock_is_lost(
    shared_cluster: LocalCluster, kv: Client, name: str, until: Callable[..., Any]
) -> None:
    script = "import time; print('started', flush=True); time.sleep(120)"
    process = subprocess.Popen(
        [*PNYX, "lock", name, "--grace", "5", "--", sys.executable, "-c", script],
        env=_env(shared_cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        (held,) = kv.get(f"{name}/", prefix=True).kvs
        kv.delete(held.key)  # the lock is lost (as if the session had expired)
        assert process.wait(30) == 128 + signal.SIGTERM
        assert process.stderr is not None and "lock lost" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_interrupted_waiter_removes_its_key_and_inspect(
    shared_cluster: LocalCluster, kv: Client, name: str, until: Callable[..., Any]
) -> None:
    with Session(kv, ttl=5) as session, Lock(session, name, value="test-holder") as lock:
        waiting = subprocess.Popen(
            [*PNYX, "lock", name, "--", "true"],
            env=_env(shared_cluster),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            until(lambda: len(lock.waiters()) == 1, what="the CLI to queue")
            shown = subprocess.run(
                [*PNYX, "lock", name, "--inspect", "-w", "json"],
                env=_env(shared_cluster),
                capture_output=True,
                check=False,
                text=True,
                timeout=60,
            )
            inspected = json.loads(shown.stdout)
            assert inspected["holder"]["token"] == lock.token
            assert inspected["holder"]["value"] == "test-holder"
            assert len(inspected["waiters"]) == 1
            waiting.send_signal(signal.SIGINT)
            assert waiting.wait(30) == 130
            assert lock.waiters() == []
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
