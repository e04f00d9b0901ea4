"""The messages of the client protocol: every request, response and watch event that
crosses between a client and a node, and the envelope that carries one of them.

Semantics follow etcd v3 (``etcdserverpb``): keys and values are ``bytes``, revisions,
versions, lease ids and TTLs are ``int``. Every message is an immutable ``attrs.frozen``
value whose fields are in wire order: the codec (``pnyx.core.wire.codec``) encodes a
message as the positional array of its fields, so **never reorder, remove or insert
fields in the middle**; add new ones at the end and bump ``PROTOCOL_VERSION``.

Exactly-once: mutating requests (``MUTATING_REQUESTS``) are deduplicated by the
``client_id`` and ``seq`` of the ``Envelope`` that carries them, not by fields of the
request itself, so a retry re-sends the same envelope unchanged.

Errors cross the wire as ``ErrorResponse(code, ...)`` where ``code`` is the ``code`` class
attribute of a class of ``pnyx.core.errors``; ``error_from_response`` and
``error_response_from_exception`` map both ways.

This module holds plain data and the error mapping only. It must never do I/O, import
anything of pnyx but ``core.errors``, or validate values (that is the decoder's and
``limits.validate_request``'s job, so that building a message stays cheap).
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs

from pnyx.core import errors

# --------------------------------------------------------------------------- enums


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class SortOrder(enum.IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(enum.IntEnum):
    """What a ``Compare`` looks at. ``VALUE`` compares bytes; every other target an int."""

    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(enum.IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class WatchFilterType(enum.IntEnum):
    NOPUT = 0
    """Do not deliver PUT events."""
    NODELETE = 1
    """Do not deliver DELETE events."""


# --------------------------------------------------------------------------- common


@attrs.frozen
class ResponseHeader:
    """Carried by every response. ``revision`` is the store's revision when the request
    was served (for a Range at a past revision, still the current one, as in etcd)."""

    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0
    leader_id: int = 0
    """The member the answering node believes to be leader, 0 if none is known."""


@attrs.frozen
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    """Number of puts since the key was (re)created; 0 means the key does not exist."""
    value: bytes = b""
    lease: int = 0
    """Id of the lease attached to the key, 0 for none."""


@attrs.frozen
class Event:
    type: EventType
    kv: KeyValue
    """For a DELETE, the key with ``mod_revision`` set to the deleting revision."""
    prev_kv: KeyValue | None = None


# --------------------------------------------------------------------------- key-value


@attrs.frozen
class RangeRequest:
    """Read one key (``range_end == b""``), the range ``[key, range_end)``, or every key
    ``>= key`` (``range_end == b"\\0"``). See ``pnyx.core.wire.keys`` for prefixes."""

    key: bytes
    range_end: bytes = b""
    limit: int = 0
    """At most this many keys; 0 means no limit."""
    revision: int = 0
    """Read at this past revision; 0 means the current one."""
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    """Serve from the local member without a ReadIndex round (may be stale)."""
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    """Filters: keep keys whose revision lies in the bounds; 0 means no bound."""
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@attrs.frozen
class RangeResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    """More keys matched than ``limit`` allowed to return."""
    count: int = 0
    """Number of keys in the range (ignores ``limit``)."""


@attrs.frozen
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    """Return the key-value as it was before this put."""
    ignore_value: bool = False
    """Keep the current value (``value`` must be empty); fails if the key is absent."""
    ignore_lease: bool = False
    """Keep the current lease (``lease`` must be 0); fails if the key is absent."""


@attrs.frozen
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None


@attrs.frozen
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@attrs.frozen
class DeleteRangeResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@attrs.frozen
class Compare:
    """``<target of key(s)> <result> value``; with ``range_end`` every key in the range
    must satisfy it. ``value`` is ``bytes`` for ``CompareTarget.VALUE`` and ``int``
    (version, create/mod revision or lease id) for every other target."""

    target: CompareTarget
    result: CompareResult
    key: bytes
    value: bytes | int = 0
    range_end: bytes = b""


@attrs.frozen
class TxnRequest:
    """If every ``compare`` holds, run ``success`` in order, else ``failure``, as one
    write at one revision. A key may be put at most once per branch (as in etcd)."""

    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@attrs.frozen
class TxnResponse:
    header: ResponseHeader
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()
    """One response per op of the branch taken, in order."""


RequestOp: TypeAlias = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest
"""What a transaction branch may contain."""
ResponseOp: TypeAlias = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@attrs.frozen
class CompactionRequest:
    """Drop history before ``revision``. ``physical``: answer only once the space is freed."""

    revision: int
    physical: bool = False


@attrs.frozen
class CompactionResponse:
    header: ResponseHeader


# --------------------------------------------------------------------------- leases


@attrs.frozen
class LeaseGrantRequest:
    ttl: int
    """Seconds."""
    id: int = 0
    """The lease id wanted; 0 lets the leader choose."""


@attrs.frozen
class LeaseGrantResponse:
    header: ResponseHeader
    id: int = 0
    ttl: int = 0
    """The TTL granted (the leader may raise it to the minimum TTL)."""
    error: str = ""


@attrs.frozen
class LeaseRevokeRequest:
    id: int


@attrs.frozen
class LeaseRevokeResponse:
    header: ResponseHeader


@attrs.frozen
class LeaseKeepAliveRequest:
    id: int


@attrs.frozen
class LeaseKeepAliveResponse:
    header: ResponseHeader
    id: int = 0
    ttl: int = 0
    """Remaining TTL after the refresh; 0 or less means the lease is gone."""


@attrs.frozen
class LeaseTimeToLiveRequest:
    id: int
    keys: bool = False
    """Also list the keys attached to the lease."""


@attrs.frozen
class LeaseTimeToLiveResponse:
    header: ResponseHeader
    id: int = 0
    ttl: int = 0
    """Remaining seconds; -1 if the lease has expired or does not exist."""
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()


@attrs.frozen
class LeaseLeasesRequest:
    pass


@attrs.frozen
class LeaseLeasesResponse:
    header: ResponseHeader
    leases: tuple[int, ...] = ()
    """The ids of all live leases."""


# --------------------------------------------------------------------------- watches


@attrs.frozen
class WatchCreateRequest:
    """Open a watch. Events come back as ``WatchResponse`` envelopes carrying the request
    id of this request, until the watch is canceled."""

    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    """First revision to deliver; 0 means "from the next write"."""
    progress_notify: bool = False
    """Send empty responses with the current revision while nothing happens."""
    filters: tuple[WatchFilterType, ...] = ()
    prev_kv: bool = False
    watch_id: int = 0
    """The watch id wanted; 0 lets the server choose."""
    fragment: bool = False
    """Allow splitting one revision's events over several responses (``fragment`` set
    on all but the last). Off by default: all events of a revision arrive together."""


@attrs.frozen
class WatchCancelRequest:
    watch_id: int


@attrs.frozen
class WatchProgressRequest:
    """Ask every watch of this connection for a progress notification."""


@attrs.frozen
class WatchResponse:
    header: ResponseHeader
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    """Set when the watch was canceled because ``start_revision`` is compacted."""
    cancel_reason: str = ""
    events: tuple[Event, ...] = ()
    progress_notify: bool = False
    fragment: bool = False
    """More events of the same revision follow in the next response."""


@attrs.frozen
class SharedWatchResponse:
    """The same events for several watches of one connection, in one envelope: what
    ``WatchResponse(header, watch_id, events=events)`` would say once per watch. A member
    sends it instead of identical per-watch responses when two or more watches of a
    connection get the same events of a revision (a fleet of watchers of one prefix),
    so the events are encoded, sent and decoded once rather than once per watch.

    ``streams`` names the watches, flat: ``(request_id, watch_id, request_id, watch_id,
    ...)``, the request id of each watch's ``WatchCreateRequest`` and its watch id. The
    envelope's own request id is the first of them. Only plain event deliveries are
    shared (never created, canceled, progress or fragmented responses), and each watch
    still receives its responses in revision order."""

    header: ResponseHeader
    streams: tuple[int, ...] = ()
    events: tuple[Event, ...] = ()


# --------------------------------------------------------------------------- cluster


@attrs.frozen
class Member:
    id: int
    name: str = ""
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False


@attrs.frozen
class MemberListRequest:
    linearizable: bool = False
    """Confirm the list with a ReadIndex round instead of answering locally."""


@attrs.frozen
class MemberListResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@attrs.frozen
class MemberAddRequest:
    peer_urls: tuple[str, ...]
    name: str = ""
    is_learner: bool = False


@attrs.frozen
class MemberAddResponse:
    header: ResponseHeader
    member: Member
    members: tuple[Member, ...] = ()


@attrs.frozen
class MemberRemoveRequest:
    id: int


@attrs.frozen
class MemberRemoveResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@attrs.frozen
class MemberPromoteRequest:
    id: int


@attrs.frozen
class MemberPromoteResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@attrs.frozen
class StatusRequest:
    pass


@attrs.frozen
class StatusResponse:
    header: ResponseHeader
    version: str = ""
    db_size: int = 0
    leader: int = 0
    raft_index: int = 0
    raft_term: int = 0
    raft_applied_index: int = 0
    errors: tuple[str, ...] = ()
    is_learner: bool = False


# --------------------------------------------------------------------------- session


@attrs.frozen
class Hello:
    """Optional first request on a connection: the client's protocol version and id."""

    protocol_version: int
    client_id: bytes = b""
    client_name: str = ""


@attrs.frozen
class HelloResponse:
    header: ResponseHeader
    protocol_version: int = 0
    server_version: str = ""
    client_urls: tuple[str, ...] = ()
    """Client endpoints of every member, so a client can learn the cluster."""


@attrs.frozen
class ErrorResponse:
    """The answer to a request that failed. ``code`` is the ``code`` of a class of
    ``pnyx.core.errors``; the other fields carry that class's extra attributes."""

    code: int
    message: str = ""
    leader_hint: str | None = None
    """``NotLeaderError``: client address of the leader, if known."""
    compact_revision: int = 0
    """``CompactedError``: the revision history was compacted to."""
    reason: str = ""
    """``ProposalDroppedError`` and ``MemberError``: why."""
    header: ResponseHeader | None = None


# --------------------------------------------------------------------------- envelope

Request: TypeAlias = (
    RangeRequest
    | PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseKeepAliveRequest
    | LeaseTimeToLiveRequest
    | LeaseLeasesRequest
    | WatchCreateRequest
    | WatchCancelRequest
    | WatchProgressRequest
    | MemberListRequest
    | MemberAddRequest
    | MemberRemoveRequest
    | MemberPromoteRequest
    | StatusRequest
    | Hello
)
Response: TypeAlias = (
    RangeResponse
    | PutResponse
    | DeleteRangeResponse
    | TxnResponse
    | CompactionResponse
    | LeaseGrantResponse
    | LeaseRevokeResponse
    | LeaseKeepAliveResponse
    | LeaseTimeToLiveResponse
    | LeaseLeasesResponse
    | WatchResponse
    | SharedWatchResponse
    | MemberListResponse
    | MemberAddResponse
    | MemberRemoveResponse
    | MemberPromoteResponse
    | StatusResponse
    | HelloResponse
    | ErrorResponse
)
Message: TypeAlias = Request | Response

REQUEST_TYPES: tuple[type, ...] = (
    RangeRequest,
    PutRequest,
    DeleteRangeRequest,
    TxnRequest,
    CompactionRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    LeaseKeepAliveRequest,
    LeaseTimeToLiveRequest,
    LeaseLeasesRequest,
    WatchCreateRequest,
    WatchCancelRequest,
    WatchProgressRequest,
    MemberListRequest,
    MemberAddRequest,
    MemberRemoveRequest,
    MemberPromoteRequest,
    StatusRequest,
    Hello,
)
RESPONSE_TYPES: tuple[type, ...] = (
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseKeepAliveResponse,
    LeaseTimeToLiveResponse,
    LeaseLeasesResponse,
    WatchResponse,
    SharedWatchResponse,
    MemberListResponse,
    MemberAddResponse,
    MemberRemoveResponse,
    MemberPromoteResponse,
    StatusResponse,
    HelloResponse,
    ErrorResponse,
)
MUTATING_REQUESTS: frozenset[type] = frozenset(
    {
        PutRequest,
        DeleteRangeRequest,
        TxnRequest,
        CompactionRequest,
        LeaseGrantRequest,
        LeaseRevokeRequest,
    }
)
"""Requests that must be applied exactly once: they go through Raft, and the state
machine answers a repeated ``(client_id, seq)`` with the first result."""


@attrs.frozen
class Envelope:
    """One logical request or response inside a ZeroMQ message.

    ``request_id`` is chosen by the client, unique among its calls in flight; the answer
    (and every event of a watch stream) carries the same id. ``client_id`` and ``seq``
    identify a mutating request for exactly-once application: a client keeps ``client_id``
    for its lifetime, gives each new mutating request the next ``seq`` (starting at 1),
    and re-sends a retried request with the same pair. ``seq == 0`` means "no
    deduplication" (reads, and every response).
    """

    request_id: int
    message: Message
    client_id: bytes = b""
    seq: int = 0


# --------------------------------------------------------------------------- error codes


def _error_classes() -> dict[int, type[errors.PnyxError]]:
    """Every class of the error tree by code, found by walking subclasses so that a class
    added to ``core.errors`` is mapped without touching this module."""
    by_code: dict[int, type[errors.PnyxError]] = {}
    pending: list[type[errors.PnyxError]] = [errors.PnyxError]
    while pending:
        cls = pending.pop()
        # Only the classes of the one error tree: a subclass defined elsewhere (a test,
        # a user) must not take over a code on the wire.
        if cls.__module__ == errors.__name__:
            by_code.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return by_code


ERROR_CLASSES: dict[int, type[errors.PnyxError]] = _error_classes()
"""``code`` -> class, for every class of ``pnyx.core.errors``."""


def error_response_from_exception(
    error: BaseException, header: ResponseHeader | None = None
) -> ErrorResponse:
    """The wire form of ``error``. An exception that is not a ``PnyxError`` is a bug on the
    answering side; it is sent as a plain ``PnyxError`` (code 1) with its type name."""
    if not isinstance(error, errors.PnyxError):
        return ErrorResponse(
            code=errors.PnyxError.code,
            message=f"internal error: {type(error).__name__}: {error}",
            header=header,
        )
    leader_hint = getattr(error, "leader_hint", None)
    compact_revision = getattr(error, "compact_revision", 0)
    reason = getattr(error, "reason", "")
    return ErrorResponse(
        code=error.code,
        message=error.message,
        leader_hint=leader_hint if isinstance(leader_hint, str) else None,
        compact_revision=compact_revision if isinstance(compact_revision, int) else 0,
        reason=reason if isinstance(reason, str) else "",
        header=header,
    )


def error_from_response(response: ErrorResponse) -> errors.PnyxError:
    """The exception ``response`` stands for: the same class as on the answering side
    (with its extra attributes), or a plain ``PnyxError`` for a code this side does not
    know (a newer server)."""
    cls = ERROR_CLASSES.get(response.code)
    message = response.message
    error: errors.PnyxError
    if cls is None:
        error = errors.PnyxError(message or f"unknown error code {response.code}")
    elif issubclass(cls, errors.CompactedError):
        error = cls(message, compact_revision=response.compact_revision)
    elif issubclass(cls, errors.NotLeaderError):
        error = cls(message, leader_hint=response.leader_hint)
    elif issubclass(cls, errors.ProposalDroppedError):
        error = cls(response.reason)
        # ProposalDroppedError builds its own message from the reason; keep the sender's.
        if message:
            error.message = message
            error.args = (message,)
    else:
        error = cls(message)
        if response.reason:
            # MemberError and friends describe why in ``reason``; keep it when present.
            error.reason = response.reason  # type: ignore[attr-defined]
    return error
