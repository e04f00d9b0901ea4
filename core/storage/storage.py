"""``Storage``: the WAL and the snapshots of one node, in one data directory.

What it promises the Raft node:

- ``save(hard_state, entries, snapshot)`` persists in the ``Ready`` order: a received
  snapshot's file is durable (and its WAL marker written) before the entries after it,
  and the hard state comes last. Records only reach the OS; ``sync()`` makes them
  durable. Nothing is acknowledged by this class: the caller sends messages after sync.
  A crash keeps a prefix of what was saved since the last sync: before a snapshot file
  is written, what was saved before it is synced.
- ``save_snapshot(snapshot)`` records an application snapshot at its applied index:
  durable snapshot file first, then the WAL marker (synced), then the oldest snapshot
  files beyond ``keep_snapshots`` are deleted and the WAL segments wholly before the
  oldest snapshot kept are released. The WAL therefore always reaches back to every
  snapshot kept, so a damaged newest snapshot falls back to the previous one plus WAL.
- ``Storage.open`` recovers: it repairs a torn WAL tail, picks the newest valid snapshot
  the WAL is consistent with, and ``recover()`` returns that snapshot, the log entries
  after it and the last hard state. Damage it cannot explain raises ``CorruptionError``.

After any I/O error the storage refuses all further work (``StorageError``); the node
must restart and recover from what is durable. It must never retry a failed fsync.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs
import structlog

from pnyx.core.errors import CorruptionError, StorageError
from pnyx.core.raft.types import Entry, HardState, PersistedState, Snapshot
from pnyx.core.storage.fs import FileSystem
from pnyx.core.storage.snapshot import SnapshotFile, SnapshotStore
from pnyx.core.storage.wal import (
    DEFAULT_PREALLOCATE,
    DEFAULT_SEGMENT_SIZE,
    LogReplay,
    SnapshotMarker,
    Wal,
)

__all__ = ["DEFAULT_KEEP_SNAPSHOTS", "Storage"]

DEFAULT_KEEP_SNAPSHOTS = 2

log = structlog.get_logger(__name__)


@attrs.define
class Storage:
    """Durable state of one node. Not thread-safe: owned by one thread (``WalWriter``'s,
    or the simulator's)."""

    _fs: FileSystem
    _directory: str
    _wal: Wal
    _snapshots: SnapshotStore
    _keep_snapshots: int
    _recovered: PersistedState
    _retention_due: bool = False
    _failed: StorageError | None = None

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        path: str,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        preallocate: int = DEFAULT_PREALLOCATE,
    ) -> Storage:
        """Open (creating if needed) the data directory ``path`` and recover from it.
        ``preallocate``: bytes of WAL zero-filled ahead of the records at a time."""
        if keep_snapshots < 1:
            raise ValueError("keep_snapshots must be at least 1")
        if not fs.exists(path):
            try:
                fs.mkdir(path)
                # The new directory's own name must be durable too.
                fs.fsync_dir(os.path.dirname(os.path.normpath(path)) or ".")
            except OSError as error:
                raise StorageError(f"could not create {path} ({error})") from error
        snapshots = SnapshotStore.open(fs, path)
        wal, replay = Wal.open(fs, path, segment_size=segment_size, preallocate=preallocate)
        snapshot = _choose_snapshot(snapshots, replay, path)
        recovered = _persisted_state(replay, snapshot)
        if snapshot is not None:
            wal.note_snapshot(snapshot.metadata.index)
            marker = SnapshotMarker(snapshot.metadata.index, snapshot.metadata.term)
            if replay.marker is None or replay.marker.index < marker.index:
                # A crash took the marker but the snapshot file is durable: record it
                # again, or entries appended after it would replay as a gap.
                wal.append_snapshot_marker(marker)
                wal.sync()
        log.info(
            "storage.recovered",
            path=path,
            snapshot_index=snapshot.metadata.index if snapshot is not None else 0,
            entries=len(recovered.entries),
            segments=len(wal.segments),
            term=recovered.hard_state.term,
            commit=recovered.hard_state.commit,
        )
        return cls(fs, path, wal, snapshots, keep_snapshots, recovered)

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def wal(self) -> Wal:
        return self._wal

    @property
    def snapshot_files(self) -> list[SnapshotFile]:
        """The snapshot files present, newest first."""
        return self._snapshots.files()

    def recover(self) -> PersistedState:
        """What was durable when the storage was opened."""
        return self._recovered

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one ``Ready``'s snapshot, entries and hard state, in that order.

        A snapshot's file is made durable here (it must be before the marker that
        points at it); everything else reaches the OS only: call ``sync()``.
        """
        self._check()
        try:
            if snapshot is not None:
                # What was saved before must not lose to the snapshot in a crash: a
                # crash keeps a prefix of what was saved, whatever the disk reorders.
                self._wal.sync()
                self._snapshots.save(snapshot)
                self._wal.append_snapshot_marker(
                    SnapshotMarker(snapshot.metadata.index, snapshot.metadata.term)
                )
                self._retention_due = True
            if entries:
                self._wal.append_entries(entries)
            if hard_state is not None:
                self._wal.append_hard_state(hard_state)
            self._wal.flush()
        except StorageError as error:
            self._fail(error)

    def sync(self) -> None:
        """Make everything saved durable (one fdatasync, more when a segment rotates),
        then release what a newly durable snapshot marker covers."""
        self._check()
        try:
            self._wal.sync()
            if self._retention_due:
                self._retention_due = False
                self._apply_retention()
        except StorageError as error:
            self._fail(error)

    def wants_space(self) -> bool:
        """Whether the WAL's preallocated space ran low (``prepare_space`` is due)."""
        return self._failed is None and self._wal.wants_space()

    def prepare_space(self) -> None:
        """Zero-fill the WAL ahead of its records (a chunk write and an fsync): between
        commits, never on a write's path."""
        self._check()
        try:
            self._wal.prepare_space()
        except StorageError as error:
            self._fail(error)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot the application took at its applied index (at most the last
        index saved). Durable when this returns, and everything saved before it too.
        The same as ``sync``, ``write_snapshot_file`` and ``record_snapshot`` in turn."""
        self._check_snapshot_index(snapshot)
        self.sync()  # a crash keeps a prefix of what was saved
        self.write_snapshot_file(snapshot)
        self.record_snapshot(snapshot)

    def write_snapshot_file(self, snapshot: Snapshot) -> None:
        """The slow half of ``save_snapshot``: write the snapshot's file durably. It
        touches only the snapshot files, so it may run on a thread of its own while
        another saves and syncs the WAL; call it after a ``sync`` of what was saved
        before the snapshot, then ``record_snapshot`` from the WAL's thread."""
        self._check()
        try:
            self._snapshots.save(snapshot)
        except StorageError as error:
            self._fail(error)

    def record_snapshot(self, snapshot: Snapshot) -> None:
        """The second half: mark the snapshot (whose file ``write_snapshot_file`` wrote)
        in the WAL, make that durable, release what it covers."""
        self._check_snapshot_index(snapshot)
        try:
            self._wal.sync()
            self._wal.append_snapshot_marker(
                SnapshotMarker(snapshot.metadata.index, snapshot.metadata.term)
            )
            self._wal.sync()
            self._retention_due = False
            self._apply_retention()
        except StorageError as error:
            self._fail(error)

    def _check_snapshot_index(self, snapshot: Snapshot) -> None:
        self._check()
        if snapshot.metadata.index > self._wal.last_index:
            raise ValueError(
                f"snapshot at {snapshot.metadata.index} is beyond the last saved index "
                f"{self._wal.last_index}"
            )

    def close(self) -> None:
        self._wal.close()

    def _apply_retention(self) -> None:
        kept = self._snapshots.prune(self._keep_snapshots)
        if kept:
            # Keep the WAL back to the oldest snapshot kept, so it can be a fallback.
            self._wal.release_before(kept[-1].index)

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _fail(self, error: StorageError) -> None:
        if self._failed is None:
            self._failed = StorageError(
                f"{error.message}; storage refuses further work, the node must restart"
            )
            log.error("storage.failed", path=self._directory, error=error.message)
        raise self._failed from error


def _usable(file: SnapshotFile, replay: LogReplay) -> bool:
    """Whether the log replayed from the WAL continues from this snapshot: no gap after
    it, no conflicting term at its index, nothing a WAL marker promised left behind."""
    if replay.first_index is not None and file.index < replay.first_index - 1:
        return False
    term = replay.term_at(file.index)
    if term is not None and term != file.term:
        return False
    marker_index = replay.marker.index if replay.marker is not None else 0
    return marker_index <= max(file.index, replay.last_entry_index)


def _choose_snapshot(snapshots: SnapshotStore, replay: LogReplay, path: str) -> Snapshot | None:
    skipped = []
    for file in snapshots.files():
        if not _usable(file, replay):
            skipped.append(file)
            continue
        try:
            snapshot = snapshots.load(file)
        except CorruptionError as error:
            log.warning("storage.snapshot_corrupt", path=path, error=error.message)
            snapshots.set_aside(file, "broken")
            continue
        _set_aside_stale(snapshots, skipped, path)
        return snapshot
    # No snapshot: the log must start at index 1 and cover every marker.
    if replay.first_index is not None and replay.first_index > 1:
        raise CorruptionError(
            f"{path}: the WAL starts at index {replay.first_index} and no valid snapshot "
            "covers the entries before it; refusing to start"
        )
    if replay.marker is not None and replay.marker.index > replay.last_entry_index:
        raise CorruptionError(
            f"{path}: the WAL records a snapshot at index {replay.marker.index} but no "
            "valid snapshot file holds it; refusing to start"
        )
    _set_aside_stale(snapshots, skipped, path)
    return None


def _set_aside_stale(snapshots: SnapshotStore, skipped: list[SnapshotFile], path: str) -> None:
    """Snapshots newer than the one recovered that the WAL contradicts (another term at
    their index) come from a save whose marker never became durable, so they were never
    acknowledged; set them aside so that they never count among the snapshots kept."""
    for file in skipped:
        log.warning("storage.snapshot_stale", path=path, snapshot=file.name)
        snapshots.set_aside(file, "stale")


def _persisted_state(replay: LogReplay, snapshot: Snapshot | None) -> PersistedState:
    hard_state = replay.hard_state or HardState()
    if snapshot is None:
        return PersistedState(hard_state=hard_state, entries=tuple(replay.entries))
    index = snapshot.metadata.index
    entries: tuple[Entry, ...] = ()
    if replay.first_index is not None:
        entries = tuple(replay.entries[max(0, index + 1 - replay.first_index) :])
    if hard_state.commit < index:
        # A snapshot holds only committed state; the commit in the hard state may lag
        # because commit-only changes need no fsync.
        hard_state = attrs.evolve(hard_state, commit=index)
    return PersistedState(hard_state=hard_state, snapshot=snapshot, entries=entries)
