"""The file-system seam: MemoryFileSystem's crash model, and the real disk end to end."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pnyx.core.errors import CorruptionError, StorageError
from pnyx.core.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from pnyx.core.storage import MemoryFileSystem, OsFileSystem, SimulatedCrash, Storage, WalWriter


def test_crash_keeps_synced_bytes_and_drops_unsynced_ones() -> None:
    fs = MemoryFileSystem()
    fs.mkdir("/d")
    handle = fs.open_append("/d/f")
    handle.write(b"durable")
    handle.sync()
    fs.fsync_dir("/d")
    handle.write(b"-volatile")
    assert fs.read_file("/d/f") == b"durable-volatile"
    fs.crash(random.Random(0), torn=False)
    assert fs.read_file("/d/f") == b"durable"
    with pytest.raises(OSError, match="lost in a crash"):
        handle.write(b"x")


def test_torn_crash_keeps_a_prefix_of_the_unsynced_tail_or_zeros() -> None:
    seen = set()
    for seed in range(200):
        fs = MemoryFileSystem()
        fs.mkdir("/d")
        handle = fs.open_append("/d/f")
        handle.write(b"A" * 4)
        handle.sync()
        fs.fsync_dir("/d")
        handle.write(b"B" * 8)
        fs.crash(random.Random(seed))
        content = fs.read_file("/d/f")
        assert content.startswith(b"AAAA")
        tail = content[4:].rstrip(b"\x00")
        assert b"B" * len(tail) == tail  # a prefix of what was written, then zeros
        seen.add((len(tail), len(content) - 4 - len(tail) > 0))
    assert (0, False) in seen and (8, False) in seen and any(zeros for _, zeros in seen)


def test_directory_changes_need_a_directory_fsync() -> None:
    outcomes = set()
    for seed in range(50):
        fs = MemoryFileSystem()
        fs.mkdir("/d")
        handle = fs.open_append("/d/old")
        handle.write(b"x")
        handle.sync()
        fs.fsync_dir("/d")
        created = fs.open_append("/d/new")
        created.write(b"y")
        created.sync()  # the data is durable, its name is not
        fs.rename("/d/old", "/d/renamed")
        fs.crash(random.Random(seed))
        names = tuple(fs.list_dir("/d"))
        outcomes.add(names)
        # Changes survive as an ordered prefix: never the rename without the create.
        assert names in {("old",), ("new", "old"), ("new", "renamed")}
    assert len(outcomes) == 3
    fs = MemoryFileSystem()
    fs.mkdir("/d")
    fs.open_append("/d/kept").sync()
    fs.fsync_dir("/d")
    fs.crash(random.Random(0))
    assert fs.list_dir("/d") == ["kept"]


def test_crash_after_counts_mutating_operations() -> None:
    fs = MemoryFileSystem()
    fs.mkdir("/d")
    handle = fs.open_append("/d/f")  # operation 1 (create)
    fs.crash_after(1)
    handle.write(b"a")  # operation 2
    with pytest.raises(SimulatedCrash):
        handle.sync()
    assert fs.read_file("/d/f") == b"a"
    assert fs.durable_content("/d/f") == b""


def test_injected_fsync_failure_raises() -> None:
    fs = MemoryFileSystem()
    fs.mkdir("/d")
    handle = fs.open_append("/d/f")
    fs.fail_fsync(2)
    with pytest.raises(OSError, match="injected"):
        handle.sync()
    with pytest.raises(OSError, match="injected"):
        fs.fsync_dir("/d")
    handle.sync()


def _entries(first: int, last: int) -> list[Entry]:
    return [Entry(3, index, data=os.urandom(32)) for index in range(first, last + 1)]


def test_real_disk_round_trip_with_rotation_snapshots_and_torn_tail(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "node-1")
    fs = OsFileSystem()
    written: list[Entry] = []
    with WalWriter(Storage.open(fs, data_dir, segment_size=4096)) as writer:
        for first in range(1, 301, 20):
            batch = _entries(first, first + 19)
            written.extend(batch)
            # One at a time: segments rotate at a sync, and each of these gets one.
            writer.submit(HardState(3, 2, first), batch).result(10)
        snapshot = Snapshot(SnapshotMetadata(150, 3, ConfState(frozenset({1, 2}))), b"s" * 999)
        writer.submit_snapshot(snapshot).result(10)
    names = sorted(os.listdir(data_dir))
    assert [name for name in names if name.startswith("snap-")] == [
        "snap-0000000000000003-0000000000000096.snap"
    ]
    segments = [name for name in names if name.startswith("wal-")]
    assert len(segments) > 1 and not segments[0].startswith("wal-0000000000000000-")

    storage = Storage.open(fs, data_dir, segment_size=4096)
    state = storage.recover()
    assert state.snapshot == snapshot
    assert state.entries == tuple(written[150:])
    assert state.hard_state == HardState(3, 2, 281)
    storage.close()

    # A torn tail on the real disk: half a record appended after the last good one.
    last_segment = os.path.join(data_dir, segments[-1])
    good = Path(last_segment).read_bytes().rstrip(b"\x00")  # without preallocated zeros
    torn = b"\x40\x00\x00\x00\x12\x34\x56\x78\x93\x01"
    with open(last_segment, "ab") as file:
        file.write(torn)
    storage = Storage.open(fs, data_dir, segment_size=4096)
    assert storage.recover().entries == tuple(written[150:])
    # Cut away (opening then appends the hard state again after the good records).
    repaired = Path(last_segment).read_bytes()
    assert repaired.startswith(good) and torn not in repaired[len(good) :]
    storage.save(None, _entries(301, 301))
    storage.sync()
    storage.close()

    # A flipped byte in the middle of a segment is a refusal.
    first_segment = os.path.join(data_dir, segments[0])
    with open(first_segment, "r+b") as file:
        file.seek(20)
        byte = file.read(1)
        file.seek(20)
        file.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CorruptionError, match=segments[0]):
        Storage.open(fs, data_dir, segment_size=4096)


def test_real_disk_errors_become_storage_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError):
        Storage.open(OsFileSystem(), str(blocker / "data"))


def test_relative_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for fs in (OsFileSystem(), MemoryFileSystem()):
        storage = Storage.open(fs, "node-data")
        storage.save(HardState(1, 1, 0), _entries(1, 2))
        storage.sync()
        storage.close()
        assert len(Storage.open(fs, "node-data").recover().entries) == 2


def test_real_disk_wal_is_zero_filled_ahead_and_reopens_after_its_records(
    tmp_path: Path,
) -> None:
    data_dir = str(tmp_path / "node-1")
    fs = OsFileSystem()
    chunk = 64 << 10
    storage = Storage.open(fs, data_dir, preallocate=chunk)
    first = _entries(1, 20)
    storage.save(HardState(3, 2, 1), first)
    storage.sync()
    (name,) = [name for name in os.listdir(data_dir) if name.startswith("wal-")]
    path = os.path.join(data_dir, name)
    records = os.path.getsize(path)
    assert storage.wants_space()
    storage.prepare_space()
    assert os.path.getsize(path) == records + chunk
    assert not storage.wants_space()
    second = _entries(21, 40)
    storage.save(HardState(3, 2, 21), second)
    storage.sync()
    # The records went into the zero-filled space: the file did not grow.
    assert os.path.getsize(path) == records + chunk
    storage.close()
    content = Path(path).read_bytes()
    written = len(content.rstrip(b"\x00"))
    assert records < written < records + chunk

    storage = Storage.open(fs, data_dir, preallocate=chunk)
    assert os.path.getsize(path) == records + chunk  # opening wrote nothing
    state = storage.recover()
    assert state.entries == tuple(first + second)
    assert state.hard_state == HardState(3, 2, 21)
    third = _entries(41, 41)
    storage.save(None, third)
    storage.sync()
    storage.close()
    # Appended over the zeros, right after the last record (after the repeated state).
    assert os.path.getsize(path) == records + chunk
    assert Path(path).read_bytes()[:written] == content[:written]
    assert Storage.open(fs, data_dir).recover().entries == tuple(first + second + third)
