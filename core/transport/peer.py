"""``PeerTransport``: Raft messages between nodes over ZeroMQ.

Each node binds one peer ROUTER (incoming) and connects one DEALER per peer to that
peer's ROUTER (outgoing), so each direction of each pair has its own socket and a slow
peer only fills its own queue. Everything one Ready produced for one peer travels as ONE
ZeroMQ message of several frames::

    [b"P1" + sender_id as 8 bytes big-endian, encoded_message, encoded_message, ...]

(frames rather than one msgpack array around the messages: wrapping would copy every
encoded message once more, and AppendRequests carry the whole replicated payload).

The transport moves opaque byte strings (encoded Raft messages); it never decodes them.
Sends never block: a send that would block (peer down, queue full) is dropped and
counted, because Raft retransmits. DEALERs use ZMQ_IMMEDIATE so nothing queues for a
peer that is not connected.

For fault-injection tests a set of *blocked* peers can be configured: traffic to and
from them is dropped here, which cuts a node off on loopback without touching the OS.

This module must never decode Raft messages, block the caller, or bind anything but the
address it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

import attrs
import structlog
import zmq

from pnyx.core.transport.options import (
    SocketOptions,
    apply_common,
    drain,
    send_frames,
)

__all__ = ["PeerTransport", "PeerTransportStats", "pack_peer_batch", "unpack_peer_batch"]

log = structlog.get_logger(__name__)


_HEADER_MAGIC = b"P1"
_HEADER = struct.Struct(">2sQ")


def pack_peer_batch(sender_id: int, messages: Sequence[bytes]) -> list[bytes]:
    """The frames of one batch of encoded Raft messages from ``sender_id``."""
    return [_HEADER.pack(_HEADER_MAGIC, sender_id), *messages]


def unpack_peer_batch(frames: Sequence[bytes]) -> tuple[int, list[bytes]]:
    """The inverse of ``pack_peer_batch``. Raises ``ValueError`` on anything malformed
    (a peer port is reachable by anyone on the network, so input is untrusted)."""
    if not frames or len(frames[0]) != _HEADER.size:
        raise ValueError("peer batch: expected a header frame")
    magic, sender_id = _HEADER.unpack(frames[0])
    if magic != _HEADER_MAGIC:
        raise ValueError("peer batch: bad header")
    return sender_id, list(frames[1:])


@attrs.define
class PeerTransportStats:
    sent_batches: int = 0
    dropped_batches: int = 0
    """Batches not sent because the peer was unknown, unreachable, blocked or slow."""
    received_batches: int = 0
    rejected_batches: int = 0
    """Incoming batches that were malformed or came from a blocked peer."""


@attrs.define
class _Peer:
    url: str
    socket: zmq.Socket[bytes]


@attrs.define
class PeerTransport:
    """The node's peer sockets. Owned by the node's loop thread (not thread-safe)."""

    _context: zmq.Context[zmq.Socket[bytes]]
    node_id: int
    listen_url: str
    options: SocketOptions = attrs.Factory(SocketOptions)
    stats: PeerTransportStats = attrs.Factory(PeerTransportStats)
    _router: zmq.Socket[bytes] | None = None
    _peers: dict[int, _Peer] = attrs.Factory(dict)
    _blocked: frozenset[int] = frozenset()

    def bind(self) -> PeerTransport:
        """Bind the peer ROUTER. Raises ``zmq.ZMQError`` (e.g. EADDRINUSE)."""
        router = self._context.socket(zmq.ROUTER)
        apply_common(router, self.options)
        router.setsockopt(zmq.RCVHWM, self.options.peer_receive_hwm)
        try:
            router.bind(self.listen_url)
        except zmq.ZMQError:
            router.close(0)
            raise
        self._router = router
        return self

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The incoming ROUTER, for the caller's poller."""
        if self._router is None:
            raise RuntimeError("PeerTransport.bind() was not called")
        return self._router

    @property
    def peers(self) -> Mapping[int, str]:
        return {node_id: peer.url for node_id, peer in self._peers.items()}

    def set_peer(self, node_id: int, url: str) -> None:
        """Know ``node_id`` at ``url``: connect a DEALER to it (replacing one that pointed
        elsewhere). The node's own id is ignored."""
        if node_id == self.node_id or not url:
            return
        current = self._peers.get(node_id)
        if current is not None:
            if current.url == url:
                return
            current.socket.close(0)
        socket = self._context.socket(zmq.DEALER)
        apply_common(socket, self.options)
        socket.setsockopt(zmq.SNDHWM, self.options.peer_send_hwm)
        # Queue nothing for a peer that is not connected: a dead peer must not collect
        # a backlog of stale Raft messages to replay at it when it comes back.
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.connect(url)
        self._peers[node_id] = _Peer(url, socket)
        log.info("peer.connect", peer=node_id, url=url)

    def set_peers(self, peers: Mapping[int, str]) -> None:
        for node_id, url in peers.items():
            self.set_peer(node_id, url)

    def remove_peer(self, node_id: int) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is not None:
            peer.socket.close(0)
            log.info("peer.disconnect", peer=node_id)

    def block(self, node_ids: Iterable[int]) -> None:
        """Drop all traffic to and from ``node_ids`` (replaces the previous set).
        For fault-injection tests only."""
        self._blocked = frozenset(node_ids)
        log.warning("peer.blocked", peers=sorted(self._blocked))

    @property
    def blocked(self) -> frozenset[int]:
        return self._blocked

    def send(self, node_id: int, messages: Sequence[bytes]) -> bool:
        """Send ``messages`` (encoded Raft messages) to ``node_id`` as one ZeroMQ message.
        False if it was dropped."""
        peer = self._peers.get(node_id)
        if peer is None or node_id in self._blocked:
            self.stats.dropped_batches += 1
            return False
        try:
            send_frames(peer.socket, pack_peer_batch(self.node_id, messages))
        except zmq.Again:
            self.stats.dropped_batches += 1
            return False
        self.stats.sent_batches += 1
        return True

    def receive(
        self, max_batches: int = 1024, ready: bool = False
    ) -> list[tuple[int, list[bytes]]]:
        """Every batch waiting on the ROUTER (at most ``max_batches``), without blocking,
        as ``(sender_id, encoded messages)``. Malformed or blocked input is dropped.
        ``ready``: a poll just said a message waits (no need to ask before the first)."""
        received: list[tuple[int, list[bytes]]] = []
        for frames in drain(self.socket, max_batches, ready):
            self.stats.received_batches += 1
            try:
                # [routing id, header, messages...]
                sender_id, messages = unpack_peer_batch(frames[1:])
            except ValueError as error:
                self.stats.rejected_batches += 1
                log.warning("peer.bad_batch", error=str(error))
                continue
            if sender_id in self._blocked:
                self.stats.rejected_batches += 1
                continue
            received.append((sender_id, messages))
        return received

    def close(self) -> None:
        for peer in self._peers.values():
            peer.socket.close(0)
        self._peers.clear()
        if self._router is not None:
            self._router.close(0)
            self._router = None
