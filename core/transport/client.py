"""``ClientRouter``: the socket that clients' DEALERs talk to.

A client sends ZeroMQ messages of one frame (a ``pnyx.core.wire`` batch); the ROUTER
prefixes the connection's routing id, which is where replies go.

A vanished connection is noticed when a reply is sent to it: the ROUTER is
ZMQ_ROUTER_MANDATORY, so ``send`` reports ``SendResult.GONE`` and the node drops that
connection's watches. (ZMQ_ROUTER_NOTIFY would report disconnects eagerly, but it is a
draft option that the libzmq shipped with pyzmq does not enable; a watch of a dead
client is therefore reclaimed at its next event or progress notification.)

Input is untrusted: a message with an unexpected number of frames is still handed out
(as ``Malformed``) so that the node can answer it with a typed error; a message over
``SocketOptions.max_client_message_bytes`` is cut off by ZeroMQ itself (the connection
drops) before anything reads it.

This module must never decode the protocol, block the caller, or bind anything but the
address it is given.
"""

from __future__ import annotations

import enum

import attrs
import structlog
import zmq

from pnyx.core.transport.options import (
    SocketOptions,
    apply_common,
    drain,
    send_frames,
)

__all__ = [
    "ClientEvent",
    "ClientRouter",
    "ClientRouterStats",
    "Malformed",
    "Received",
    "SendResult",
]

log = structlog.get_logger(__name__)


@attrs.frozen
class Received:
    """One client message: the connection it came from and its single frame."""

    routing_id: bytes
    payload: bytes


@attrs.frozen
class Malformed:
    """A message from ``routing_id`` that does not have exactly one payload frame."""

    routing_id: bytes
    frames: int


ClientEvent = Received | Malformed


class SendResult(enum.Enum):
    SENT = "sent"
    DROPPED = "dropped"
    """The connection's queue is full; the reply is lost (the client will retry)."""
    GONE = "gone"
    """No such connection (any more): the client disconnected."""


@attrs.define
class ClientRouterStats:
    received: int = 0
    sent: int = 0
    dropped: int = 0
    """Replies not sent because the connection's queue was full."""


@attrs.define
class ClientRouter:
    """A bound client (or admin) ROUTER. Owned by the node's loop thread."""

    _context: zmq.Context[zmq.Socket[bytes]]
    listen_url: str
    options: SocketOptions = attrs.Factory(SocketOptions)
    stats: ClientRouterStats = attrs.Factory(ClientRouterStats)
    _router: zmq.Socket[bytes] | None = None

    def bind(self) -> ClientRouter:
        """Bind the ROUTER. Raises ``zmq.ZMQError`` (e.g. EADDRINUSE)."""
        router = self._context.socket(zmq.ROUTER)
        apply_common(router, self.options)
        router.setsockopt(zmq.SNDHWM, self.options.client_send_hwm)
        router.setsockopt(zmq.RCVHWM, self.options.client_receive_hwm)
        router.setsockopt(zmq.MAXMSGSIZE, self.options.max_client_message_bytes)
        # Report sends to vanished connections instead of dropping them silently.
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            router.bind(self.listen_url)
        except zmq.ZMQError:
            router.close(0)
            raise
        self._router = router
        return self

    @property
    def socket(self) -> zmq.Socket[bytes]:
        if self._router is None:
            raise RuntimeError("ClientRouter.bind() was not called")
        return self._router

    def receive(self, max_messages: int = 4096, ready: bool = False) -> list[ClientEvent]:
        """Every message waiting (at most ``max_messages``), without blocking. ``ready``:
        a poll just said a message waits (no need to ask before the first)."""
        events: list[ClientEvent] = []
        for frames in drain(self.socket, max_messages, ready):
            self.stats.received += 1
            if len(frames) == 2:
                events.append(Received(frames[0], frames[1]))
            else:
                # A REQ socket adds an empty delimiter frame, a multipart send more frames.
                events.append(Malformed(frames[0], len(frames) - 1))
        return events

    def send(self, routing_id: bytes, payload: bytes) -> SendResult:
        """Send ``payload`` to the connection ``routing_id``. Never blocks: a reply to a
        full connection is dropped (the client times out and retries)."""
        try:
            send_frames(self.socket, (routing_id, payload), copy=False)
        except zmq.Again:
            self.stats.dropped += 1
            return SendResult.DROPPED
        except zmq.ZMQError as error:
            self.stats.dropped += 1
            if error.errno == zmq.EHOSTUNREACH:
                return SendResult.GONE
            # Logged, not raised: one client's connection must not take the node down.
            log.warning("client.send_failed", error=str(error))
            return SendResult.DROPPED
        self.stats.sent += 1
        return SendResult.SENT

    def close(self) -> None:
        if self._router is not None:
            self._router.close(0)
            self._router = None
