"""pnyx.core.kv: the replicated state machine, with etcd v3 semantics.

* ``mvcc``: the multi-version store (revisions, ranges at past revisions, transactions,
  compaction, per-revision events);
* ``lease``: the replicated lease table and the leader-only ``Lessor`` (deadlines);
* ``watch``: the ``WatchHub`` routing committed events to bounded per-watcher outboxes;
* ``store``: ``KVStateMachine`` (apply / snapshot / restore, exactly-once table) and the
  commands replicated in Raft entries.

Everything here is pure and deterministic: no clocks, files, sockets, threads or global
randomness; it depends on ``core.wire`` and ``core.errors`` only, never on the server,
transport or clients.
"""

from __future__ import annotations

from pnyx.core.kv.lease import LeaseTable, Lessor, lease_id_from_index
from pnyx.core.kv.mvcc import FIRST_REVISION, MVCCStore
from pnyx.core.kv.store import (
    ClientBatch,
    ClientCommand,
    Command,
    CompactHistory,
    DedupTable,
    ExpireLeases,
    KVStateMachine,
    decode_command,
    encode_command,
)
from pnyx.core.kv.watch import SLOW_WATCHER_REASON, WatchDelivery, WatchHub, WatchLimits

__all__ = [
    "FIRST_REVISION",
    "SLOW_WATCHER_REASON",
    "ClientBatch",
    "ClientCommand",
    "Command",
    "CompactHistory",
    "DedupTable",
    "ExpireLeases",
    "KVStateMachine",
    "LeaseTable",
    "Lessor",
    "MVCCStore",
    "WatchDelivery",
    "WatchHub",
    "WatchLimits",
    "decode_command",
    "encode_command",
    "lease_id_from_index",
]
