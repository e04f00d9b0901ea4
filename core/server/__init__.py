"""pnyx.core.server: a node - Raft core, storage, state machine and ZeroMQ sockets on one
loop (``node.Node``), its configuration (``config``), the replicated member table
(``members``) and the process entry point (``main``; ``python -m pnyx.core.server``).

The server wires the other core packages together; nothing in core imports it, and it
must never be imported by the client library (only the command line may, inside its
commands).
"""

from __future__ import annotations

from pnyx.core.server.config import ClusterState, NodeConfig, member_id, parse_cluster
from pnyx.core.server.members import MemberRecord, MemberTable
from pnyx.core.server.node import (
    EXIT_ADDRESS_IN_USE,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_STORAGE,
    SERVER_VERSION,
    Node,
)

__all__ = [
    "EXIT_ADDRESS_IN_USE",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_STORAGE",
    "SERVER_VERSION",
    "ClusterState",
    "MemberRecord",
    "MemberTable",
    "Node",
    "NodeConfig",
    "member_id",
    "parse_cluster",
]
