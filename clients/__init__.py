"""pnyx.clients: the asyncio and blocking clients, and the ``pnyx`` command line.

::

    from pnyx.clients import Client

    with Client() as kv:                      # endpoints: argument, $PNYX_ENDPOINTS, `pnyx up`'s
        kv.put("flags/dark-mode", "on")
        r = kv.get("flags/", prefix=True)     # r.revision, r.kvs[i].key/.value/...
        r = kv.txn(compare=[kv.cmp.version("jobs/1") == 0],
                   success=[kv.op.put("jobs/1", "claimed")],
                   failure=[kv.op.get("jobs/1")])
        with kv.watch("flags/", prefix=True, start_revision=r.revision + 1) as w:
            for batch in w:                   # all events of one revision per batch
                ...

``AsyncClient`` has the same methods, awaitable. Every error raised is a class of the one
pnyx error tree (re-exported here); a call that cannot be answered in time raises
``TimeoutError`` (also the builtin ``TimeoutError``).

Layering: this package imports only ``pnyx.core.wire`` and ``pnyx.core.errors`` of the
core, never the server, Raft, storage or recipes (the command line, ``cli``, is the one
exception and is imported by nothing).
"""

from pnyx.clients.aio import AsyncClient, AsyncLeaseKeepAlive, AsyncWatch
from pnyx.clients.client import Client, LeaseKeepAlive, Watch
from pnyx.clients.results import (
    CompactResult,
    DeleteResult,
    GetResult,
    LeaseGrantResult,
    LeaseKeepAliveResult,
    LeaseListResult,
    LeaseTimeToLiveResult,
    MemberAddResult,
    MemberListResult,
    MemberPromoteResult,
    MemberRemoveResult,
    OpResult,
    PutResult,
    StatusResult,
    TxnResult,
    WatchBatch,
)
from pnyx.clients.txn import cmp, op
from pnyx.core.errors import (
    ClientError,
    CompactedError,
    CorruptionError,
    DuplicateRequestError,
    FutureRevisionError,
    InvalidRequestError,
    LeaseNotFoundError,
    LockLostError,
    LockTimeoutError,
    MemberError,
    NoEndpointError,
    NoLeaderError,
    NotLeaderAnymoreError,
    NotLeaderError,
    PnyxError,
    ProposalDroppedError,
    RecipeError,
    RequestTooLargeError,
    SessionExpiredError,
    SlowWatcherError,
    StorageError,
    TimeoutError,
    UnavailableError,
)
from pnyx.core.wire import (
    Compare,
    Event,
    EventType,
    KeyValue,
    Member,
    SortOrder,
    SortTarget,
    WatchFilterType,
)

__all__ = [
    "AsyncClient",
    "AsyncLeaseKeepAlive",
    "AsyncWatch",
    "Client",
    "ClientError",
    "CompactResult",
    "CompactedError",
    "Compare",
    "CorruptionError",
    "DeleteResult",
    "DuplicateRequestError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "GetResult",
    "InvalidRequestError",
    "KeyValue",
    "LeaseGrantResult",
    "LeaseKeepAlive",
    "LeaseKeepAliveResult",
    "LeaseListResult",
    "LeaseNotFoundError",
    "LeaseTimeToLiveResult",
    "LockLostError",
    "LockTimeoutError",
    "Member",
    "MemberAddResult",
    "MemberError",
    "MemberListResult",
    "MemberPromoteResult",
    "MemberRemoveResult",
    "NoEndpointError",
    "NoLeaderError",
    "NotLeaderAnymoreError",
    "NotLeaderError",
    "OpResult",
    "PnyxError",
    "ProposalDroppedError",
    "PutResult",
    "RecipeError",
    "RequestTooLargeError",
    "SessionExpiredError",
    "SlowWatcherError",
    "SortOrder",
    "SortTarget",
    "StatusResult",
    "StorageError",
    "TimeoutError",
    "TxnResult",
    "UnavailableError",
    "Watch",
    "WatchBatch",
    "WatchFilterType",
    "cmp",
    "op",
]
