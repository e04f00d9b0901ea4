"""``WalWriter``: group commit, off the event loop.

One thread owns the ``Storage``. The node's loop calls ``submit(hard_state, entries,
snapshot)`` for each ``Ready`` and gets a ``concurrent.futures.Future`` that completes
once that batch is durable. While one fsync runs, later batches queue up; the thread
then takes all of them, writes them in order and makes them durable with one fsync, and
completes their futures in submission order. So the disk sets the pace of fsyncs, not
of proposals.

An application snapshot (``submit_snapshot``) takes seconds to write when the state is
big, so it does not hold up the batches: when the WAL thread reaches it in the queue it
syncs what came before, then hands the snapshot file to a thread of its own and goes on
with the batches; once the file is durable, the WAL thread records it (a marker, then
releases the log it covers) in order with the batches queued by then, and only then
completes its future. A WAL that stopped for seconds would stop a leader replicating
(its loop waits for its own write) and a follower acknowledging: elections.

An I/O error (above all a failed fsync) is fatal: the batch's futures and every queued
one fail with ``StorageError``, and the writer refuses further work; the node must
crash and recover from disk. This module must never retry an fsync.

``threaded=False`` gives the same interface with the work done inline on the caller's
thread (save + sync at each ``submit``), for the deterministic simulator.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import attrs
import structlog

from pnyx.core.errors import StorageError
from pnyx.core.raft.types import Entry, HardState, Snapshot
from pnyx.core.storage.storage import Storage

__all__ = ["WalWriter", "WriterStats"]

log = structlog.get_logger(__name__)

_SLOW_COMMIT_SECONDS = 0.1


@attrs.frozen
class _Save:
    hard_state: HardState | None
    entries: Sequence[Entry]
    snapshot: Snapshot | None
    future: Future[None]


_INLINE: Future[None] = Future()
_INLINE.set_result(None)
"""The future of a ``save_now`` batch: nobody waits on it (the caller does the work), so
it costs no ``Future`` (and ``Condition``) per call; already done, nothing completes it."""


@attrs.frozen
class _SaveSnapshot:
    """Sync what came before, then write the file on the snapshot thread."""

    snapshot: Snapshot
    future: Future[None]


@attrs.frozen
class _RecordSnapshot:
    """The file is durable: mark it in the WAL and release what it covers."""

    snapshot: Snapshot
    future: Future[None]


@attrs.frozen
class _PrepareSpace:
    """Wakes the thread to zero-fill the WAL ahead (it does so after every commit);
    queued by ``save_now``, whose caller must not pay for it. Not a commit."""

    future: Future[None] = _INLINE


_Commit = _Save | _SaveSnapshot | _RecordSnapshot
_Work = _Commit | _PrepareSpace


@attrs.define
class WriterStats:
    """Counters for metrics. Updated by the writer thread only."""

    batches: int = 0
    """Submitted items made durable."""
    syncs: int = 0
    """Group commits (each one fsync of the WAL, or a snapshot save)."""
    entries: int = 0
    last_sync_seconds: float = 0.0


@attrs.define
class WalWriter:
    """Group-committing owner of a ``Storage``. Use as a context manager, or call
    ``start()`` and ``close()``."""

    _storage: Storage
    threaded: bool = True
    stats: WriterStats = attrs.Factory(WriterStats)
    # A C-level queue: a ``submit`` per Ready must cost the loop as little as possible
    # (a ``threading.Condition`` costs ten times more). ``None`` tells the thread to stop.
    _queue: queue.SimpleQueue[_Work | None] = attrs.Factory(queue.SimpleQueue)
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    """Orders submissions against failing and closing."""
    _thread: threading.Thread | None = None
    _closing: bool = False
    _failed: StorageError | None = None
    _queued: int = 0
    """Items submitted and not yet committed (under ``_lock``)."""
    _committing: threading.Lock = attrs.Factory(threading.Lock)
    """Held while the storage is written: by the thread, or by ``save_now``'s caller."""

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def failed(self) -> StorageError | None:
        """The fatal error, once one happened."""
        return self._failed

    def start(self) -> WalWriter:
        if self.threaded and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pnyx-wal-writer", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> WalWriter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> Future[None]:
        """Queue one ``Ready``'s persistence; the future completes once it is durable
        (or fails with ``StorageError``)."""
        return self._enqueue(_Save(hard_state, entries, snapshot, Future()))

    def save_now(self, hard_state: HardState | None, entries: Sequence[Entry]) -> bool:
        """Persist on the caller's thread, if the writer has nothing queued or in progress
        (True once durable); False otherwise, and the caller submits as usual. For a
        small write when nothing else is going on, this saves two thread hand-offs
        (there and back), which cost more than the fsync on a busy virtual machine.
        Raises ``StorageError`` if the storage failed (the caller must stop)."""
        if not self.threaded:
            self.submit(hard_state, entries).result()
            return True
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._closing or self._queued:
                return False
            if not self._committing.acquire(blocking=False):
                return False
        try:
            work = _Save(hard_state, entries, None, _INLINE)
            if not self._commit([work]):
                raise self._failed or StorageError("the WAL writer failed")
        finally:
            self._committing.release()
        if self._storage.wants_space():
            self._enqueue(_PrepareSpace())
        return True

    def submit_snapshot(self, snapshot: Snapshot) -> Future[None]:
        """Save an application snapshot (``Storage.save_snapshot``, in the halves the
        module docstring describes), after the batches submitted before it; the future
        completes once it is recorded. A snapshot beyond the last index submitted is a
        bug in the caller and, like an I/O error, stops the writer."""
        return self._enqueue(_SaveSnapshot(snapshot, Future()))

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued work, stop the thread and close the storage."""
        with self._lock:
            was_closing = self._closing
            self._closing = True
        if not was_closing:
            self._queue.put(None)  # after everything submitted before
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise StorageError("the WAL writer did not stop in time")
            self._thread = None
        self._storage.close()

    # -- internals --

    def _enqueue(self, work: _Work) -> Future[None]:
        if not self.threaded:
            if self._failed is not None:
                work.future.set_exception(self._failed)
            elif self._closing:
                work.future.set_exception(StorageError("the WAL writer is closed"))
            elif isinstance(work, _PrepareSpace) or self._commit([work]):
                self._prepare_space()
            return work.future
        with self._lock:
            failed, closing = self._failed, self._closing
            if failed is None and not closing:
                if self._thread is None:
                    raise RuntimeError("WalWriter.start() was not called")
                self._queued += 1
                self._queue.put(work)
        if failed is not None:
            work.future.set_exception(failed)
        elif closing:
            work.future.set_exception(StorageError("the WAL writer is closed"))
        return work.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            # Everything queued while the previous fsync ran: one group commit.
            group, stop = self._take_queued()
            if first is None:
                stop = True
            else:
                group.insert(0, first)
            if group:
                saves = [work for work in group if not isinstance(work, _PrepareSpace)]
                with self._committing:
                    committed = (not saves or self._commit(saves)) and self._prepare_space()
                with self._lock:
                    self._queued -= len(group)
                if not committed:
                    return
            if stop:
                return

    def _take_queued(self) -> tuple[list[_Work], bool]:
        """What is queued now, and whether the stop mark was among it."""
        taken: list[_Work] = []
        stop = False
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                return taken, stop
            if work is None:
                stop = True
            else:
                taken.append(work)

    def _commit(self, group: list[_Commit]) -> bool:
        """Write and sync ``group``; complete its futures in order. False if fatal."""
        storage = self._storage
        started = time.perf_counter()
        entries = 0
        handed_off: list[_SaveSnapshot] = []
        try:
            pending_sync = False
            for work in group:
                if isinstance(work, _Save):
                    storage.save(work.hard_state, work.entries, work.snapshot)
                    entries += len(work.entries)
                    pending_sync = True
                elif isinstance(work, _SaveSnapshot):
                    storage.sync()  # a crash keeps a prefix of what was saved
                    pending_sync = False
                    if self.threaded:
                        handed_off.append(work)
                    else:
                        storage.write_snapshot_file(work.snapshot)
                        storage.record_snapshot(work.snapshot)
                else:
                    storage.record_snapshot(work.snapshot)  # syncs what came before
                    pending_sync = False
            if pending_sync:
                storage.sync()
        except BaseException as error:
            self._die(group, error)
            if not isinstance(error, Exception):
                raise
            return False
        elapsed = time.perf_counter() - started
        self.stats.syncs += 1
        self.stats.batches += len(group)
        self.stats.entries += entries
        self.stats.last_sync_seconds = elapsed
        if elapsed > _SLOW_COMMIT_SECONDS:
            # The loop waits for this (a leader sends nothing new meanwhile): worth a
            # line when it comes near an election timeout.
            log.warning("wal.slow_commit", seconds=round(elapsed, 3), entries=entries)
        for work in group:
            future = work.future
            if future is not _INLINE and not (isinstance(work, _SaveSnapshot) and self.threaded):
                future.set_result(None)
        for work in handed_off:
            threading.Thread(
                target=self._write_snapshot_file,
                args=(work,),
                name="pnyx-snapshot-writer",
                daemon=True,
            ).start()
        return True

    def _prepare_space(self) -> bool:
        """Between commits, while nothing waits on it (measured: a 1 MiB chunk and its
        fsync take 2-4 ms, once per 1 MiB of records). False if fatal."""
        if not self._storage.wants_space():
            return True
        try:
            self._storage.prepare_space()
        except BaseException as error:
            self._die([], error)
            if not isinstance(error, Exception):
                raise
            return False
        return True

    def _write_snapshot_file(self, work: _SaveSnapshot) -> None:
        """On the snapshot thread: the slow half, then queue the record for the WAL."""
        try:
            self._storage.write_snapshot_file(work.snapshot)
        except BaseException as error:
            self._die([], error)
            if not work.future.done():
                work.future.set_exception(self._failed or StorageError(str(error)))
            if not isinstance(error, Exception):
                raise
            return
        self._enqueue(_RecordSnapshot(work.snapshot, work.future))

    def _die(self, group: Sequence[_Work], error: BaseException) -> None:
        failure = (
            error
            if isinstance(error, StorageError)
            else StorageError(f"WAL writer failed: {error!r}; the node must restart")
        )
        log.error("wal_writer.failed", error=str(failure))
        with self._lock:
            self._failed = failure
        queued, stop = self._take_queued()
        if stop:
            self._queue.put(None)  # still for the thread (this may run on another)
        doomed = [*group, *queued]
        for work in doomed:
            if not work.future.done():
                work.future.set_exception(failure)
