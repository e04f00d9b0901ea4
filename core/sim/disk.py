"""The simulated disk of one node: what a ``Ready`` hands over is *written* at once but
only *durable* after ``sync()``; a crash keeps what was synced (and possibly a prefix of
what was written after, as a real page cache may have flushed some of it) and loses the
rest.

``Disk`` is the interface the simulation drives; it mirrors ``pnyx.core.storage.Storage``
(save / sync / save_snapshot / recover). Two implementations: ``MemoryDisk``, a plain
model, and ``WalDisk``, the real write-ahead log and snapshot files of
``pnyx.core.storage`` over its crash-simulating ``MemoryFileSystem``. A disk must never
reorder what it was given, nor make durable anything that was not synced, except a prefix
of the unsynced writes on a crash.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

import attrs

from pnyx.core.raft.types import Entry, HardState, PersistedState, Snapshot
from pnyx.core.storage.fs import MemoryFileSystem
from pnyx.core.storage.storage import Storage


class Disk(Protocol):
    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """Write (not yet durable): snapshot first, then entries (replacing the log from
        ``entries[0].index`` on), then hard state."""

    def sync(self) -> None:
        """Make everything written so far durable."""

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """The application's own snapshot at its applied index: durable when this returns;
        the log up to it may be released."""

    def crash(self, rng: random.Random) -> None:
        """The machine lost power: keep what is durable, maybe a prefix of the rest."""

    def recover(self) -> PersistedState:
        """What a restarting node reads back."""


@attrs.define
class LogImage:
    """A node's stable state as a value that can be copied: hard state, snapshot, and the
    entries after the snapshot (``entries[i].index == first_index + i``)."""

    hard_state: HardState = attrs.field(factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.field(factory=list)

    @property
    def snapshot_index(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.metadata.index

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    def entry(self, index: int) -> Entry | None:
        position = index - self.first_index
        if 0 <= position < len(self.entries):
            return self.entries[position]
        return None

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index`` (the snapshot's term at its own index, 0 at
        index 0), or None when the image does not know it."""
        if index == 0:
            return 0
        if self.snapshot is not None and index == self.snapshot.metadata.index:
            return self.snapshot.metadata.term
        found = self.entry(index)
        return None if found is None else found.term

    def write(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        if snapshot is not None:
            self.install(snapshot)
        if entries:
            start = entries[0].index - self.first_index
            if start < 0:
                # Entries at or below the snapshot are already covered by it.
                entries = entries[-start:]
                start = 0
            if start > len(self.entries):
                raise AssertionError(
                    f"log gap: writing index {entries[0].index} after {self.last_index}"
                )
            del self.entries[start:]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def install(self, snapshot: Snapshot) -> None:
        """Keep the entries after the snapshot only if the log agrees with it there."""
        index = snapshot.metadata.index
        if index <= self.snapshot_index:
            return
        if self.term_at(index) == snapshot.metadata.term:
            self.entries = self.entries[index - self.first_index + 1 :]
        else:
            self.entries = []
        self.snapshot = snapshot

    def copy(self) -> LogImage:
        return LogImage(self.hard_state, self.snapshot, list(self.entries))

    def persisted(self) -> PersistedState:
        return PersistedState(self.hard_state, self.snapshot, tuple(self.entries))


_Write = tuple[HardState | None, tuple[Entry, ...], Snapshot | None]


@attrs.define
class MemoryDisk:
    """``Disk`` in memory. ``written`` is what the node believes it stored; ``durable``
    is what survives a crash."""

    written: LogImage = attrs.field(factory=LogImage)
    durable: LogImage = attrs.field(factory=LogImage)
    unsynced: list[_Write] = attrs.field(factory=list)
    syncs: int = 0

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        write = (hard_state, tuple(entries), snapshot)
        self.written.write(*write)
        self.unsynced.append(write)

    def sync(self) -> None:
        for write in self.unsynced:
            self.durable.write(*write)
        self.unsynced.clear()
        self.syncs += 1

    def save_snapshot(self, snapshot: Snapshot) -> None:
        # Like the real store: the snapshot file is made durable on its own; entries
        # written but not synced stay exactly as unsynced as they were.
        self.written.install(snapshot)
        self.durable.install(snapshot)

    def crash(self, rng: random.Random) -> None:
        if self.unsynced and rng.random() < 0.5:
            survivors = rng.randrange(len(self.unsynced) + 1)
            for write in self.unsynced[:survivors]:
                self.durable.write(*write)
        self.unsynced.clear()
        self.written = self.durable.copy()

    def recover(self) -> PersistedState:
        return self.durable.persisted()


WAL_SEGMENT_SIZE = 16 << 10
"""Small segments, so that simulated runs rotate and release them often."""
WAL_PREALLOCATE = 4 << 10
"""Zero-filled ahead in small chunks, so that records land in preallocated space often."""


@attrs.define
class WalDisk:
    """``Disk`` over the real ``Storage`` (WAL segments, snapshot files, recovery) on a
    ``MemoryFileSystem``: a crash is the file system's power loss (unsynced data lost,
    torn tails, lost directory changes), and a restart reopens the directory."""

    fs: MemoryFileSystem = attrs.field(factory=MemoryFileSystem)
    path: str = "/data"
    storage: Storage | None = None

    def _open(self) -> Storage:
        if self.storage is None:
            self.storage = Storage.open(
                self.fs, self.path, segment_size=WAL_SEGMENT_SIZE, preallocate=WAL_PREALLOCATE
            )
        return self.storage

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        self._open().save(hard_state, entries, snapshot)

    def sync(self) -> None:
        storage = self._open()
        storage.sync()
        if storage.wants_space():
            storage.prepare_space()  # as the WAL writer does between commits

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._open().save_snapshot(snapshot)

    def crash(self, rng: random.Random) -> None:
        # Open handles die with the process; the next start recovers from the files.
        self.storage = None
        self.fs.crash(rng)

    def recover(self) -> PersistedState:
        return self._open().recover()
