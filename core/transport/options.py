"""Socket options of the node's ZeroMQ sockets, in one place.

``SocketOptions`` holds every knob (high-water marks, heartbeats, reconnect intervals,
the client message size cap) with defaults chosen for a small cluster on a LAN or on
loopback; ``apply_common`` sets what every socket of a node shares.

This module only configures sockets; it must never bind, connect, send or receive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import zmq


@attrs.frozen
class SocketOptions:
    """ZeroMQ options of a node's sockets. Times are milliseconds."""

    peer_send_hwm: int = 4096
    """ZeroMQ messages queued per peer DEALER before sends drop (Raft retransmits).
    One message carries all Raft messages of one Ready for that peer."""
    peer_receive_hwm: int = 16384
    client_send_hwm: int = 65536
    """Replies (batches) queued per client connection before they are dropped; a client
    that stops reading loses replies rather than growing the node's memory."""
    client_receive_hwm: int = 65536
    heartbeat_interval: int = 1000
    """ZMTP heartbeats find a dead TCP peer (and let the node forget a dead client)."""
    heartbeat_timeout: int = 3000
    heartbeat_ttl: int = 3000
    handshake_interval: int = 3000
    """A connection whose ZMTP handshake does not finish in time is dropped."""
    reconnect_interval: int = 100
    reconnect_interval_max: int = 1000
    """Back-off bound for reconnecting to a peer that is down."""
    max_client_message_bytes: int = 8 << 20
    """ZMQ_MAXMSGSIZE on the client ROUTER: a larger message drops the connection before
    it is read. Kept above ``Limits.max_message_bytes`` so that a message merely over
    the protocol limit still reaches the decoder and gets a typed error reply; only
    grossly oversized input is cut off at the socket."""


def apply_common(socket: zmq.Socket[bytes], options: SocketOptions) -> None:
    """Options every node socket shares: never block close on unsent data, detect dead
    connections with ZMTP heartbeats, bound the handshake."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.HEARTBEAT_IVL, options.heartbeat_interval)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, options.heartbeat_timeout)
    socket.setsockopt(zmq.HEARTBEAT_TTL, options.heartbeat_ttl)
    socket.setsockopt(zmq.HANDSHAKE_IVL, options.handshake_interval)
    socket.setsockopt(zmq.RECONNECT_IVL, options.reconnect_interval)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_interval_max)


_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
"""Plain ints: pyzmq's constants are enum flags, whose ``&`` and ``|`` run Python code."""


def has_input(socket: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on ``socket``, without receiving it. Cheaper than a
    non-blocking receive that fails: pyzmq raises ``zmq.Again`` for that, and building
    and catching the exception costs about 10 us."""
    events = socket.get(_EVENTS)
    return isinstance(events, int) and bool(events & _POLLIN)


def recv_frames(socket: zmq.Socket[bytes]) -> list[bytes]:
    """``recv_multipart(NOBLOCK)`` (raises ``zmq.Again`` alike) at a third of its cost:
    pyzmq's version asks the socket option ``RCVMORE`` after each frame, converting the
    option to its enum each time; a frame received without copy knows it (``more``)."""
    frame = socket.recv(_NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = socket.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


def send_frames(socket: zmq.Socket[bytes], frames: Sequence[bytes], copy: bool = True) -> None:
    """``send_multipart(frames, NOBLOCK)`` (raises ``zmq.Again`` alike if the message
    cannot be queued) without pyzmq's per-frame enum flag arithmetic and checks. A
    message is queued whole or not at all: only its first frame can be refused."""
    last = len(frames) - 1
    for index in range(last):
        socket.send(frames[index], _SNDMORE_NOBLOCK, copy=copy)
    socket.send(frames[last], _NOBLOCK, copy=copy)


def drain(socket: zmq.Socket[bytes], limit: int, ready: bool = False) -> Iterator[list[bytes]]:
    """The messages waiting on ``socket`` (at most ``limit``), each as its frames,
    without blocking. ``ready``: a poll just said one waits (no need to ask first)."""
    for _ in range(limit):
        if not ready and not has_input(socket):
            return
        ready = False
        try:
            frames = recv_frames(socket)
        except zmq.Again:
            return
        yield frames
