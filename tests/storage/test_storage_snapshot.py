"""Snapshots: file format, atomic save under crashes at every step, fallback on damage."""

from __future__ import annotations

import random
import struct
import zlib

import msgpack  # type: ignore[import-untyped]
import pytest

from pnyx.core.errors import CorruptionError
from pnyx.core.raft.types import (
    ConfState,
    Entry,
    HardState,
    PersistedState,
    Snapshot,
    SnapshotMetadata,
)
from pnyx.core.storage import MemoryFileSystem, SimulatedCrash, Storage
from pnyx.core.storage import snapshot as snapshot_module
from pnyx.core.storage.snapshot import (
    SnapshotStore,
    decode_snapshot,
    encode_snapshot,
    encode_snapshot_parts,
)

DATA = "/data"
SEGMENT_SIZE = 120
LAST = 40


def entry(index: int) -> Entry:
    # The term changes along the log so that a wrong entry cannot pass for a right one.
    return Entry(1 + index // 10, index, data=f"e{index}".encode())


def snapshot_at(index: int) -> Snapshot:
    conf = ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({4}))
    data = b"|".join(entry(i).data for i in range(1, index + 1))
    return Snapshot(SnapshotMetadata(index, entry(index).term, conf), data)


def full_log(state: PersistedState) -> list[Entry]:
    """The whole log a recovered state stands for (snapshot data spelled out)."""
    prefix: list[Entry] = []
    if state.snapshot is not None:
        assert state.snapshot == snapshot_at(state.snapshot.metadata.index)
        prefix = [entry(i) for i in range(1, state.snapshot.metadata.index + 1)]
    return prefix + list(state.entries)


def test_snapshot_file_round_trip_and_checksum() -> None:
    snapshot = snapshot_at(12)
    data = encode_snapshot(snapshot)
    assert decode_snapshot(data, "x") == snapshot
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        with pytest.raises(CorruptionError, match="x"):
            decode_snapshot(bytes(damaged), "x")
    with pytest.raises(CorruptionError, match="cut short"):
        decode_snapshot(data[:10], "x")


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65_535, 65_536, 1 << 20])
def test_the_file_written_in_parts_is_the_documented_layout(size: int) -> None:
    """The data is written without joining it to the rest; the bytes are exactly the
    header and the msgpack body ``[index, term, voters, learners, data]``."""
    conf = ConfState(voters=frozenset({3, 1}), learners=frozenset({9}))
    snapshot = Snapshot(
        SnapshotMetadata(2**40, 7, conf), bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    )
    parts = encode_snapshot_parts(snapshot)
    assert parts[2] is snapshot.data
    body = msgpack.packb((2**40, 7, [1, 3], [9], snapshot.data))
    expected = struct.pack("<8sQI", b"PNYXSNP1", len(body), zlib.crc32(body)) + body
    assert b"".join(parts) == encode_snapshot(snapshot) == expected
    assert decode_snapshot(expected, "x") == snapshot


def test_a_big_snapshot_file_is_made_durable_slice_by_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshot_module, "_SYNC_EVERY_BYTES", 1000)
    fs = MemoryFileSystem()
    fs.mkdir(DATA)
    store = SnapshotStore.open(fs, DATA)
    conf = ConfState(voters=frozenset({1}))
    snapshot = Snapshot(SnapshotMetadata(9, 2, conf), bytes(range(256)) * 40)  # 10 KiB
    syncs: list[str] = []
    fs.on_fsync = syncs.append
    file = store.save(snapshot)
    assert sum(path.endswith(".snap.tmp") for path in syncs) >= 10
    assert store.load(file) == snapshot


def _store_with_history() -> tuple[MemoryFileSystem, Storage]:
    """Entries 1..LAST synced, an older snapshot at 10 and one at 20 (so a new snapshot
    deletes a file and releases segments)."""
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE)
    storage.save(HardState(term=5, vote=1, commit=LAST), [entry(i) for i in range(1, 11)])
    storage.sync()
    storage.save_snapshot(snapshot_at(10))
    for first in range(11, LAST + 1, 5):
        storage.save(None, [entry(i) for i in range(first, first + 5)])
        storage.sync()
    storage.save_snapshot(snapshot_at(20))
    return fs, storage


def test_crash_between_any_two_steps_of_save_snapshot_recovers_consistently() -> None:
    fs, storage = _store_with_history()
    before = fs.operation_count
    storage.save_snapshot(snapshot_at(35))
    steps = fs.operation_count - before
    assert steps >= 8  # tmp write, fsync, rename, dir fsync, marker, fsync, removes...
    outcomes = set()
    for crash_at in range(steps + 1):
        for seed in range(4):
            fs, storage = _store_with_history()
            fs.crash_after(crash_at)
            if crash_at < steps:
                with pytest.raises(SimulatedCrash):
                    storage.save_snapshot(snapshot_at(35))
            else:
                storage.save_snapshot(snapshot_at(35))
            fs.crash(random.Random(seed), torn=True, lose_directory_changes=seed % 2 == 0)
            state = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE).recover()
            # Every synced entry is there, nothing else, whichever snapshot was used.
            assert full_log(state) == [entry(i) for i in range(1, LAST + 1)], crash_at
            assert state.hard_state == HardState(term=5, vote=1, commit=LAST)
            assert state.snapshot is not None
            outcomes.add(state.snapshot.metadata.index)
    assert outcomes == {20, 35}


def test_crash_during_save_snapshot_then_carrying_on_keeps_working() -> None:
    fs, storage = _store_with_history()
    fs.crash_after(3)
    with pytest.raises(SimulatedCrash):
        storage.save_snapshot(snapshot_at(35))
    fs.crash(random.Random(1))
    storage = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE)
    assert not [name for name in fs.list_dir(DATA) if name.endswith(".tmp")]
    storage.save(None, [entry(41)])
    storage.save_snapshot(snapshot_at(41))
    storage.close()
    state = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE).recover()
    assert full_log(state) == [entry(i) for i in range(1, 42)]


def test_damaged_newest_snapshot_falls_back_to_the_previous_one_plus_wal() -> None:
    fs, storage = _store_with_history()
    storage.save_snapshot(snapshot_at(35))
    storage.close()
    newest = f"{DATA}/" + storage.snapshot_files[0].name
    fs.corrupt(newest, 30)
    state = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE).recover()
    assert state.snapshot is not None
    assert state.snapshot.metadata.index == 20
    assert full_log(state) == [entry(i) for i in range(1, LAST + 1)]
    # The damaged file is set aside, never loaded again, never counted as kept.
    assert fs.exists(newest + ".broken")
    assert not fs.exists(newest)


def test_damaged_only_snapshot_with_released_wal_refuses_to_start() -> None:
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE, keep_snapshots=1)
    for first in range(1, LAST + 1, 5):
        storage.save(HardState(1, 1, first), [entry(i) for i in range(first, first + 5)])
        storage.sync()
    storage.save_snapshot(snapshot_at(30))
    storage.close()
    assert storage.wal.segments[0].first_index > 1  # the WAL before it was released
    fs.corrupt(f"{DATA}/" + storage.snapshot_files[0].name, 40)
    with pytest.raises(CorruptionError, match="refusing to start"):
        Storage.open(fs, DATA, segment_size=SEGMENT_SIZE, keep_snapshots=1)


def test_damaged_received_snapshot_cannot_fall_back_past_a_log_reset() -> None:
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA)
    storage.save(HardState(1, 1, 5), [entry(i) for i in range(1, 6)])
    storage.save_snapshot(snapshot_at(5))
    # A leader sends a snapshot far ahead: the follower's log is discarded.
    storage.save(HardState(9, 0, 30), [], snapshot_at(30))
    storage.sync()
    storage.close()
    fs.corrupt(f"{DATA}/" + storage.snapshot_files[0].name, 40)
    with pytest.raises(CorruptionError, match="refusing to start"):
        Storage.open(fs, DATA)


def test_only_the_newest_snapshots_are_kept() -> None:
    fs, storage = _store_with_history()
    storage.save_snapshot(snapshot_at(30))
    storage.save_snapshot(snapshot_at(35))
    assert [file.index for file in storage.snapshot_files] == [35, 30]
    names = [name for name in fs.list_dir(DATA) if name.startswith("snap-")]
    assert len(names) == 2


def test_received_snapshot_whose_marker_was_lost_is_recorded_again_on_open() -> None:
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA)
    storage.save(HardState(1, 1, 0), [entry(1)])
    storage.save(HardState(2, 0, 2), [], snapshot_at(2))  # the file is durable at once
    fs.crash(random.Random(0), torn=False)  # ...but the marker and hard state were not
    storage = Storage.open(fs, DATA)
    state = storage.recover()
    assert state.snapshot == snapshot_at(2)
    assert state.entries == ()
    # Entries after the snapshot must replay after it, not as a gap after entry 1.
    storage.save(None, [entry(3)])
    storage.sync()
    storage.close()
    assert Storage.open(fs, DATA).recover().entries == (entry(3),)
