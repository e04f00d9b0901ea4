"""Encoding a snapshot of the state machine without stopping the node's loop.

Serialising the whole state machine takes time proportional to its size (seconds for
tens of megabytes), and the loop must keep heartbeating meanwhile or it loses its
leadership. A thread would not help: encoding is Python work that holds the GIL. So the
loop ``fork()``s: the child gets a copy-on-write image of the state exactly as applied
at that instant, encodes it, streams the bytes back through a pipe and exits; a reader
thread in the parent collects them (pipe reads release the GIL) and completes a future;
the loop picks the result up on its next wake-up and hands it to Raft and the WAL writer.

The child runs at the lowest CPU priority, so that on a shared machine the nodes' loops
(and their heartbeats) go first. It touches nothing but the state and the pipe:

- the garbage collector is off from before the fork until the child exits (it is
  disabled in the parent around ``fork``), so no finaliser can run in the child: a
  ZeroMQ socket's would talk to the parent's I/O threads through inherited descriptors;
- it closes every other inherited file descriptor (so it does not keep the node's
  listening ports open after the node died) and never logs;
- it asks the kernel to kill it if the node dies (Linux ``PR_SET_PDEATHSIG``), so that
  an orphaned encoding of a big state does not go on holding memory and CPU;
- it leaves with ``os._exit`` (no atexit handlers, no interpreter teardown).

The loop pays only for ``fork`` itself (copying the page tables: proportional to the
node's memory, measured in ``SnapshotJob.fork_seconds``), then for the pages it writes
while the child still shares them. A failed ``fork`` fails the snapshot (the node tries
again later). Where ``fork`` does not exist, or when disabled, the snapshot is encoded
inline (the old stall, but correct).

This module must never let the child return into the caller's code, and never block the
caller on the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future

import attrs

__all__ = ["SnapshotJob", "start_snapshot"]

_CHUNK = 1 << 20
_MAX_FD_SWEEP = 1 << 16
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> object | None:
    """``prctl`` from the C library, looked up once here so that the child has nothing
    to load (None where there is no such call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


@attrs.define
class SnapshotJob:
    """One snapshot being encoded: of the state at applied ``index``."""

    index: int
    future: Future[bytes]
    pid: int = 0
    """The encoding child (0 when encoded inline)."""
    started: float = attrs.Factory(time.perf_counter)
    fork_seconds: float = 0.0
    """How long ``fork`` blocked the caller (with inline encoding: the encoding)."""

    def cancel(self) -> None:
        """Kill the child (the node is stopping); the future then fails."""
        if self.pid and not self.future.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def start_snapshot(
    encode: Callable[[], bytes | Iterable[bytes]],
    index: int,
    on_done: Callable[[Future[bytes]], object],
    *,
    fork: bool = True,
) -> SnapshotJob:
    """Start encoding ``encode()`` (the state at applied ``index``): its bytes, or parts
    whose concatenation they are (the child writes each to the pipe as soon as it is
    made, so an iterator streams the encoding). ``on_done``
    is called with the future when the bytes are ready (from the reader thread, or at
    once when encoded inline)."""
    future: Future[bytes] = Future()
    started = time.perf_counter()
    if fork and hasattr(os, "fork"):
        job = _fork_child(encode, index, future, started)
        if job is None:
            # Encoding inline instead would stall the loop for as long as the encoding
            # takes (seconds, for a big state): fail this one, the caller tries later.
            future.set_exception(RuntimeError("snapshot: fork failed"))
            job = SnapshotJob(index, future, started=started)
        future.add_done_callback(on_done)
        return job
    try:
        encoded = encode()
        future.set_result(encoded if isinstance(encoded, bytes) else b"".join(encoded))
    except Exception as error:
        future.set_exception(error)
    future.add_done_callback(on_done)
    return SnapshotJob(index, future, started=started, fork_seconds=time.perf_counter() - started)


def _fork_child(
    encode: Callable[[], bytes | Iterable[bytes]],
    index: int,
    future: Future[bytes],
    started: float,
) -> SnapshotJob | None:
    """Fork the encoding child and its reader thread; None if the fork failed (no memory,
    too many processes)."""
    read_end, write_end = os.pipe()
    _widen_pipe(write_end)
    parent = os.getpid()
    collecting = gc.isenabled()
    # No collection between the fork and the child's exit (see the module docstring);
    # the young generations are emptied first so the parent has little to catch up on.
    gc.collect(0)
    gc.disable()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    finally:
        if os.getpid() == parent and collecting:
            gc.enable()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        _child(encode, read_end, write_end, parent)
    forked = time.perf_counter() - started
    os.close(write_end)
    threading.Thread(
        target=_collect,
        args=(read_end, pid, future),
        name="pnyx-snapshot-reader",
        daemon=True,
    ).start()
    return SnapshotJob(index, future, pid, started, forked)


def _widen_pipe(fd: int) -> None:
    """Give the pipe a buffer of ``_CHUNK`` bytes where the system allows (Linux): the
    reader thread then takes the snapshot in about a megabyte per read instead of the
    default 64 KiB. Each read needs the GIL back, and a thread waiting for the GIL
    waits for the node's loop to reach its switch interval: thousands of small reads
    would stall the loop, or the transfer, for seconds."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _CHUNK)


def _child(  # pragma: no cover - runs in the forked child
    encode: Callable[[], bytes | Iterable[bytes]], read_end: int, write_end: int, parent: int
) -> None:
    code = 1
    try:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))  # type: ignore[operator]
            if os.getppid() != parent:
                os._exit(1)  # the node died before the request took effect
        # Background work: on a busy machine the node loops (heartbeats) go first.
        with contextlib.suppress(OSError):
            os.nice(19)
        os.close(read_end)
        limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], _MAX_FD_SWEEP)
        os.closerange(3, write_end)
        os.closerange(write_end + 1, max(limit, write_end + 1))
        encoded = encode()
        for part in (encoded,) if isinstance(encoded, bytes) else encoded:
            view = memoryview(part)
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
