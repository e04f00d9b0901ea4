"""``Client`` against fake nodes over real ZeroMQ sockets: every operation's wire
exchange, batching, redirects, failover, exactly-once retries, timeouts, watches (resume
without gap or duplicate, compaction, progress) and lease keep-alive."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pnyx.clients import (
    AsyncClient,
    ClientError,
    CompactedError,
    EventType,
    InvalidRequestError,
    LeaseNotFoundError,
    MemberError,
    NoEndpointError,
    TimeoutError,
    UnavailableError,
    WatchBatch,
    _core,
)
from pnyx.clients import _engine as engine_module
from pnyx.clients._core import MAX_WRITES_IN_FLIGHT
from pnyx.clients._engine import Call
from pnyx.core import errors
from pnyx.core.wire import (
    MemberAddRequest,
    PutRequest,
    RangeRequest,
    WatchCreateRequest,
    error_response_from_exception,
)

MakeClient = Callable[..., Any]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def unused_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def of_type(server: Any, message_type: type) -> list[Any]:
    """The envelopes of ``message_type`` that ``server`` received, in order."""
    return [e for e in server.received if type(e.message) is message_type]


def puts(server: Any) -> list[Any]:
    return of_type(server, PutRequest)


def _queue_together(kv: Any, calls: list[Call]) -> None:
    """Queue ``calls`` for the client's engine at once (no call runs them itself), so
    that whoever runs the engine next takes them all in one go."""
    engine = kv._engine
    for call in calls:
        call.lock = threading.Lock()
        call.lock.acquire()
    with engine._lock:
        engine._queue.extend(calls)
        engine._wake_locked()
    engine._work.set()


# --------------------------------------------------------------------------- operations


def test_key_value_operations_round_trip(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    first = kv.put("a/1", "one")
    assert first.revision == 2
    kv.put(b"a/2", b"\xff\x00")
    again = kv.put("a/1", "uno", prev_kv=True)
    assert again.prev_kv is not None and again.prev_kv.value == b"one"

    got = kv.get("a/1")
    assert got.revision == 4
    (item,) = got.kvs
    assert (item.key, item.value, item.version) == (b"a/1", b"uno", 2)
    assert (item.create_revision, item.mod_revision) == (2, 4)

    everything = kv.get("a/", prefix=True)
    assert [k.key for k in everything.kvs] == [b"a/1", b"a/2"]
    assert everything.kvs[1].value == b"\xff\x00"
    limited = kv.get("a/", prefix=True, limit=1, keys_only=True)
    assert (limited.count, limited.more, limited.kvs[0].value) == (2, True, b"")
    assert kv.get("a/", prefix=True, count_only=True).count == 2

    deleted = kv.delete("a/", prefix=True, prev_kv=True)
    assert deleted.deleted == 2 and {k.key for k in deleted.prev_kvs} == {b"a/1", b"a/2"}
    assert kv.get("a/", prefix=True).kvs == ()


def test_transactions(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    claim = kv.txn(
        compare=[kv.cmp.version("jobs/1") == 0],
        success=[kv.op.put("jobs/1", "claimed")],
        failure=[kv.op.get("jobs/1")],
    )
    assert claim.succeeded
    second = kv.txn(
        compare=[kv.cmp.version("jobs/1") == 0],
        success=[kv.op.put("jobs/1", "claimed")],
        failure=[kv.op.get("jobs/1")],
    )
    assert not second.succeeded
    assert second.responses[0].kvs[0].value == b"claimed"  # type: ignore[union-attr]


def test_compaction_and_reads_before_it(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    for value in "abc":
        kv.put("k", value)
    kv.compact(3)
    with pytest.raises(CompactedError) as caught:
        kv.get("k", revision=2)
    assert caught.value.compact_revision == 3


def test_leases(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    lease = kv.lease_grant(30)
    assert lease.ttl == 30 and lease.id
    kv.put("owned", "x", lease=lease.id)
    assert kv.lease_keep_alive_once(lease.id).ttl == 30
    ttl = kv.lease_time_to_live(lease.id, keys=True)
    assert (ttl.granted_ttl, ttl.keys) == (30, (b"owned",))
    assert kv.lease_list().leases == (lease.id,)
    kv.lease_revoke(lease.id)
    assert kv.get("owned").kvs == ()
    assert kv.lease_time_to_live(lease.id).ttl == -1
    with pytest.raises(LeaseNotFoundError):
        kv.lease_keep_alive_once(lease.id)
    with pytest.raises(LeaseNotFoundError):
        kv.lease_revoke(lease.id)


def test_membership_and_status(cluster: list[Any], make_client: MakeClient) -> None:
    kv = make_client([server.endpoint for server in cluster])
    assert [m.id for m in kv.member_list().members] == [1, 2, 3]
    added = kv.member_add("node4", ["tcp://127.0.0.1:9999"], learner=True)
    assert added.member.is_learner and added.member.name == "node4"
    promoted = kv.member_promote(added.member.id)
    assert not [m for m in promoted.members if m.is_learner]
    assert len(kv.member_remove(added.member.id).members) == 3
    with pytest.raises(MemberError):
        kv.member_remove(added.member.id)
    status = kv.status(cluster[2].endpoint)
    assert (status.endpoint, status.member_id, status.leader) == (cluster[2].endpoint, 3, 1)
    assert kv.status().endpoint in kv.endpoints


def test_invalid_requests_fail_locally_and_never_reach_the_node(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    with pytest.raises(InvalidRequestError):
        kv.put("", "empty key")
    with pytest.raises(InvalidRequestError):
        kv.get("b", range_end="a")
    assert of_type(fake, PutRequest) == of_type(fake, RangeRequest) == []


def test_many_calls_queued_together_travel_in_one_message(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    kv.put("warm", "up")
    before = fake.messages
    calls = [
        Call(PutRequest(b"k%d" % i, b"v"), 100 + i, 5.0, client_id=b"test") for i in range(300)
    ]
    _queue_together(kv, calls)
    for call in calls:
        assert call.lock is not None and call.lock.acquire(timeout=10)
        assert call.error is None
    assert fake.messages - before == 1
    assert {e.seq for e in puts(fake)} >= set(range(100, 400))


def test_concurrent_callers_share_messages_and_get_distinct_seqs(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    kv.put("warm", "up")
    barrier = threading.Barrier(20)

    def worker(index: int) -> None:
        barrier.wait()
        for j in range(10):
            kv.put(f"t{index}/{j}", "v")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kv.get("t", range_end="u", count_only=True).count == 200
    tickets = [(e.client_id, e.seq) for e in puts(fake)]
    assert len(tickets) == len(set(tickets)) == 201
    # One client id unless a slow write held its window while 64 newer ones went by.
    assert kv._identity.client_id in {e.client_id for e in puts(fake)}


def test_a_lone_call_does_its_io_in_the_calling_thread(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint], timeout=60.0, attempt_timeout=60.0)
    kv.put("warm", "up")
    engine = kv._engine
    receiving_threads: list[str] = []
    receive = engine._receive

    def spy(connection: Any) -> bool:
        receiving_threads.append(threading.current_thread().name)
        result: bool = receive(connection)
        return result

    engine._receive = spy
    for i in range(5):
        kv.put(f"lone/{i}", "v")
        assert kv.get(f"lone/{i}").kvs[0].value == b"v"
    assert set(receiving_threads) == {threading.current_thread().name}
    # While another call is in flight (its thread runs the engine, waiting for an
    # answer that will not come), a caller joins it instead of doing its own I/O.
    fake.silent = True

    def slow() -> None:
        with contextlib.suppress(ClientError):  # ended by kv.close() below
            kv.get("slow")

    blocked = threading.Thread(target=slow, daemon=True)
    blocked.start()
    wait_until(lambda: any(e.message.key == b"slow" for e in of_type(fake, RangeRequest)))
    fake.silent = False
    receiving_threads.clear()
    assert kv.put("joined", "v").revision > 0
    assert receiving_threads and threading.current_thread().name not in receiving_threads
    kv.close()
    blocked.join(10)
    assert not blocked.is_alive()


def test_a_message_refused_as_a_whole_fails_its_attempts_at_once(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint], timeout=30.0, attempt_timeout=30.0)
    kv.put("warm", "up")
    # One attempt in flight: it was in the refused message; the node's error, at once.
    fake.refuse_messages = 1
    started = time.monotonic()
    with pytest.raises(InvalidRequestError):
        kv.put("k", "v")
    assert time.monotonic() - started < 20  # not the 30 s attempt timeout
    # Several in flight: which were in it is unknown; each fails with an unknown outcome.
    fake.refuse_messages = 1
    calls = [Call(PutRequest(b"k%d" % i, b"v"), 900 + i, 30.0, client_id=b"test") for i in range(3)]
    _queue_together(kv, calls)
    for call in calls:
        assert call.lock is not None and call.lock.acquire(timeout=20)
        assert isinstance(call.error, UnavailableError)
    # ... which the public API retries, exactly once, for a write.
    assert _core.should_retry(PutRequest(b"k"), 7, calls[0].error)
    assert kv.put("after", "v").revision > 0


def test_writes_in_flight_are_capped_per_client_id(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint], timeout=60.0, attempt_timeout=1.0) as kv:
            kv._identity.max_lanes = 2
            await kv.put("warm", "up")
            fake.silent = True
            writes = [asyncio.ensure_future(kv.put(f"w{i}", "v")) for i in range(200)]

            def tickets() -> set[tuple[bytes, int]]:
                return {(e.client_id, e.seq) for e in puts(fake)}

            deadline = time.monotonic() + 20
            while len(tickets()) < 1 + 2 * MAX_WRITES_IN_FLIGHT:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            # Two client ids, each with 64 seqs unanswered: the other 72 writes wait.
            assert kv._identity.in_flight == 2 * MAX_WRITES_IN_FLIGHT
            by_id: dict[bytes, list[int]] = {}
            for client_id, seq in tickets():
                by_id.setdefault(client_id, []).append(seq)
            assert sorted(len(seqs) for seqs in by_id.values()) == [64, 65]  # + the warm-up
            assert max(max(seqs) - min(seqs) for seqs in by_id.values()) <= MAX_WRITES_IN_FLIGHT
            fake.silent = False
            # The node answers the retries; the windows move and everything completes.
            results = await asyncio.gather(*writes)
            assert len({r.revision for r in results}) == 200
            assert len({client_id for client_id, _ in tickets()}) == 2

    asyncio.run(asyncio.wait_for(main(), 60))


# --------------------------------------------------------------------------- failover


def test_not_leader_redirects_to_the_hinted_leader_and_remembers_it(
    cluster: list[Any], make_client: MakeClient
) -> None:
    first, second, _ = cluster
    for server in cluster:
        server.leader_id = 0  # headers name no leader: only the hint tells

    def refuse(server: Any, envelope: Any) -> Any:
        if type(envelope.message) is PutRequest:
            hint = errors.NotLeaderError(leader_hint=second.endpoint)
            return error_response_from_exception(hint)
        return None

    first.hook = refuse
    kv = make_client([first.endpoint, second.endpoint])
    kv.put("k", "1")
    kv.put("k", "2")
    assert len(puts(first)) == 1  # refused once, then the client went to the leader
    assert [e.message.value for e in puts(second)] == [b"1", b"2"]
    # The redirected request kept its exactly-once identity.
    assert puts(first)[0].seq == puts(second)[0].seq


def test_a_refused_connection_fails_over_without_waiting_for_the_attempt_timeout(
    fake: Any, make_client: MakeClient
) -> None:
    # With the attempt timeout equal to the call's, only connection-failure detection
    # leaves time for a second attempt.
    kv = make_client([unused_endpoint(), fake.endpoint], timeout=3.0, attempt_timeout=3.0)
    assert kv.put("k", "v").revision == 2


def test_a_connection_lost_mid_request_is_retried_elsewhere_exactly_once(
    cluster: list[Any], make_client: MakeClient
) -> None:
    first, second, _ = cluster
    first.silent = True  # receives, never answers
    kv = make_client([first.endpoint, second.endpoint], timeout=5.0, attempt_timeout=5.0)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(kv.put("k", "v")))
    thread.start()
    wait_until(lambda: len(puts(first)) == 1)
    first.stop()  # the node dies with the request in flight
    thread.join(10)
    assert result and result[0].revision == 2
    assert puts(first)[0].seq == puts(second)[0].seq
    assert first.store.applied == 1


def test_a_lost_answer_is_retried_with_the_same_seq_and_applied_once(
    cluster: list[Any], make_client: MakeClient
) -> None:
    first, second, third = cluster
    first.drop_replies = 1  # applies the put, loses the answer
    kv = make_client([s.endpoint for s in cluster], timeout=5.0, attempt_timeout=0.3)
    result = kv.put("k", "v")
    sent = puts(first) + puts(second) + puts(third)
    assert len(sent) == 2
    assert len({(e.client_id, e.seq) for e in sent}) == 1
    assert len({e.request_id for e in sent}) == 2  # a new request id per attempt
    assert first.store.applied == 1
    assert result.revision == 2  # the first (and only) application's answer
    assert kv.get("k").kvs[0].version == 1


def test_a_silent_node_is_abandoned_after_the_attempt_timeout(
    cluster: list[Any], make_client: MakeClient
) -> None:
    first, second, _ = cluster
    first.silent = True
    kv = make_client([first.endpoint, second.endpoint], timeout=5.0, attempt_timeout=0.3)
    assert kv.get("missing").kvs == ()
    assert kv.put("k", "v").revision == 2
    assert len(puts(second)) == 1


def test_calls_time_out_with_the_pnyx_timeout_error(fake: Any, make_client: MakeClient) -> None:
    fake.silent = True
    kv = make_client([fake.endpoint], timeout=0.5)
    with pytest.raises(TimeoutError) as caught:
        kv.get("k")
    assert isinstance(caught.value, builtins.TimeoutError)
    with pytest.raises(TimeoutError):
        kv.put("k", "v", timeout=0.3)
    # Every attempt of the put carried the same seq.
    assert len({e.seq for e in puts(fake)}) == 1


def test_no_reachable_endpoint_raises_no_endpoint_error(make_client: MakeClient) -> None:
    kv = make_client([unused_endpoint(), unused_endpoint()], timeout=0.5)
    with pytest.raises(NoEndpointError):
        kv.get("k")


def test_membership_changes_are_not_repeated_after_an_unknown_outcome(
    fake: Any, make_client: MakeClient
) -> None:
    fake.silent = True
    kv = make_client([fake.endpoint], timeout=1.0, attempt_timeout=0.2)
    with pytest.raises(TimeoutError):
        kv.member_add("n", ["tcp://127.0.0.1:1"])
    assert len([e for e in fake.received if type(e.message) is MemberAddRequest]) == 1


def test_closing_fails_calls_in_flight_and_refuses_new_ones(
    fake: Any, make_client: MakeClient
) -> None:
    fake.silent = True
    kv = make_client([fake.endpoint], timeout=30.0, attempt_timeout=30.0)
    failure: list[BaseException] = []

    def call() -> None:
        try:
            kv.get("k")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: any(type(e.message) is RangeRequest for e in fake.received))
    kv.close()
    thread.join(10)
    assert failure and isinstance(failure[0], ClientError)
    with pytest.raises(ClientError):
        kv.put("k", "v")
    assert kv.closed


# --------------------------------------------------------------------------- watches


def test_watch_delivers_one_batch_per_revision_in_order(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    with kv.watch("cfg/", prefix=True, prev_kv=True) as watch:
        kv.put("cfg/a", "1")
        kv.txn(success=[kv.op.put("cfg/b", "2"), kv.op.put("cfg/c", "3")])
        kv.put("other", "x")
        kv.delete("cfg/a")
        batches = [watch.get(5) for _ in range(3)]
    assert [b.revision for b in batches if b] == [2, 3, 5]
    assert batches[1] is not None and [e.kv.key for e in batches[1].events] == [b"cfg/b", b"cfg/c"]
    deletion = batches[2]
    assert deletion is not None
    (event,) = deletion.events
    assert event.type == EventType.DELETE
    assert event.prev_kv is not None and event.prev_kv.value == b"1"


def test_watch_from_a_past_revision_replays_history(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    for i in range(3):
        kv.put("k", str(i))
    with kv.watch("k", start_revision=3) as watch:
        first, second = watch.get(5), watch.get(5)
    assert first is not None and second is not None
    assert (first.revision, second.revision) == (3, 4)


def _collect(watch: Any, count: int) -> list[WatchBatch]:
    batches: list[WatchBatch] = []
    while len(batches) < count:
        batch = watch.get(10)
        assert batch is not None, f"only {len(batches)} of {count} batches arrived"
        if batch.events:
            batches.append(batch)
    return batches


def test_watch_resumes_on_another_node_without_gap_or_duplicate(
    cluster: list[Any], make_client: MakeClient
) -> None:
    first, second, _ = cluster
    kv = make_client([s.endpoint for s in cluster], timeout=5.0)
    writer = make_client([second.endpoint])
    watch = kv.watch("k")
    for i in range(3):
        writer.put("k", f"before-{i}")
    seen = _collect(watch, 3)
    first.stop()  # the node serving the watch dies...
    for i in range(4):
        writer.put("k", f"during-{i}")  # ...while writes go on elsewhere
    seen += _collect(watch, 4)
    watch.close()
    revisions = [b.revision for b in seen]
    assert revisions == list(range(2, 9))
    assert [b.events[0].kv.value for b in seen][-1] == b"during-3"
    assert of_type(second, WatchCreateRequest) or of_type(cluster[2], WatchCreateRequest)


def test_a_slow_watcher_cut_off_by_the_node_resumes_from_where_it_was(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    watch = kv.watch("k")
    kv.put("k", "1")
    seen = _collect(watch, 1)
    fake.cancel_watches("slow watcher: resume from 3")
    kv.put("k", "2")
    kv.put("k", "3")
    seen += _collect(watch, 2)
    watch.close()
    assert [b.revision for b in seen] == [2, 3, 4]
    creates = [e.message for e in of_type(fake, WatchCreateRequest)]
    assert [c.start_revision for c in creates] == [0, 3]


def test_watching_from_a_compacted_revision_raises_compacted_error(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    for value in "abcd":
        kv.put("k", value)
    kv.compact(4)
    with pytest.raises(CompactedError) as caught, kv.watch("k", start_revision=2) as watch:
        watch.get(5)
    assert caught.value.compact_revision == 4


def test_progress_notifications_are_flagged_batches_without_events(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    with kv.watch("k", progress_notify=True) as watch:
        kv.put("other", "x")
        fake.progress()
        batch = watch.get(5)
    assert batch is not None
    assert batch.progress_notify and batch.events == () and batch.revision == 2
    assert watch.next_revision == 3


def test_closing_a_watch_ends_a_blocked_iteration(fake: Any, make_client: MakeClient) -> None:
    kv = make_client([fake.endpoint])
    watch = kv.watch("k")
    ended = threading.Event()

    def consume() -> None:
        for _ in watch:
            pass
        ended.set()

    thread = threading.Thread(target=consume)
    thread.start()
    watch.close()
    thread.join(10)
    assert ended.is_set()
    wait_until(lambda: not fake.watches)  # the node was told to cancel it


# --------------------------------------------------------------------------- keep-alive


def test_keep_alive_refreshes_until_the_lease_is_revoked_then_reports_loss(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    lease = kv.lease_grant(1)
    lost: list[BaseException] = []
    with kv.lease_keep_alive(lease.id, on_lost=lost.append) as keeper:
        wait_until(
            lambda: (
                sum(1 for e in fake.received if type(e.message).__name__ == "LeaseKeepAliveRequest")
                >= 3
            )
        )
        assert not keeper.lost and keeper.ttl == 1
        kv.lease_revoke(lease.id)
        assert keeper.wait_lost(10)
    assert isinstance(keeper.error, LeaseNotFoundError)
    assert lost == [keeper.error]


def test_keep_alive_reports_loss_when_no_refresh_is_acknowledged_in_time(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint], timeout=0.5)
    lease = kv.lease_grant(1)
    keeper = kv.lease_keep_alive(lease.id)
    wait_until(lambda: keeper.ttl == 1)
    fake.silent = True
    assert keeper.wait_lost(10)
    assert isinstance(keeper.error, TimeoutError)
    keeper.close()


def test_a_consumer_that_falls_behind_is_resumed_instead_of_buffered_without_bound(
    fake: Any, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "MAX_BUFFERED_BATCHES", 5)
    kv = make_client([fake.endpoint])
    watch = kv.watch("k")
    for i in range(30):
        kv.put("k", str(i))  # nobody reads meanwhile
    wait_until(lambda: not fake.watches)  # the client dropped the watch at the node
    assert watch._queue.qsize() <= 5 + 2  # the bound, plus the resume marker
    seen = _collect(watch, 30)
    watch.close()
    assert [b.revision for b in seen] == list(range(2, 32))
    assert len(of_type(fake, WatchCreateRequest)) >= 2


def test_requests_over_the_message_size_limit_are_split_across_messages(
    fake: Any, make_client: MakeClient
) -> None:
    kv = make_client([fake.endpoint])
    kv.put("warm", "up")
    before = fake.messages
    value = b"x" * (1536 * 1024 - 100)
    calls = [
        Call(PutRequest(b"big%d" % i, value), 50 + i, 10.0, client_id=b"test") for i in range(5)
    ]
    _queue_together(kv, calls)
    for call in calls:
        assert call.lock is not None and call.lock.acquire(timeout=20)
        assert call.error is None, call.error
    assert fake.messages - before >= 2  # 7.5 MiB cannot fit one 4 MiB message
    assert kv.get("big", range_end="bih", count_only=True).count == 5
