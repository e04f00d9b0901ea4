"""Many watches on one connection: what the client shares between them (one decoded
response per distinct watch response of a message, one set of batches per shared events
tuple) and that sharing never changes what each watch receives. Also the asyncio sink
that carries each watch's items to its task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.clients import AsyncClient, Client, WatchBatch
from pnyx.clients._core import BatchMemo, StreamError, WatchState
from pnyx.clients._engine import AsyncStreamSink, decode_replies
from pnyx.core import errors
from pnyx.core.wire import (
    DecodeError,
    Envelope,
    ErrorResponse,
    Event,
    EventType,
    KeyValue,
    PutResponse,
    ResponseHeader,
    SharedWatchResponse,
    WatchResponse,
    decode_batch,
    encode_batch,
)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def put_event(key: bytes, revision: int, value: bytes = b"v") -> Event:
    return Event(EventType.PUT, KeyValue(key, revision, revision, 1, value))


def header(revision: int) -> ResponseHeader:
    return ResponseHeader(7, 1, revision, 2, 1)


# --------------------------------------------------------------------------- decoding


def as_decode_batch_would(replies: list[Any]) -> list[Any]:
    """``decode_replies`` output in ``decode_batch``'s terms: each shared response with
    the reply's own watch id put back in."""
    normalized: list[Any] = []
    for request_id, response, watch_id in replies:
        if type(response) is DecodeError:
            normalized.append(("error", request_id))
        elif type(response) is WatchResponse:
            normalized.append((request_id, attrs.evolve(response, watch_id=watch_id)))
        else:
            assert watch_id == 0
            normalized.append((request_id, response))
    return normalized


def reference(data: bytes) -> list[Any]:
    return [
        (item.request_id, item.message)
        if isinstance(item, Envelope)
        else ("error", item.request_id)
        for item in decode_batch(data, validate=False)
    ]


def test_watch_responses_differing_only_by_watch_id_are_decoded_once() -> None:
    events = (put_event(b"p/1", 5), put_event(b"p/2", 5))
    data = encode_batch(
        [Envelope(100 + i, WatchResponse(header(5), i + 1, events=events)) for i in range(5)]
    )
    replies = decode_replies(data)
    assert [(request_id, watch_id) for request_id, _, watch_id in replies] == [
        (100 + i, i + 1) for i in range(5)
    ]
    first = replies[0][1]
    assert all(response is first for _, response, _ in replies)
    assert as_decode_batch_would(replies) == reference(data)


def test_different_events_headers_or_flags_are_not_shared() -> None:
    one = (put_event(b"p/1", 5),)
    envelopes = [
        Envelope(1, WatchResponse(header(5), 1, events=one)),
        Envelope(2, WatchResponse(header(5), 2, events=(put_event(b"p/1", 5, b"other"),))),
        Envelope(3, WatchResponse(header(6), 3, events=one)),
        Envelope(4, WatchResponse(header(5), 4, events=one, fragment=True)),
        Envelope(5, WatchResponse(header(5), 5, events=one)),
        Envelope(6, WatchResponse(header(5), 6, events=one)),
    ]
    data = encode_batch(envelopes)
    replies = decode_replies(data)
    responses = [response for _, response, _ in replies]
    assert len({id(response) for response in responses[:5]}) == 5
    assert responses[5] is responses[4]  # same as the one just before: shared
    assert as_decode_batch_would(replies) == reference(data)


def test_a_shared_watch_response_is_one_reply_per_watch_it_names() -> None:
    events = (put_event(b"p/1", 5),)
    put = PutResponse(header(5))
    data = encode_batch(
        [
            Envelope(9, put),
            Envelope(100, SharedWatchResponse(header(5), (100, 1, 101, 2, 107, 8), events)),
            Envelope(102, WatchResponse(header(6), 3, events=(put_event(b"p/2", 6),))),
        ]
    )
    replies = decode_replies(data)
    assert [(request_id, watch_id) for request_id, _, watch_id in replies] == [
        (9, 0),
        (100, 1),
        (101, 2),
        (107, 8),
        (102, 3),
    ]
    shared = replies[1][1]
    assert type(shared) is WatchResponse and shared.events == events
    assert shared.header == header(5) and not (shared.created or shared.canceled)
    assert replies[2][1] is shared and replies[3][1] is shared


def test_a_shared_watch_response_that_names_no_watch_pairs_is_a_decode_error() -> None:
    events = (put_event(b"p/1", 5),)
    for streams in [(), (100,), (100, 1, 101)]:
        data = encode_batch([Envelope(100, SharedWatchResponse(header(5), streams, events))])
        ((request_id, response, watch_id),) = decode_replies(data)
        assert request_id == 100 and watch_id == 0
        assert type(response) is DecodeError
        assert isinstance(response.error, errors.InvalidRequestError)


def test_other_replies_and_broken_envelopes_decode_as_decode_batch_does() -> None:
    good = WatchResponse(header(5), 1, events=(put_event(b"k", 5),))
    wire = msgpack.unpackb(encode_batch([Envelope(9, good), Envelope(9, good)]))
    envelopes = wire[1]
    envelopes[1][2][1] = 2  # a second watch, same events
    message = [
        1,
        [
            *envelopes,
            [10, 13, [[7, 1, 5, 2, 1], None], b"", 0],  # a PutResponse
            [11, 13, "not a body", b"", 0],  # undecodable body: its own error
            [12, 9999, [], b"", 0],  # unknown tag
            "not an envelope",
            [13, 13],  # wrong shape, id readable
            [14, envelopes[0][1], [*envelopes[0][2][:1], True, *envelopes[0][2][2:]], b"", 0],
        ],
    ]
    data = msgpack.packb(message)
    replies = decode_replies(data)
    assert as_decode_batch_would(replies) == reference(data)
    assert type(replies[2][1]) is PutResponse
    assert [type(response) is DecodeError for _, response, _ in replies[3:]] == [
        True,
        True,
        True,
        True,
        True,  # a bool watch id is refused, not shared
    ]


@pytest.mark.parametrize(
    "data",
    [b"\xc1 not msgpack", msgpack.packb([2, []]), msgpack.packb({"a": 1}), msgpack.packb([1])],
)
def test_a_message_wrong_as_a_whole_raises_like_decode_batch(data: bytes) -> None:
    with pytest.raises(errors.PnyxError) as expected:
        decode_batch(data, validate=False)
    with pytest.raises(type(expected.value)):
        decode_replies(data)


_events = st.sampled_from(
    [
        (put_event(b"a", 3),),
        (put_event(b"a", 3), put_event(b"b", 3)),
        (put_event(b"a", 4),),
        (Event(EventType.DELETE, KeyValue(b"a", 0, 4)),),
        (),
    ]
)
_replies = st.one_of(
    st.builds(
        lambda watch_id, events, revision, created, fragment: WatchResponse(
            header(revision), watch_id, created=created, events=events, fragment=fragment
        ),
        st.integers(0, 4),
        _events,
        st.integers(3, 4),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda revision: PutResponse(header(revision)), st.integers(3, 4)),
    st.just(ErrorResponse(code=errors.NotLeaderError.code, message="no", leader_hint="x")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_replies, max_size=12))
def test_decoding_agrees_with_decode_batch_for_any_mix_of_replies(responses: list[Any]) -> None:
    data = encode_batch([Envelope(i + 1, response) for i, response in enumerate(responses)])
    assert as_decode_batch_would(decode_replies(data)) == reference(data)


# --------------------------------------------------------------------------- batches


def test_watches_fed_one_shared_response_share_its_batches() -> None:
    events = (put_event(b"a", 5), put_event(b"b", 5), put_event(b"a", 6))
    response = WatchResponse(header(6), 1, events=events)
    memo: BatchMemo = {}
    states = [WatchState(b"", b"\0", start_revision=1) for _ in range(3)]
    first, second, third = (
        state.on_response(response, 10 + i, memo) for i, state in enumerate(states)
    )
    assert [b.revision for b in first if isinstance(b, WatchBatch)] == [5, 6]
    assert first == second == third
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert all(state.next_revision == 7 for state in states)


def test_a_watch_past_part_of_a_shared_response_gets_only_the_rest() -> None:
    events = (put_event(b"a", 5), put_event(b"a", 6))
    response = WatchResponse(header(6), 1, events=events)
    memo: BatchMemo = {}
    behind = WatchState(b"a", start_revision=1)
    ahead = WatchState(b"a", start_revision=6)  # already has revision 5
    assert [b.revision for b in behind.on_response(response, 1, memo)] == [5, 6]  # type: ignore[union-attr]
    assert [b.revision for b in ahead.on_response(response, 2, memo)] == [6]  # type: ignore[union-attr]
    # ... and the other way round: a watch that drops events leaves no memo to reuse.
    memo = {}
    ahead = WatchState(b"a", start_revision=6)
    behind = WatchState(b"a", start_revision=1)
    assert [b.revision for b in ahead.on_response(response, 2, memo)] == [6]  # type: ignore[union-attr]
    assert [b.revision for b in behind.on_response(response, 1, memo)] == [5, 6]  # type: ignore[union-attr]
    assert ahead.next_revision == behind.next_revision == 7


def test_a_shared_created_response_gives_each_watch_its_own_id() -> None:
    response = WatchResponse(header(9), 1, created=True)
    states = [WatchState(b"k") for _ in range(2)]
    created = [state.on_response(response, 40 + i) for i, state in enumerate(states)]
    assert [state.watch_id for state in states] == [40, 41]
    assert [items[0].watch_id for items in created] == [40, 41]  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the sink


def test_sink_get_waits_times_out_and_a_canceled_wait_takes_nothing() -> None:
    async def main() -> None:
        sink = AsyncStreamSink(asyncio.get_running_loop())
        assert await sink.get(0.01) is None
        waiting = asyncio.ensure_future(sink.get())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        item = StreamError(errors.ClientError("x"), False)
        sink.put_items([item])
        assert sink.qsize() == 1
        assert await sink.get(1.0) is item
        assert sink.qsize() == 0

    run(main)


def test_sink_serves_concurrent_waiters_in_order_without_losing_items() -> None:
    async def main() -> None:
        sink = AsyncStreamSink(asyncio.get_running_loop())
        waiters = [asyncio.ensure_future(sink.get()) for _ in range(3)]
        await asyncio.sleep(0)
        items = [WatchBatch(revision) for revision in range(3)]
        sink.put_items(items[:1])
        sink.put_items(items[1:])
        got = await asyncio.gather(*waiters)
        assert sorted(batch.revision for batch in got) == [0, 1, 2]  # type: ignore[union-attr]

    run(main)


# --------------------------------------------------------------------------- end to end


def test_every_watch_of_one_connection_gets_its_own_events_in_order(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv, AsyncClient([fake.endpoint]) as writer:
            same = [await kv.watch("p/", prefix=True) for _ in range(6)]
            only_a = await kv.watch("p/a")
            no_put = await kv.watch("p/", prefix=True, filters=["noput"])
            with_prev = await kv.watch("p/", prefix=True, prev_kv=True)
            for i in range(5):
                await writer.put(f"p/{'ab'[i % 2]}", str(i))
            await writer.delete("p/a")

            async def take(watch: Any, count: int) -> list[WatchBatch]:
                return [await watch.get(10) for _ in range(count)]

            expected = [2, 3, 4, 5, 6, 7]
            for watch in same:
                batches = await take(watch, 6)
                assert [b.revision for b in batches] == expected
                assert [e.kv.value for b in batches for e in b.events][:5] == [
                    b"0",
                    b"1",
                    b"2",
                    b"3",
                    b"4",
                ]
            assert [b.revision for b in await take(only_a, 4)] == [2, 4, 6, 7]
            (deleted,) = await take(no_put, 1)
            assert deleted.revision == 7 and deleted.events[0].type == EventType.DELETE
            batches = await take(with_prev, 6)
            assert batches[-1].events[0].prev_kv is not None
            assert batches[-1].events[0].prev_kv.value == b"4"
            assert all(watch.next_revision == 8 for watch in same)
            for watch in (*same, only_a, no_put, with_prev):
                await watch.aclose()

    run(main)


def test_watches_started_at_different_revisions_share_nothing_they_should_not(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            for i in range(3):
                await kv.put("k", str(i))  # revisions 2, 3, 4
            watches = [await kv.watch("k", start_revision=start) for start in (2, 3, 4, 2)]
            await kv.put("k", "3")  # revision 5
            deadline = time.monotonic() + 10
            for watch, start in zip(watches, (2, 3, 4, 2), strict=True):
                seen: list[int] = []
                while 5 not in seen and time.monotonic() < deadline:
                    batch = await watch.get(10)
                    assert batch is not None
                    seen.append(batch.revision)
                assert seen == list(range(start, 6))
                await watch.aclose()

    run(main)


def test_watches_of_the_blocking_client_share_a_connection_the_same_way(fake: Any) -> None:
    with Client([fake.endpoint]) as kv:
        watches = [kv.watch("p/", prefix=True) for _ in range(4)]
        for i in range(3):
            kv.put(f"p/{i}", str(i))
        for watch in watches:
            batches = [watch.get(10) for _ in range(3)]
            assert [b.revision if b else None for b in batches] == [2, 3, 4]
            assert [b.events[0].kv.key for b in batches if b] == [b"p/0", b"p/1", b"p/2"]
            watch.close()
