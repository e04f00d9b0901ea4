"""``share_deliveries``: how a member turns the hub's watch deliveries into what it sends,
with the events that several watches of one connection get the same way sent once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.core.kv import WatchDelivery
from pnyx.core.server.node import share_deliveries
from pnyx.core.wire.messages import (
    Event,
    EventType,
    KeyValue,
    ResponseHeader,
    WatchResponse,
)


def events_of(revision: int, variant: int) -> tuple[Event, ...]:
    key = b"k/%d" % variant
    return (Event(EventType.PUT, KeyValue(key, revision, revision, 1, b"v")),)


def shared_response(revision: int, variant: int) -> WatchResponse:
    """What the hub queues for every watcher that wants these events the same way."""
    return WatchResponse(ResponseHeader(revision=revision), 0, events=events_of(revision, variant))


def test_the_same_events_for_many_watches_of_a_connection_become_one_item() -> None:
    queued = shared_response(5, 0)
    streams = {watch_id: (b"conn", 100 + watch_id) for watch_id in range(1, 101)}
    deliveries = [WatchDelivery(watch_id, None, queued) for watch_id in range(1, 101)]
    (item,) = share_deliveries(deliveries, streams)
    routing_id, response, named = item
    assert routing_id == b"conn" and response is queued
    assert named == [value for w in range(1, 101) for value in (100 + w, w)]


def test_a_lone_watch_gets_its_own_response_and_other_kinds_are_never_shared() -> None:
    queued = shared_response(5, 0)
    header = ResponseHeader(revision=5)
    streams = {1: (b"a", 11), 2: (b"b", 12), 3: (b"a", 13), 4: (b"a", 14), 5: (b"a", 15)}
    deliveries = [
        WatchDelivery(1, None, queued),
        WatchDelivery(2, None, queued),  # another connection: not with watch 1
        WatchDelivery(3, None, WatchResponse(header, 3, created=True)),
        WatchDelivery(4, None, WatchResponse(header, 4, canceled=True)),
        WatchDelivery(5, None, WatchResponse(header, 5, events=queued.events, fragment=True)),
        WatchDelivery(6, None, queued),  # a watch that is gone: dropped
    ]
    items = share_deliveries(deliveries, streams)
    assert [(routing_id, named) for routing_id, _, named in items] == [
        (b"a", [11, 1]),
        (b"b", [12, 2]),
        (b"a", [13, 3]),
        (b"a", [14, 4]),
        (b"a", [15, 5]),
    ]
    assert [response.watch_id for _, response, _ in items] == [1, 2, 3, 4, 5]
    assert items[0][1].events is queued.events
    assert items[2][1].created and items[3][1].canceled and items[4][1].fragment


@st.composite
def drains(draw: st.DrawFn) -> tuple[list[WatchDelivery], dict[int, tuple[bytes, int]]]:
    """Deliveries as a hub may list them: each watch's responses in revision order, the
    watches interleaved in any way, responses of a revision shared by some watches."""
    watches = draw(st.integers(1, 6))
    streams = {w: (draw(st.sampled_from([b"a", b"b"])), 100 + w) for w in range(1, watches + 1)}
    queued = {(r, v): shared_response(r, v) for r in range(1, 5) for v in range(2)}
    per_watch: dict[int, list[WatchResponse]] = {}
    for watch_id in streams:
        revisions = sorted(draw(st.sets(st.integers(1, 4), max_size=4)))
        responses = []
        for revision in revisions:
            kind = draw(st.sampled_from(["shared", "shared", "other", "own"]))
            if kind == "shared":
                responses.append(queued[(revision, 0)])
            elif kind == "other":
                responses.append(queued[(revision, 1)])
            else:
                header = ResponseHeader(revision=revision)
                responses.append(WatchResponse(header, watch_id, progress_notify=True))
        per_watch[watch_id] = responses
    order = draw(st.permutations([w for w, rs in per_watch.items() for _ in rs]))
    taken = dict.fromkeys(per_watch, 0)
    deliveries = []
    for watch_id in order:
        deliveries.append(WatchDelivery(watch_id, None, per_watch[watch_id][taken[watch_id]]))
        taken[watch_id] += 1
    return deliveries, streams


@settings(max_examples=300, deadline=None)
@given(drains())
def test_every_watch_gets_exactly_its_responses_in_order(
    drain: tuple[list[WatchDelivery], dict[int, tuple[bytes, int]]],
) -> None:
    deliveries, streams = drain
    items = share_deliveries(deliveries, streams)
    received: dict[int, list[tuple[int, int]]] = {w: [] for w in streams}
    for routing_id, response, named in items:
        pairs = list(zip(named[::2], named[1::2], strict=True))
        assert len({watch_id for _, watch_id in pairs}) == len(pairs)
        for request_id, watch_id in pairs:
            assert streams[watch_id] == (routing_id, request_id)
            received[watch_id].append((response.header.revision, id(response.events)))
        if len(pairs) == 1:
            assert response.watch_id == pairs[0][1]
        else:
            assert response.events and not response.progress_notify
    for watch_id in streams:
        expected = [
            (d.response.header.revision, id(d.response.events))
            for d in deliveries
            if d.watch_id == watch_id
        ]
        assert received[watch_id] == expected
