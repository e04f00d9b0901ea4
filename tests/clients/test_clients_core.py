"""The I/O-free client core: arguments -> requests, responses -> results, endpoint
choice, retry decisions and watch resume bookkeeping. No sockets, no threads."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pnyx.clients import _core
from pnyx.clients._core import EndpointSelector, StreamError, WatchCreated, WatchState
from pnyx.clients.results import WatchBatch
from pnyx.core import errors
from pnyx.core.wire import (
    CompactionRequest,
    DeleteRangeRequest,
    ErrorResponse,
    Event,
    EventType,
    KeyValue,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    Member,
    MemberAddRequest,
    MemberRemoveRequest,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
    StatusRequest,
    TxnRequest,
    TxnResponse,
    WatchCreateRequest,
    WatchFilterType,
    WatchResponse,
    error_response_from_exception,
)

# --------------------------------------------------------------------------- endpoints


def test_endpoints_come_from_the_argument_then_the_environment_then_the_defaults() -> None:
    assert _core.resolve_endpoints(["tcp://a:1", "b:2"], {}) == ("tcp://a:1", "tcp://b:2")
    assert _core.resolve_endpoints("a:1, b:2,,a:1", {}) == ("tcp://a:1", "tcp://b:2")
    env = {"PNYX_ENDPOINTS": "tcp://x:9,tcp://y:9"}
    assert _core.resolve_endpoints(None, env) == ("tcp://x:9", "tcp://y:9")
    assert _core.resolve_endpoints(None, {}) == (
        "tcp://127.0.0.1:7101",
        "tcp://127.0.0.1:7102",
        "tcp://127.0.0.1:7103",
    )
    with pytest.raises(errors.InvalidRequestError):
        _core.resolve_endpoints(" , ", {})


def test_selector_round_robins_from_the_first_and_skips_down_endpoints() -> None:
    selector = EndpointSelector(["a", "b", "c"])
    assert selector.choose() == "a"
    selector.on_failure("a")
    assert selector.choose() == "b"
    selector.on_connection("c", up=False)
    selector.on_failure("b")
    assert selector.choose() == "a"  # c is down, so wrap around to a
    selector.on_connection("a", up=False)
    selector.on_connection("b", up=False)
    # Everything down: still answer (the current one), it may be back.
    assert selector.choose() in {"a", "b", "c"}


def test_selector_sticks_to_the_endpoint_that_answered() -> None:
    selector = EndpointSelector(["a", "b", "c"])
    selector.on_answer("c", None)
    assert selector.choose() == "c"
    assert selector.choose() == "c"


def test_selector_follows_leader_hints_and_learns_new_endpoints() -> None:
    selector = EndpointSelector(["tcp://a:1", "tcp://b:1"])
    selector.on_not_leader("tcp://a:1", "tcp://b:1")
    assert selector.choose() == "tcp://b:1"
    selector.on_not_leader("tcp://b:1", "c:1")  # a member the client was not told about
    assert selector.choose() == "tcp://c:1"
    assert "tcp://c:1" in selector.endpoints
    selector.on_failure("tcp://c:1")
    assert selector.leader is None
    assert selector.choose() != "tcp://c:1"


def test_selector_without_hint_moves_on_from_the_refusing_endpoint() -> None:
    selector = EndpointSelector(["a", "b"])
    selector.on_not_leader("a", None)
    assert selector.choose() == "b"


def test_selector_learns_the_leader_from_response_headers() -> None:
    selector = EndpointSelector(["a", "b", "c"])
    # b says it is member 2 and that member 3 leads: unknown address yet.
    selector.on_answer("b", ResponseHeader(member_id=2, leader_id=3))
    assert selector.leader is None
    selector.on_answer("c", ResponseHeader(member_id=3, leader_id=3))
    assert selector.leader == "c"
    selector.on_answer("a", ResponseHeader(member_id=1, leader_id=3))
    assert selector.choose() == "c"
    selector.on_connection("c", up=False)
    assert selector.leader is None
    assert selector.choose() != "c"


# --------------------------------------------------------------------------- exactly-once


def test_only_mutating_requests_get_a_seq_and_seqs_increase() -> None:
    identity = _core.Identity()
    assert len(identity.client_id) == 16
    assert not identity.needs_seq(RangeRequest(b"k"))
    assert not identity.needs_seq(StatusRequest())
    assert all(identity.needs_seq(m) for m in (PutRequest(b"k"), DeleteRangeRequest(b"k")))
    assert identity.needs_seq(TxnRequest())
    tickets = [identity.take() for _ in range(3)]
    assert tickets == [_core.Ticket(identity.client_id, seq) for seq in (1, 2, 3)]
    assert _core.Identity().client_id != identity.client_id


def test_a_client_with_many_writes_in_flight_opens_more_client_ids() -> None:
    identity = _core.Identity(max_lanes=2)
    size = identity.window_size
    first = [identity.take() for _ in range(size)]
    assert {t.client_id for t in first if t} == {identity.client_id}
    second = [identity.take() for _ in range(size)]
    assert all(second) and len({t.client_id for t in second if t}) == 1
    assert second[0] is not None and second[0].client_id != identity.client_id
    assert [t.seq for t in second if t] == list(range(1, size + 1))
    assert identity.take() is None and identity.room == 0  # both windows full
    assert first[1] is not None and not identity.finish(first[1])  # not the oldest
    assert first[0] is not None and identity.finish(first[0])
    assert identity.room == 2
    refilled = identity.take()
    assert refilled == _core.Ticket(identity.client_id, size + 1)  # the first lane again


def test_the_seq_window_stops_a_stuck_write_from_being_overtaken_too_far() -> None:
    window = _core.SeqWindow(size=4)
    assert [window.take() for _ in range(4)] == [1, 2, 3, 4]
    assert window.take() == 0  # 5 would be 4 ahead of the unfinished 1
    assert not window.finish(3) and not window.finish(2) and not window.finish(4)
    assert window.take() == 0 and window.in_flight == 1  # all wait for 1
    assert window.finish(1)
    assert [window.take() for _ in range(5)] == [5, 6, 7, 8, 0]
    assert not window.finish(99)  # not ours: ignored
    assert window.in_flight == 4


class _ServerDedup:
    """The node's exactly-once table as DedupTable keeps it for one client: the last
    ``window`` applied seqs in apply order; a retry of a forgotten seq is refused."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.answers: dict[int, None] = {}
        self.floor = 0

    def apply(self, seq: int) -> None:
        if seq in self.answers:
            return  # a duplicate: answered from the table
        assert seq > self.floor, f"seq {seq} refused as too old (floor {self.floor})"
        self.answers[seq] = None
        while len(self.answers) > self.window:
            oldest = next(iter(self.answers))
            del self.answers[oldest]
            self.floor = max(self.floor, oldest)


@pytest.mark.parametrize("seed", range(40))
def test_with_the_seq_window_a_retry_is_never_older_than_the_nodes_window(seed: int) -> None:
    # Writes are applied in any order, some several times (lost answers retried), and
    # finished in any order; one may stay stuck for a long time. Every application of
    # an unfinished write must still be answerable by a node keeping 128 seqs.
    rng = random.Random(seed)
    window = _core.SeqWindow()
    server = _ServerDedup(128)
    unfinished: list[int] = []
    for _ in range(3000):
        seq = window.take()
        if seq:
            unfinished.append(seq)
        if unfinished and rng.random() < 0.7:
            # Stuck writes: the oldest one is rarely the one that makes progress.
            index = rng.randrange(len(unfinished)) if rng.random() < 0.95 else 0
            server.apply(unfinished[index])
            if rng.random() < 0.8:
                window.finish(unfinished.pop(index))
    for seq in unfinished:
        server.apply(seq)


def test_a_whole_message_refused_fails_its_only_attempt_with_the_nodes_error() -> None:
    cause = errors.RequestTooLargeError("message of 9 MiB over the limit")
    assert _core.whole_message_refused("tcp://a:1", cause, 1) is cause
    several = _core.whole_message_refused("tcp://a:1", cause, 3)
    assert isinstance(several, errors.UnavailableError) and "RequestTooLargeError" in str(several)
    # An unknown outcome: writes with a seq are retried, membership changes are not.
    assert _core.should_retry(PutRequest(b"k"), 7, several)
    assert not _core.should_retry(MemberAddRequest(("tcp://x:1",)), 0, several)


# --------------------------------------------------------------------------- arguments


def test_keys_and_values_accept_str_and_bytes_likes_and_nothing_else() -> None:
    assert _core.as_bytes("é") == "é".encode()
    assert _core.as_bytes(bytearray(b"x")) == b"x"
    assert _core.as_bytes(memoryview(b"y")) == b"y"
    with pytest.raises(errors.InvalidRequestError, match="key must be str or bytes"):
        _core.as_bytes(5)  # type: ignore[arg-type]


def test_ranges_for_a_key_a_prefix_and_an_explicit_end() -> None:
    assert _core.key_range("a", False, None) == (b"a", b"")
    assert _core.key_range("a/", True, None) == (b"a/", b"a0")
    assert _core.key_range("", True, None) == (b"\0", b"\0")
    assert _core.key_range("a", False, "c") == (b"a", b"c")
    with pytest.raises(errors.InvalidRequestError, match="not both"):
        _core.key_range("a", True, "c")


def test_range_request_maps_every_argument() -> None:
    request = _core.range_request(
        "k",
        prefix=True,
        revision=7,
        limit=3,
        sort_order="descend",
        sort_target=SortTarget.MOD,
        serializable=True,
        keys_only=True,
        count_only=False,
        min_mod_revision=1,
        max_mod_revision=9,
        min_create_revision=2,
        max_create_revision=8,
    )
    assert request == RangeRequest(
        b"k", b"l", 3, 7, SortOrder.DESCEND, SortTarget.MOD, True, True, False, 1, 9, 2, 8
    )
    with pytest.raises(errors.InvalidRequestError, match="sort_order must be one of"):
        _core.range_request("k", sort_order="sideways")


def test_put_and_delete_requests() -> None:
    assert _core.put_request("k", "v", lease=5, prev_kv=True) == PutRequest(b"k", b"v", 5, True)
    assert _core.delete_request("p/", prefix=True, prev_kv=True) == DeleteRangeRequest(
        b"p/", b"p0", True
    )


def test_txn_request_refuses_things_that_are_not_compares_or_ops() -> None:
    with pytest.raises(errors.InvalidRequestError, match="built with cmp"):
        _core.txn_request([True])  # type: ignore[list-item]
    with pytest.raises(errors.InvalidRequestError, match=r"op\.put/get/delete/txn"):
        _core.txn_request([], [StatusRequest()])  # type: ignore[list-item]


def test_watch_filters_by_name_or_value() -> None:
    assert _core.watch_filters(["noput", WatchFilterType.NODELETE]) == (
        WatchFilterType.NOPUT,
        WatchFilterType.NODELETE,
    )


# --------------------------------------------------------------------------- results

HEADER = ResponseHeader(1, 2, 40, 3, 2)


def test_results_lift_the_revision_out_of_the_header() -> None:
    kv = KeyValue(b"k", 3, 4, 2, b"v", 0)
    get = _core.get_result(RangeResponse(HEADER, (kv,), True, 5))
    assert (get.revision, get.kvs, get.more, get.count) == (40, (kv,), True, 5)
    assert _core.put_result(PutResponse(HEADER, kv)).prev_kv == kv
    txn = _core.txn_result(
        TxnResponse(HEADER, True, (PutResponse(HEADER), RangeResponse(HEADER, (kv,))))
    )
    assert txn.succeeded and txn.revision == 40
    assert txn.responses[1].kvs == (kv,)  # type: ignore[union-attr]


def test_an_error_response_becomes_its_exception_class() -> None:
    response = error_response_from_exception(errors.CompactedError(compact_revision=12))
    with pytest.raises(errors.CompactedError) as caught:
        _core.get_result(response)
    assert caught.value.compact_revision == 12


def test_an_unexpected_response_type_is_a_protocol_error() -> None:
    with pytest.raises(errors.PnyxError, match="protocol error"):
        _core.get_result(PutResponse(HEADER))


def test_a_keep_alive_that_finds_no_lease_raises_lease_not_found() -> None:
    assert _core.lease_keep_alive_result(LeaseKeepAliveResponse(HEADER, 7, 10)).ttl == 10
    with pytest.raises(errors.LeaseNotFoundError):
        _core.lease_keep_alive_result(LeaseKeepAliveResponse(HEADER, 7, 0))


# --------------------------------------------------------------------------- retries

UNKNOWN_OUTCOME = [
    errors.TimeoutError("t"),
    errors.UnavailableError("connection lost"),
    errors.StorageError("disk"),
]
NOT_APPLIED = [
    errors.NotLeaderError(leader_hint="tcp://b:1"),
    errors.NoLeaderError("election"),
    errors.ProposalDroppedError("transfer"),
    errors.NoEndpointError("refused"),
]
CALLER_ERRORS = [
    errors.InvalidRequestError("bad"),
    errors.CompactedError(compact_revision=3),
    errors.LeaseNotFoundError("gone"),
    errors.RequestTooLargeError("big"),
    errors.PnyxError("internal"),
]


@pytest.mark.parametrize("error", NOT_APPLIED, ids=lambda e: type(e).__name__)
def test_errors_proving_nothing_was_applied_are_retried_for_every_request(
    error: errors.PnyxError,
) -> None:
    for message, seq in [
        (PutRequest(b"k"), 1),
        (RangeRequest(b"k"), 0),
        (MemberAddRequest(("tcp://x:1",)), 0),
        (MemberRemoveRequest(3), 0),
    ]:
        assert _core.should_retry(message, seq, error)


@pytest.mark.parametrize("error", UNKNOWN_OUTCOME, ids=lambda e: type(e).__name__)
def test_unknown_outcomes_are_retried_only_when_a_repeat_is_harmless(
    error: errors.PnyxError,
) -> None:
    # Reads and deduplicated writes: yes.
    assert _core.should_retry(RangeRequest(b"k"), 0, error)
    assert _core.should_retry(LeaseKeepAliveRequest(1), 0, error)
    assert _core.should_retry(WatchCreateRequest(b"k"), 0, error)
    assert _core.should_retry(PutRequest(b"k"), 5, error)
    assert _core.should_retry(CompactionRequest(3), 5, error)
    # A write without its exactly-once seq, and membership changes: never.
    assert not _core.should_retry(PutRequest(b"k"), 0, error)
    assert not _core.should_retry(MemberAddRequest(("tcp://x:1",)), 0, error)
    assert not _core.should_retry(MemberRemoveRequest(3), 0, error)


@pytest.mark.parametrize("error", CALLER_ERRORS, ids=lambda e: type(e).__name__)
def test_errors_about_the_request_itself_are_never_retried(error: errors.PnyxError) -> None:
    assert not _core.should_retry(RangeRequest(b"k"), 0, error)
    assert not _core.should_retry(PutRequest(b"k"), 1, error)


def test_backoff_redirects_at_once_then_grows_with_bounded_jitter() -> None:
    hint = errors.NotLeaderError(leader_hint="tcp://b:1")
    assert _core.backoff(2, hint, 0.9) == _core.backoff(3, hint, 0.9) == 0.0
    # Hints that keep redirecting (stale, pointing at each other) get backed off too.
    assert _core.backoff(4, hint, 0.0) > 0.0
    assert _core.backoff(1, errors.NoLeaderError(), 0.5) == 0.0
    waits = [_core.backoff(n, errors.NoLeaderError(), 0.0) for n in range(2, 12)]
    assert waits == sorted(waits)
    assert waits[0] > 0
    assert max(waits) <= 1.0
    low = _core.backoff(4, errors.NoLeaderError(), 0.0)
    high = _core.backoff(4, errors.NoLeaderError(), 0.999)
    assert low < high <= 2 * low


@given(st.integers(1, 100), st.floats(0, 0.999))
def test_backoff_is_never_negative_nor_above_a_second(attempt: int, jitter: float) -> None:
    assert 0.0 <= _core.backoff(attempt, errors.TimeoutError(), jitter) <= 1.0


def test_giving_up_raises_no_endpoint_only_if_no_node_was_reached() -> None:
    assert isinstance(_core.give_up(errors.NoEndpointError("x"), 1), errors.NoEndpointError)
    final = _core.give_up(errors.NoLeaderError("election"), 2)
    assert type(final) is errors.TimeoutError
    assert "NoLeaderError" in str(final)
    assert isinstance(final, TimeoutError)  # the builtin too


# --------------------------------------------------------------------------- watches


def put_event(key: bytes, revision: int) -> Event:
    return Event(EventType.PUT, KeyValue(key, revision, revision, 1, b"v"))


def header(revision: int) -> ResponseHeader:
    return ResponseHeader(1, 1, revision, 1, 1)


def test_a_watch_from_now_resumes_after_the_creation_revision() -> None:
    state = WatchState(b"k")
    assert state.create_request().start_revision == 0
    items = state.on_response(WatchResponse(header(10), 4, created=True))
    assert items == [WatchCreated(4, 10)]
    assert state.next_revision == 11
    assert state.create_request().start_revision == 11


def test_a_watch_from_a_past_revision_keeps_it_until_events_arrive() -> None:
    state = WatchState(b"k", start_revision=5)
    state.on_response(WatchResponse(header(10), 1, created=True))
    assert state.next_revision == 5  # history 5..10 has not been delivered yet
    items = state.on_response(WatchResponse(header(6), 1, events=(put_event(b"k", 6),)))
    assert [type(item) for item in items] == [WatchBatch]
    assert state.next_revision == 7


def test_events_of_several_revisions_in_one_response_become_one_batch_each() -> None:
    state = WatchState(b"k", start_revision=1)
    events = (put_event(b"a", 3), put_event(b"b", 3), put_event(b"a", 4))
    items = state.on_response(WatchResponse(header(4), 1, events=events))
    assert items == [WatchBatch(3, events[:2]), WatchBatch(4, events[2:])]
    assert state.next_revision == 5


def test_a_fragmented_revision_is_delivered_only_whole_and_never_advances_early() -> None:
    state = WatchState(b"k", start_revision=1)
    first = (put_event(b"a", 8), put_event(b"b", 8))
    rest = (put_event(b"c", 8),)
    assert state.on_response(WatchResponse(header(8), 1, events=first, fragment=True)) == []
    assert state.next_revision == 1
    # A progress notification in the middle must not move past the partial revision.
    assert state.on_response(WatchResponse(header(8), 1, progress_notify=True)) == []
    assert state.next_revision == 1
    items = state.on_response(WatchResponse(header(8), 1, events=rest))
    assert items == [WatchBatch(8, first + rest)]
    assert state.next_revision == 9


def test_a_dead_attempt_drops_its_partial_fragment_and_resumes_at_that_revision() -> None:
    state = WatchState(b"k", start_revision=1)
    state.on_response(WatchResponse(header(7), 1, events=(put_event(b"a", 7),)))
    state.on_response(WatchResponse(header(8), 1, events=(put_event(b"a", 8),), fragment=True))
    assert state.next_revision == 8
    state.begin_attempt()
    assert state.create_request().start_revision == 8
    # The new attempt re-sends revision 8 whole; nothing of the old fragment leaks in.
    whole = (put_event(b"a", 8), put_event(b"b", 8))
    items = state.on_response(WatchResponse(header(8), 2, events=whole))
    assert items == [WatchBatch(8, whole)]


def test_a_resumed_attempt_never_delivers_a_revision_twice() -> None:
    state = WatchState(b"k", start_revision=1)
    state.on_response(WatchResponse(header(5), 1, events=(put_event(b"a", 5),)))
    state.begin_attempt()
    # A server that replays too much: revisions 4 and 5 again, then 6.
    replay = (put_event(b"a", 4), put_event(b"a", 5), put_event(b"a", 6))
    items = state.on_response(WatchResponse(header(6), 2, events=replay))
    assert items == [WatchBatch(6, replay[2:])]


def test_progress_notifications_advance_the_resume_point_and_are_flagged() -> None:
    state = WatchState(b"k")
    state.on_response(WatchResponse(header(3), 1, created=True))
    items = state.on_response(WatchResponse(header(9), 1, progress_notify=True))
    assert items == [WatchBatch(9, (), progress_notify=True)]
    assert state.next_revision == 10
    # An older notification never moves it back.
    state.on_response(WatchResponse(header(5), 1, progress_notify=True))
    assert state.next_revision == 10


def test_a_compacted_start_is_a_non_resumable_compacted_error() -> None:
    state = WatchState(b"k", start_revision=2)
    items = state.on_response(
        WatchResponse(header(9), 1, created=True, canceled=True, compact_revision=6)
    )
    assert isinstance(items[0], WatchCreated)
    end = items[-1]
    assert isinstance(end, StreamError) and not end.resumable
    assert isinstance(end.error, errors.CompactedError)
    assert end.error.compact_revision == 6


def test_a_slow_watcher_cancel_is_resumable_and_our_own_cancel_is_not() -> None:
    state = WatchState(b"k")
    slow = state.on_response(
        WatchResponse(header(9), 1, canceled=True, cancel_reason="slow watcher: resume at 4")
    )
    assert isinstance(slow[-1], StreamError) and slow[-1].resumable
    assert isinstance(slow[-1].error, errors.SlowWatcherError)
    state.canceling = True
    own = state.on_response(WatchResponse(header(9), 1, canceled=True))
    assert isinstance(own[-1], StreamError) and not own[-1].resumable


def test_an_error_response_ends_the_attempt_resumable_only_if_the_cluster_is_at_fault() -> None:
    state = WatchState(b"k")
    unavailable = state.on_response(error_response_from_exception(errors.NoLeaderError("election")))
    assert unavailable == [StreamError(unavailable[0].error, True)]  # type: ignore[union-attr]
    invalid = state.on_response(ErrorResponse(errors.InvalidRequestError.code, "bad key"))
    assert isinstance(invalid[0], StreamError) and not invalid[0].resumable


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.booleans(), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_resume_point_is_one_past_the_last_fully_delivered_revision(
    steps: list[tuple[int, bool, bool]],
) -> None:
    """Feed a stream of per-revision responses, some fragmented, some interrupted by a
    dead attempt; whatever happens, next_revision - 1 is the last revision delivered in
    full and every delivered batch holds all events of its revision."""
    state = WatchState(b"k", start_revision=1)
    revision = 1
    delivered: list[WatchBatch] = []
    for events_in_revision, fragmented, dies in steps:
        revision += 1
        events = tuple(
            Event(EventType.PUT, KeyValue(b"k%d" % i, revision, revision, 1))
            for i in range(events_in_revision)
        )
        parts = [events[:1], events[1:]] if fragmented and len(events) > 1 else [events]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if dies and not last:
                state.begin_attempt()  # the attempt died mid-revision
                revision = state.next_revision - 1  # the server resends from there
                break
            for item in state.on_response(
                WatchResponse(header(revision), 1, events=part, fragment=not last)
            ):
                assert isinstance(item, WatchBatch)
                assert item.events == events  # the whole revision, nothing else
                delivered.append(item)
    revisions = [batch.revision for batch in delivered]
    assert revisions == sorted(set(revisions))
    for batch in delivered:
        assert {event.kv.mod_revision for event in batch.events} == {batch.revision}
    expected_next = (revisions[-1] + 1) if revisions else 1
    assert state.next_revision == expected_next


def test_probe_answers_teach_identity_without_moving_the_preferred_endpoint() -> None:
    selector = EndpointSelector(["a", "b", "c"])
    selector.on_identity("c", ResponseHeader(member_id=3, leader_id=1))
    assert selector.choose() == "a"  # c answered a probe, not a call: no stickiness
    selector.on_identity("b", ResponseHeader(member_id=2, leader_id=2))
    assert selector.choose() == "b"  # but b is now known to lead


def test_member_lists_map_ids_to_the_client_urls_in_use() -> None:
    selector = EndpointSelector(["tcp://a:1", "tcp://b:1"])
    selector.on_members(
        [Member(7, "n1", (), ("tcp://a:1",)), Member(8, "n2", (), ("tcp://10.0.0.2:1",))]
    )
    assert selector.member_endpoints == {7: "tcp://a:1"}
    selector.on_answer("tcp://b:1", ResponseHeader(member_id=9, leader_id=7))
    assert selector.choose() == "tcp://a:1"
