"""Snapshot encoding in a forked child: the bytes come back through the pipe, a failing
encoder fails the future (and nothing else), the child holds none of the parent's other
file descriptors (such as listening sockets), never runs the garbage collector, dies
with its parent, a failed fork fails the snapshot, and the inline mode gives the same
result."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from pnyx.core.server.snapshotter import start_snapshot

pytestmark = pytest.mark.timeout(60)


def _collector() -> tuple[list[Future[bytes]], threading.Event, object]:
    seen: list[Future[bytes]] = []
    done = threading.Event()

    def on_done(future: Future[bytes]) -> None:
        seen.append(future)
        done.set()

    return seen, done, on_done


@pytest.mark.parametrize("fork", [True, False])
def test_the_encoded_state_comes_back_whole(fork: bool) -> None:
    state = {i: os.urandom(64) for i in range(20_000)}
    expected = b"".join(state[i] for i in range(20_000))
    seen, done, on_done = _collector()
    job = start_snapshot(lambda: b"".join(state[i] for i in range(20_000)), 7, on_done, fork=fork)  # type: ignore[arg-type]
    assert done.wait(30)
    assert job.index == 7 and (job.pid != 0) == fork
    assert seen == [job.future] and job.future.result() == expected


@pytest.mark.parametrize("fork", [True, False])
def test_an_encoding_in_parts_comes_back_joined(fork: bool) -> None:
    parts = [b"head", os.urandom(3 << 20), b"", b"tail"]
    _, done, on_done = _collector()
    job = start_snapshot(lambda: parts, 3, on_done, fork=fork)  # type: ignore[arg-type]
    assert done.wait(30)
    assert job.future.result() == b"".join(parts)


def test_the_child_sees_the_state_as_it_was_at_the_fork() -> None:
    state = [b"before"]
    _, done, on_done = _collector()

    def encode() -> bytes:
        time.sleep(0.2)  # in the child: the parent changes its copy meanwhile
        return state[0]

    job = start_snapshot(encode, 1, on_done)  # type: ignore[arg-type]
    state[0] = b"after"
    assert done.wait(30)
    assert job.future.result() == b"before"


def test_a_failing_encoder_fails_only_the_future() -> None:
    _, done, on_done = _collector()

    def encode() -> bytes:
        raise RuntimeError("boom")

    job = start_snapshot(encode, 1, on_done)  # type: ignore[arg-type]
    assert done.wait(30)
    with pytest.raises(RuntimeError, match="snapshot child"):
        job.future.result()


def test_the_child_does_not_keep_the_parents_listening_sockets() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    inode = os.fstat(listener.fileno()).st_ino
    _, done, on_done = _collector()
    child_fds: list[int] = []

    def encode() -> bytes:
        # Runs in the child: report which sockets it still holds.
        held = []
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.stat(f"/proc/self/fd/{name}").st_ino == inode:
                    held.append(int(name))
            except OSError:
                continue
        return json.dumps(held).encode()

    try:
        job = start_snapshot(encode, 1, on_done)  # type: ignore[arg-type]
        assert done.wait(30)
        child_fds = json.loads(job.future.result())
    finally:
        listener.close()
    assert child_fds == []


def test_the_child_never_collects_garbage_and_the_parent_still_does() -> None:
    _, done, on_done = _collector()
    assert gc.isenabled()

    def encode() -> bytes:
        # In the child: a garbage cycle with a finaliser, then enough allocations to
        # trigger collections if the collector ran. Its finaliser must not run here.
        ran: list[bool] = []

        class Cycle:
            def __del__(self) -> None:
                ran.append(True)

        cycle = Cycle()
        cycle.me = cycle  # type: ignore[attr-defined]
        del cycle
        junk = [[i] for i in range(200_000)]
        del junk
        return json.dumps([gc.isenabled(), ran]).encode()

    job = start_snapshot(encode, 1, on_done)  # type: ignore[arg-type]
    assert gc.isenabled()
    assert done.wait(30)
    assert json.loads(job.future.result()) == [False, []]
    assert job.fork_seconds > 0


def test_a_failed_fork_fails_the_snapshot_instead_of_stalling_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    fds_before = len(os.listdir("/proc/self/fd"))
    encoded: list[bool] = []
    _, done, on_done = _collector()
    job = start_snapshot(lambda: encoded.append(True) or b"", 1, on_done)  # type: ignore[arg-type,func-returns-value]
    assert done.wait(5)
    with pytest.raises(RuntimeError, match="fork failed"):
        job.future.result()
    assert encoded == [] and job.pid == 0
    assert gc.isenabled()
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_the_child_dies_with_the_node(tmp_path: Path) -> None:
    """A node killed while its child encodes must not leave the child running."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, sys, time\n"
        "from pnyx.core.server.snapshotter import start_snapshot\n"
        "def encode():\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "    return b''\n"
        "start_snapshot(encode, 1, lambda future: None)\n"
        "time.sleep(60)\n"
    )
    node = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.05)
        child = int(pid_file.read_text())
    finally:
        node.kill()
        node.wait()
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, "the child outlived the node"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
