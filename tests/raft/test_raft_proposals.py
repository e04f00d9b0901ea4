"""Proposals (drop reasons, forwarding, backpressure) and the Ready contract."""

from __future__ import annotations

import random

import pytest

from pnyx.core.errors import ProposalDroppedError
from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    AppendRequest,
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    HeartbeatRequest,
    PersistedState,
    ProposalForward,
    RaftConfig,
    Role,
)


def test_propose_without_a_leader_raises_no_leader() -> None:
    cluster = LocalCluster()
    for call in (
        lambda: cluster[1].propose(b"x"),
        lambda: cluster[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4)),
    ):
        with pytest.raises(ProposalDroppedError) as info:
            call()
        assert info.value.reason == "no leader"


def test_follower_forwards_its_proposals_to_the_leader_in_one_message() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    for i in range(5):
        cluster[2].propose(b"f%d" % i)
    cluster.handle_ready(2)
    (forward,) = cluster.queued(ProposalForward)
    assert forward.to == 1 and len(forward.entries) == 5
    cluster.stabilize()
    cluster.spread_commit()
    assert cluster.members[3].data == [b"f%d" % i for i in range(5)]


def test_forwarded_proposals_are_dropped_during_a_transfer() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(3)
    cluster[1].transfer_leadership(3)
    cluster[2].propose(b"late")
    cluster.stabilize()
    assert b"late" not in cluster.members[1].data


def test_proposals_beyond_max_uncommitted_bytes_are_dropped_until_commits_catch_up() -> None:
    cluster = LocalCluster(max_uncommitted_bytes=100)
    cluster.elect(1)
    cluster.isolate(1)
    leader = cluster[1]
    leader.propose(b"a" * 60)
    leader.propose(b"b" * 40)
    with pytest.raises(ProposalDroppedError) as info:
        leader.propose(b"c")
    assert info.value.reason == "too many uncommitted bytes"
    cluster.heal()
    cluster.tick(node_ids=[1])
    leader.propose(b"c")


def test_a_single_proposal_larger_than_the_limit_is_accepted_when_nothing_is_pending() -> None:
    cluster = LocalCluster(max_uncommitted_bytes=10)
    cluster.elect(1)
    cluster.propose(1, b"x" * 50)
    cluster.spread_commit()
    assert cluster.members[2].data == [b"x" * 50]


# --- the Ready contract ----------------------------------------------------------------


def test_first_ready_of_a_new_cluster_persists_the_bootstrap_configuration() -> None:
    node = RaftNode(
        RaftConfig(id=1), random.Random(0), bootstrap=ConfState(voters=frozenset({1, 2, 3}))
    )
    ready = node.ready()
    assert [e.type for e in ready.entries] == [EntryType.CONF_CHANGE] * 3
    assert ready.hard_state is not None and ready.hard_state.commit == 3
    assert ready.committed_entries == ready.entries
    assert ready.must_sync


def test_must_sync_only_when_term_vote_or_entries_change() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.propose(1, b"x")
    follower = cluster[2]
    leader = cluster[1]
    leader.tick()
    beats = [m for m in leader.ready().messages if isinstance(m, HeartbeatRequest) and m.to == 2]
    follower.step(beats[0])
    ready = follower.ready()
    assert not ready.must_sync  # a heartbeat changes nothing durable
    follower.advance(ready)
    leader.propose(b"y")
    appends = [m for m in leader.ready().messages if isinstance(m, AppendRequest) and m.to == 2]
    follower.step(appends[0])
    ready = follower.ready()
    assert ready.must_sync and ready.entries


def test_commit_only_change_is_persisted_without_sync() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    leader = cluster[1]
    leader.propose(b"x")
    cluster.handle_all_ready()
    cluster.deliver()
    cluster.handle_all_ready()
    cluster.deliver()  # the acknowledgements: the leader's commit moves
    ready = leader.ready()
    assert ready.hard_state is not None and ready.hard_state.commit == leader.commit_index
    assert not ready.must_sync and not ready.entries


def test_soft_state_reports_role_and_leader_changes() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    softs = [r.soft_state for r in cluster.members[2].readies if r.soft_state is not None]
    assert softs[-1].leader_id == 1 and softs[-1].role is Role.FOLLOWER
    leader_softs = [r.soft_state for r in cluster.members[1].readies if r.soft_state is not None]
    assert leader_softs[-1].role is Role.LEADER


def test_no_ready_when_nothing_happened() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.stabilize()
    assert not any(cluster[n].has_ready() for n in (1, 2, 3))


def test_restart_reloads_hard_state_log_and_configuration() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.propose(1, b"x")
    cluster.spread_commit()
    term = cluster[2].term
    disk = cluster.members[2].disk
    node = RaftNode(RaftConfig(id=2), random.Random(5), persisted=disk.persisted_state())
    assert node.term == term and node.last_index == cluster[2].last_index
    assert node.conf_state.voters == {1, 2, 3}
    ready = node.ready()
    assert [e.data for e in ready.committed_entries if e.data][-1:] == [b"x"]


def test_restart_refuses_a_commit_index_beyond_the_log() -> None:
    with pytest.raises(ValueError):
        RaftNode(
            RaftConfig(id=1),
            random.Random(0),
            persisted=PersistedState(hard_state=HardState(term=2, commit=5)),
        )
