"""The in-memory Raft log of one node: a snapshot base (index and term of the last
compacted entry) plus the entries after it, with the commit and apply cursors and the
bookkeeping of what has been handed to the application to persist and to apply.

A plain data structure driven by ``RaftNode``: it never decides anything about roles,
terms or messages, and never performs I/O. Hot paths must never copy the whole log: they
index into one Python list by ``index - snapshot_index - 1``.
"""

from __future__ import annotations

import attrs

from pnyx.core.raft.types import Entry


@attrs.define(slots=True)
class RaftLog:
    """Invariants: ``entries[i].index == snapshot_index + 1 + i``;
    ``snapshot_index <= applied <= applying <= committed <= last_index``."""

    snapshot_index: int = 0
    """Index of the last entry covered by the snapshot (0 when there is none)."""
    snapshot_term: int = 0
    entries: list[Entry] = attrs.field(factory=list)
    committed: int = 0
    applied: int = 0
    """Last index the application confirmed applied (``advance``)."""
    applying: int = 0
    """Last index handed out in ``Ready.committed_entries`` (or a snapshot)."""
    stable: int = 0
    """Last index the application confirmed persisted (``advance``)."""
    unstable: int = 1
    """First index not yet handed out in ``Ready.entries``."""

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        entries = self.entries
        return entries[-1].term if entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted away or not there."""
        offset = index - self.snapshot_index
        if offset > 0:
            if offset <= len(self.entries):
                return self.entries[offset - 1].term
            return None
        if offset == 0:
            return self.snapshot_term
        return None

    def slice(self, low: int, high: int) -> list[Entry]:
        """Entries with ``low <= index < high``; both must be within the log."""
        base = self.snapshot_index + 1
        return self.entries[low - base : high - base]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as
        this one (the election restriction, Raft paper section 5.4.1)."""
        our_term = self.last_term
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index)

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Position in ``entries`` of the first entry this log does not hold with the same
        term (``len(entries)`` when it holds them all). Only the overlap is examined."""
        if not entries:
            return 0
        first = entries[0].index
        last = self.last_index
        if first > last:
            return 0
        overlap = min(last, entries[-1].index) - first + 1
        base = first - self.snapshot_index - 1
        mine = self.entries
        for position in range(overlap):
            if base + position < 0:
                continue  # compacted entries are committed, hence matching
            if mine[base + position].term != entries[position].term:
                return position
        return overlap

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.
        Used on both sides of the fast back-off: one round trip skips a whole term."""
        index = min(index, self.last_index)
        snapshot_index = self.snapshot_index
        mine = self.entries
        while index > snapshot_index:
            entry_term = mine[index - snapshot_index - 1].term
            if entry_term <= term:
                return index, entry_term
            index -= 1
        if index == snapshot_index:
            return index, self.snapshot_term
        return index, 0

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append entries, replacing any suffix from ``entries[0].index`` on. The caller
        guarantees the replaced suffix is uncommitted."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.last_index:
            del self.entries[first - self.snapshot_index - 1 :]
            self.unstable = min(self.unstable, first)
            if self.stable >= first:
                self.stable = first - 1
        self.entries.extend(entries)

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            self.committed = index
            return True
        return False

    def compact(self, index: int) -> None:
        """Drop the entries up to ``index`` (which must be in the log)."""
        term = self.term_at(index)
        if term is None or index <= self.snapshot_index:
            return
        del self.entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot ending at (index, term)."""
        self.entries = []
        self.snapshot_index = index
        self.snapshot_term = term
        self.committed = index
        self.unstable = index + 1
        self.stable = min(self.stable, index)
