"""ReadIndex: linearizable reads confirmed by one heartbeat round, batched."""

from __future__ import annotations

import pytest

from pnyx.core.errors import ProposalDroppedError
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    AppendRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadState,
)


def _heartbeats(cluster: LocalCluster) -> list[HeartbeatRequest]:
    return [m for m in cluster.delivered if isinstance(m, HeartbeatRequest)]


def test_read_index_batches_many_reads_into_one_heartbeat_round() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.delivered.clear()
    leader = cluster[1]
    for i in range(10):
        leader.read_index(b"r%d" % i)
    cluster.stabilize()
    beats = _heartbeats(cluster)
    assert len(beats) == 2  # one per follower: a single round
    assert len({b.context for b in beats}) == 1 and beats[0].context
    states = cluster.members[1].read_states
    assert [s.context for s in states] == [b"r%d" % i for i in range(10)]
    assert {s.index for s in states} == {leader.commit_index}


def test_reads_arriving_during_a_round_join_the_next_round() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    leader = cluster[1]
    leader.read_index(b"first")
    cluster.handle_ready(1)  # round 1 is out
    leader.read_index(b"second")
    leader.read_index(b"third")
    cluster.deliver()  # the followers answer round 1
    cluster.handle_all_ready()
    cluster.deliver()
    # Round 1 is confirmed: only the read queued before it started is answered.
    assert [s.context for s in cluster.members[1].read_states] == []
    cluster.handle_ready(1)
    assert [s.context for s in cluster.members[1].read_states] == [b"first"]
    cluster.stabilize()
    assert [s.context for s in cluster.members[1].read_states] == [b"first", b"second", b"third"]
    contexts = [b.context for b in _heartbeats(cluster) if b.context]
    assert len(set(contexts)) == 2  # two rounds in all


def test_read_index_is_the_commit_index_when_the_round_started() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.propose(1, b"x")
    cluster[1].read_index(b"r")
    cluster.stabilize()
    assert cluster.members[1].read_states == [ReadState(cluster[1].commit_index, b"r")]


def test_read_index_needs_answers_from_a_quorum() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].read_index(b"r")
    cluster.stabilize()
    cluster.tick(node_ids=[1], times=3)
    assert cluster.members[1].read_states == []
    cluster.heal()
    cluster.tick(node_ids=[1])
    assert [s.context for s in cluster.members[1].read_states] == [b"r"]


def test_one_follower_answer_suffices_in_a_three_node_cluster() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(3)
    cluster[1].read_index(b"r")
    cluster.stabilize()
    assert [s.context for s in cluster.members[1].read_states] == [b"r"]


def test_read_index_waits_for_a_commit_in_the_leaders_own_term() -> None:
    cluster = LocalCluster()
    # The no-op of the new term cannot commit while its AppendRequests are lost.
    cluster.drop_if(lambda m: isinstance(m, AppendRequest) and bool(m.entries))
    cluster.elect(1)
    leader = cluster[1]
    assert leader.term_at(leader.commit_index) != leader.term
    leader.read_index(b"r")
    cluster.stabilize()
    leader.tick()
    cluster.stabilize()
    assert cluster.members[1].read_states == []
    cluster.heal()
    cluster.tick(node_ids=[1], times=2)
    assert cluster.members[1].read_states == [ReadState(leader.commit_index, b"r")]
    assert leader.term_at(leader.commit_index) == leader.term


def test_follower_forwards_read_index_to_the_leader_and_gets_a_read_state() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.propose(1, b"x")
    cluster[2].read_index(b"at-follower")
    cluster.handle_ready(2)
    assert cluster.queued(ReadIndexRequest, to=1, sender=2)
    cluster.stabilize()
    assert cluster.members[2].read_states == [ReadState(cluster[1].commit_index, b"at-follower")]
    assert cluster.members[1].read_states == []


def test_read_index_without_a_leader_raises_no_leader() -> None:
    cluster = LocalCluster()
    with pytest.raises(ProposalDroppedError) as info:
        cluster[1].read_index(b"r")
    assert info.value.reason == "no leader"


def test_single_voter_read_index_is_answered_without_a_round() -> None:
    cluster = LocalCluster(voters=(1,))
    cluster.elect(1)
    cluster.delivered.clear()
    cluster[1].read_index(b"r")
    cluster.stabilize()
    assert cluster.members[1].read_states == [ReadState(cluster[1].commit_index, b"r")]
    assert not cluster.delivered


def test_learner_answers_do_not_count_for_read_index() -> None:
    cluster = LocalCluster(voters=(1, 2, 3), learners=(4,))
    cluster.elect(1)
    cluster.drop_if(lambda m: isinstance(m, HeartbeatResponse) and m.sender in (2, 3))
    cluster[1].read_index(b"r")
    cluster.stabilize()
    assert any(isinstance(m, HeartbeatResponse) and m.sender == 4 for m in cluster.delivered)
    assert cluster.members[1].read_states == []


def test_leader_stepping_down_drops_its_pending_reads() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].read_index(b"r")
    cluster.tick(node_ids=[1], times=25)
    cluster.heal()
    cluster.tick(times=30)
    assert cluster.members[1].read_states == []
