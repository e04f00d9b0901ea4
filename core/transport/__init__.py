"""pnyx.core.transport: the node's ZeroMQ sockets.

* ``peer``: ``PeerTransport`` - a peer ROUTER in, one DEALER per peer out; one ZeroMQ
  message per peer per Ready; non-blocking sends that drop (Raft retransmits);
  a test-only block list to partition nodes on loopback.
* ``client``: ``ClientRouter`` - the ROUTER clients talk to, reporting replies to
  vanished connections, with a message size cap.
* ``options``: ``SocketOptions`` - high-water marks, heartbeats, reconnect intervals.

The transport moves bytes. It never decodes Raft messages or client requests (the
server does), never blocks its caller, and binds only the addresses it is given.
"""

from __future__ import annotations

from pnyx.core.transport.client import (
    ClientEvent,
    ClientRouter,
    ClientRouterStats,
    Malformed,
    Received,
    SendResult,
)
from pnyx.core.transport.options import SocketOptions, apply_common, has_input
from pnyx.core.transport.peer import (
    PeerTransport,
    PeerTransportStats,
    pack_peer_batch,
    unpack_peer_batch,
)

__all__ = [
    "ClientEvent",
    "ClientRouter",
    "ClientRouterStats",
    "Malformed",
    "PeerTransport",
    "PeerTransportStats",
    "Received",
    "SendResult",
    "SocketOptions",
    "apply_common",
    "has_input",
    "pack_peer_batch",
    "unpack_peer_batch",
]
