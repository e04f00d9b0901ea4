"""Leader election: randomized timeouts, PreVote, CheckQuorum and the vote rules."""

from __future__ import annotations

import random

from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    NONE,
    AppendRequest,
    AppendResponse,
    ConfState,
    HeartbeatRequest,
    RaftConfig,
    Role,
    VoteRequest,
    VoteResponse,
)

THREE = ConfState(voters=frozenset({1, 2, 3}))


def _node(node_id: int = 1, seed: int = 0, **config: int | bool) -> RaftNode:
    node = RaftNode(
        RaftConfig(id=node_id, **config),  # type: ignore[arg-type]
        random.Random(seed),
        bootstrap=THREE,
    )
    node.advance(node.ready())
    return node


def _ticks_until_campaign(node: RaftNode) -> int:
    for ticks in range(1, 1000):
        node.tick()
        if node.role is not Role.FOLLOWER:
            return ticks
    raise AssertionError("never campaigned")


def test_election_timeout_is_random_in_one_to_two_election_ticks_from_the_injected_rng() -> None:
    timeouts = {_ticks_until_campaign(_node(seed=seed, election_tick=10)) for seed in range(40)}
    assert all(10 <= t < 20 for t in timeouts)
    assert len(timeouts) > 3  # really randomized
    # ...and reproducible: the same seed gives the same timeout.
    assert _ticks_until_campaign(_node(seed=7)) == _ticks_until_campaign(_node(seed=7))


def test_pre_vote_does_not_bump_the_term_until_a_quorum_would_vote() -> None:
    node = _node()
    _ticks_until_campaign(node)
    assert node.role is Role.PRE_CANDIDATE
    assert node.term == 1
    ready = node.ready()
    requests = [m for m in ready.messages if isinstance(m, VoteRequest)]
    assert {m.to for m in requests} == {2, 3}
    assert all(m.pre_vote and m.term == 2 for m in requests)
    assert ready.hard_state is None or ready.hard_state.term == 1
    node.advance(ready)
    node.step(VoteResponse(to=1, sender=2, term=2, granted=True, pre_vote=True))
    assert node.role is Role.CANDIDATE
    assert node.term == 2
    assert node.vote == 1


def test_isolated_node_keeps_its_term_with_pre_vote() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    term = cluster[3].term
    cluster.isolate(3)
    cluster.tick(times=100)
    assert cluster[3].term == term
    assert cluster[3].role is Role.PRE_CANDIDATE


def test_isolated_node_rejoining_does_not_depose_a_healthy_leader() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    term = cluster[1].term
    cluster.isolate(3)
    cluster.tick(times=60)
    cluster.heal()
    cluster.tick(times=60)
    assert cluster.leader() == 1
    assert cluster[1].term == term
    assert cluster[3].leader_id == 1


def test_stale_term_vote_responses_are_ignored() -> None:
    node = _node(pre_vote=False)
    node.campaign()
    node.advance(node.ready())
    node.step(VoteResponse(to=1, sender=2, term=1, granted=True))
    node.step(VoteResponse(to=1, sender=3, term=1, granted=True))
    node.campaign()  # term 3: the votes of term 2 must not carry over either
    node.advance(node.ready())
    node.step(VoteResponse(to=1, sender=2, term=2, granted=True))
    assert node.role is Role.CANDIDATE
    node.step(VoteResponse(to=1, sender=2, term=3, granted=True))
    assert node.role is Role.LEADER


def test_pre_vote_answers_are_not_counted_in_the_real_election() -> None:
    node = _node(pre_vote=False)
    node.campaign()
    assert node.term == 2
    node.step(VoteResponse(to=1, sender=2, term=2, granted=True, pre_vote=True))
    assert node.role is Role.CANDIDATE


def test_votes_from_non_voters_are_not_counted() -> None:
    node = _node(pre_vote=False)
    node.campaign()
    node.step(VoteResponse(to=1, sender=9, term=2, granted=True))
    assert node.role is Role.CANDIDATE


def test_candidate_that_a_quorum_rejects_becomes_follower() -> None:
    node = _node(pre_vote=False)
    node.campaign()
    node.step(VoteResponse(to=1, sender=2, term=2, granted=False))
    assert node.role is Role.CANDIDATE
    node.step(VoteResponse(to=1, sender=3, term=2, granted=False))
    assert node.role is Role.FOLLOWER


def test_a_node_votes_at_most_once_per_term() -> None:
    node = _node()
    node.step(VoteRequest(to=1, sender=2, term=2, last_log_index=3, last_log_term=1))
    node.step(VoteRequest(to=1, sender=3, term=2, last_log_index=3, last_log_term=1))
    # The first candidate may ask again (a retransmission) and gets the same answer.
    node.step(VoteRequest(to=1, sender=2, term=2, last_log_index=3, last_log_term=1))
    answers = [m for m in node.ready().messages if isinstance(m, VoteResponse)]
    assert [(m.to, m.granted) for m in answers] == [(2, True), (3, False), (2, True)]
    assert node.vote == 2


def test_vote_refused_to_a_candidate_whose_log_is_less_up_to_date() -> None:
    node = _node()
    node.step(VoteRequest(to=1, sender=2, term=2, last_log_index=2, last_log_term=1))
    (answer,) = node.ready().messages
    assert isinstance(answer, VoteResponse) and not answer.granted
    assert node.vote == NONE


def test_granted_vote_leaves_in_the_same_ready_as_the_hard_state_recording_it() -> None:
    node = _node()
    node.step(VoteRequest(to=1, sender=2, term=2, last_log_index=3, last_log_term=1))
    ready = node.ready()
    assert ready.hard_state is not None
    assert (ready.hard_state.term, ready.hard_state.vote) == (2, 2)
    assert ready.must_sync
    assert any(isinstance(m, VoteResponse) and m.granted for m in ready.messages)


def test_vote_survives_a_restart_so_no_second_vote_in_the_same_term() -> None:
    cluster = LocalCluster()
    cluster.handle_all_ready()
    cluster[1].step(VoteRequest(to=1, sender=2, term=2, last_log_index=3, last_log_term=1))
    cluster.handle_ready(1)
    cluster.crash(1)
    node = cluster.restart(1)
    node.step(VoteRequest(to=1, sender=3, term=2, last_log_index=3, last_log_term=1))
    answers = [m for m in node.ready().messages if isinstance(m, VoteResponse)]
    assert [(m.to, m.granted) for m in answers] == [(3, False)]


def test_follower_that_heard_from_the_leader_recently_rejects_pre_votes() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    follower = cluster[2]
    term = follower.term
    follower.step(
        VoteRequest(
            to=2, sender=3, term=term + 1, last_log_index=100, last_log_term=term, pre_vote=True
        )
    )
    follower.step(
        VoteRequest(to=2, sender=3, term=term + 1, last_log_index=100, last_log_term=term)
    )
    answers = [m for m in follower.ready().messages if isinstance(m, VoteResponse)]
    assert answers and not any(m.granted for m in answers)
    assert follower.term == term and follower.leader_id == 1


def test_leader_transfer_vote_request_ignores_the_leader_lease() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    follower = cluster[2]
    term = follower.term
    follower.step(
        VoteRequest(
            to=2,
            sender=3,
            term=term + 1,
            last_log_index=100,
            last_log_term=term,
            leader_transfer=True,
        )
    )
    answers = [m for m in follower.ready().messages if isinstance(m, VoteResponse)]
    assert [m.granted for m in answers] == [True]
    assert follower.term == term + 1


def test_leader_that_loses_its_quorum_steps_down_within_an_election_timeout() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(1)
    ticks = cluster.tick_until(lambda: cluster[1].role is not Role.LEADER, node_ids=[1])
    assert ticks <= 2 * 10
    assert cluster[1].leader_id == NONE


def test_leader_with_a_live_quorum_stays_leader() -> None:
    cluster = LocalCluster(voters=(1, 2, 3, 4, 5))
    cluster.elect(1)
    cluster.partition({1, 2, 3}, {4, 5})
    cluster.tick(times=100)
    assert cluster[1].role is Role.LEADER


def test_majority_side_elects_a_new_leader_and_old_leader_rejoins_as_follower() -> None:
    cluster = LocalCluster(voters=(1, 2, 3, 4, 5))
    cluster.elect(1)
    cluster.partition({1, 2}, {3, 4, 5})
    cluster.tick_until(lambda: cluster.leader() in (3, 4, 5))
    new_leader = cluster.leader()
    cluster.heal()
    cluster.tick(times=30)
    assert cluster.leader() == new_leader
    assert cluster[1].role is Role.FOLLOWER and cluster[1].leader_id == new_leader


def test_stale_leader_learns_the_newer_term_from_a_follower_and_steps_down() -> None:
    node = _node()
    node.step(AppendResponse(to=1, sender=2, term=5, index=0))
    assert node.term == 5 and node.role is Role.FOLLOWER
    follower = _node(2)
    follower.step(HeartbeatRequest(to=2, sender=3, term=4, commit=0))
    follower.advance(follower.ready())
    follower.step(
        AppendRequest(
            to=2, sender=1, term=2, prev_log_index=3, prev_log_term=1, entries=(), commit=3
        )
    )
    (answer,) = follower.ready().messages
    assert isinstance(answer, AppendResponse) and answer.term == 4 and answer.to == 1


def test_candidate_of_the_same_term_steps_down_on_hearing_from_the_leader() -> None:
    node = _node(pre_vote=False)
    node.campaign()
    node.step(HeartbeatRequest(to=1, sender=2, term=2, commit=0))
    assert node.role is Role.FOLLOWER and node.leader_id == 2 and node.term == 2


def test_a_node_that_is_not_a_voter_of_its_configuration_never_campaigns() -> None:
    joining = RaftNode(RaftConfig(id=4), random.Random(1))
    for _ in range(200):
        joining.tick()
    joining.campaign()
    assert joining.role is Role.FOLLOWER
    assert not joining.ready().messages


def test_election_is_safe_under_random_message_loss() -> None:
    """At most one leader per term, over many seeds with lossy links."""
    for seed in range(15):
        cluster = LocalCluster(voters=(1, 2, 3, 4, 5), seed=seed)
        rng = random.Random(seed)
        cluster.drop_if(lambda _m, rng=rng: rng.random() < 0.3)  # type: ignore[misc]
        leaders: dict[int, int] = {}
        for _ in range(150):
            cluster.tick()
            for node_id, member in cluster.members.items():
                if member.node.role is Role.LEADER:
                    assert leaders.setdefault(member.node.term, node_id) == node_id
        assert leaders  # progress despite the loss


def test_elections_work_without_pre_vote_and_check_quorum() -> None:
    cluster = LocalCluster(pre_vote=False, check_quorum=False)
    cluster.tick_until(lambda: cluster.leader() != NONE)
    leader = cluster.leader()
    cluster.isolate(leader)
    cluster.tick_until(
        lambda: (
            cluster.leader() not in (NONE, leader)
            or (sum(cluster[n].role is Role.LEADER for n in (1, 2, 3)) == 2)
        )
    )
    terms = [cluster[n].term for n in (1, 2, 3) if cluster[n].role is Role.LEADER]
    assert len(terms) == len(set(terms))  # two "leaders" at most, never in the same term


def test_followers_that_were_busy_give_the_leader_as_long_again_before_electing() -> None:
    """``defer_timeouts``: members that applied a long entry wait that long again for a
    leader that may still be applying it; then they elect as usual."""
    cluster = LocalCluster(election_tick=10)
    cluster.elect(1)
    cluster.isolate(1)  # from here on the leader is silent, as if still busy
    for node_id in (2, 3):
        cluster[node_id].defer_timeouts(40)
    cluster.tick(node_ids=[2, 3], times=40 + 10 - 1)
    assert cluster[2].role is Role.FOLLOWER and cluster[3].role is Role.FOLLOWER
    assert cluster[2].leader_id == 1 and cluster[3].leader_id == 1
    ticks = cluster.tick_until(lambda: cluster.leader() in (2, 3), node_ids=[2, 3])
    assert ticks <= 2 * 10 + 10


def test_a_leader_that_was_busy_gives_its_quorum_as_long_again() -> None:
    cluster = LocalCluster(election_tick=10)
    cluster.elect(1)
    cluster.isolate(1)
    cluster[1].defer_timeouts(30)
    cluster.tick(node_ids=[1], times=30 + 10 - 1)
    assert cluster[1].role is Role.LEADER
    ticks = cluster.tick_until(lambda: cluster[1].role is not Role.LEADER, node_ids=[1])
    assert ticks <= 2 * 10


def test_a_deferral_is_capped_at_twenty_election_timeouts() -> None:
    cluster = LocalCluster(election_tick=10)
    cluster.elect(1)
    cluster.isolate(1)
    cluster[2].defer_timeouts(10**9)
    ticks = cluster.tick_until(lambda: cluster[2].role is not Role.FOLLOWER, node_ids=[2])
    assert 20 * 10 <= ticks <= 20 * 10 + 2 * 10
