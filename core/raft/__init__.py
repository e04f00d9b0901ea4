"""pnyx.core.raft: a sans-I/O Raft core (no sockets, files, clocks, threads or global
randomness). See ``types.Ready`` for the contract with the application, ``node.RaftNode``
for the protocol and ``codec`` for the wire encoding of peer messages."""

from pnyx.core.raft.codec import (
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)
from pnyx.core.raft.node import PeerProgress, RaftNode, RaftStatus, apply_conf_change

__all__ = [
    "PeerProgress",
    "RaftNode",
    "RaftStatus",
    "apply_conf_change",
    "decode_conf_change",
    "decode_message",
    "encode_conf_change",
    "encode_message",
]
