"""The node's ZeroMQ transport: peer batches, drops instead of blocking, blocking lists for
partitions, client ROUTER events. Real sockets on loopback, ephemeral ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import zmq

from pnyx.core.transport import (
    ClientRouter,
    Malformed,
    PeerTransport,
    Received,
    SendResult,
    SocketOptions,
    has_input,
    pack_peer_batch,
    unpack_peer_batch,
)
from pnyx.core.transport.options import recv_frames, send_frames

T = TypeVar("T")


def poll_until(produce: Callable[[], T | None], deadline: float = 5.0) -> T:
    """Call ``produce`` until it returns something truthy (polling, never a fixed sleep)."""
    end = time.monotonic() + deadline
    while True:
        value = produce()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.005)


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _bound_peer(ctx: zmq.Context[zmq.Socket[bytes]], node_id: int) -> PeerTransport:
    transport = PeerTransport(ctx, node_id, "tcp://127.0.0.1:*").bind()
    return transport


def _endpoint(socket: zmq.Socket[bytes]) -> str:
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return endpoint.decode()


def test_peer_batch_round_trip_and_malformed_input_is_rejected() -> None:
    assert unpack_peer_batch(pack_peer_batch(7, [b"a", b"bc"])) == (7, [b"a", b"bc"])
    assert unpack_peer_batch(pack_peer_batch(2**64 - 1, [])) == (2**64 - 1, [])
    for bad in (
        [],
        [b"\xc1"],
        [b"P1\x00\x00\x00\x00\x00\x00\x00", b"short header"],
        [b"XX\x00\x00\x00\x00\x00\x00\x00\x07", b"bad magic"],
    ):
        with pytest.raises(ValueError):
            unpack_peer_batch(bad)


def test_a_malformed_peer_message_is_rejected_and_counted(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    b = _bound_peer(context, 2)
    intruder = context.socket(zmq.DEALER)
    intruder.setsockopt(zmq.LINGER, 0)
    try:
        intruder.connect(_endpoint(b.socket))
        intruder.send_multipart([b"not a header", b"m"])
        intruder.send_multipart(pack_peer_batch(5, [b"m"]))
        assert poll_until(b.receive) == [(5, [b"m"])]
        assert b.stats.rejected_batches == 1
    finally:
        intruder.close(0)
        b.close()


def test_all_messages_for_one_peer_travel_in_one_zeromq_message(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    a, b = _bound_peer(context, 1), _bound_peer(context, 2)
    try:
        a.set_peer(2, _endpoint(b.socket))
        # ZMQ_IMMEDIATE: nothing is queued until the connection is up, so retry the send.
        poll_until(lambda: a.send(2, [b"m1", b"m2", b"m3"]))
        batches = poll_until(b.receive)
        assert batches == [(1, [b"m1", b"m2", b"m3"])]
        assert b.stats.received_batches == 1
    finally:
        a.close()
        b.close()


def test_send_to_an_unknown_or_unreachable_peer_drops_instead_of_blocking(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    a = _bound_peer(context, 1)
    try:
        assert a.send(9, [b"x"]) is False
        # A peer address with nothing listening: IMMEDIATE means no queue, so EAGAIN.
        a.set_peer(3, "tcp://127.0.0.1:1")
        started = time.monotonic()
        for _ in range(100):
            assert a.send(3, [b"x"]) is False
        assert time.monotonic() - started < 5  # generous: only proves it did not hang
        assert a.stats.dropped_batches == 101
    finally:
        a.close()


def test_blocked_peers_lose_traffic_in_both_directions(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    a, b = _bound_peer(context, 1), _bound_peer(context, 2)
    try:
        a.set_peer(2, _endpoint(b.socket))
        b.set_peer(1, _endpoint(a.socket))
        poll_until(lambda: a.send(2, [b"hello"]))
        poll_until(b.receive)
        a.block([2])
        assert a.send(2, [b"lost"]) is False
        poll_until(lambda: b.send(1, [b"also lost"]))
        # b's message arrives at a's socket but is dropped there.
        poll_until(lambda: a.receive() == [] and a.stats.rejected_batches >= 1)
        assert a.stats.received_batches == 1
        a.block([])
        poll_until(lambda: a.send(2, [b"back"]))
        assert poll_until(b.receive) == [(1, [b"back"])]
    finally:
        a.close()
        b.close()


def test_set_peer_to_a_new_address_reconnects(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    a, b, c = _bound_peer(context, 1), _bound_peer(context, 2), _bound_peer(context, 3)
    try:
        a.set_peer(2, _endpoint(b.socket))
        a.set_peer(2, _endpoint(c.socket))  # node 2 moved
        assert a.peers == {2: _endpoint(c.socket)}
        poll_until(lambda: a.send(2, [b"to-c"]))
        assert poll_until(c.receive) == [(1, [b"to-c"])]
        assert b.receive() == []
        a.remove_peer(2)
        assert a.send(2, [b"x"]) is False
    finally:
        for transport in (a, b, c):
            transport.close()


def test_client_router_reports_messages_malformed_frames_and_vanished_connections(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router = ClientRouter(context, "tcp://127.0.0.1:*").bind()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(_endpoint(router.socket))
        dealer.send(b"payload")
        (event,) = poll_until(router.receive)
        assert isinstance(event, Received) and event.payload == b"payload"
        assert router.send(event.routing_id, b"reply") is SendResult.SENT
        assert dealer.poll(5000) and dealer.recv() == b"reply"
        dealer.send_multipart([b"", b"payload"])
        (malformed,) = poll_until(router.receive)
        assert malformed == Malformed(event.routing_id, 2)
        assert router.send(b"no such connection", b"x") is SendResult.GONE
        dealer.close(0)
        poll_until(lambda: router.send(event.routing_id, b"late") is SendResult.GONE)
    finally:
        dealer.close(0)
        router.close()


def test_client_router_cuts_off_grossly_oversized_messages(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router = ClientRouter(
        context, "tcp://127.0.0.1:*", SocketOptions(max_client_message_bytes=1000)
    ).bind()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(_endpoint(router.socket))
        dealer.send(b"x" * 5000)
        # The oversized message never surfaces (the connection is dropped for it). An
        # absence can only be observed over a window; half a second is plenty on loopback.
        end = time.monotonic() + 0.5
        seen: list[object] = []
        while time.monotonic() < end:
            seen.extend(router.receive())
            time.sleep(0.01)
        assert seen == []
    finally:
        dealer.close(0)
        router.close()


@pytest.mark.parametrize(
    "frames",
    [[b"one"], [b"", b"x"], [b"a", b"", b"c" * 100_000, b"d", b""]],
)
def test_frames_sent_and_received_without_pyzmq_multipart_helpers_arrive_whole(
    context: zmq.Context[zmq.Socket[bytes]], frames: list[bytes]
) -> None:
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        with pytest.raises(zmq.Again):
            recv_frames(pull)  # nothing yet: like recv_multipart(NOBLOCK)
        send_frames(push, frames)
        send_frames(push, [b"next"], copy=False)
        assert poll_until(lambda: recv_frames(pull) if has_input(pull) else None) == frames
        assert poll_until(lambda: recv_frames(pull) if has_input(pull) else None) == [b"next"]
    finally:
        push.close(0)
        pull.close(0)


def test_a_receive_told_input_is_ready_copes_when_none_is(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    peer = _bound_peer(context, 1)
    router = ClientRouter(context, "tcp://127.0.0.1:*").bind()
    try:
        assert peer.receive(ready=True) == []
        assert router.receive(ready=True) == []
    finally:
        peer.close()
        router.close()
