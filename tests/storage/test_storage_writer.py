"""WalWriter: group commit really batches, futures complete in order, fsync failure is
fatal, and the synchronous mode for the simulator."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from pnyx.core.errors import StorageError
from pnyx.core.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from pnyx.core.storage import MemoryFileSystem, Storage, WalWriter

DATA = "/data"
WAIT = 10.0  # a generous deadline for thread hand-offs; never a sleep


def batch(first: int, count: int = 3) -> list[Entry]:
    return [Entry(1, index, data=b"v%d" % index) for index in range(first, first + count)]


class FsyncGate:
    """Holds the writer thread inside its first WAL fsync until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_when_released = False
        self.fs: MemoryFileSystem | None = None
        self.wal_fsyncs = 0

    def __call__(self, path: str) -> None:
        if not path.endswith(".log"):
            return
        self.wal_fsyncs += 1
        if self.wal_fsyncs == 1:
            self.entered.set()
            assert self.release.wait(WAIT), "the test never released the fsync"
            if self.fail_when_released:
                assert self.fs is not None
                self.fs.fail_fsync()


def test_group_commit_takes_everything_queued_during_an_fsync_in_one_fsync() -> None:
    fs = MemoryFileSystem()
    gate = FsyncGate()
    fs.on_fsync = gate
    completed: list[int] = []
    # No preallocation: its zero-filling fsync between commits is not what this counts.
    with WalWriter(Storage.open(fs, DATA, preallocate=0)) as writer:
        first = writer.submit(HardState(1, 1, 0), batch(1))
        first.add_done_callback(lambda _: completed.append(0))
        assert gate.entered.wait(WAIT)
        futures = []
        for number in range(1, 51):
            future = writer.submit(HardState(1, 1, number), batch(1 + 3 * number))
            future.add_done_callback(lambda _, number=number: completed.append(number))
            futures.append(future)
        assert not first.done()  # not durable yet: its fsync has not returned
        gate.release.set()
        for future in futures:
            future.result(WAIT)
        assert gate.wal_fsyncs == 2  # 51 batches, 2 fsyncs
        assert writer.stats.syncs == 2
        assert writer.stats.batches == 51
        assert writer.stats.entries == 153
    assert completed == list(range(51))
    state = Storage.open(fs, DATA).recover()
    assert len(state.entries) == 153
    assert state.hard_state == HardState(1, 1, 50)


def test_fsync_failure_fails_the_batch_and_everything_queued_and_refuses_more() -> None:
    fs = MemoryFileSystem()
    gate = FsyncGate()
    gate.fs = fs
    gate.fail_when_released = True
    fs.on_fsync = gate
    writer = WalWriter(Storage.open(fs, DATA)).start()
    first = writer.submit(HardState(1, 1, 0), batch(1))
    assert gate.entered.wait(WAIT)
    queued = [writer.submit(None, batch(4 + 3 * n)) for n in range(5)]
    gate.release.set()
    for future in [first, *queued]:
        with pytest.raises(StorageError, match="fsync"):
            future.result(WAIT)
    assert isinstance(writer.failed, StorageError)
    # Refused at once, never retried, even though the disk would now "work".
    late = writer.submit(None, batch(100))
    assert late.done()
    assert isinstance(late.exception(), StorageError)
    assert gate.wal_fsyncs == 1
    writer.close(WAIT)


def test_snapshot_submissions_are_ordered_with_batches() -> None:
    fs = MemoryFileSystem()
    snapshot = Snapshot(SnapshotMetadata(6, 1, ConfState(frozenset({1}))), b"six")
    with WalWriter(Storage.open(fs, DATA)) as writer:
        futures: list[Future[None]] = [
            writer.submit(HardState(1, 1, 6), batch(1, 6)),
            writer.submit_snapshot(snapshot),
            writer.submit(None, batch(7, 2)),
        ]
        for future in futures:
            future.result(WAIT)
    state = Storage.open(fs, DATA).recover()
    assert state.snapshot == snapshot
    assert [entry.index for entry in state.entries] == [7, 8]


def test_synchronous_mode_saves_and_syncs_inline() -> None:
    fs = MemoryFileSystem()
    writer = WalWriter(Storage.open(fs, DATA, preallocate=0), threaded=False)
    syncs_before = fs.fsync_count
    future = writer.submit(HardState(2, 1, 0), batch(1))
    assert future.done() and future.result() is None
    created_segment = 1  # the first save creates a segment: one directory fsync
    assert fs.fsync_count == syncs_before + created_segment + 1
    fs.fail_fsync()
    failed = writer.submit(None, batch(4))
    assert isinstance(failed.exception(), StorageError)
    assert isinstance(writer.submit(None, batch(4)).exception(), StorageError)
    writer.close()


def test_submit_after_close_fails() -> None:
    writer = WalWriter(Storage.open(MemoryFileSystem(), DATA)).start()
    writer.close(WAIT)
    assert isinstance(writer.submit(None, batch(1)).exception(), StorageError)


def test_a_slow_snapshot_file_does_not_hold_up_the_batches() -> None:
    """The snapshot file is written beside the WAL: batches submitted after it are made
    durable while its fsync hangs; the snapshot is recorded (and its future completes)
    only once its file is durable, and recovery finds everything."""
    fs = MemoryFileSystem()
    entered, release = threading.Event(), threading.Event()

    def hold_snapshot_file(path: str) -> None:
        if path.endswith(".snap.tmp"):
            entered.set()
            assert release.wait(WAIT), "the test never released the snapshot fsync"

    fs.on_fsync = hold_snapshot_file
    snapshot = Snapshot(SnapshotMetadata(6, 1, ConfState(frozenset({1}))), b"six")
    with WalWriter(Storage.open(fs, DATA)) as writer:
        writer.submit(HardState(1, 1, 6), batch(1, 6)).result(WAIT)
        saved = writer.submit_snapshot(snapshot)
        assert entered.wait(WAIT)
        later = [writer.submit(HardState(1, 1, 6 + n), batch(7 + n, 1)) for n in range(5)]
        for future in later:
            future.result(WAIT)  # durable while the snapshot's fsync still hangs
        assert not saved.done()
        release.set()
        saved.result(WAIT)
    state = Storage.open(fs, DATA).recover()
    assert state.snapshot == snapshot
    assert [entry.index for entry in state.entries] == [7, 8, 9, 10, 11]


def test_a_failed_snapshot_file_fails_its_future_and_stops_the_writer() -> None:
    fs = MemoryFileSystem()
    snapshot = Snapshot(SnapshotMetadata(3, 1, ConfState(frozenset({1}))), b"three")

    def fail_snapshot_file(path: str) -> None:
        if path.endswith(".snap.tmp"):
            fs.fail_fsync()

    fs.on_fsync = fail_snapshot_file
    writer = WalWriter(Storage.open(fs, DATA)).start()
    writer.submit(HardState(1, 1, 3), batch(1, 3)).result(WAIT)
    with pytest.raises(StorageError):
        writer.submit_snapshot(snapshot).result(WAIT)
    assert isinstance(writer.failed, StorageError)
    assert isinstance(writer.submit(None, batch(4)).exception(), StorageError)
    writer.close(WAIT)


def test_save_now_persists_on_the_callers_thread_only_when_the_writer_is_idle() -> None:
    fs = MemoryFileSystem()
    gate = FsyncGate()
    fs.on_fsync = gate
    with WalWriter(Storage.open(fs, DATA)) as writer:
        first = writer.submit(HardState(1, 1, 0), batch(1))
        assert gate.entered.wait(WAIT)  # the thread is inside its fsync
        assert writer.save_now(None, batch(4)) is False  # busy: submit instead
        queued = writer.submit(None, batch(4))
        gate.release.set()
        first.result(WAIT)
        queued.result(WAIT)
        syncs = fs.fsync_count
        assert writer.save_now(HardState(1, 1, 6), batch(7)) is True  # idle: done here
        assert fs.fsync_count == syncs + 1
    state = Storage.open(fs, DATA).recover()
    assert [entry.index for entry in state.entries] == list(range(1, 10))
    assert state.hard_state == HardState(1, 1, 6)


def test_save_now_after_a_failed_fsync_raises() -> None:
    fs = MemoryFileSystem()
    writer = WalWriter(Storage.open(fs, DATA)).start()
    fs.fail_fsync()
    with pytest.raises(StorageError):
        writer.save_now(HardState(1, 1, 0), batch(1))
    with pytest.raises(StorageError):
        writer.save_now(None, batch(4))
    assert isinstance(writer.submit(None, batch(4)).exception(), StorageError)
    writer.close(WAIT)


def test_zero_filling_runs_on_the_writer_thread_after_an_inline_save() -> None:
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA, preallocate=4096)
    with WalWriter(storage) as writer:
        assert writer.save_now(HardState(1, 1, 0), batch(1))
        # The caller's save did not pay for it: the writer thread zero-fills meanwhile.
        deadline = time.monotonic() + WAIT
        while storage.wal.space_ahead < 2048:
            assert time.monotonic() < deadline, "the writer never zero-filled ahead"
            time.sleep(0.001)
        syncs = fs.fsync_count
        # Records then land in the zero-filled space: one fsync per save, no growth.
        length = len(fs.read_file(f"{DATA}/{storage.wal.segments[-1].name}"))
        assert writer.save_now(None, batch(4))
        assert fs.fsync_count == syncs + 1
        assert len(fs.read_file(f"{DATA}/{storage.wal.segments[-1].name}")) == length
    assert Storage.open(fs, DATA).recover().entries == tuple(batch(1) + batch(4))


def test_synchronous_mode_zero_fills_after_the_commit() -> None:
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA, preallocate=4096)
    writer = WalWriter(storage, threaded=False)
    assert writer.submit(HardState(2, 1, 0), batch(1)).result() is None
    assert storage.wal.space_ahead >= 2048
    writer.close()
    assert Storage.open(fs, DATA).recover().entries == tuple(batch(1))
