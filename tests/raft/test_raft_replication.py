"""Log replication (batching, probe/replicate flow control, fast back-off, conflict
repair) and the commit rule."""

from __future__ import annotations

import random

from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.testing import LocalCluster
from pnyx.core.raft.types import (
    AppendRequest,
    AppendResponse,
    ConfState,
    Entry,
    HeartbeatRequest,
    Message,
    RaftConfig,
    Role,
)


def _append_requests(messages: object, to: int) -> list[AppendRequest]:
    return [m for m in messages if isinstance(m, AppendRequest) and m.to == to]  # type: ignore[attr-defined]


def _leader_with_silent_followers(**config: int | bool) -> tuple[LocalCluster, RaftNode]:
    """Node 1 leads with both followers matched; then the followers' answers are lost."""
    cluster = LocalCluster(**config)
    cluster.elect(1)
    cluster.drop_if(lambda m: m.to == 1)
    return cluster, cluster[1]


def test_append_requests_batch_many_entries_bounded_by_max_append_bytes() -> None:
    _cluster, leader = _leader_with_silent_followers(max_append_bytes=100)
    for i in range(10):
        leader.propose(b"%029d" % i)  # 29 bytes each: three fit in 100 bytes
    requests = _append_requests(leader.ready().messages, to=2)
    assert len(requests) == 4
    assert [len(r.entries) for r in requests] == [3, 3, 3, 1]
    assert all(sum(len(e.data) for e in r.entries) <= 100 for r in requests)
    indexes = [e.index for r in requests for e in r.entries]
    assert indexes == list(range(indexes[0], indexes[0] + 10))


def test_an_entry_larger_than_max_append_bytes_is_still_sent_alone() -> None:
    _cluster, leader = _leader_with_silent_followers(max_append_bytes=10)
    leader.propose(b"x" * 50)
    leader.propose(b"y" * 50)
    requests = _append_requests(leader.ready().messages, to=2)
    assert [len(r.entries) for r in requests] == [1, 1]


def test_many_proposals_between_readys_go_out_in_one_append_request() -> None:
    _cluster, leader = _leader_with_silent_followers()
    for i in range(100):
        leader.propose(b"p%d" % i)
    requests = _append_requests(leader.ready().messages, to=3)
    assert len(requests) == 1 and len(requests[0].entries) == 100


def test_replicate_state_pipelines_at_most_max_inflight_append_requests() -> None:
    _cluster, leader = _leader_with_silent_followers(max_inflight=3)
    sent = 0
    for i in range(10):
        leader.propose(b"p%d" % i)
        ready = leader.ready()
        sent += len(_append_requests(ready.messages, to=2))
        leader.advance(ready)
    assert sent == 3
    assert leader.status().progress[2].state == "replicate"


def test_probe_state_keeps_one_append_request_in_flight_until_answered() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    leader = cluster[1]
    leader.report_unreachable(2)
    assert leader.status().progress[2].state == "probe"
    cluster.drop_if(lambda m: m.to in {1, 2})
    sent = 0
    for i in range(5):
        leader.propose(b"p%d" % i)
        ready = leader.ready()
        sent += len(_append_requests(ready.messages, to=2))
        leader.advance(ready)
    assert sent == 1
    # An answer moves the follower to REPLICATE and the rest is sent.
    cluster.heal()
    cluster.stabilize()
    leader.tick()
    cluster.stabilize()
    assert leader.status().progress[2].state == "replicate"
    assert cluster[2].last_index == leader.last_index


def test_heartbeat_answer_unblocks_a_full_inflight_window() -> None:
    cluster, leader = _leader_with_silent_followers(max_inflight=1)
    leader.propose(b"a")
    leader.advance(leader.ready())
    leader.propose(b"b")
    assert not _append_requests(leader.ready().messages, to=2)
    cluster.heal()
    cluster.network.clear()  # the first AppendRequest is lost
    cluster.tick(node_ids=[1])
    cluster.stabilize()
    assert cluster[2].last_index == leader.last_index


def test_heartbeats_carry_min_of_leader_commit_and_follower_match() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    cluster.isolate(3)
    cluster.propose(1, b"x")
    leader = cluster[1]
    match_3 = leader.status().progress[3].match
    assert match_3 < leader.commit_index
    leader.tick()
    beats = {m.to: m for m in leader.ready().messages if isinstance(m, HeartbeatRequest)}
    assert beats[2].commit == leader.commit_index
    assert beats[3].commit == match_3


def test_heartbeats_are_sent_every_heartbeat_tick() -> None:
    cluster = LocalCluster(heartbeat_tick=3, election_tick=10)
    cluster.elect(1)
    counts = []
    for _ in range(6):
        cluster[1].tick()
        counts.append(sum(isinstance(m, HeartbeatRequest) for m in cluster[1].ready().messages))
    assert counts == [0, 0, 2, 0, 0, 2]


def test_follower_with_a_conflicting_suffix_is_repaired() -> None:
    cluster = LocalCluster()
    cluster.set_log(1, [2, 2, 4, 4])
    cluster.set_log(2, [2, 2, 4, 4])
    cluster.set_log(3, [2, 2, 3, 3, 3, 3, 3])
    cluster.elect(1)
    cluster.propose(1, b"new")
    cluster.spread_commit()
    leader = cluster[1]
    for node_id in (2, 3):
        assert cluster[node_id].entries(1, 100) == leader.entries(1, 100)
    assert cluster.members[3].data == cluster.members[1].data


def test_rejection_backs_off_a_whole_conflicting_term_per_round_trip() -> None:
    cluster = LocalCluster()
    cluster.set_log(1, [1, 1] + [4] * 30)
    cluster.set_log(2, [1, 1] + [4] * 30)
    cluster.set_log(3, [1, 1] + [2] * 20 + [3] * 20)
    cluster.elect(1)
    rejections = [
        m for m in cluster.delivered if isinstance(m, AppendResponse) and m.sender == 3 and m.reject
    ]
    assert 1 <= len(rejections) <= 2  # one per conflicting term at most, not one per entry
    assert cluster[3].entries(1, 100) == cluster[1].entries(1, 100)


def test_follower_behind_the_leader_catches_up_with_hint_when_its_log_is_short() -> None:
    cluster = LocalCluster()
    cluster.set_log(1, [2] * 40)
    cluster.set_log(2, [2] * 40)
    cluster.set_log(3, [2] * 3)
    cluster.elect(1)
    rejections = [
        m for m in cluster.delivered if isinstance(m, AppendResponse) and m.sender == 3 and m.reject
    ]
    assert len(rejections) == 1
    assert cluster[3].last_index == cluster[1].last_index


def _follower() -> RaftNode:
    node = RaftNode(
        RaftConfig(id=2), random.Random(0), bootstrap=ConfState(voters=frozenset({1, 2, 3}))
    )
    node.advance(node.ready())
    return node


def _append(prev: int, prev_term: int, terms: list[int], commit: int = 3, term: int = 2) -> Message:
    entries = tuple(
        Entry(t, prev + 1 + i, data=b"%d:%d" % (t, prev + 1 + i)) for i, t in enumerate(terms)
    )
    return AppendRequest(
        to=2,
        sender=1,
        term=term,
        prev_log_index=prev,
        prev_log_term=prev_term,
        entries=entries,
        commit=commit,
    )


def test_late_append_request_does_not_truncate_entries_a_newer_one_appended() -> None:
    follower = _follower()
    follower.step(_append(3, 1, [2, 2, 2, 2]))  # indexes 4..7
    late = _append(3, 1, [2, 2])  # an older, reordered request: indexes 4..5
    follower.step(late)
    assert follower.last_index == 7
    answers = [m for m in follower.ready().messages if isinstance(m, AppendResponse)]
    assert [(m.index, m.reject) for m in answers] == [(7, False), (5, False)]


def test_follower_truncates_only_from_the_first_conflicting_entry() -> None:
    follower = _follower()
    follower.step(_append(3, 1, [2, 2, 2, 2], term=2))  # 4..7 at term 2
    kept = follower.entries(4, 6)
    follower.step(_append(3, 1, [2, 2, 3], term=3))  # 6 conflicts: 6..7 replaced by one entry
    assert follower.entries(4, 6) == kept  # the same objects: not rewritten
    assert follower.last_index == 6 and follower.term_at(6) == 3
    ready = follower.ready()
    assert [e.index for e in ready.entries] == [4, 5, 6] or ready.entries[0].index == 6


def test_replaced_suffix_is_handed_out_again_for_persisting() -> None:
    follower = _follower()
    follower.step(_append(3, 1, [2, 2, 2, 2]))
    follower.advance(follower.ready())
    follower.step(_append(4, 2, [3], term=3))
    ready = follower.ready()
    assert [(e.index, e.term) for e in ready.entries] == [(5, 3)]
    assert ready.must_sync


def test_append_rejected_when_the_previous_entry_does_not_match() -> None:
    follower = _follower()
    follower.step(_append(10, 2, [2]))
    (answer,) = follower.ready().messages
    assert isinstance(answer, AppendResponse)
    assert (
        answer.reject and answer.index == 10 and answer.reject_hint == 3 and answer.hint_term == 1
    )
    assert follower.last_index == 3


def test_follower_commit_is_capped_by_the_entries_it_was_sent() -> None:
    follower = _follower()
    follower.step(_append(3, 1, [2, 2], commit=50))
    assert follower.commit_index == 5


def test_append_acknowledgement_leaves_in_the_same_ready_as_the_entries() -> None:
    follower = _follower()
    follower.step(_append(3, 1, [2, 2]))
    ready = follower.ready()
    assert [e.index for e in ready.entries] == [4, 5] and ready.must_sync
    assert any(isinstance(m, AppendResponse) and m.index == 5 for m in ready.messages)


# --- commit ----------------------------------------------------------------------------


def test_leader_counts_replicas_only_for_entries_of_its_current_term() -> None:
    cluster = LocalCluster()
    cluster.set_log(1, [2])  # index 4, term 2: on nodes 1 and 2, a majority
    cluster.set_log(2, [2])
    cluster.set_log(3, [])
    cluster.drop_if(lambda m: isinstance(m, AppendRequest) and bool(m.entries))
    cluster.elect(1)  # term 3; its no-op (index 5) cannot reach anyone
    leader = cluster[1]
    leader.step(AppendResponse(to=1, sender=2, term=leader.term, index=4))
    cluster.stabilize()
    assert leader.status().progress[2].match == 4
    assert leader.commit_index == 3  # index 4 is on a majority but of an older term
    cluster.heal()
    leader.tick()
    cluster.stabilize()
    assert leader.commit_index == 5  # the no-op commits, and index 4 with it


def test_leader_own_entries_count_only_after_the_application_persisted_them() -> None:
    cluster = LocalCluster(voters=(1,))
    cluster.elect(1)
    leader = cluster[1]
    commit = leader.commit_index
    leader.propose(b"x")
    ready = leader.ready()
    assert leader.commit_index == commit
    assert not any(e.data == b"x" for e in ready.committed_entries)
    leader.advance(ready)
    assert leader.commit_index == commit + 1
    assert [e.data for e in leader.ready().committed_entries] == [b"x"]


def test_leader_alone_does_not_commit_without_a_quorum_of_voters() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    commit = cluster[1].commit_index
    cluster.isolate(1)
    cluster.propose(1, b"x")
    assert cluster[1].commit_index == commit
    cluster.heal()
    cluster.tick(node_ids=[1])
    assert cluster[1].commit_index == cluster[1].last_index


def test_commit_needs_the_followers_persisted_acknowledgement() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    leader = cluster[1]
    leader.propose(b"x")
    cluster.handle_ready(1)
    cluster.deliver()  # the followers got the entries but have not persisted them
    cluster.handle_ready(1)
    assert leader.commit_index < leader.last_index
    cluster.stabilize()
    assert leader.commit_index == leader.last_index


def test_followers_learn_the_commit_index_on_the_leaders_next_append_or_tick() -> None:
    cluster = LocalCluster(heartbeat_tick=5)
    cluster.elect(1)
    cluster.tick(times=5)  # past the election's heartbeat
    cluster.delivered.clear()
    cluster.propose(1, b"x")
    # The commit cost no message of its own: one append and one answer per follower.
    appends = [m for m in cluster.delivered if isinstance(m, AppendRequest)]
    assert sorted(m.to for m in appends) == [2, 3]
    assert cluster.members[1].data == [b"x"]
    # The next append carries it ...
    cluster.propose(1, b"y")
    assert all(cluster.members[n].data == [b"x"] for n in (2, 3))
    # ... and with nothing more to send, the leader's next tick does (not a heartbeat).
    cluster.delivered.clear()
    cluster.spread_commit()
    assert not any(isinstance(m, HeartbeatRequest) for m in cluster.delivered)
    assert all(cluster[n].commit_index == cluster[1].commit_index for n in (2, 3))
    assert all(cluster.members[n].data == [b"x", b"y"] for n in (1, 2, 3))
    # Told once: a quiet leader sends nothing more until its heartbeat.
    cluster.delivered.clear()
    cluster.tick(node_ids=[1])
    assert cluster.delivered == []


def test_logs_and_state_machines_agree_under_random_faults() -> None:
    """Log matching and state machine safety over seeds with loss, partitions, crashes."""
    for seed in range(6):
        rng = random.Random(seed)
        cluster = LocalCluster(voters=(1, 2, 3, 4, 5), seed=seed)
        cluster.drop_if(lambda _m, rng=rng: rng.random() < 0.1)  # type: ignore[misc]
        proposed = 0
        for step in range(300):
            action = rng.random()
            leader = cluster.leader()
            if action < 0.3 and leader:
                try:
                    cluster[leader].propose(b"%d" % proposed)
                    proposed += 1
                except Exception:
                    pass
            elif action < 0.33:
                groups = list(cluster.members)
                rng.shuffle(groups)
                cluster.cut.clear()
                cluster.partition(groups[:2], groups[2:])
            elif action < 0.37:
                cluster.cut.clear()
            elif action < 0.39 and len(cluster.members) == 5:
                cluster.crash(rng.choice(sorted(cluster.members)))
            elif action < 0.45 and cluster.crashed:
                cluster.restart(rng.choice(sorted(cluster.crashed)), seed=step)
            cluster.tick()
        _check_agreement(cluster)


def _check_agreement(cluster: LocalCluster) -> None:
    members = list(cluster.members.values())
    for a in members:
        for b in members:
            common = min(a.node.commit_index, b.node.commit_index)
            assert a.node.entries(1, common + 1) == b.node.entries(1, common + 1)
            shorter = min(len(a.applied), len(b.applied))
            assert a.applied[:shorter] == b.applied[:shorter]
    terms = [m.node.term for m in members if m.node.role is Role.LEADER]
    assert len(terms) == len(set(terms))


def test_leader_needs_its_own_persistence_to_count_itself_toward_a_quorum() -> None:
    cluster = LocalCluster()
    cluster.elect(1)
    leader = cluster[1]
    leader.propose(b"x")
    ready = leader.ready()  # handed out, not yet persisted by the leader's application
    cluster.network.extend(m for m in ready.messages if m.to == 2)
    cluster.deliver()
    cluster.handle_ready(2)
    cluster.deliver()  # node 2's acknowledgement reaches the leader
    assert leader.status().progress[2].match == leader.last_index
    assert leader.commit_index < leader.last_index  # 2 of 3, but the leader's copy isn't durable
    leader.advance(ready)
    assert leader.commit_index == leader.last_index


def test_a_leader_can_tell_followers_of_a_commit_before_it_applies_the_entry() -> None:
    """For an entry that may take long to apply: the Ready that hands it to the leader's
    application also carries the commit index to every follower."""
    cluster = LocalCluster(heartbeat_tick=5)
    cluster.elect(1)
    cluster.tick(times=5)
    leader = cluster[1]
    leader.propose(b"delete a million keys")
    cluster.handle_ready(1)  # persist, send the appends
    cluster.deliver()
    cluster.handle_ready(2)
    cluster.handle_ready(3)
    cluster.deliver()  # the answers: the leader commits
    index = leader.last_index
    assert leader.commit_index == index
    assert [e.data for e in leader.committed_unapplied()] == [b"delete a million keys"]
    leader.send_commit_updates()
    ready = leader.ready()
    assert [e.index for e in ready.committed_entries] == [index]
    told = {m.to: m.commit for m in ready.messages if isinstance(m, AppendRequest)}
    assert told == {2: index, 3: index}
    leader.advance(ready)
    assert leader.committed_unapplied() == ()


def test_without_being_asked_a_leader_applies_a_commit_without_a_message() -> None:
    cluster = LocalCluster(heartbeat_tick=5)
    cluster.elect(1)
    cluster.tick(times=5)
    leader = cluster[1]
    leader.propose(b"x")
    cluster.handle_ready(1)
    cluster.deliver()
    cluster.handle_ready(2)
    cluster.handle_ready(3)
    cluster.deliver()
    ready = leader.ready()
    assert [e.data for e in ready.committed_entries] == [b"x"]
    assert ready.messages == ()
    cluster[2].send_commit_updates()  # a follower has nothing to tell
    assert not cluster[2].has_ready() or cluster[2].ready().messages == ()


def test_a_follower_whose_client_forwarded_a_write_hears_of_its_commit_at_once() -> None:
    """The follower answers its client when it applies the write: it must not wait for
    the leader's next append or tick to learn that the write committed."""
    cluster = LocalCluster(heartbeat_tick=5)
    cluster.elect(1)
    cluster.tick(times=5)
    cluster[2].propose(b"via-2")
    cluster.stabilize()  # no tick
    assert cluster.members[2].data == [b"via-2"]
    assert cluster[2].commit_index == cluster[1].commit_index
    # Follower 3 forwarded nothing: it learns with the next append or tick, as before.
    assert cluster.members[3].data == []
    cluster.spread_commit()
    assert cluster.members[3].data == [b"via-2"]


def test_a_follower_that_asked_for_a_read_index_hears_of_the_commit_at_once() -> None:
    # With a leader lease the answer comes without a heartbeat round, whose heartbeats
    # would otherwise have carried the commit index.
    cluster = LocalCluster(heartbeat_tick=5, lease_duration=100.0)
    cluster.elect(1)
    cluster.tick(times=5)  # a heartbeat round: the lease
    cluster.stabilize()
    cluster.propose(1, b"x")  # committed on the leader; followers not told yet
    assert cluster.members[2].data == []
    cluster[2].read_index(b"r")
    cluster.stabilize()
    (state,) = cluster.members[2].read_states
    assert cluster[2].commit_index >= state.index == cluster[1].commit_index
    assert cluster.members[2].data == [b"x"]  # it can serve the read with no tick


def test_has_unsent_commit_says_whether_a_follower_lacks_a_commit_it_could_have() -> None:
    cluster = LocalCluster(heartbeat_tick=5)
    cluster.elect(1)
    cluster.tick(times=5)
    leader = cluster[1]
    assert not leader.has_unsent_commit()
    cluster.propose(1, b"x")
    assert leader.has_unsent_commit()
    assert not cluster[2].has_unsent_commit()  # only a leader tells
    leader.send_commit_updates()
    cluster.stabilize()
    assert not leader.has_unsent_commit()
    assert all(cluster.members[n].data == [b"x"] for n in (2, 3))


def test_a_leader_can_send_heartbeats_while_its_last_ready_is_being_persisted() -> None:
    """The server takes them out while its WAL write runs: a slow fsync must not
    silence the leader for an election timeout."""
    cluster = LocalCluster(heartbeat_tick=2)
    cluster.elect(1)
    leader = cluster[1]
    leader.propose(b"x")
    in_flight = leader.ready()  # the application is persisting this one
    assert leader.take_heartbeats() == []  # nothing new yet
    for _ in range(2):
        leader.tick()
    beats = leader.take_heartbeats()
    assert sorted(b.to for b in beats) == [2, 3]
    assert all(b.term == leader.term for b in beats)
    cluster.members[1].disk.persist(in_flight)
    leader.advance(in_flight)
    following = leader.ready()
    assert not any(isinstance(m, HeartbeatRequest) for m in following.messages)  # sent once
    assert cluster[2].take_heartbeats() == []  # a follower has none to give
