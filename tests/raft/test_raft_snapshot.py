"""Log compaction, InstallSnapshot to lagging followers, restart from a snapshot."""

from __future__ import annotations

import random

import pytest

from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    RaftConfig,
    Snapshot,
    SnapshotMetadata,
    SnapshotRequest,
)


def _lagging_cluster() -> LocalCluster:
    """Node 3 missed ten entries that the leader (node 1) has compacted away."""
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(3)
    for i in range(10):
        cluster[1].propose(b"v%d" % i)
    cluster.stabilize()
    cluster.compact(1)
    assert cluster[1].first_index > cluster[3].last_index + 1
    return cluster


def test_lagging_follower_gets_a_snapshot_then_the_entries_after_it() -> None:
    cluster = _lagging_cluster()
    cluster.heal()
    cluster.propose(1, b"after")
    cluster.tick(node_ids=[1], times=2)
    assert any(isinstance(m, SnapshotRequest) and m.to == 3 for m in cluster.delivered)
    assert cluster.members[3].data == cluster.members[1].data
    assert cluster.members[3].data[-1] == b"after"
    assert cluster[1].status().progress[3].state == "replicate"
    installed = [r.snapshot for r in cluster.members[3].readies if r.snapshot is not None]
    assert len(installed) == 1 and installed[0] == cluster[1].snapshot


def test_follower_stays_in_snapshot_state_until_the_snapshot_is_acknowledged() -> None:
    cluster = _lagging_cluster()
    cluster.heal()
    # Rejections get through (so the leader finds out); the acknowledgement is lost.
    cluster.drop_if(lambda m: isinstance(m, AppendResponse) and m.sender == 3 and not m.reject)
    cluster.tick(node_ids=[1], times=3)
    assert cluster[1].status().progress[3].state == "snapshot"
    sent = [i for i, m in enumerate(cluster.delivered) if isinstance(m, SnapshotRequest)]
    assert len(sent) == 1
    after = cluster.delivered[sent[0] :]
    assert not [m for m in after if isinstance(m, AppendRequest) and m.to == 3]
    cluster.heal()
    cluster.tick(node_ids=[1], times=25)  # the lost acknowledgement: the snapshot is resent
    assert cluster[1].status().progress[3].state == "replicate"
    assert cluster.members[3].data == cluster.members[1].data


def test_lost_snapshot_is_sent_again() -> None:
    cluster = _lagging_cluster()
    cluster.heal()
    dropped: list[SnapshotRequest] = []

    def drop_first_snapshot(message: object) -> bool:
        if isinstance(message, SnapshotRequest) and not dropped:
            dropped.append(message)
            return True
        return False

    cluster.drop_if(drop_first_snapshot)
    cluster.tick(node_ids=[1], times=30)
    assert dropped
    assert cluster.members[3].data == cluster.members[1].data


def _follower_with_log(terms: list[int]) -> RaftNode:
    conf = ConfState(voters=frozenset({1, 2, 3}))
    base = Snapshot(SnapshotMetadata(index=3, term=1, conf_state=conf), b"base")
    entries = tuple(Entry(t, 4 + i, data=b"%d" % (4 + i)) for i, t in enumerate(terms))
    node = RaftNode(RaftConfig(id=2), random.Random(0))
    node.step(SnapshotRequest(to=2, sender=1, term=2, snapshot=base))
    node.step(
        AppendRequest(
            to=2, sender=1, term=2, prev_log_index=3, prev_log_term=1, entries=entries, commit=3
        )
    )
    node.advance(node.ready())
    return node


def _snapshot(index: int, term: int, voters: set[int] | None = None) -> SnapshotRequest:
    conf = ConfState(voters=frozenset(voters or {1, 2, 3}))
    metadata = SnapshotMetadata(index=index, term=term, conf_state=conf)
    return SnapshotRequest(to=2, sender=1, term=3, snapshot=Snapshot(metadata, b"state"))


def test_installing_a_snapshot_keeps_the_log_entries_after_it_that_match() -> None:
    follower = _follower_with_log([2] * 7)  # 4..10
    kept = follower.entries(7, 11)
    follower.step(_snapshot(6, 2))
    assert follower.commit_index == 6
    assert follower.entries(7, 11) == kept and follower.last_index == 10
    ready = follower.ready()
    (answer,) = ready.messages
    assert isinstance(answer, AppendResponse) and answer.index == 6 and not answer.reject


def test_installing_a_snapshot_replaces_a_log_that_does_not_match() -> None:
    follower = _follower_with_log([2] * 7)
    follower.step(_snapshot(8, 3))
    assert follower.last_index == 8 and follower.first_index == 9
    assert follower.commit_index == 8
    ready = follower.ready()
    assert ready.snapshot is not None and ready.snapshot.metadata.index == 8
    assert ready.must_sync
    follower.advance(ready)
    assert follower.applied_index == 8


def test_snapshot_older_than_the_commit_index_is_acknowledged_not_installed() -> None:
    follower = _follower_with_log([2] * 7)
    follower.step(
        AppendRequest(
            to=2, sender=1, term=2, prev_log_index=10, prev_log_term=2, entries=(), commit=10
        )
    )
    follower.advance(follower.ready())
    follower.step(_snapshot(5, 2))
    ready = follower.ready()
    assert ready.snapshot is None
    assert [m.index for m in ready.messages if isinstance(m, AppendResponse)] == [10]


def test_snapshot_carries_the_configuration_and_installing_it_adopts_it() -> None:
    follower = _follower_with_log([2] * 2)
    follower.step(_snapshot(20, 3, voters={1, 2, 3, 4, 5}))
    assert follower.conf_state.voters == {1, 2, 3, 4, 5}

    cluster = LocalCluster()
    cluster.elect(1)
    cluster.add_node(4)
    cluster[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    cluster.stabilize()
    snapshot = cluster.compact(1)
    assert snapshot.metadata.conf_state == ConfState(
        voters=frozenset({1, 2, 3}), learners=frozenset({4})
    )


def test_joining_node_behind_the_compacted_log_learns_data_and_configuration() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    for i in range(5):
        cluster[1].propose(b"v%d" % i)
    cluster.stabilize()
    cluster.compact(1)
    cluster.add_node(4)
    cluster[1].propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    cluster.stabilize()
    cluster.tick(times=3)
    assert cluster.members[4].data == cluster.members[1].data
    assert cluster[4].conf_state.voters == {1, 2, 3, 4}


def test_restart_from_a_snapshot_and_the_entries_after_it() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    for i in range(5):
        cluster.propose(1, b"a%d" % i)
    cluster.compact(2)
    cluster.propose(1, b"b")
    cluster.spread_commit()
    data = list(cluster.members[2].data)
    cluster.crash(2)
    node = cluster.restart(2)
    assert node.first_index > 1 and node.last_index == cluster[1].last_index
    cluster.stabilize()
    assert cluster.members[2].data == data
    cluster.tick(times=2)
    cluster.propose(1, b"c")
    cluster.spread_commit()
    assert cluster.members[2].data == [*data, b"c"]


def test_compaction_beyond_the_applied_index_is_refused() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    with pytest.raises(ValueError):
        cluster[1].compact(cluster[1].commit_index + 1, b"")


def test_compaction_between_apply_and_advance_is_allowed() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    leader = cluster[1]
    leader.propose(b"y")
    cluster.handle_ready(1)
    cluster.deliver()
    cluster.handle_ready(2)
    cluster.handle_ready(3)
    cluster.deliver()  # the acknowledgements: "y" commits
    ready = leader.ready()
    assert [e.data for e in ready.committed_entries] == [b"y"]
    index = ready.committed_entries[-1].index
    leader.compact(index, b"state")  # applied and snapshotted before advance()
    leader.advance(ready)
    assert leader.first_index == index + 1
