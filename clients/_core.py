"""The I/O-free core shared by ``Client`` and ``AsyncClient``.

Everything a client decides without touching a socket, a clock or a thread lives here,
as plain functions and small state objects that tests drive directly:

- turning the arguments of ``put``/``get``/... into wire requests (``str`` -> UTF-8,
  prefixes -> ranges) and wire responses into the result values of ``results``;
- the exactly-once identity: a random ``client_id`` and the next ``seq`` for each new
  mutating request (a retry re-sends the same pair), within a window per client id that
  keeps the server's deduplication able to answer every retry (``SeqWindow``; a client
  with more writes in flight opens another client id: ``Identity``);
- which endpoint to use next (``EndpointSelector``): the leader if known (from
  ``NotLeaderError`` hints and from response headers), else the endpoint that answered
  last, else the next one round-robin, avoiding endpoints known to be down;
- retry decisions (``should_retry``, ``backoff``, ``give_up``): which errors may be
  retried for which requests without breaking exactly-once, and how long to wait;
- watch resume bookkeeping (``WatchState``): the revision to resume from, which never
  advances past a revision whose events have not all been delivered.

Jitter enters as an argument and nothing here reads a clock: the faces own time. This
module must never do I/O (reading ``$PNYX_ENDPOINTS`` aside), sleep, start threads, or
import anything of pnyx but ``core.wire``, ``core.errors`` and ``clients.results``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import attrs

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
from pnyx.core import errors
from pnyx.core.wire import (
    MUTATING_REQUESTS,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    ErrorResponse,
    Event,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    Member,
    MemberAddResponse,
    MemberListResponse,
    MemberPromoteResponse,
    MemberRemoveResponse,
    Message,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    Response,
    ResponseHeader,
    SortOrder,
    SortTarget,
    StatusResponse,
    TxnRequest,
    TxnResponse,
    WatchCreateRequest,
    WatchFilterType,
    WatchResponse,
    error_from_response,
    prefix_range,
)
from pnyx.core.wire.messages import (
    LeaseKeepAliveRequest,
    LeaseTimeToLiveRequest,
    MemberListRequest,
    StatusRequest,
    WatchProgressRequest,
)

ENDPOINTS_ENV = "PNYX_ENDPOINTS"
DEFAULT_ENDPOINTS: tuple[str, ...] = (
    "tcp://127.0.0.1:7101",
    "tcp://127.0.0.1:7102",
    "tcp://127.0.0.1:7103",
)
"""What ``pnyx up`` starts."""

SLOW_WATCHER_REASON = "slow watcher"
"""Prefix of a watch's ``cancel_reason`` when the node cut it off for falling behind (the
node's watch hub uses the same text; clients may not import it)."""

KeyLike = str | bytes | bytearray | memoryview

# --------------------------------------------------------------------------- endpoints


def normalize_endpoint(endpoint: str) -> str:
    """``host:port`` -> ``tcp://host:port``; anything with a scheme is kept as given."""
    endpoint = endpoint.strip()
    if not endpoint:
        raise errors.InvalidRequestError("empty endpoint")
    if "://" not in endpoint:
        return "tcp://" + endpoint
    return endpoint


def resolve_endpoints(
    endpoints: str | Sequence[str] | None, environ: dict[str, str] | None = None
) -> tuple[str, ...]:
    """The endpoints to use: the argument (a sequence or a comma-separated string), else
    ``$PNYX_ENDPOINTS``, else ``pnyx up``'s defaults. Order kept, duplicates dropped."""
    if endpoints is None:
        env = os.environ if environ is None else environ
        endpoints = env.get(ENDPOINTS_ENV) or None
    if endpoints is None:
        return DEFAULT_ENDPOINTS
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    resolved = tuple(dict.fromkeys(normalize_endpoint(item) for item in items if item.strip()))
    if not resolved:
        raise errors.InvalidRequestError("no endpoint given")
    return resolved


@attrs.define
class EndpointSelector:
    """Which endpoint the next attempt goes to.

    Preference: the leader if known and not down; else the endpoint that answered last
    (sticky, so a client stays on one node while it works); else the next one in
    round-robin order. Endpoints known to be down are skipped while any other is not.
    Any member forwards writes to the leader, so a wrong guess costs a hop, not an error.
    """

    endpoints: list[str]
    leader: str | None = None
    current: int = 0
    down: set[str] = attrs.Factory(set)
    member_endpoints: dict[int, str] = attrs.Factory(dict)
    """Member id -> the endpoint where that member answered (from response headers)."""

    def choose(self) -> str:
        if self.leader is not None and self.leader not in self.down:
            return self.leader
        count = len(self.endpoints)
        for step in range(count):
            endpoint = self.endpoints[(self.current + step) % count]
            if endpoint not in self.down:
                self.current = (self.current + step) % count
                return endpoint
        # Everything looks down: try the current one anyway; it may be back.
        return self.endpoints[self.current % count]

    def on_answer(self, endpoint: str, header: ResponseHeader | None) -> None:
        """A response arrived from ``endpoint``: it is up, and its header says who it is
        and who it thinks leads."""
        self.down.discard(endpoint)
        if endpoint in self.endpoints and self.leader is None:
            self.current = self.endpoints.index(endpoint)
        self.on_identity(endpoint, header)

    def on_identity(self, endpoint: str, header: ResponseHeader | None) -> None:
        """What a header says about who answers at ``endpoint`` and who leads, without
        making it the preferred endpoint (for answers to the engine's own probes)."""
        if header is None:
            return
        if header.member_id:
            self.member_endpoints[header.member_id] = endpoint
        if header.leader_id:
            leader = self.member_endpoints.get(header.leader_id)
            if leader is not None:
                self.leader = leader

    def on_members(self, members: Iterable[Member]) -> None:
        """A member list: map member ids to the client URLs we use (a member may
        advertise addresses we do not, e.g. another interface; those are ignored)."""
        known = set(self.endpoints)
        for member in members:
            for url in member.client_urls:
                if url in known:
                    self.member_endpoints[member.id] = url

    def on_not_leader(self, endpoint: str, hint: str | None) -> None:
        """``endpoint`` said it is not the leader and pointed at ``hint`` (if it knew)."""
        if hint:
            hint = normalize_endpoint(hint)
            if hint not in self.endpoints:
                # A member we were not told about (added later): remember it.
                self.endpoints.append(hint)
            self.leader = hint
        else:
            if self.leader == endpoint:
                self.leader = None
            self._advance_from(endpoint)

    def on_failure(self, endpoint: str) -> None:
        """An attempt at ``endpoint`` failed without an answer (timeout, no leader there,
        connection lost): prefer another endpoint next time."""
        if self.leader == endpoint:
            self.leader = None
        self._advance_from(endpoint)

    def on_connection(self, endpoint: str, up: bool) -> None:
        if up:
            self.down.discard(endpoint)
        else:
            self.down.add(endpoint)
            if self.leader == endpoint:
                self.leader = None

    def _advance_from(self, endpoint: str) -> None:
        if endpoint in self.endpoints and self.endpoints[self.current] == endpoint:
            self.current = (self.current + 1) % len(self.endpoints)


# --------------------------------------------------------------------------- exactly-once


MAX_WRITES_IN_FLIGHT = 64
"""How far the exactly-once sequence numbers of one client id may run ahead of its
oldest write still in flight: a new write gets seq ``s`` only while every write of that
id below ``s - 64`` has finished (answered, or given up on by its caller). A client with
more writes in flight uses more client ids (``Identity``), so this caps no client.

Why 64: a node remembers the first answers to the last ``W = 128`` seqs it applied per
client id (``DedupTable.window``) and refuses a retried seq it has forgotten
(``DuplicateRequestError``: it can no longer tell whether it applied it). While a write
with seq ``s`` is unfinished, every other seq this client can get applied lies within
``(s - 64, s + 64)``: at most 126 others, so neither ``s``'s own answer nor any seq above
``s`` is ever pushed out of the node's window, and a retry of ``s`` is always answered
(with the first result if it was applied). A bound on the *number* of writes in flight
would not be enough: one stuck write must not be overtaken by 128 newer ones. Keep it at
most ``(W + 2) // 2`` if the server's window changes. One limit of the argument: a write
whose caller gave up (its deadline passed) counts as finished, so if it was still in
some node's pipeline and gets applied later, it takes one place of the window."""


@attrs.define
class SeqWindow:
    """The exactly-once sequence numbers of one client (see ``MAX_WRITES_IN_FLIGHT``):
    ``take`` the next one if the window allows, ``finish`` it when its call is over.
    Pure bookkeeping: the faces add the locking (threads) and the waiting."""

    size: int = MAX_WRITES_IN_FLIGHT
    _next: int = 1
    _oldest: int = 1
    """The lowest seq not finished (``_next`` when none is in flight)."""
    _finished_above: set[int] = attrs.Factory(set)
    """Finished seqs above ``_oldest`` (it cannot move past an unfinished one)."""

    @property
    def in_flight(self) -> int:
        return self._next - self._oldest - len(self._finished_above)

    @property
    def room(self) -> int:
        """How many seqs ``take`` would give now."""
        return self._oldest + self.size - self._next

    def take(self) -> int:
        """The next seq, or 0 if it would run ``size`` or more ahead of the oldest
        unfinished one (wait for a ``finish`` then)."""
        seq = self._next
        if seq - self._oldest >= self.size:
            return 0
        self._next = seq + 1
        return seq

    def finish(self, seq: int) -> bool:
        """``seq``'s call is over (whatever its outcome). True if that made room."""
        if seq != self._oldest:
            if self._oldest < seq < self._next:
                self._finished_above.add(seq)
            return False
        oldest = seq + 1
        finished = self._finished_above
        while oldest in finished:
            finished.discard(oldest)
            oldest += 1
        self._oldest = oldest
        return True


MAX_LANES = 16
"""Client ids (lanes) one client may use at once, each with its own ``SeqWindow``: up to
``16 * 64`` exactly-once writes in flight per client, none of them beyond what a node's
window per client id can answer."""


@attrs.frozen
class Ticket:
    """The exactly-once identity of one write: sent with every attempt of it."""

    client_id: bytes
    seq: int


NO_TICKET = Ticket(b"", 0)
"""What a request that is not deduplicated (a read, a membership change) carries."""


@attrs.define
class Lane:
    """One client id and the window of its seqs."""

    client_id: bytes = attrs.Factory(lambda: os.urandom(16))
    window: SeqWindow = attrs.Factory(SeqWindow)


@attrs.define
class Identity:
    """The exactly-once identities of one client: ``take`` a ``Ticket`` (client id and
    seq) for each new write, ``finish`` it when its call is over. The window per client id
    (``MAX_WRITES_IN_FLIGHT``) is what keeps every retry answerable; a client with more
    writes in flight than that does not wait - it opens another lane (a new random
    client id, up to ``max_lanes``). Lanes are filled in order, so a client with little
    in flight uses one id. Not thread safe by itself: the blocking face guards it."""

    max_lanes: int = MAX_LANES
    lanes: list[Lane] = attrs.Factory(lambda: [Lane()])
    _by_id: dict[bytes, Lane] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._by_id = {lane.client_id: lane for lane in self.lanes}

    @property
    def client_id(self) -> bytes:
        """The first lane's id: the one a client with few writes in flight uses."""
        return self.lanes[0].client_id

    @property
    def window_size(self) -> int:
        return self.lanes[0].window.size

    @staticmethod
    def needs_seq(message: Message) -> bool:
        """Whether ``message`` is deduplicated by the server (a mutating request), so
        gets a ticket; every other request carries seq 0 and no client id."""
        return type(message) in MUTATING_REQUESTS

    def take(self) -> Ticket | None:
        """A ticket for a new write, or None if every lane is full and no more may be
        opened (wait for a ``finish`` then)."""
        for lane in self.lanes:
            seq = lane.window.take()
            if seq:
                return Ticket(lane.client_id, seq)
        if len(self.lanes) >= self.max_lanes:
            return None
        lane = Lane()
        self.lanes.append(lane)
        self._by_id[lane.client_id] = lane
        return Ticket(lane.client_id, lane.window.take())

    def finish(self, ticket: Ticket) -> bool:
        """``ticket``'s write is over (whatever its outcome). True if that made room."""
        lane = self._by_id.get(ticket.client_id)
        return lane is not None and lane.window.finish(ticket.seq)

    @property
    def in_flight(self) -> int:
        return sum(lane.window.in_flight for lane in self.lanes)

    @property
    def room(self) -> int:
        """How many tickets ``take`` would give now."""
        unopened = (self.max_lanes - len(self.lanes)) * self.window_size
        return sum(lane.window.room for lane in self.lanes) + unopened


# --------------------------------------------------------------------------- arguments


def as_bytes(value: KeyLike, what: str = "key") -> bytes:
    """``str`` as UTF-8, bytes-likes as ``bytes``; anything else is refused."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise errors.InvalidRequestError(f"{what} must be str or bytes, got {type(value).__name__}")


def key_range(key: KeyLike, prefix: bool, range_end: KeyLike | None) -> tuple[bytes, bytes]:
    """``(key, range_end)`` on the wire: one key, a prefix, or ``[key, range_end)``."""
    raw = as_bytes(key)
    if prefix:
        if range_end is not None:
            raise errors.InvalidRequestError("give prefix=True or range_end, not both")
        return prefix_range(raw)
    if range_end is None:
        return raw, b""
    return raw, as_bytes(range_end, "range_end")


_E = TypeVar("_E", bound=enum.IntEnum)


def as_enum(enum_type: type[_E], value: _E | str | int, what: str) -> _E:
    """An enum member from itself, its name (any case) or its int value."""
    if type(value) is enum_type:
        return value  # the common case (defaults), without the enum machinery
    try:
        if isinstance(value, str):
            return enum_type[value.upper()]
        return enum_type(value)
    except (KeyError, ValueError):
        names = ", ".join(member.name.lower() for member in enum_type)
        raise errors.InvalidRequestError(f"{what} must be one of {names}, got {value!r}") from None


def range_request(
    key: KeyLike,
    *,
    prefix: bool = False,
    range_end: KeyLike | None = None,
    revision: int = 0,
    limit: int = 0,
    sort_order: SortOrder | str = SortOrder.NONE,
    sort_target: SortTarget | str = SortTarget.KEY,
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> RangeRequest:
    start, end = key_range(key, prefix, range_end)
    return RangeRequest(
        start,
        end,
        limit,
        revision,
        as_enum(SortOrder, sort_order, "sort_order"),
        as_enum(SortTarget, sort_target, "sort_target"),
        serializable,
        keys_only,
        count_only,
        min_mod_revision,
        max_mod_revision,
        min_create_revision,
        max_create_revision,
    )


def put_request(
    key: KeyLike,
    value: KeyLike,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> PutRequest:
    return PutRequest(
        as_bytes(key), as_bytes(value, "value"), lease, prev_kv, ignore_value, ignore_lease
    )


def delete_request(
    key: KeyLike,
    *,
    prefix: bool = False,
    range_end: KeyLike | None = None,
    prev_kv: bool = False,
) -> DeleteRangeRequest:
    start, end = key_range(key, prefix, range_end)
    return DeleteRangeRequest(start, end, prev_kv)


def txn_request(
    compare: Iterable[Compare] = (),
    success: Iterable[RequestOp] = (),
    failure: Iterable[RequestOp] = (),
) -> TxnRequest:
    compares = tuple(compare)
    for item in compares:
        if not isinstance(item, Compare):
            raise errors.InvalidRequestError(
                f"txn compare must be built with cmp (e.g. cmp.version(key) == 0), "
                f"got {type(item).__name__}"
            )
    branches = (tuple(success), tuple(failure))
    for branch in branches:
        for op in branch:
            if not isinstance(op, RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest):
                raise errors.InvalidRequestError(
                    f"txn op must be built with op.put/get/delete/txn, got {type(op).__name__}"
                )
    return TxnRequest(compares, *branches)


def watch_filters(
    filters: Iterable[WatchFilterType | str | int],
) -> tuple[WatchFilterType, ...]:
    return tuple(as_enum(WatchFilterType, item, "watch filter") for item in filters)


# --------------------------------------------------------------------------- results


def raise_if_error(response: Response) -> None:
    if type(response) is ErrorResponse:
        raise error_from_response(response)


def get_result(response: Response) -> GetResult:
    message = _expect(response, RangeResponse)
    return GetResult(
        message.header.revision, message.kvs, message.count, message.more, message.header
    )


def put_result(response: Response) -> PutResult:
    message = _expect(response, PutResponse)
    return PutResult(message.header.revision, message.prev_kv, message.header)


def delete_result(response: Response) -> DeleteResult:
    message = _expect(response, DeleteRangeResponse)
    return DeleteResult(message.header.revision, message.deleted, message.prev_kvs, message.header)


def txn_result(response: Response) -> TxnResult:
    message = _expect(response, TxnResponse)
    return TxnResult(
        message.header.revision,
        message.succeeded,
        tuple(_op_result(item) for item in message.responses),
        message.header,
    )


def _op_result(response: Any) -> OpResult:
    converter = _OP_RESULTS.get(type(response))
    if converter is None:
        raise errors.PnyxError(f"unexpected transaction response {type(response).__name__}")
    result: OpResult = converter(response)
    return result


_OP_RESULTS: dict[type, Any] = {
    RangeResponse: get_result,
    PutResponse: put_result,
    DeleteRangeResponse: delete_result,
    TxnResponse: txn_result,
}


def compact_result(response: Response) -> CompactResult:
    message = _expect(response, CompactionResponse)
    return CompactResult(message.header.revision, message.header)


def lease_grant_result(response: Response) -> LeaseGrantResult:
    message = _expect(response, LeaseGrantResponse)
    if message.error:
        raise errors.ClientError(f"lease grant refused: {message.error}")
    return LeaseGrantResult(message.id, message.ttl, message.header.revision, message.header)


def lease_keep_alive_result(response: Response) -> LeaseKeepAliveResult:
    message = _expect(response, LeaseKeepAliveResponse)
    if message.ttl <= 0:
        # As etcd's KeepAliveOnce: a refresh that finds no live lease is an error.
        raise errors.LeaseNotFoundError(f"lease {message.id:x} not found (expired or revoked)")
    return LeaseKeepAliveResult(message.id, message.ttl, message.header)


def lease_time_to_live_result(response: Response) -> LeaseTimeToLiveResult:
    message = _expect(response, LeaseTimeToLiveResponse)
    return LeaseTimeToLiveResult(
        message.id, message.ttl, message.granted_ttl, message.keys, message.header
    )


def lease_list_result(response: Response) -> LeaseListResult:
    message = _expect(response, LeaseLeasesResponse)
    return LeaseListResult(message.leases, message.header)


def lease_revoke_result(response: Response) -> ResponseHeader:
    raise_if_error(response)
    return _header_of(response)


def member_list_result(response: Response) -> MemberListResult:
    message = _expect(response, MemberListResponse)
    return MemberListResult(message.members, message.header)


def member_add_result(response: Response) -> MemberAddResult:
    message = _expect(response, MemberAddResponse)
    return MemberAddResult(message.member, message.members, message.header)


def member_remove_result(response: Response) -> MemberRemoveResult:
    message = _expect(response, MemberRemoveResponse)
    return MemberRemoveResult(message.members, message.header)


def member_promote_result(response: Response) -> MemberPromoteResult:
    message = _expect(response, MemberPromoteResponse)
    return MemberPromoteResult(message.members, message.header)


def status_result(endpoint: str, response: Response) -> StatusResult:
    message = _expect(response, StatusResponse)
    header = message.header
    return StatusResult(
        endpoint=endpoint,
        member_id=header.member_id,
        leader=message.leader,
        revision=header.revision,
        raft_term=message.raft_term or header.raft_term,
        raft_index=message.raft_index,
        raft_applied_index=message.raft_applied_index,
        version=message.version,
        db_size=message.db_size,
        is_learner=message.is_learner,
        errors=message.errors,
        header=header,
    )


_T = TypeVar("_T")


def _expect(response: Response, expected: type[_T]) -> _T:
    if type(response) is expected:
        return response
    raise_if_error(response)
    raise errors.PnyxError(
        f"protocol error: expected {expected.__name__}, got {type(response).__name__}"
    )


def _header_of(response: Response) -> ResponseHeader:
    header = getattr(response, "header", None)
    return header if isinstance(header, ResponseHeader) else ResponseHeader()


# --------------------------------------------------------------------------- retries

_IDEMPOTENT_REQUESTS: frozenset[type] = frozenset(
    {
        RangeRequest,
        LeaseKeepAliveRequest,
        LeaseTimeToLiveRequest,
        MemberListRequest,
        StatusRequest,
        WatchCreateRequest,
        WatchProgressRequest,
    }
)


def retry_safe_after_unknown_outcome(message: Message, seq: int) -> bool:
    """Whether ``message`` may be sent again when we do not know if the first attempt
    was applied (timeout, connection lost after sending). True for reads and for
    mutating requests carrying a ``seq`` (the server answers a duplicate with the first
    result); false for membership changes, which are not deduplicated."""
    return type(message) in _IDEMPOTENT_REQUESTS or (seq > 0 and type(message) in MUTATING_REQUESTS)


def should_retry(message: Message, seq: int, error: BaseException) -> bool:
    """Whether an attempt that failed with ``error`` should be retried (on some endpoint,
    after ``backoff``), given only the request. Errors that prove the request was not
    applied are always retryable; an unknown outcome only for requests that are safe to
    repeat; errors about the request itself never."""
    if isinstance(error, errors.NotLeaderError | errors.NoLeaderError):
        return True
    if isinstance(error, errors.ProposalDroppedError | errors.NoEndpointError):
        return True
    if isinstance(error, errors.UnavailableError | errors.StorageError):
        # Timeout, connection lost, slow watcher, a sick disk on one node: the request
        # may or may not have been applied.
        return retry_safe_after_unknown_outcome(message, seq)
    return False


def backoff(attempt: int, error: BaseException | None, jitter: float) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).
    ``jitter`` in ``[0, 1)`` comes from the caller's random source.

    The first failover to another endpoint, and the first redirects to a named leader,
    go at once; after that the wait doubles from 25 ms up to 1 s, with jitter so that
    many clients do not retry in lockstep after a leader change (and two nodes with
    stale hints pointing at each other cannot make a client spin)."""
    if attempt <= 1:
        return 0.0
    if isinstance(error, errors.NotLeaderError) and error.leader_hint and attempt <= 3:
        return 0.0
    base: float = min(1.0, 0.025 * (2 ** min(attempt - 2, 10)))
    return base * (0.5 + jitter / 2)


def whole_message_refused(
    endpoint: str, cause: errors.PnyxError, in_flight: int
) -> errors.PnyxError:
    """The error for each of ``in_flight`` attempts that were on a connection when its
    node refused one of our messages as a whole (it could not decode it, so its reply
    has no request id). With one attempt in flight, that one was in the message: the
    node's own error (``RequestTooLargeError``, ``InvalidRequestError``), not retried.
    With several, which ones were in it is unknown and the others may have been
    applied: an unknown outcome, so what is safe to repeat is retried (exactly-once)
    and the rest raise."""
    if in_flight == 1:
        return cause
    return errors.UnavailableError(
        f"{endpoint} refused a whole message of this client ({type(cause).__name__}: "
        f"{cause}); the outcome of the {in_flight} requests in flight there is unknown"
    )


def give_up(error: BaseException | None, timeout: float) -> errors.PnyxError:
    """The error a call raises when its deadline passed before any attempt succeeded.
    Every attempt failed to reach a node at all: ``NoEndpointError``; otherwise
    ``TimeoutError``, naming the last error seen."""
    last = f": last error: {type(error).__name__}: {error}" if error is not None else ""
    if isinstance(error, errors.NoEndpointError):
        return errors.NoEndpointError(f"no endpoint reachable within {timeout:g}s{last}")
    return errors.TimeoutError(f"no answer within {timeout:g}s{last}")


# --------------------------------------------------------------------------- watches


@attrs.frozen
class WatchCreated:
    """Stream item: the node accepted the watch (first item of every attempt)."""

    watch_id: int
    revision: int


@attrs.frozen
class StreamError:
    """Stream item: the watch attempt ended. ``resumable``: create it again from
    ``WatchState.next_revision`` (elsewhere, after a backoff); else raise ``error``."""

    error: errors.PnyxError
    resumable: bool


StreamItem = WatchBatch | WatchCreated | StreamError

BatchMemo = dict[int, tuple[tuple[Event, ...], int, list[WatchBatch]]]
"""``id(events)`` -> (that events tuple, its lowest revision, the batches grouped from
it), kept by a caller while it feeds one message's responses to many ``WatchState``s.
A node sends the same events tuple to every watch that wants the same events, and the
client decodes it once (``_engine.decode_replies``): the watches then share the frozen
``WatchBatch`` values too, instead of each building its own equal copies. The entry
keeps its tuple alive, so an id cannot be reused while the memo lives; a watch whose
``next_revision`` is past the lowest revision (it must drop some) groups its own."""


@attrs.define
class WatchState:
    """Bookkeeping of one logical watch across the attempts that carry it.

    ``next_revision`` is the first revision not yet delivered: everything before it was
    handed to the consumer's queue in full (or confirmed by a progress notification), so
    a new attempt starts there with neither gap nor duplicate. It never moves past a
    revision whose events are still partly buffered (a fragmented response).

    Fed only by the I/O thread while an attempt is live; read by the consumer only after
    that attempt's final ``StreamError`` has been queued.
    """

    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    prev_kv: bool = False
    filters: tuple[WatchFilterType, ...] = ()
    progress_notify: bool = False
    next_revision: int = 0
    """0 until the first attempt is created when watching "from now"."""
    watch_id: int = 0
    created: bool = False
    canceling: bool = False
    """The consumer asked to cancel: a cancel confirmation ends the stream quietly."""
    _fragments: list[Event] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.next_revision = self.start_revision

    def create_request(self) -> WatchCreateRequest:
        """The request for a new attempt, resuming where the last one stopped."""
        return WatchCreateRequest(
            key=self.key,
            range_end=self.range_end,
            start_revision=self.next_revision,
            progress_notify=self.progress_notify,
            filters=self.filters,
            prev_kv=self.prev_kv,
            watch_id=0,
            fragment=False,
        )

    def begin_attempt(self) -> None:
        self.created = False
        self.watch_id = 0
        # A fragment of an attempt that died is incomplete; the next attempt re-sends
        # that revision whole (next_revision did not move past it).
        self._fragments.clear()

    def on_response(
        self,
        response: Response,
        watch_id: int | None = None,
        memo: BatchMemo | None = None,
    ) -> list[StreamItem]:
        """Items for the consumer from one response of the current attempt. After a
        ``StreamError`` item the attempt is over and nothing more may be fed.

        ``watch_id``, if given, is this watch's id where ``response`` is shared with
        other watches (decoded once for all of them, so its own ``watch_id`` is the
        first one's). ``memo`` lets the watches fed from one message share the batches
        built from one shared events tuple (see ``BatchMemo``)."""
        if type(response) is ErrorResponse:
            error = error_from_response(response)
            return [StreamError(error, resumable=self.resumable(error))]
        if type(response) is not WatchResponse:
            error = errors.PnyxError(f"protocol error: watch got {type(response).__name__}")
            return [StreamError(error, resumable=False)]
        items: list[StreamItem] = []
        if response.created:
            self.created = True
            self.watch_id = response.watch_id if watch_id is None else watch_id
            if self.next_revision == 0:
                # "From now": the node's revision at creation is what we have seen.
                self.next_revision = response.header.revision + 1
            items.append(WatchCreated(self.watch_id, response.header.revision))
        if response.events or response.fragment:
            if not response.fragment and not self._fragments:
                # The usual case: one whole response, its events as they came.
                items.extend(self._batches(response.events, memo))
            else:
                self._fragments.extend(response.events)
                if not response.fragment:
                    events, self._fragments = self._fragments, []
                    items.extend(self._batches(events))
        elif not response.created and not response.canceled and not self._fragments:
            # A progress notification: everything up to header.revision was delivered.
            revision = response.header.revision
            if revision >= self.next_revision:
                self.next_revision = revision + 1
            items.append(WatchBatch(revision, (), progress_notify=True))
        if response.canceled:
            items.append(self._canceled(response))
        return items

    def _batches(self, events: Sequence[Event], memo: BatchMemo | None = None) -> list[WatchBatch]:
        """Group events by revision (one batch per revision, in order), dropping any the
        consumer already has (a resumed attempt must not duplicate). With ``memo``, the
        batches of an events tuple another watch already grouped are reused when this
        watch drops none of its events (then the grouping is the same). The caller must
        not change the list returned."""
        if memo is not None:
            hit = memo.get(id(events))
            if hit is not None and hit[0] is events and hit[1] >= self.next_revision:
                shared = hit[2]
                self.next_revision = shared[-1].revision + 1
                return shared
        batches: list[WatchBatch] = []
        current: list[Event] = []
        revision = 0
        lowest = 0
        skipped = False
        for event in events:
            event_revision = event.kv.mod_revision
            if event_revision < self.next_revision:
                skipped = True
                continue
            if not lowest or event_revision < lowest:
                lowest = event_revision
            if current and event_revision != revision:
                batches.append(WatchBatch(revision, tuple(current)))
                current = []
            revision = event_revision
            current.append(event)
        if current:
            batches.append(WatchBatch(revision, tuple(current)))
        if batches:
            self.next_revision = batches[-1].revision + 1
            if memo is not None and not skipped and type(events) is tuple:
                memo[id(events)] = (events, lowest, batches)
        return batches

    def _canceled(self, response: WatchResponse) -> StreamError:
        if response.compact_revision:
            return StreamError(
                errors.CompactedError(
                    f"watch start revision {self.next_revision} is compacted "
                    f"(compact revision {response.compact_revision})",
                    compact_revision=response.compact_revision,
                ),
                resumable=False,
            )
        if self.canceling:
            return StreamError(errors.ClientError("watch canceled"), resumable=False)
        reason = response.cancel_reason or "canceled by the node"
        if reason.startswith(SLOW_WATCHER_REASON):
            return StreamError(errors.SlowWatcherError(reason), resumable=True)
        # Any other cancel we did not ask for (a node shutting down, leaving the
        # cluster): the watch itself is still wanted, so resume it elsewhere.
        return StreamError(errors.UnavailableError(f"watch canceled: {reason}"), resumable=True)

    def resumable(self, error: errors.PnyxError) -> bool:
        """Whether an attempt that ended with ``error`` should be created again."""
        return isinstance(error, errors.UnavailableError | errors.StorageError)
