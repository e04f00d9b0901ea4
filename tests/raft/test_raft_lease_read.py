"""Leader lease (``RaftConfig.lease_duration``): a leader answers linearizable reads
without a heartbeat round while a quorum answered a recent heartbeat, and every way the
lease could outlive the leadership is closed (the clock, a transfer, a restart)."""

from __future__ import annotations

import random

import pytest

from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    ConfState,
    HeartbeatRequest,
    HeartbeatResponse,
    RaftConfig,
    ReadState,
    Role,
    TimeoutNow,
)

LEASE = 5.0


def _leased_cluster(voters: tuple[int, ...] = (1, 2, 3), lease: float = LEASE) -> LocalCluster:
    cluster = LocalCluster(voters, lease_duration=lease)
    cluster.elect(1)
    cluster.tick(node_ids=[1])  # a heartbeat round: every follower answers it
    cluster.stabilize()
    return cluster


def _beats(cluster: LocalCluster) -> list[HeartbeatRequest]:
    return [m for m in cluster.delivered if isinstance(m, HeartbeatRequest)]


def _read_takes_a_round(cluster: LocalCluster) -> None:
    """A read on leader 1 is not answered by its own Ready, only after one heartbeat to
    each of the two followers."""
    cluster.delivered.clear()
    cluster[1].read_index(b"r")
    cluster.handle_ready(1)
    assert cluster.members[1].read_states == []
    cluster.stabilize()
    assert [s.context for s in cluster.members[1].read_states] == [b"r"]
    assert len(_beats(cluster)) == 2


def test_a_leader_in_its_lease_answers_at_once_with_its_commit_index() -> None:
    cluster = _leased_cluster()
    cluster.propose(1, b"x")
    cluster.stabilize()
    cluster.delivered.clear()
    leader = cluster[1]
    leader.read_index(b"r")
    cluster.handle_ready(1)
    assert cluster.members[1].read_states == [ReadState(leader.commit_index, b"r")]
    cluster.stabilize()
    assert _beats(cluster) == []  # no confirmation round at all


def test_without_a_lease_the_same_read_takes_a_round() -> None:
    _read_takes_a_round(_leased_cluster(lease=0.0))


def test_the_lease_runs_out_with_the_clock_and_a_heartbeat_renews_it() -> None:
    cluster = _leased_cluster()
    cluster.now += LEASE  # exactly the lease after the heartbeat was sent: over
    cluster[1].read_index(b"late")
    cluster.handle_ready(1)
    assert cluster.members[1].read_states == []
    cluster.stabilize()  # the round confirms it
    assert [s.context for s in cluster.members[1].read_states] == [b"late"]
    # That round's heartbeat was answered: a new lease from the time it was sent.
    cluster.members[1].read_states.clear()
    cluster[1].read_index(b"again")
    cluster.handle_ready(1)
    assert [s.context for s in cluster.members[1].read_states] == [b"again"]


def test_a_new_leader_has_no_lease_until_a_quorum_answers_a_heartbeat() -> None:
    cluster = LocalCluster(lease_duration=LEASE)
    cluster.elect(1)  # the election and the no-op commit answered appends, not heartbeats
    cluster.delivered.clear()
    cluster[1].read_index(b"r")
    cluster.handle_ready(1)
    assert cluster.members[1].read_states == []
    cluster.stabilize()
    assert len(_beats(cluster)) == 2


def test_one_answer_is_not_a_quorum_of_five() -> None:
    cluster = LocalCluster((1, 2, 3, 4, 5), lease_duration=LEASE)
    cluster.elect(1)
    # Only follower 2 hears (and answers) the heartbeat: 2 of 5 is no quorum.
    cluster.partition([1, 2], [3, 4, 5])
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    cluster[1].read_index(b"r")
    cluster.stabilize()
    assert cluster.members[1].read_states == []
    cluster.heal()
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    assert [s.context for s in cluster.members[1].read_states] == [b"r"]


def test_a_forwarded_read_is_answered_on_the_lease_too() -> None:
    cluster = _leased_cluster()
    cluster.delivered.clear()
    cluster[2].read_index(b"from-2")
    cluster.stabilize()
    assert [s.context for s in cluster.members[2].read_states] == [b"from-2"]
    assert _beats(cluster) == []


def test_a_leadership_transfer_ends_the_lease_for_the_rest_of_the_term() -> None:
    cluster = _leased_cluster()
    # The TimeoutNow is lost: the leader keeps leading, but its target may still win a
    # vote past the followers' lease at any time, so the leader must not read on it.
    cluster.drop_if(lambda m: isinstance(m, TimeoutNow))
    cluster[1].transfer_leadership(2)
    cluster.stabilize()
    assert cluster[1].role is Role.LEADER
    cluster.tick(node_ids=[1])  # a heartbeat answered by everyone
    cluster.stabilize()
    _read_takes_a_round(cluster)


def test_an_answer_to_a_heartbeat_never_sent_does_not_extend_the_lease() -> None:
    cluster = LocalCluster(lease_duration=LEASE)
    cluster.elect(1)
    leader = cluster[1]
    term = leader.term
    for sender in (2, 3):
        forged = HeartbeatResponse(
            to=1, sender=sender, term=term, context=(10**6).to_bytes(8, "big")
        )
        leader.step(forged)
    leader.read_index(b"r")
    cluster.handle_ready(1)
    assert cluster.members[1].read_states == []


def test_a_restarted_member_refuses_votes_for_an_election_timeout() -> None:
    """The lease of leader 1 rests on 3's answer. 3 restarts and 2, cut off from 1,
    campaigns: if 3 voted at once, 2 would lead and commit while 1 still answers
    reads from its old commit index."""
    cluster = _leased_cluster()
    cluster.partition([1], [2, 3])
    cluster.crash(3)
    cluster.restart(3)
    cluster[2].campaign()
    cluster.stabilize()
    assert cluster[2].role is not Role.LEADER
    cluster[1].read_index(b"still-leader")
    cluster.handle_ready(1)
    assert [s.context for s in cluster.members[1].read_states] == [b"still-leader"]
    # One election timeout of 3's own ticks later, 3 votes again.
    cluster.tick(node_ids=[3], times=cluster[3]._election_tick)
    cluster[2].campaign()
    cluster.stabilize()
    assert cluster[2].role is Role.LEADER


def test_without_a_lease_a_restarted_member_votes_at_once() -> None:
    # The control for the test above: the refusal comes from the lease setting.
    cluster = _leased_cluster(lease=0.0)
    cluster.partition([1], [2, 3])
    cluster.crash(3)
    cluster.restart(3)
    cluster[2].campaign()
    cluster.stabilize()
    assert cluster[2].role is Role.LEADER


def test_a_fresh_member_has_nothing_to_refuse_for() -> None:
    cluster = LocalCluster(lease_duration=LEASE)
    cluster.elect(2)  # no member has a term of its own yet: the first election is at once
    assert cluster[2].role is Role.LEADER


@pytest.mark.parametrize("check_quorum", [True, False])
def test_a_lease_needs_a_clock_and_check_quorum(check_quorum: bool) -> None:
    config = RaftConfig(id=1, lease_duration=1.0, check_quorum=check_quorum)
    bootstrap = ConfState(voters=frozenset({1, 2, 3}))
    with pytest.raises(ValueError, match="lease"):
        RaftNode(config, random.Random(0), bootstrap=bootstrap)
    if not check_quorum:
        with pytest.raises(ValueError, match="lease"):
            RaftNode(config, random.Random(0), bootstrap=bootstrap, clock=lambda: 0.0)
