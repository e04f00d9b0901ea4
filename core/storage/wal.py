"""The write-ahead log: segment files of checksummed records, and their replay.

Layout: ``wal-<seq:016x>-<first_index:016x>.log`` files in the data directory; ``seq``
counts up from 0 without gaps, ``first_index`` is the log index the segment was opened
to receive next (it may go down from one segment to the next after a truncation; every
live entry of a segment is below the next segment's ``first_index``). A segment is a
sequence of records::

    length: u32 little-endian | crc32 (zlib) of payload: u32 little-endian | payload

The payload is a msgpack array whose first element is the record type:

- ``[1, first_index, [[term, type, data], ...]]`` a batch of contiguous entries; an entry
  at index i replaces every earlier entry at i or above (Raft log truncation);
- ``[2, term, vote, commit]`` a hard state (the last one wins);
- ``[3, index, term]`` a snapshot marker: a snapshot at (index, term) is durable. If the
  log holds (index, term) the entries after it stay; otherwise the log is discarded, as
  when a follower installs a snapshot that conflicts with its log.

Every new segment starts with the latest hard state and snapshot marker, synced, and
opening the WAL repeats them at the end of the last segment, so releasing older
segments never loses them. A segment is synced before the next one is created,
so only the last segment can have a torn tail.

Preallocation: the last segment is zero-filled ahead of its records, a chunk at a time
(``prepare_space``, called by the writer thread between group commits), so that a record
lands inside the file and its fdatasync has no new file size to persist: measured on
ext4 here, 85 against 135-175 us per small sync. Preallocation stops at the segment size
and a segment rotates once its records reach that size, so only the last segment can
have zeros after its records; on open, the WAL goes on writing over them, right after
the last record (a record is never all zeros, so nothing is mistaken for the end).

Recovery: a record that is cut short or fails its checksum at the very end of the last
segment (no valid record after it) is a torn write from a crash: it is truncated away.
Anything else wrong - in the middle of a segment, in a segment that is not the last, a
missing segment, a gap in the entries - raises ``CorruptionError`` naming the file and
the offset. This module must never skip a bad record and carry on, and never go on
writing after an I/O error (fsyncgate: after a failed fsync the page cache is unknown).
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information
import structlog

from pnyx.core.errors import CorruptionError, StorageError
from pnyx.core.raft.types import Entry, EntryType, HardState
from pnyx.core.storage.fs import AppendFile, FileSystem

__all__ = [
    "DEFAULT_PREALLOCATE",
    "DEFAULT_SEGMENT_SIZE",
    "LogReplay",
    "SegmentInfo",
    "SnapshotMarker",
    "Wal",
    "encode_entries",
    "encode_hard_state",
    "encode_snapshot_marker",
    "segment_name",
]

DEFAULT_SEGMENT_SIZE = 64 << 20
DEFAULT_PREALLOCATE = 1 << 20
"""Bytes zero-filled ahead of the records at a time (0: no preallocation)."""

RECORD_ENTRIES = 1
RECORD_HARD_STATE = 2
RECORD_SNAPSHOT = 3

_HEADER = struct.Struct("<II")
_HEADER_SIZE = _HEADER.size
_SEGMENT_NAME = re.compile(r"^wal-([0-9a-f]{16})-([0-9a-f]{16})\.log$")
# Indexed by the stored integer: avoids an enum lookup per decoded entry.
_ENTRY_TYPES: tuple[EntryType, ...] = tuple(sorted(EntryType))

T = TypeVar("T")

log = structlog.get_logger(__name__)


@attrs.frozen
class SegmentInfo:
    seq: int
    first_index: int

    @property
    def name(self) -> str:
        return segment_name(self.seq, self.first_index)


@attrs.frozen
class SnapshotMarker:
    index: int
    term: int


def segment_name(seq: int, first_index: int) -> str:
    return f"wal-{seq:016x}-{first_index:016x}.log"


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_entries(entries: Sequence[Entry]) -> bytes:
    """One framed record for a batch of contiguous entries (one msgpack call)."""
    first = entries[0].index
    if entries[-1].index - first != len(entries) - 1:
        raise ValueError("a WAL entries record needs contiguous indexes")
    body = [(entry.term, entry.type, entry.data) for entry in entries]
    return _frame(msgpack.packb((RECORD_ENTRIES, first, body)))


def encode_hard_state(hard_state: HardState) -> bytes:
    return _frame(
        msgpack.packb((RECORD_HARD_STATE, hard_state.term, hard_state.vote, hard_state.commit))
    )


def encode_snapshot_marker(marker: SnapshotMarker) -> bytes:
    return _frame(msgpack.packb((RECORD_SNAPSHOT, marker.index, marker.term)))


class _BadRecordError(Exception):
    """A checksummed payload that does not decode (never a torn write)."""


def _decode(payload: bytes | memoryview) -> list[Entry] | HardState | SnapshotMarker:
    try:
        record = msgpack.unpackb(payload, use_list=False)
        kind = record[0]
        if kind == RECORD_ENTRIES:
            _, first, body = record
            entry_types = _ENTRY_TYPES
            return [
                Entry(term, first + offset, entry_types[kind_of_entry], data)
                for offset, (term, kind_of_entry, data) in enumerate(body)
            ]
        if kind == RECORD_HARD_STATE:
            _, term, vote, commit = record
            return HardState(term=term, vote=vote, commit=commit)
        if kind == RECORD_SNAPSHOT:
            _, index, term = record
            return SnapshotMarker(index=index, term=term)
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as error:
        raise _BadRecordError(f"undecodable record ({error})") from error
    raise _BadRecordError(f"unknown record type {kind!r}")


def _record_at(data: bytes, offset: int) -> tuple[int, str | None]:
    """(end offset, None) for a well-framed record at ``offset``, else (0, reason)."""
    remaining = len(data) - offset
    if remaining < _HEADER_SIZE:
        return 0, "record header cut short"
    length, crc = _HEADER.unpack_from(data, offset)
    if length == 0:
        # A zero-filled tail would otherwise read as empty records with a valid CRC.
        return 0, "empty record"
    end = offset + _HEADER_SIZE + length
    if end > len(data):
        return 0, "record cut short"
    if zlib.crc32(memoryview(data)[offset + _HEADER_SIZE : end]) != crc:
        return 0, "checksum mismatch"
    return end, None


def _valid_record_after(data: bytes, start: int) -> bool:
    """Whether any decodable, checksummed record starts at or after ``start``: if so, a
    bad record before it is damage in the middle, not a torn tail."""
    view = memoryview(data)
    # Every payload starts with a 3- or 4-element msgpack array header (0x93 / 0x94):
    # jump between those bytes with find() instead of trying every offset in Python.
    # ``upcoming`` holds the next position of each (len(data) once there is none).
    limit = len(data)
    upcoming = {}
    for marker in (b"\x93", b"\x94"):
        found = data.find(marker, start + _HEADER_SIZE)
        upcoming[marker] = found if found >= 0 else limit
    while True:
        marker = min(upcoming, key=upcoming.__getitem__)
        found = upcoming[marker]
        if found >= limit:
            return False
        following = data.find(marker, found + 1)
        upcoming[marker] = following if following >= 0 else limit
        offset = found - _HEADER_SIZE
        end, reason = _record_at(data, offset)
        if reason is None:
            try:
                _decode(view[offset + _HEADER_SIZE : end])
            except _BadRecordError:
                continue
            return True


@attrs.define
class LogReplay:
    """The log as rebuilt from WAL records, with Raft truncation semantics.

    ``entries`` are contiguous from ``first_index`` (None until an entry or a discarding
    snapshot marker fixes it). ``hard_state`` and ``marker`` are the last ones seen.
    """

    entries: list[Entry] = attrs.Factory(list)
    first_index: int | None = None
    hard_state: HardState | None = None
    marker: SnapshotMarker | None = None

    @property
    def last_index(self) -> int:
        """The index of the last entry (or of the snapshot that discarded the log)."""
        if self.first_index is None:
            return self.marker.index if self.marker is not None else 0
        return self.first_index + len(self.entries) - 1

    @property
    def last_entry_index(self) -> int:
        """The index of the last entry (0 if there is none)."""
        if self.first_index is None:
            return 0
        return self.first_index + len(self.entries) - 1

    def term_at(self, index: int) -> int | None:
        if self.first_index is None or not (
            self.first_index <= index < self.first_index + len(self.entries)
        ):
            return None
        return self.entries[index - self.first_index].term

    def apply_entries(self, batch: Sequence[Entry], where: str) -> None:
        start = batch[0].index
        if self.first_index is None or start < self.first_index:
            self.first_index = start
            self.entries = list(batch)
            return
        end = self.first_index + len(self.entries)
        if start > end:
            raise CorruptionError(
                f"{where}: entry {start} follows entry {end - 1} (gap in the log); "
                "refusing to start"
            )
        del self.entries[start - self.first_index :]
        self.entries.extend(batch)

    def apply_marker(self, marker: SnapshotMarker) -> None:
        self.marker = marker
        if self.first_index is None:
            return
        if marker.index < self.first_index - 1:
            # Older than the start of the log: a repeated header of a later segment.
            return
        if marker.index == self.first_index - 1 or self.term_at(marker.index) == marker.term:
            return
        # The snapshot disagrees with the log or lies beyond it: the log is replaced.
        self.entries = []
        self.first_index = marker.index + 1

    def apply(self, record: list[Entry] | HardState | SnapshotMarker, where: str) -> None:
        if isinstance(record, list):
            if record:
                self.apply_entries(record, where)
        elif isinstance(record, HardState):
            self.hard_state = record
        else:
            self.apply_marker(record)


@attrs.define
class Wal:
    """An open WAL: replays the segments on ``open`` and appends to the last one.

    ``append_*`` only buffer; ``flush`` writes the buffer with one write call; ``sync``
    flushes and fdatasyncs, then rotates to a new segment once the current one has
    reached ``segment_size``. Not thread-safe: one owner (the writer thread) at a time.
    """

    _fs: FileSystem
    _directory: str
    _segment_size: int
    _segments: list[SegmentInfo]
    _last_index: int
    _hard_state: HardState | None
    _marker: SnapshotMarker | None
    # The same three as of the last flush: what a new segment's header repeats and
    # names itself after (the buffer may hold records that a crash would lose).
    _flushed_last_index: int = 0
    _flushed_hard_state: HardState | None = None
    _flushed_marker: SnapshotMarker | None = None
    _file: AppendFile | None = None
    _buffer: list[bytes] = attrs.Factory(list)
    _failed: StorageError | None = None
    _closed: bool = False
    _dirty: bool = False
    _header_due: bool = False
    _preallocate: int = 0
    sync_count: int = 0

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        directory: str,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        preallocate: int = 0,
    ) -> tuple[Wal, LogReplay]:
        """Scan every segment (repairing a torn tail), and open the last for appending."""
        segments = _list_segments(fs, directory)
        replay = LogReplay()
        end = 0
        for position, segment in enumerate(segments):
            path = os.path.join(directory, segment.name)
            is_last = position == len(segments) - 1
            end = _replay_segment(fs, path, replay, is_last=is_last)
        wal = cls(
            fs,
            directory,
            segment_size,
            segments,
            replay.last_index,
            replay.hard_state,
            replay.marker,
            replay.last_index,
            replay.hard_state,
            replay.marker,
            preallocate=preallocate,
        )
        if segments:
            wal._file = _io(
                lambda: fs.open_append(os.path.join(directory, segments[-1].name), end),
                "open the last WAL segment",
            )
            # A crash may have cut the last segment's header (or left it empty): the
            # state is repeated before the next records, so that releasing older
            # segments can never lose it. (Lazily: a refused start writes nothing.)
            wal._header_due = True
        return wal, replay

    @property
    def segments(self) -> tuple[SegmentInfo, ...]:
        return tuple(self._segments)

    @property
    def last_index(self) -> int:
        return self._last_index

    def note_snapshot(self, index: int) -> None:
        """Entries up to ``index`` are covered by a snapshot: a segment created from now
        on is named for the index after it at the earliest."""
        self._last_index = max(self._last_index, index)
        self._flushed_last_index = max(self._flushed_last_index, index)

    def append_entries(self, entries: Sequence[Entry]) -> None:
        self._check()
        if entries:
            self._buffer.append(encode_entries(entries))
            self._last_index = entries[-1].index

    def append_hard_state(self, hard_state: HardState) -> None:
        self._check()
        self._buffer.append(encode_hard_state(hard_state))
        self._hard_state = hard_state

    def append_snapshot_marker(self, marker: SnapshotMarker) -> None:
        self._check()
        self._buffer.append(encode_snapshot_marker(marker))
        self._marker = marker
        self._last_index = max(self._last_index, marker.index)

    def flush(self) -> None:
        """Hand the buffered records to the OS (no fsync)."""
        self._check()
        if not self._buffer:
            return
        if self._file is None:
            self._create_segment()
        if self._header_due:
            self._header_due = False
            self._buffer[:0] = self._header()
        data = b"".join(self._buffer)
        self._buffer.clear()
        file = self._file
        assert file is not None
        self._dirty = True
        self._guard(lambda: file.write(data), "write to the WAL")
        self._flushed_last_index = self._last_index
        self._flushed_hard_state = self._hard_state
        self._flushed_marker = self._marker

    @property
    def dirty(self) -> bool:
        """Whether records were appended since the last sync."""
        return self._dirty or bool(self._buffer)

    def sync(self) -> None:
        """Make everything appended so far durable; rotate if the segment is full.
        Without anything new to make durable this does no fsync."""
        self.flush()
        if self._file is None or not self._dirty:
            return
        file = self._file
        self._guard(file.sync, "fsync the WAL")
        self._dirty = False
        self.sync_count += 1
        if file.size >= self._segment_size:
            self._rotate()

    @property
    def space_ahead(self) -> int:
        """Zero-filled bytes after the last record of the last segment."""
        file = self._file
        return 0 if file is None else max(0, file.allocated - file.size)

    def wants_space(self) -> bool:
        """Whether the zero-filled space ahead of the records ran low (see the module
        docstring): then ``prepare_space`` should run, off the write path."""
        file = self._file
        return (
            self._preallocate > 0
            and file is not None
            and self._failed is None
            and not self._closed
            and file.allocated < self._segment_size
            and self.space_ahead < self._preallocate // 2
        )

    def prepare_space(self) -> None:
        """Zero-fill the next chunk ahead of the records (up to the segment size), and
        sync it. Costs a write of the chunk and an fsync: call it between commits."""
        if not self.wants_space():
            return
        file = self._file
        assert file is not None
        length = min(max(file.allocated, file.size) + self._preallocate, self._segment_size)
        self._guard(lambda: file.extend(length), "preallocate the WAL")
        self._guard(file.sync, "fsync the WAL")

    def release_before(self, index: int) -> int:
        """Delete, oldest first, whole segments whose live entries are all at or below
        ``index`` (all covered by a durable snapshot); fsync the directory. The last
        segment is never deleted. Returns how many segments were deleted."""
        self._check()
        if self._header_due:
            self._header_due = False
            self._write_header()
        released = 0
        # Every live entry of segment k is below the first index of segment k+1: the
        # entries written to k at or above it were cut off before k+1 was opened.
        while len(self._segments) > 1 and self._segments[1].first_index - 1 <= index:
            segment = self._segments.pop(0)
            path = os.path.join(self._directory, segment.name)
            self._guard(functools.partial(self._fs.remove, path), f"remove {path}")
            released += 1
        if released:
            self._guard(lambda: self._fs.fsync_dir(self._directory), "fsync the data directory")
        return released

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True

    # -- internals --

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise StorageError("the WAL is closed")

    def _guard(self, operation: Callable[[], object], what: str) -> None:
        """Run an I/O operation; any OSError poisons the WAL for good."""
        try:
            operation()
        except OSError as error:
            self._failed = StorageError(
                f"could not {what} ({error}); the WAL refuses further work "
                "and the node must restart"
            )
            raise self._failed from error

    def _create_segment(self) -> None:
        seq = self._segments[-1].seq + 1 if self._segments else 0
        segment = SegmentInfo(seq, self._flushed_last_index + 1)
        path = os.path.join(self._directory, segment.name)

        def create() -> None:
            self._file = self._fs.open_append(path)

        self._guard(create, "create a WAL segment")
        self._segments.append(segment)
        self._write_header()
        # The new name must be durable before anything synced into it counts.
        self._guard(lambda: self._fs.fsync_dir(self._directory), "fsync the data directory")

    def _write_header(self) -> None:
        """Write and sync the latest flushed hard state and snapshot marker to the
        current segment. Older segments may be released as soon as this returns, so
        the header must be durable first or a crash could lose the hard state."""
        header = b"".join(self._header())
        if header:
            file = self._file
            assert file is not None
            self._guard(lambda: file.write(header), "write to the WAL")
            self._guard(file.sync, "fsync the WAL")

    def _header(self) -> list[bytes]:
        records = []
        if self._flushed_hard_state is not None:
            records.append(encode_hard_state(self._flushed_hard_state))
        if self._flushed_marker is not None:
            records.append(encode_snapshot_marker(self._flushed_marker))
        return records

    def _rotate(self) -> None:
        # The current segment is synced, so it can never show a torn tail later. It has
        # no zeros after its records: preallocation stops at the segment size, and it
        # rotates once its records reach that.
        assert self._file is not None
        self._file.close()
        self._file = None
        self._create_segment()


def _io(operation: Callable[[], T], what: str) -> T:
    try:
        return operation()
    except OSError as error:
        raise StorageError(f"could not {what} ({error})") from error


def _list_segments(fs: FileSystem, directory: str) -> list[SegmentInfo]:
    segments = []
    for name in fs.list_dir(directory):
        match = _SEGMENT_NAME.match(name)
        if match is not None:
            segments.append(SegmentInfo(int(match[1], 16), int(match[2], 16)))
    segments.sort(key=lambda segment: segment.seq)
    for previous, current in itertools.pairwise(segments):
        if current.seq != previous.seq + 1:
            raise CorruptionError(
                f"{os.path.join(directory, current.name)}: WAL segment "
                f"{previous.seq + 1:016x} is missing; refusing to start"
            )
    return segments


def _replay_segment(fs: FileSystem, path: str, replay: LogReplay, *, is_last: bool) -> int:
    """Replay one segment into ``replay``; where its records end."""
    data = _io(lambda: fs.read_file(path), f"read {path}")
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        end, reason = _record_at(data, offset)
        if reason is None:
            try:
                record = _decode(view[offset + _HEADER_SIZE : end])
            except _BadRecordError as error:
                # The checksum matched, so this is not a torn write: never truncate it.
                raise CorruptionError(
                    f"{path}: {error} at offset {offset}; refusing to start"
                ) from error
            replay.apply(record, f"{path} at offset {offset}")
            offset = end
        else:
            if is_last and data.count(0, offset) == len(data) - offset:
                # Zeros to the end: space preallocated ahead of the records (or a size
                # that reached the disk without its data). New records go right here.
                return offset
            if is_last and not _valid_record_after(data, offset + 1):
                log.warning(
                    "wal.torn_tail_truncated",
                    path=path,
                    offset=offset,
                    reason=reason,
                    dropped_bytes=len(data) - offset,
                )
                _truncate(fs, path, offset)
                return offset
            raise CorruptionError(f"{path}: {reason} at offset {offset}; refusing to start")
    return offset


def _truncate(fs: FileSystem, path: str, size: int) -> None:
    """Cut a torn tail away, durably, before anything is appended after it."""
    _io(lambda: fs.truncate(path, size), f"truncate {path}")
    _io(lambda: fs.sync_file(path), f"fsync {path}")
