"""WAL: round trip, torn tails, corruption, truncation on replay, rotation and release."""

from __future__ import annotations

import random

import pytest
import structlog

from pnyx.core.errors import CorruptionError, StorageError
from pnyx.core.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from pnyx.core.storage import MemoryFileSystem, Storage
from pnyx.core.storage.wal import SnapshotMarker, Wal, encode_entries, encode_hard_state

DATA = "/data"


def entries(first: int, last: int, term: int = 1, size: int = 8) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 251]) * size) for i in range(first, last + 1)]


def snapshot_at(index: int, term: int = 1, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMetadata(index, term, ConfState(frozenset({1, 2, 3}))), data)


def reopen(fs: MemoryFileSystem, **options: int) -> Storage:
    return Storage.open(fs, DATA, **options)


def segment_paths(fs: MemoryFileSystem) -> list[str]:
    return [f"{DATA}/{name}" for name in fs.list_dir(DATA) if name.startswith("wal-")]


def test_round_trip_of_entries_hard_state_and_types() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs)
    assert storage.recover().entries == ()
    written = [
        Entry(1, 1, EntryType.NORMAL, b""),
        Entry(1, 2, EntryType.CONF_CHANGE, b"\x00\x01conf"),
        Entry(2, 3, EntryType.NORMAL, bytes(range(256))),
    ]
    storage.save(HardState(term=2, vote=3, commit=2), written)
    storage.sync()
    storage.close()

    state = reopen(fs).recover()
    assert state.entries == tuple(written)
    assert state.hard_state == HardState(term=2, vote=3, commit=2)
    assert state.snapshot is None


def test_unsynced_records_are_lost_on_crash_and_synced_ones_kept() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs)
    storage.save(HardState(1, 1, 0), entries(1, 5))
    storage.sync()
    storage.save(HardState(1, 1, 5), entries(6, 9))
    fs.crash(random.Random(0), torn=False)

    state = reopen(fs).recover()
    assert state.entries == tuple(entries(1, 5))
    assert state.hard_state == HardState(1, 1, 0)


def _two_records(fs: MemoryFileSystem) -> tuple[str, int, int]:
    """A segment with a synced record and a last record; returns (path, start of the
    last record, end of file)."""
    storage = reopen(fs)
    storage.save(HardState(1, 1, 1), entries(1, 3))
    storage.sync()
    (path,) = segment_paths(fs)
    start = len(fs.read_file(path))
    storage.save(None, entries(4, 6))
    storage.sync()
    storage.close()
    return path, start, len(fs.read_file(path))


def test_torn_last_record_is_truncated_at_every_cut_offset() -> None:
    reference = MemoryFileSystem()
    path, start, end = _two_records(reference)
    content = reference.read_file(path)
    for cut in range(start, end):
        fs = MemoryFileSystem()
        fs.mkdir(DATA)
        handle = fs.open_append(path)
        handle.write(content[:cut])
        handle.sync()
        fs.fsync_dir(DATA)

        storage = reopen(fs)
        assert storage.recover().entries == tuple(entries(1, 3)), cut
        # The tail is gone from the disk, and appending after the repair works.
        assert fs.durable_content(path) == content[:start]
        assert reopen(fs).recover().entries == tuple(entries(1, 3))
        storage.save(None, entries(4, 4, term=2))
        storage.sync()
        storage.close()
        assert reopen(fs).recover().entries == (*entries(1, 3), *entries(4, 4, term=2))


@pytest.mark.parametrize("damage", ["flip", "zeros"])
def test_last_record_failing_its_checksum_is_a_torn_tail(damage: str) -> None:
    fs = MemoryFileSystem()
    path, start, end = _two_records(fs)
    for offset in range(start + 8, end):
        if damage == "flip":
            fs.corrupt(path, offset)
        else:
            fs.corrupt(path, offset, xor=fs.read_file(path)[offset])
    assert reopen(fs).recover().entries == tuple(entries(1, 3))
    assert fs.durable_content(path) == fs.read_file(path)
    assert len(fs.read_file(path)) == start


def test_zero_filled_tail_is_space_the_next_records_go_into() -> None:
    # Zeros after the last record: preallocated space, or a size that reached the disk
    # without its data. Opening changes nothing; the next records go right after the
    # last good one, over the zeros.
    fs = MemoryFileSystem()
    path, _, end = _two_records(fs)
    handle = fs.open_append(path)
    handle.write(bytes(100))
    handle.sync()
    with structlog.testing.capture_logs() as logs:
        storage = reopen(fs)
    assert storage.recover().entries == tuple(entries(1, 6))
    assert not [entry for entry in logs if entry["log_level"] == "warning"]
    assert fs.read_file(path) == fs.durable_content(path)
    assert len(fs.read_file(path)) == end + 100
    storage.save(None, entries(7, 7))
    storage.sync()
    content = fs.read_file(path)
    assert len(content) == end + 100 and content[end] != 0
    storage.close()
    assert reopen(fs).recover().entries == tuple(entries(1, 7))


def test_torn_record_before_zeros_is_a_torn_tail() -> None:
    fs = MemoryFileSystem()
    path, _, end = _two_records(fs)
    handle = fs.open_append(path)
    handle.write(encode_entries(entries(7, 7))[:9] + bytes(64))
    handle.sync()
    with structlog.testing.capture_logs() as logs:
        assert reopen(fs).recover().entries == tuple(entries(1, 6))
    assert any(entry["event"] == "wal.torn_tail_truncated" for entry in logs)
    assert fs.durable_content(path) == fs.read_file(path)
    assert len(fs.read_file(path)) == end


def test_flipped_byte_in_a_middle_record_refuses_to_start_naming_file_and_offset() -> None:
    reference = MemoryFileSystem()
    storage = reopen(reference)
    boundaries = []
    for first in (1, 4, 7):
        storage.save(None, entries(first, first + 2))
        storage.sync()
        (path,) = segment_paths(reference)
        boundaries.append(len(reference.read_file(path)))
    storage.close()
    content = reference.read_file(path)
    middle_start, middle_end = boundaries[0], boundaries[1]
    for offset in range(middle_start, middle_end):
        fs = MemoryFileSystem()
        fs.mkdir(DATA)
        handle = fs.open_append(path)
        handle.write(content)
        handle.sync()
        fs.corrupt(path, offset)
        with pytest.raises(CorruptionError) as raised:
            reopen(fs)
        assert path in str(raised.value)
        assert f"offset {middle_start};" in str(raised.value)
        # Nothing was "repaired": the damaged file is left as it was for a post-mortem.
        assert len(fs.read_file(path)) == len(content)


def test_damage_in_a_segment_that_is_not_the_last_refuses_to_start() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=64)
    for first in range(1, 20, 3):
        storage.save(None, entries(first, first + 2))
        storage.sync()
    storage.close()
    paths = segment_paths(fs)
    assert len(paths) > 2
    first_segment = paths[0]
    fs.corrupt(first_segment, len(fs.read_file(first_segment)) - 1)
    with pytest.raises(CorruptionError, match=first_segment):
        reopen(fs, segment_size=64)

    # A non-last segment cut short is damage too, not a torn tail.
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=64)
    for first in range(1, 20, 3):
        storage.save(None, entries(first, first + 2))
        storage.sync()
    storage.close()
    second_segment = segment_paths(fs)[1]
    fs.truncate(second_segment, len(fs.read_file(second_segment)) - 3)
    with pytest.raises(CorruptionError, match=second_segment):
        reopen(fs, segment_size=64)


def test_missing_middle_segment_refuses_to_start() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=64)
    for first in range(1, 20, 3):
        storage.save(None, entries(first, first + 2))
        storage.sync()
    storage.close()
    fs.remove(segment_paths(fs)[1])
    with pytest.raises(CorruptionError, match="missing"):
        reopen(fs, segment_size=64)


def test_replay_applies_raft_truncation() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs)
    storage.save(HardState(1, 1, 3), entries(1, 10, term=1))
    storage.save(HardState(2, 2, 3), entries(6, 8, term=2))
    storage.save(HardState(3, 3, 3), entries(8, 9, term=3))
    storage.sync()
    storage.close()
    state = reopen(fs).recover()
    expected = (*entries(1, 5, term=1), *entries(6, 7, term=2), *entries(8, 9, term=3))
    assert state.entries == expected
    assert state.hard_state == HardState(3, 3, 3)


def test_truncation_across_segments_never_resurrects_the_cut_entries() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=100)
    for first in range(1, 30, 4):
        storage.save(None, entries(first, first + 3, term=1))
        storage.sync()
    assert len(storage.wal.segments) > 3
    storage.save(None, entries(5, 6, term=2))
    storage.sync()
    storage.close()
    state = reopen(fs, segment_size=100).recover()
    assert state.entries == (*entries(1, 4, term=1), *entries(5, 6, term=2))


def test_a_gap_in_the_log_is_corruption() -> None:
    fs = MemoryFileSystem()
    fs.mkdir(DATA)
    handle = fs.open_append(f"{DATA}/wal-0000000000000000-0000000000000001.log")
    handle.write(encode_entries(entries(1, 3)) + encode_entries(entries(5, 6)))
    handle.sync()
    with pytest.raises(CorruptionError, match="gap"):
        reopen(fs)


def test_segments_rotate_at_the_configured_size() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=200)
    for first in range(1, 101, 5):
        storage.save(HardState(1, 1, first), entries(first, first + 4))
        storage.sync()
    segments = storage.wal.segments
    assert len(segments) > 5
    assert [segment.seq for segment in segments] == list(range(len(segments)))
    # Each segment is named for the index it was opened to receive next.
    state_indexes = [segment.first_index for segment in segments]
    assert state_indexes == sorted(state_indexes)
    assert state_indexes[0] == 1
    for path in segment_paths(fs)[:-1]:
        # A segment exceeds the limit by at most one batch (rotation happens at sync).
        assert 200 <= len(fs.read_file(path)) < 200 + 200
    storage.close()
    assert reopen(fs, segment_size=200).recover().entries == tuple(entries(1, 100))


def test_release_keeps_hard_state_and_everything_after_the_oldest_kept_snapshot() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=150)
    storage.save(HardState(term=7, vote=2, commit=0), entries(1, 4))
    for first in range(5, 101, 4):
        storage.save(None, entries(first, first + 3))
        storage.sync()
    segments_before = len(storage.wal.segments)
    storage.save_snapshot(snapshot_at(40, data=b"forty"))
    # The only snapshot kept is at 40: segments wholly at or below it go.
    assert len(storage.wal.segments) < segments_before
    assert storage.wal.segments[1].first_index - 1 > 40
    storage.save_snapshot(snapshot_at(80, data=b"eighty"))
    # Two snapshots are kept (40 and 80): the WAL still reaches back to 41.
    assert storage.wal.segments[0].first_index <= 41
    storage.save_snapshot(snapshot_at(90, data=b"ninety"))
    assert [file.index for file in storage.snapshot_files] == [90, 80]
    storage.close()

    state = reopen(fs, segment_size=150).recover()
    assert state.hard_state == HardState(term=7, vote=2, commit=90)
    assert state.snapshot == snapshot_at(90, data=b"ninety")
    assert state.entries == tuple(entries(91, 100))


def test_release_before_deletes_only_segments_wholly_covered() -> None:
    fs = MemoryFileSystem()
    fs.mkdir(DATA)
    wal, _ = Wal.open(fs, DATA, segment_size=100)
    for first in range(1, 41, 4):
        wal.append_entries(entries(first, first + 3))
        wal.sync()
    names = [segment.first_index for segment in wal.segments]
    cut = names[2] - 1  # every entry of segments 0 and 1 is at or below this
    assert wal.release_before(cut - 1) == 1
    assert wal.release_before(cut) == 1
    assert wal.segments[0].first_index == names[2]
    assert wal.release_before(10_000) == len(names) - 3
    assert len(wal.segments) == 1  # never the last one
    wal.close()


def test_header_records_let_a_snapshot_marker_survive_release() -> None:
    fs = MemoryFileSystem()
    fs.mkdir(DATA)
    wal, _ = Wal.open(fs, DATA, segment_size=64)
    wal.append_hard_state(HardState(4, 1, 0))
    wal.append_snapshot_marker(SnapshotMarker(0, 0))
    for first in range(1, 40, 4):
        wal.append_entries(entries(first, first + 3))
        wal.sync()
    wal.release_before(30)
    wal.close()
    _, replay = Wal.open(fs, DATA, segment_size=64)
    assert replay.hard_state == HardState(4, 1, 0)
    assert replay.marker == SnapshotMarker(0, 0)


def test_received_snapshot_replaces_a_conflicting_log() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs)
    storage.save(HardState(1, 1, 2), entries(1, 10, term=1))
    storage.sync()
    # The leader's snapshot at 8 has term 2: the follower's entries 1..10 conflict.
    storage.save(HardState(2, 0, 8), [], snapshot_at(8, term=2, data=b"leader"))
    storage.save(None, entries(9, 12, term=2))
    storage.sync()
    storage.close()
    state = reopen(fs).recover()
    assert state.snapshot == snapshot_at(8, term=2, data=b"leader")
    assert state.entries == tuple(entries(9, 12, term=2))
    assert state.hard_state == HardState(2, 0, 8)


def test_received_snapshot_matching_the_log_keeps_the_entries_after_it() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs)
    storage.save(HardState(1, 1, 2), entries(1, 10, term=1))
    storage.save(None, [], snapshot_at(5, term=1))
    storage.sync()
    storage.close()
    state = reopen(fs).recover()
    assert state.snapshot is not None
    assert state.snapshot.metadata.index == 5
    assert state.entries == tuple(entries(6, 10))


def test_fsync_failure_is_fatal_for_the_storage() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs)
    storage.save(None, entries(1, 2))
    storage.sync()
    storage.save(None, entries(3, 4))
    fs.fail_fsync()
    with pytest.raises(StorageError, match="fsync"):
        storage.sync()
    # Never retried: every later call refuses, even though the disk "works" again.
    with pytest.raises(StorageError):
        storage.sync()
    with pytest.raises(StorageError):
        storage.save(None, entries(5, 5))
    with pytest.raises(StorageError):
        storage.save_snapshot(snapshot_at(2))


def test_save_snapshot_beyond_the_log_is_refused() -> None:
    storage = reopen(MemoryFileSystem())
    storage.save(None, entries(1, 3))
    with pytest.raises(ValueError, match="beyond"):
        storage.save_snapshot(snapshot_at(4))


def test_opening_writes_nothing_and_the_state_is_repeated_before_new_records() -> None:
    fs = MemoryFileSystem()
    storage = reopen(fs, segment_size=64)
    storage.save(HardState(3, 2, 1), entries(1, 3))
    storage.sync()
    storage.close()
    path = segment_paths(fs)[-1]
    before = fs.read_file(path)
    operations = fs.operation_count
    storage = reopen(fs, segment_size=64)
    assert fs.operation_count == operations  # a refused start would have changed nothing
    storage.save(None, entries(4, 4))
    storage.sync()
    after = fs.read_file(path)
    # The hard state is repeated ahead of the new records, so the older ones can go.
    assert after[len(before) :].startswith(encode_hard_state(HardState(3, 2, 1)))
