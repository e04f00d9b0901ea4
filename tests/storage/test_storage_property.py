"""Property: random sequences of save / sync / snapshot / crash / recover never lose synced
data and never resurrect truncated entries.

A model keeps the whole log (snapshots never compact it) and, since the last sync, the
state after each record that ``save`` wrote (a received snapshot's marker, the entries,
the hard state). A crash keeps a prefix of those records, so the recovered state must be
exactly one of them; the first is everything synced.
"""

from __future__ import annotations

import random

import attrs
import msgpack  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnyx.core.raft.types import (
    ConfState,
    Entry,
    HardState,
    PersistedState,
    Snapshot,
    SnapshotMetadata,
)
from pnyx.core.storage import MemoryFileSystem, SimulatedCrash, Storage

DATA = "/data"
SEGMENT_SIZE = 160
PREALLOCATE = 48  # zero-filled ahead in small chunks: records land in preallocated space


@attrs.frozen
class LogState:
    log: tuple[tuple[int, bytes], ...]  # (term, data) of index 1, 2, ...
    hard_state: HardState


def snapshot_of(log: tuple[tuple[int, bytes], ...], index: int) -> Snapshot:
    data = msgpack.packb([list(item) for item in log[:index]])
    return Snapshot(SnapshotMetadata(index, log[index - 1][0], ConfState(frozenset({1}))), data)


def seen_state(state: PersistedState) -> LogState:
    log: list[tuple[int, bytes]] = []
    hard_state = state.hard_state
    if state.snapshot is not None:
        log = [(term, data) for term, data in msgpack.unpackb(state.snapshot.data)]
        assert len(log) == state.snapshot.metadata.index
        assert log[-1][0] == state.snapshot.metadata.term
    for position, entry in enumerate(state.entries):
        assert entry.index == len(log) + 1, (position, entry.index)
        log.append((entry.term, entry.data))
    return LogState(tuple(log), hard_state)


def clamp(state: LogState, snapshot_index: int) -> LogState:
    """Recovery lifts the commit to the snapshot it loaded (a snapshot is committed)."""
    commit = max(state.hard_state.commit, snapshot_index)
    return attrs.evolve(state, hard_state=attrs.evolve(state.hard_state, commit=commit))


operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3), st.integers(1, 4)),
    st.tuples(st.just("hard_state"), st.integers(0, 100), st.integers(0, 100)),
    st.tuples(st.just("append_and_hard_state"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("sync"), st.just(0), st.just(0)),
    st.tuples(st.just("prepare_space"), st.just(0), st.just(0)),
    st.tuples(st.just("snapshot"), st.integers(0, 100), st.just(0)),
    st.tuples(st.just("received_snapshot"), st.integers(0, 100), st.integers(1, 3)),
    st.tuples(st.just("crash"), st.integers(0, 2**16), st.booleans()),
    # The process dies before the n-th next disk operation, inside whatever runs then.
    st.tuples(st.just("die_soon"), st.integers(0, 12), st.just(0)),
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(operation, min_size=1, max_size=40))
def test_random_histories_never_lose_synced_data_nor_resurrect_truncated_entries(
    operations: list[tuple[str, int, int | bool]],
) -> None:
    fs = MemoryFileSystem()
    storage = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE, preallocate=PREALLOCATE)
    current = LogState((), HardState())
    candidates = [current]  # states a crash may leave: synced first, then each record
    term = 1
    floor = 0  # the highest snapshot index: the log is never cut at or below it
    stamp = 0

    def record(state: LogState) -> None:
        nonlocal current
        current = state
        candidates.append(state)

    def append(back: int, count: int) -> list[Entry]:
        nonlocal term, stamp
        first = max(floor + 1, len(current.log) + 1 - back)
        if first <= len(current.log):
            term += 1  # a truncating leader has a newer term: cut entries are detectable
        stamp += 1
        batch = [Entry(term, first + i, data=b"%d:%d" % (stamp, i)) for i in range(count)]
        log = current.log[: first - 1] + tuple((e.term, e.data) for e in batch)
        record(attrs.evolve(current, log=log))
        return batch

    def crash_and_recover(seed: int, lose_directory_changes: bool) -> Storage:
        nonlocal current, floor
        fs.crash(random.Random(seed), torn=True, lose_directory_changes=lose_directory_changes)
        reopened = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE, preallocate=PREALLOCATE)
        recovered = reopened.recover()
        seen = seen_state(recovered)
        snapshot_index = 0 if recovered.snapshot is None else recovered.snapshot.metadata.index
        allowed = [clamp(candidate, snapshot_index) for candidate in candidates]
        assert seen in allowed, (seen, allowed)
        current = candidates[allowed.index(seen)]
        candidates[:] = [current]
        # Snapshots that did not survive the crash no longer hold the log back.
        floor = max(
            [snapshot_index]
            + [file.index for file in reopened.snapshot_files if file.index <= len(current.log)]
        )
        return reopened

    for step, (kind, first_argument, second_argument) in enumerate(operations):
        try:
            if kind == "append":
                storage.save(None, append(first_argument, int(second_argument)))
            elif kind == "hard_state":
                hard_state = HardState(term, first_argument, int(second_argument))
                record(attrs.evolve(current, hard_state=hard_state))
                storage.save(hard_state, [])
            elif kind == "append_and_hard_state":
                batch = append(first_argument, int(second_argument))
                hard_state = HardState(term, 1, len(current.log))
                record(attrs.evolve(current, hard_state=hard_state))
                storage.save(hard_state, batch)
            elif kind == "sync":
                storage.sync()
                candidates[:] = [current]
            elif kind == "prepare_space":
                if storage.wants_space():
                    storage.prepare_space()  # its fsync makes what was written durable
                    candidates[:] = [current]
            elif kind == "snapshot":
                if len(current.log) <= floor:
                    continue
                index = floor + 1 + first_argument % (len(current.log) - floor)
                floor = index
                storage.save_snapshot(snapshot_of(current.log, index))
                candidates[:] = [current]
            elif kind == "received_snapshot":
                # A leader's snapshot after our floor, with a newer term: entries at and
                # after its index are replaced by the leader's, the rest are dropped.
                index = floor + 1 + first_argument % (len(current.log) - floor + 3)
                term += 1
                stamp += 1
                log = current.log[: index - 1]
                log += tuple((term, b"leader:%d:%d" % (stamp, i)) for i in range(len(log), index))
                hard_state = HardState(term, 0, index)
                floor = index
                record(attrs.evolve(current, log=log))
                record(attrs.evolve(current, hard_state=hard_state))
                storage.save(hard_state, [], snapshot_of(log, index))
            elif kind == "die_soon":
                fs.crash_after(first_argument)
            else:
                storage = crash_and_recover(first_argument, bool(second_argument))
        except SimulatedCrash:
            storage = crash_and_recover(step, step % 2 == 0)

    fs.crash_after(None)
    storage.sync()
    storage.close()
    final = Storage.open(fs, DATA, segment_size=SEGMENT_SIZE, preallocate=PREALLOCATE).recover()
    snapshot_index = 0 if final.snapshot is None else final.snapshot.metadata.index
    assert seen_state(final) == clamp(current, snapshot_index), (seen_state(final), current)
