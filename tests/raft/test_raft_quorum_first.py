"""``RaftConfig.quorum_first``: at low load a new entry goes at once only to the followers
a quorum needs; the spare voters get it at the leader's next tick. Under load, or for a
follower whose client waits, everyone gets it at once."""

from __future__ import annotations

from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import AppendRequest, AppendResponse, HeartbeatResponse


def _cluster(voters: tuple[int, ...] = (1, 2, 3), learners: tuple[int, ...] = ()) -> LocalCluster:
    cluster = LocalCluster(voters, learners, heartbeat_tick=5, quorum_first=True)
    cluster.elect(1)
    cluster.tick(times=5)  # past the election's heartbeat
    cluster.stabilize()
    return cluster


def _appends_with_entries(cluster: LocalCluster) -> list[int]:
    return sorted(m.to for m in cluster.delivered if isinstance(m, AppendRequest) and m.entries)


def test_a_lone_entry_goes_to_one_follower_at_once_and_to_the_other_at_the_tick() -> None:
    cluster = _cluster()
    cluster.delivered.clear()
    cluster.propose(1, b"x")
    # Ties break to the lower id: follower 2 is the one a quorum needs.
    assert _appends_with_entries(cluster) == [2]
    assert cluster[1].commit_index == cluster[1].last_index  # committed with 1 and 2
    assert cluster[3].last_index < cluster[1].last_index
    cluster.delivered.clear()
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    assert _appends_with_entries(cluster) == [3]
    assert cluster[3].last_index == cluster[1].last_index
    assert all(cluster.members[n].data == [b"x"] for n in (1, 2, 3))


def test_without_it_every_follower_gets_the_entry_at_once() -> None:
    cluster = LocalCluster(heartbeat_tick=5)
    cluster.elect(1)
    cluster.tick(times=5)
    cluster.stabilize()
    cluster.delivered.clear()
    cluster.propose(1, b"x")
    assert _appends_with_entries(cluster) == [2, 3]


def test_under_load_everyone_gets_every_entry_at_once() -> None:
    cluster = _cluster()
    leader = cluster[1]
    leader.propose(b"a")
    first = cluster.handle_ready(1)
    assert first is not None
    assert sorted(m.to for m in first.messages if isinstance(m, AppendRequest)) == [2]
    leader.propose(b"b")  # "a" is still in flight to follower 2: not idle
    second = cluster.handle_ready(1)
    assert second is not None
    sent = {m.to: m for m in second.messages if isinstance(m, AppendRequest) and m.entries}
    assert sorted(sent) == [2, 3]
    assert [e.data for e in sent[3].entries] == [b"a", b"b"]  # 3 catches up as well
    cluster.stabilize()
    cluster.spread_commit()
    assert all(cluster.members[n].data == [b"a", b"b"] for n in (1, 2, 3))


def test_a_follower_whose_client_forwarded_a_write_is_never_left_for_later() -> None:
    cluster = _cluster()
    cluster.delivered.clear()
    cluster[3].propose(b"via-3")
    cluster.stabilize()
    assert 3 in _appends_with_entries(cluster)
    assert cluster.members[3].data == [b"via-3"]


def test_when_the_needed_follower_is_cut_off_the_spare_one_commits_at_the_next_tick() -> None:
    cluster = _cluster()
    cluster.isolate(2)
    cluster.propose(1, b"x")
    assert cluster[1].commit_index < cluster[1].last_index  # waits for 2, which is gone
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    assert cluster[1].commit_index == cluster[1].last_index  # 3 got it at the tick
    # Now 3 is the most up to date: the next entry goes to 3 at once.
    cluster.delivered.clear()
    cluster.propose(1, b"y")
    assert _appends_with_entries(cluster) == [3]
    assert cluster[1].commit_index == cluster[1].last_index


def test_five_voters_send_at_once_to_two_and_learners_at_once_too() -> None:
    cluster = _cluster((1, 2, 3, 4, 5), learners=(6,))
    cluster.delivered.clear()
    cluster.propose(1, b"x")
    assert _appends_with_entries(cluster) == [2, 3, 6]
    assert cluster[1].commit_index == cluster[1].last_index
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    assert all(cluster[n].last_index == cluster[1].last_index for n in (2, 3, 4, 5, 6))


def test_a_follower_left_for_later_gets_entries_and_commit_together_at_the_tick() -> None:
    cluster = _cluster()
    leader = cluster[1]
    cluster.propose(1, b"x")  # committed with follower 2; follower 3 left for later
    assert leader.has_unsent_commit()  # follower 2 holds "x" and was not told
    leader.send_commit_updates(include_later=False)  # what the server's notice does
    cluster.stabilize()
    assert cluster.members[2].data == [b"x"]
    assert cluster[3].last_index < leader.last_index  # still for later, not a commit update
    assert not leader.has_unsent_commit()
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    assert cluster.members[3].data == [b"x"]


def test_before_a_long_apply_the_spare_follower_gets_its_entries_and_the_commit_too() -> None:
    """``send_commit_updates()`` is what the server calls before applying an entry of
    unbounded cost: every follower must be able to apply it meanwhile, the spare one
    included (else it hears nothing during the leader's stall and suspects it)."""
    cluster = _cluster()
    leader = cluster[1]
    cluster.propose(1, b"delete a million keys")
    assert cluster[3].last_index < leader.last_index  # left for the next tick
    leader.send_commit_updates()
    cluster.stabilize()
    assert cluster.members[3].data == [b"delete a million keys"]
    # The commit notice of the server leaves it for the tick instead.
    cluster.propose(1, b"small")
    leader.send_commit_updates(include_later=False)
    cluster.stabilize()
    assert cluster.members[2].data[-1] == b"small"
    assert cluster.members[3].data[-1] == b"delete a million keys"


def test_an_eager_follower_gets_entries_and_each_commit_at_once() -> None:
    # Follower 3 has watchers (RaftNode.set_eager): its answers say so, and the leader
    # never leaves it for the next tick, and tells it of every commit right away.
    cluster = _cluster()
    cluster[3].set_eager(True)
    cluster.tick(times=5)  # a heartbeat round carries the news
    cluster.stabilize()
    assert any(isinstance(m, HeartbeatResponse) and m.eager for m in cluster.delivered)
    for value in (b"a", b"b"):
        cluster.delivered.clear()
        cluster.propose(1, value)  # no tick: whatever 3 learns, it learns at once
        assert _appends_with_entries(cluster) == [2, 3]
        assert cluster[3].commit_index == cluster[1].commit_index == cluster[1].last_index
        assert all(
            m.eager for m in cluster.delivered if isinstance(m, AppendResponse) and m.sender == 3
        )
    assert cluster.members[3].data == [b"a", b"b"]


def test_an_eager_follower_that_stops_being_eager_waits_for_the_tick_again() -> None:
    cluster = _cluster()
    cluster[3].set_eager(True)
    cluster.tick(times=5)
    cluster.stabilize()
    cluster[3].set_eager(False)
    cluster.tick(times=5)
    cluster.stabilize()
    cluster.delivered.clear()
    cluster.propose(1, b"x")
    assert _appends_with_entries(cluster) == [2]
    assert cluster[3].commit_index < cluster[1].commit_index


def test_before_a_long_apply_a_follower_whose_answer_is_on_its_way_hears_the_commit() -> None:
    """The spare follower was sent the long entry at a tick and its answer is still on
    the way when the entry commits (with follower 2). The leader owes it the commit only
    once that answer arrives, which would be after the leader's long apply: it hears
    nothing meanwhile and suspects the leader. ``send_commit_updates()`` (what the server
    calls before such an apply) tells it at once."""
    cluster = _cluster()
    leader = cluster[1]
    cluster.drop_if(lambda m: m.sender == 3 and m.to == 1)  # 3's answers are delayed
    cluster.drop_if(lambda m: m.to == 2)  # and 2 does not get it at once either
    cluster.propose(1, b"delete a million keys")
    cluster.tick(node_ids=[1])  # the tick sends it to 3 (and 2): 3 holds it
    index = leader.last_index
    assert cluster[3].last_index == index and cluster[3].commit_index < index
    cluster.filters.pop()  # 2 is reachable again: a heartbeat round gets it the entry
    cluster.tick(node_ids=[1], times=5)
    assert leader.commit_index == index
    assert cluster[3].commit_index < index  # nothing told 3: its answer is still "on its way"
    leader.send_commit_updates()
    cluster.stabilize()
    assert cluster[3].commit_index == index
    assert cluster.members[3].data == [b"delete a million keys"]
