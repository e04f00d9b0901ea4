"""The simulator's parts on their own: disk, network, replicated KV state machine."""

from __future__ import annotations

import random

from pnyx.core import sim
from pnyx.core.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from pnyx.core.sim.disk import MemoryDisk
from pnyx.core.sim.network import LinkQuality, Network
from pnyx.core.sim.statemachine import Applied, Command, SimKV


def _entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term, index, data=f"{term}:{index}".encode()) for index in range(first, last + 1)]


def _snapshot(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMetadata(index, term, ConfState(frozenset({1}))), b"state")


# --- disk --------------------------------------------------------------------------------


def test_synced_writes_survive_a_crash_and_unsynced_ones_never_partially_reorder() -> None:
    for seed in range(50):
        disk = MemoryDisk()
        disk.save(HardState(1, 1, 0), _entries(1, 3, 1), None)
        disk.sync()
        disk.save(HardState(2, 2, 3), _entries(4, 5, 2), None)
        disk.save(None, _entries(6, 6, 2), None)
        disk.crash(random.Random(seed))
        recovered = disk.recover()
        indexes = [entry.index for entry in recovered.entries]
        # What survives is the synced part plus a prefix of the later writes.
        assert indexes in ([1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6])
        if indexes == [1, 2, 3]:
            assert recovered.hard_state == HardState(1, 1, 0)
        else:
            assert recovered.hard_state == HardState(2, 2, 3)


def test_a_crash_loses_everything_unsynced_for_some_seeds() -> None:
    lost = 0
    for seed in range(20):
        disk = MemoryDisk()
        disk.save(HardState(1, 1, 0), _entries(1, 2, 1), None)
        disk.crash(random.Random(seed))
        lost += disk.recover().entries == ()
    assert 0 < lost < 20


def test_entries_replace_the_log_suffix_from_their_first_index() -> None:
    disk = MemoryDisk()
    disk.save(None, _entries(1, 5, 1), None)
    disk.save(None, _entries(3, 4, 2), None)
    disk.sync()
    assert [(e.index, e.term) for e in disk.recover().entries] == [
        (1, 1), (2, 1), (3, 2), (4, 2),
    ]  # fmt: skip


def test_received_snapshot_keeps_the_matching_suffix_and_drops_a_conflicting_log() -> None:
    matching = MemoryDisk()
    matching.save(None, _entries(1, 6, 1), None)
    matching.save(None, (), _snapshot(4, 1))
    assert [e.index for e in matching.written.entries] == [5, 6]

    conflicting = MemoryDisk()
    conflicting.save(None, _entries(1, 6, 1), None)
    conflicting.save(None, (), _snapshot(4, 2))
    assert conflicting.written.entries == []
    assert conflicting.written.last_index == 4


def test_application_snapshot_is_durable_at_once_and_releases_the_log_before_it() -> None:
    disk = MemoryDisk()
    disk.save(HardState(1, 1, 6), _entries(1, 6, 1), None)
    disk.sync()
    disk.save_snapshot(_snapshot(4, 1))
    disk.crash(random.Random(0))
    recovered = disk.recover()
    assert recovered.snapshot is not None and recovered.snapshot.metadata.index == 4
    assert [e.index for e in recovered.entries] == [5, 6]


# --- network -----------------------------------------------------------------------------


def test_partitions_cut_both_ways_one_way_cuts_do_not_and_heal_restores() -> None:
    network = Network(random.Random(1))
    network.partition([[1], [2, 3]])
    assert not network.connected(1, 2) and not network.connected(2, 1)
    assert network.connected(2, 3)
    assert network.fate(1, 3, now=0) == []
    network.heal()
    network.cut_one_way(1, [2, 3])
    assert not network.connected(1, 2) and network.connected(2, 1)
    network.heal()
    assert network.connected(1, 2) and network.fate(1, 2, now=0)


def test_fates_are_reproducible_and_follow_the_link_quality() -> None:
    quality = LinkQuality(drop_rate=0.3, duplicate_rate=0.3, min_delay=2, max_delay=9)
    first = Network(random.Random(9), quality)
    second = Network(random.Random(9), quality)
    fates = [first.fate(1, 2, now=0) for _ in range(500)]
    assert fates == [second.fate(1, 2, now=0) for _ in range(500)]
    assert any(not fate for fate in fates) and any(len(fate) == 2 for fate in fates)
    assert all(2 <= delay <= 9 for fate in fates for delay in fate)


def test_stalled_links_deliver_only_after_the_stall() -> None:
    network = Network(random.Random(3))
    network.stall(2, until=100)
    assert all(delay >= 90 for _ in range(50) for delay in network.fate(1, 2, now=10))
    assert all(delay >= 90 for _ in range(50) for delay in network.fate(2, 3, now=10))
    assert all(delay < 90 for _ in range(50) for delay in network.fate(1, 3, now=10))


# --- state machine -----------------------------------------------------------------------


def test_a_retried_command_applies_once_and_gets_the_first_result() -> None:
    machine = SimKV()
    cas = Command(client=7, seq=1, key="k", value="v1", cas=True, expected=None)
    assert machine.apply(1, cas.encode()) == Applied(7, 1, True)
    machine.apply(2, Command(client=8, seq=1, key="k", value="other").encode())
    # The retry would now fail its compare; the session answers with the first result.
    assert machine.apply(3, cas.encode()) == Applied(7, 1, True, duplicate=True)
    assert machine.read("k") == "other"
    old = Command(client=8, seq=0, key="k", value="late").encode()
    assert machine.apply(4, old) == Applied(8, 0, False, stale=True)
    assert machine.read("k") == "other"


def test_snapshot_restore_gives_the_same_state_and_the_same_bytes() -> None:
    machine = SimKV()
    rng = random.Random(5)
    for index in range(1, 200):
        command = Command(
            client=rng.randrange(5),
            seq=index,
            key=f"k{rng.randrange(4)}",
            value=str(index),
            cas=rng.random() < 0.3,
            expected=str(index - 1),
        )
        machine.apply(index, command.encode())
    copy = SimKV()
    copy.restore(machine.snapshot())
    assert copy.snapshot() == machine.snapshot()
    assert copy.registers == machine.registers and copy.sessions == machine.sessions
    assert machine.apply(200, b"") is None and machine.applied_index == 200


def test_package_face_exports_exactly_its_public_names() -> None:
    assert sorted(sim.__all__) == sim.__all__
    public = {name for name in vars(sim) if not name.startswith("_")}
    modules = {"checks", "cluster", "disk", "history", "linearizability", "nemesis"}
    modules |= {"kvadapter", "network", "runner", "statemachine", "workload"}
    assert public - modules == set(sim.__all__)
