"""Leadership transfer with TimeoutNow."""

from __future__ import annotations

import pytest

from pnyx.core.errors import ProposalDroppedError
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import AppendRequest, AppendResponse, Role, TimeoutNow


def test_transfer_to_a_caught_up_follower_sends_timeout_now_at_once() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    term = cluster[1].term
    cluster[1].transfer_leadership(2)
    messages = cluster[1].ready().messages
    assert [m.to for m in messages if isinstance(m, TimeoutNow)] == [2]
    cluster.network.extend(messages)
    cluster.stabilize()
    assert cluster.leader() == 2 and cluster[2].term == term + 1
    assert cluster[1].role is Role.FOLLOWER and cluster[1].leader_id == 2


def test_transfer_to_a_lagging_follower_brings_it_up_to_date_first() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.drop_if(lambda m: isinstance(m, AppendRequest) and m.to == 3)
    for i in range(5):
        cluster[1].propose(b"v%d" % i)
    cluster.stabilize()
    assert cluster[3].last_index < cluster[1].last_index
    target_index = cluster[1].last_index
    cluster[1].transfer_leadership(3)
    assert not any(isinstance(m, TimeoutNow) for m in cluster[1].ready().messages)
    cluster.heal()
    cluster.tick(node_ids=[1])
    assert cluster.leader() == 3
    timeout_at = next(i for i, m in enumerate(cluster.delivered) if isinstance(m, TimeoutNow))
    caught_up = [
        i
        for i, m in enumerate(cluster.delivered)
        if isinstance(m, AppendResponse) and m.sender == 3 and m.index == target_index
    ]
    assert caught_up and caught_up[0] < timeout_at
    assert cluster.members[3].data == [b"v%d" % i for i in range(5)]


def test_proposals_are_refused_while_a_transfer_is_in_progress() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(2)
    cluster[1].transfer_leadership(2)
    with pytest.raises(ProposalDroppedError) as info:
        cluster[1].propose(b"x")
    assert info.value.reason == "leadership transfer in progress"


def test_transfer_is_aborted_after_an_election_timeout_if_the_target_has_not_won() -> None:
    cluster = LocalCluster(election_tick=10)
    cluster.elect(1)
    cluster.isolate(2)
    cluster[1].transfer_leadership(2)
    cluster.tick(node_ids=[1, 3], times=9)
    assert cluster[1].status().lead_transferee == 2
    cluster.tick(node_ids=[1, 3])
    assert cluster[1].status().lead_transferee == 0
    assert cluster[1].role is Role.LEADER
    cluster.propose(1, b"accepted again")
    cluster.spread_commit()
    assert cluster.members[3].data == [b"accepted again"]


def test_transfer_to_a_learner_or_an_unknown_node_is_refused() -> None:
    cluster = LocalCluster(voters=(1, 2, 3), learners=(4,))
    cluster.elect(1)
    for target in (4, 9):
        with pytest.raises(ProposalDroppedError) as info:
            cluster[1].transfer_leadership(target)
        assert info.value.reason == "transfer target is not a voter"
    cluster[1].propose(b"still accepting")


def test_transfer_requested_on_a_follower_is_refused() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    with pytest.raises(ProposalDroppedError) as info:
        cluster[2].transfer_leadership(3)
    assert info.value.reason == "not leader"


def test_a_learner_ignores_timeout_now() -> None:
    cluster = LocalCluster(voters=(1, 2, 3), learners=(4,))
    cluster.elect(1)
    term = cluster[4].term
    cluster[4].step(TimeoutNow(to=4, sender=1, term=term))
    cluster.stabilize()
    assert cluster.leader() == 1 and cluster[4].term == term
