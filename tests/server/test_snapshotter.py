"""Snapshot encoding in a forked child: the bytes come back through the pipe, a failing
encoder fails the future (and nothing else), the child holds none of the parent's other
file descriptors (such as listening sockets), and the inline mode gives the same result."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from concurrent.futures import Future

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
