"""Membership changes, one server at a time, with learners."""

from __future__ import annotations

import pytest

from pnyx.core.errors import ProposalDroppedError
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    AppendRequest,
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    Role,
    VoteRequest,
)


def _change(kind: ConfChangeType, node_id: int) -> ConfChange:
    return ConfChange(kind, node_id, context=b"node-%d" % node_id)


def test_learner_gets_the_log_but_neither_votes_nor_counts_for_commit() -> None:
    cluster = LocalCluster(voters=(1, 2, 3), learners=(4,))
    cluster.elect(1)
    cluster.propose(1, b"x")
    cluster.spread_commit()
    assert cluster.members[4].data == [b"x"]
    cluster.partition({1, 4}, {2, 3})
    commit = cluster[1].commit_index
    cluster.propose(1, b"y")
    assert cluster[4].last_index == cluster[1].last_index  # the learner has it...
    assert cluster[1].commit_index == commit  # ...but does not make a quorum
    cluster.isolate(4)
    cluster.tick(node_ids=[4], times=100)
    assert cluster[4].role is Role.FOLLOWER
    assert not any(isinstance(m, VoteRequest) and m.sender == 4 for m in cluster.delivered)


def test_add_node_on_a_learner_promotes_it_to_voter() -> None:
    cluster = LocalCluster(voters=(1, 2, 3), learners=(4,))
    cluster.elect(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.ADD_NODE, 4))
    cluster.stabilize()
    for node_id in (1, 2, 3, 4):
        assert cluster[node_id].conf_state == ConfState(voters=frozenset({1, 2, 3, 4}))
    cluster.partition({1, 2}, {3, 4})
    commit = cluster[1].commit_index
    cluster.propose(1, b"x")  # 2 of 4 voters is no longer a quorum
    assert cluster[1].commit_index == commit
    cluster.heal()
    cluster.tick(times=2)
    assert cluster.members[4].data == [b"x"]


def test_joining_node_learns_the_configuration_from_the_log() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.propose(1, b"before")
    cluster.add_node(4)
    cluster[1].propose_conf_change(_change(ConfChangeType.ADD_NODE, 4))
    cluster.stabilize()
    cluster.tick(times=2)
    assert cluster[4].conf_state.voters == {1, 2, 3, 4}
    assert cluster.members[4].data == [b"before"]
    applied_changes = [e for e in cluster.members[4].applied if e.type is EntryType.CONF_CHANGE]
    assert len(applied_changes) == 4  # three from the bootstrap, one ADD_NODE


def test_a_second_change_is_refused_while_one_is_uncommitted() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDroppedError) as info:
        cluster[1].propose_conf_change(_change(ConfChangeType.ADD_LEARNER, 5))
    assert info.value.reason == "configuration change pending"
    cluster.heal()
    cluster.tick(node_ids=[1])
    cluster[1].propose_conf_change(_change(ConfChangeType.ADD_LEARNER, 5))


def test_a_change_is_refused_until_the_leader_committed_an_entry_of_its_term() -> None:
    cluster = LocalCluster()
    cluster.drop_if(lambda m: isinstance(m, AppendRequest) and bool(m.entries))
    cluster.elect(1)
    with pytest.raises(ProposalDroppedError) as info:
        cluster[1].propose_conf_change(_change(ConfChangeType.ADD_LEARNER, 4))
    assert info.value.reason == "configuration change pending"


def test_removing_the_last_voter_is_refused() -> None:
    cluster = LocalCluster(voters=(1,))
    cluster.elect(1)
    with pytest.raises(ProposalDroppedError):
        cluster[1].propose_conf_change(_change(ConfChangeType.REMOVE_NODE, 1))


def test_a_configuration_takes_effect_when_appended_not_when_committed() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.ADD_NODE, 4))
    assert cluster[1].conf_state.voters == {1, 2, 3, 4}
    assert 4 in cluster[1].status().progress
    assert cluster[1].commit_index < cluster[1].last_index


def test_a_truncated_configuration_change_is_rolled_back() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.ADD_NODE, 4))
    cluster.tick_until(lambda: cluster.leader() in (2, 3), node_ids=[2, 3])
    new_leader = cluster.leader()
    cluster.propose(new_leader, b"x")
    cluster.heal()
    cluster.tick_until(lambda: cluster[1].role is Role.FOLLOWER and cluster[1].leader_id != 0)
    cluster.tick(times=2)
    assert cluster[1].conf_state.voters == {1, 2, 3}
    assert cluster.members[1].data == [b"x"]


def test_removed_leader_keeps_leading_until_the_change_commits_then_steps_down() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.REMOVE_NODE, 1))
    cluster.stabilize()
    assert cluster[1].role is Role.LEADER  # uncommitted: still leading
    assert cluster[1].conf_state.voters == {2, 3}
    cluster.heal()
    cluster.tick(node_ids=[1])
    assert cluster[1].role is Role.FOLLOWER
    cluster.tick_until(lambda: cluster.leader() in (2, 3))
    new_leader = cluster.leader()
    cluster.isolate(1)
    cluster.propose(new_leader, b"without 1")
    assert cluster[new_leader].commit_index == cluster[new_leader].last_index
    cluster.tick(times=60)
    assert cluster[1].role is Role.FOLLOWER  # never campaigns again


def test_removed_leader_counts_only_the_remaining_voters_for_commit() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.REMOVE_NODE, 1))
    # Its own copy must not count: with only one of {2, 3} answering, nothing commits.
    cluster.isolate(3)
    commit = cluster[1].commit_index
    cluster.handle_ready(1)
    cluster.network.clear()
    assert cluster[1].commit_index == commit
    assert 1 not in cluster[1].status().progress


def test_removed_follower_stops_campaigning() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster[1].propose_conf_change(_change(ConfChangeType.REMOVE_NODE, 3))
    cluster.stabilize()
    assert cluster[3].conf_state.voters == {1, 2}
    term = cluster[3].term
    cluster.isolate(3)
    cluster.tick(node_ids=[3], times=100)
    assert cluster[3].role is Role.FOLLOWER and cluster[3].term == term


def test_follower_forwards_a_configuration_change_to_the_leader() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster[2].propose_conf_change(_change(ConfChangeType.ADD_LEARNER, 4))
    cluster.stabilize()
    assert cluster[1].conf_state.learners == {4}
    assert cluster[3].conf_state.learners == {4}
