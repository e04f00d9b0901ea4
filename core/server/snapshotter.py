"""Encoding a snapshot of the state machine without stopping the node's loop.

Serialising the whole state machine takes time proportional to its size (seconds for
tens of megabytes), and the loop must keep heartbeating meanwhile or it loses its
leadership. A thread would not help: encoding is Python work that holds the GIL. So the
loop ``fork()``s: the child gets a copy-on-write image of the state exactly as applied
at that instant, encodes it, streams the bytes back through a pipe and exits; a reader
thread in the parent collects them (pipe reads release the GIL) and completes a future;
the loop picks the result up on its next wake-up and hands it to Raft and the WAL writer.

The child runs at the lowest CPU priority, so that on a shared machine the nodes' loops
(and their heartbeats) go first. It touches nothing but the state and the pipe: it
disables the garbage collector
(so no finaliser of a ZeroMQ socket can run in it), closes every other inherited file
descriptor (so it does not keep the node's listening ports open after the node died),
and leaves with ``os._exit``. Where ``fork`` does not exist, or when disabled, the
snapshot is encoded inline (the old stall, but correct).

This module must never let the child return into the caller's code, and never block the
caller on the child.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import attrs

__all__ = ["SnapshotJob", "start_snapshot"]

_CHUNK = 1 << 20
_MAX_FD_SWEEP = 1 << 16


@attrs.define
class SnapshotJob:
    """One snapshot being encoded: of the state at applied ``index``."""

    index: int
    future: Future[bytes]
    pid: int = 0
    """The encoding child (0 when encoded inline)."""
    started: float = attrs.Factory(time.perf_counter)

    def cancel(self) -> None:
        """Kill the child (the node is stopping); the future then fails."""
        if self.pid and not self.future.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def start_snapshot(
    encode: Callable[[], bytes],
    index: int,
    on_done: Callable[[Future[bytes]], object],
    *,
    fork: bool = True,
) -> SnapshotJob:
    """Start encoding ``encode()`` (the state at applied ``index``). ``on_done`` is called
    with the future when the bytes are ready (from the reader thread, or at once when
    encoded inline)."""
    future: Future[bytes] = Future()
    started = time.perf_counter()
    if not fork or not hasattr(os, "fork"):
        try:
            future.set_result(encode())
        except Exception as error:
            future.set_exception(error)
        future.add_done_callback(on_done)
        return SnapshotJob(index, future, started=started)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        _child(encode, read_end, write_end)
    os.close(write_end)
    future.add_done_callback(on_done)
    threading.Thread(
        target=_collect,
        args=(read_end, pid, future),
        name="pnyx-snapshot-reader",
        daemon=True,
    ).start()
    return SnapshotJob(index, future, pid, started)


def _child(encode: Callable[[], bytes], read_end: int, write_end: int) -> None:  # pragma: no cover
    code = 1
    try:
        gc.disable()
        # Background work: on a busy machine the node loops (heartbeats) go first.
        with contextlib.suppress(OSError):
            os.nice(19)
        os.close(read_end)
        limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], _MAX_FD_SWEEP)
        os.closerange(3, write_end)
        os.closerange(write_end + 1, max(limit, write_end + 1))
        view = memoryview(encode())
        while view:
            written = os.write(write_end, view)
            view = view[written:]
        code = 0
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _collect(read_end: int, pid: int, future: Future[bytes]) -> None:
    chunks: list[bytes] = []
    try:
        while True:
            chunk = os.read(read_end, _CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as error:
        chunks = []
        failure: BaseException | None = error
    else:
        failure = None
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if failure is None and code == 0:
        future.set_result(b"".join(chunks))
    else:
        future.set_exception(
            RuntimeError(f"snapshot child {pid} failed (exit {code}, {failure!r})")
        )
