"""``KVStateMachine``: the replicated state machine a pnyx node applies committed Raft
entries to. It joins the MVCC store, the lease table and the exactly-once table, owns the
member-local (not replicated) ``Lessor`` and ``WatchHub``, and defines the commands that
travel in Raft entries and their byte encoding.

Commands (``Command``):

- ``ClientCommand(client_id, seq, request)``: a client's request. A mutating request with
  ``seq > 0`` is applied at most once per ``(client_id, seq)``: a repeat gets the first
  response, from a bounded table (``DedupTable``) that is part of the snapshot.
- ``ClientBatch(commands)``: several client commands in one Raft entry (a leader batches
  the writes it received together, so that the per-entry costs of replication, the WAL
  and applying are paid once for all of them). Applied in order, each exactly as if it
  had its own entry: its own revision, its own exactly-once check, its own response
  (``apply_batch``).
- ``ExpireLeases(leases)``: the leader's ``Lessor`` saw these leases expire; each is
  revoked (its keys deleted in one revision) if it still exists.
- ``CompactHistory(revision)``: compaction decided by the cluster itself (auto-compaction).

``apply(index, command)`` is deterministic: members applying the same commands in the
same order hold identical state (``snapshot()`` is byte-identical) and give identical
responses. Errors are responses too (``ErrorResponse``), since a refused request is an
outcome every member must agree on. Response headers carry the revision; the server
fills in the Raft term and member ids.

This module must never read clocks, touch files or sockets, start threads or use
randomness. Lease times enter only as ``now`` arguments of the member-local lease calls.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Container, Iterable, Iterator
from typing import Any, TypeAlias

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information
import structlog

from pnyx.core.errors import (
    DuplicateRequestError,
    InvalidRequestError,
    LeaseNotFoundError,
    PnyxError,
)
from pnyx.core.kv.lease import LeaseTable, Lessor
from pnyx.core.kv.mvcc import MVCCStore
from pnyx.core.kv.watch import WatchHub, WatchLimits
from pnyx.core.wire.codec import message_from_wire, message_to_wire
from pnyx.core.wire.limits import DEFAULT_LIMITS, Limits
from pnyx.core.wire.messages import (
    MUTATING_REQUESTS,
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    ErrorResponse,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    Response,
    ResponseHeader,
    TxnRequest,
    TxnResponse,
    error_response_from_exception,
)

__all__ = [
    "COMMAND_FORMAT",
    "SNAPSHOT_FORMAT",
    "ClientBatch",
    "ClientCommand",
    "Command",
    "CompactHistory",
    "DedupTable",
    "ExpireLeases",
    "KVStateMachine",
    "decode_command",
    "encode_command",
    "has_unbounded_cost",
]

COMMAND_FORMAT = 1
"""First element of every encoded command; bumped on any layout change."""
SNAPSHOT_FORMAT = 1
"""First element of every snapshot; bumped on any layout change."""

_log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------- commands


@attrs.frozen
class ClientCommand:
    """A client request as replicated: ``seq == 0`` means no deduplication."""

    client_id: bytes
    seq: int
    request: Request


@attrs.frozen
class ExpireLeases:
    """Proposed by the leader for leases whose TTL ran out (``Lessor.expired``)."""

    leases: tuple[int, ...]


@attrs.frozen
class CompactHistory:
    """Compaction decided by the cluster (not by a client request)."""

    revision: int


@attrs.frozen
class ClientBatch:
    """Client commands that share one Raft entry, applied in order (never empty)."""

    commands: tuple[ClientCommand, ...]


Command: TypeAlias = ClientCommand | ExpireLeases | CompactHistory | ClientBatch

_CLIENT, _EXPIRE, _COMPACT, _BATCH = 0, 1, 2, 3


def encode_command(command: Command) -> bytes:
    """The bytes of a command for a Raft entry: msgpack
    ``[COMMAND_FORMAT, kind, ...]``; a request is in the wire codec's ``[tag, body]``."""
    value: list[Any]
    if isinstance(command, ClientCommand):
        value = [
            COMMAND_FORMAT,
            _CLIENT,
            command.client_id,
            command.seq,
            message_to_wire(command.request),
        ]
    elif isinstance(command, ExpireLeases):
        value = [COMMAND_FORMAT, _EXPIRE, list(command.leases)]
    elif isinstance(command, CompactHistory):
        value = [COMMAND_FORMAT, _COMPACT, command.revision]
    elif isinstance(command, ClientBatch):
        value = [
            COMMAND_FORMAT,
            _BATCH,
            [[c.client_id, c.seq, message_to_wire(c.request)] for c in command.commands],
        ]
    else:
        raise InvalidRequestError(f"not a command: {type(command).__name__}")
    return _packb(value)


def decode_command(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Command:
    """The inverse of ``encode_command``; raises InvalidRequestError for anything else."""
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise InvalidRequestError(f"command is not msgpack: {type(exc).__name__}") from None
    if type(value) is not list or len(value) < 3 or value[0] != COMMAND_FORMAT:
        raise InvalidRequestError("command: unknown format")
    kind = value[1]
    if kind == _CLIENT and len(value) == 5:
        _, _, client_id, seq, request = value
        if type(client_id) is not bytes or type(seq) is not int:
            raise InvalidRequestError("command: bad client id or seq")
        message = message_from_wire(request, limits)
        return ClientCommand(client_id, seq, message)  # type: ignore[arg-type]
    if kind == _EXPIRE and len(value) == 3 and type(value[2]) is list:
        leases = value[2]
        if not all(type(lease) is int for lease in leases):
            raise InvalidRequestError("command: bad lease id")
        return ExpireLeases(tuple(leases))
    if kind == _COMPACT and len(value) == 3 and type(value[2]) is int:
        return CompactHistory(value[2])
    if kind == _BATCH and len(value) == 3 and type(value[2]) is list and value[2]:
        commands = []
        for item in value[2]:
            if type(item) is not list or len(item) != 3:
                raise InvalidRequestError("command: bad batch item")
            client_id, seq, request = item
            if type(client_id) is not bytes or type(seq) is not int:
                raise InvalidRequestError("command: bad client id or seq")
            message = message_from_wire(request, limits)
            commands.append(ClientCommand(client_id, seq, message))  # type: ignore[arg-type]
        return ClientBatch(tuple(commands))
    raise InvalidRequestError(f"command: unknown kind {kind!r}")


def has_unbounded_cost(command: Command) -> bool:
    """Whether applying ``command`` may take time out of all proportion to its size: a
    range delete (a prefix may hold millions of keys), a compaction, a lease revoke or
    expiry (every key attached goes), or a transaction or batch holding one. A leader
    tells its followers such an entry is committed before it applies it itself, so that
    every member is busy with it at the same time (see ``Node._process_ready``)."""
    if type(command) is ClientBatch:
        return any(_request_unbounded(one.request) for one in command.commands)
    if type(command) is ClientCommand:
        return _request_unbounded(command.request)
    return type(command) in (CompactHistory, ExpireLeases)


def _request_unbounded(request: Request) -> bool:
    kind = type(request)
    if kind is DeleteRangeRequest:
        return bool(request.range_end)  # type: ignore[union-attr]
    if kind is TxnRequest:
        txn: TxnRequest = request  # type: ignore[assignment]
        return any(_request_unbounded(op) for op in (*txn.success, *txn.failure))
    return kind in (LeaseRevokeRequest, CompactionRequest)


def _packb(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


# --------------------------------------------------------------------------- dedup


_COMPACT_BYTES = 64
"""Estimated memory of one compactly stored response (a plain put's: its revision)."""


@attrs.define
class _Session:
    """What one client's recent mutating requests returned."""

    responses: dict[int, int | tuple[Response, int]] = attrs.Factory(dict)
    """seq -> its first response: the revision of a plain ``PutResponse`` (the common
    case, kept as an int), else ``(response, its size estimate)``."""
    order: deque[int] = attrs.Factory(deque)
    """The seqs of ``responses`` in the order they were applied (oldest first)."""
    floor: int = 0
    """Highest seq evicted from ``responses``: an older seq not in it can't be answered."""


@attrs.define
class DedupTable:
    """The exactly-once table: for each recently seen client, the first response to each
    of its last ``window`` sequence numbers.

    Bounded and deterministic: clients are kept in least-recently-used order (use = a
    request applied or answered from the table) and the oldest are evicted beyond
    ``max_clients`` or ``max_bytes`` (estimated from key and value sizes). A retried seq
    at or below the client's evicted ``floor`` gets ``DuplicateRequestError`` (it cannot
    be answered, and applying it again might apply it twice). A client evicted entirely is
    forgotten: a retry of its old requests would be applied again, which is why the
    bounds are generous compared with a client's retry horizon.

    The window must exceed the number of writes a client can have in flight at once:
    a request still in flight (its answer lost with a failed leader, say) is retried,
    and every later request of the same client applied meanwhile pushes it towards the
    floor. Hence a large window (8192 by default), made cheap by storing a plain put's
    response as its revision alone; the bytes bound keeps the total in check.
    """

    window: int = 8192
    max_clients: int = 16_384
    max_bytes: int = 64 << 20
    # Least recently used first (``move_to_end`` on every use: O(1), in C).
    _clients: OrderedDict[bytes, _Session] = attrs.field(init=False, factory=OrderedDict)
    _bytes: int = attrs.field(init=False, default=0)

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def lookup(self, client_id: bytes, seq: int) -> Response | None:
        """The first response to ``(client_id, seq)`` if it was applied, None if it is
        new; raises DuplicateRequestError if it is too old to tell."""
        session = self._clients.get(client_id)
        if session is None:
            return None
        entry = session.responses.get(seq)
        if entry is not None:
            self._clients.move_to_end(client_id)
            return _expand(entry)
        if seq <= session.floor:
            raise DuplicateRequestError(
                f"request {seq} of this client is older than the deduplication window"
            )
        return None

    def record(self, client_id: bytes, seq: int, response: Response) -> None:
        """Remember the first response to ``(client_id, seq)``. ``response`` is the state
        machine's own (its header carries only the revision)."""
        if type(response) is PutResponse and response.prev_kv is None:
            self._record(client_id, seq, response.header.revision, _COMPACT_BYTES)
        else:
            size = _response_size(response)
            self._record(client_id, seq, (response, size), size)

    def record_put(self, client_id: bytes, seq: int, revision: int) -> None:
        """``record`` of the ``PutResponse`` (without ``prev_kv``) at ``revision``."""
        self._record(client_id, seq, revision, _COMPACT_BYTES)

    def _record(
        self, client_id: bytes, seq: int, entry: int | tuple[Response, int], size: int
    ) -> None:
        clients = self._clients
        session = clients.get(client_id)
        if session is None:
            session = clients[client_id] = _Session()
        else:
            clients.move_to_end(client_id)
        responses = session.responses
        if seq in responses:
            # Not reached through ``apply`` (a known seq is answered, not re-applied);
            # keeps the byte count and the order exact if a caller records twice.
            self._evict_seq(session, seq)
        responses[seq] = entry
        session.order.append(seq)
        self._bytes += size
        while len(responses) > self.window:
            self._evict_oldest_seq(session)
        while len(clients) > 1 and (
            len(clients) > self.max_clients or self._bytes > self.max_bytes
        ):
            _oldest_id, oldest = clients.popitem(last=False)
            for evicted in oldest.responses.values():
                self._bytes -= _entry_size(evicted)
        while len(responses) > 1 and self._bytes > self.max_bytes:
            self._evict_oldest_seq(session)

    def dump(self) -> list[Any]:
        dumped: list[Any] = []
        for client_id, session in self._clients.items():
            responses = session.responses
            wire = [[seq, _entry_to_wire(responses[seq])] for seq in session.order]
            dumped.append([client_id, session.floor, wire])
        return dumped

    def load(self, dumped: Iterable[Any], limits: Limits = DEFAULT_LIMITS) -> None:
        self._clients = OrderedDict()
        self._bytes = 0
        for client_id, floor, responses in dumped:
            session = _Session(floor=floor)
            for seq, wire in responses:
                entry: int | tuple[Response, int]
                if type(wire) is int:
                    entry = wire
                    size = _COMPACT_BYTES
                else:
                    response: Response = message_from_wire(wire, limits)  # type: ignore[assignment]
                    size = _response_size(response)
                    entry = (response, size)
                session.responses[seq] = entry
                session.order.append(seq)
                self._bytes += size
            self._clients[client_id] = session

    def _evict_oldest_seq(self, session: _Session) -> None:
        seq = session.order.popleft()
        entry = session.responses.pop(seq, None)
        if entry is not None:
            self._bytes -= _entry_size(entry)
            session.floor = max(session.floor, seq)

    def _evict_seq(self, session: _Session, seq: int) -> None:
        self._bytes -= _entry_size(session.responses.pop(seq))
        session.order.remove(seq)


def _entry_size(entry: int | tuple[Response, int]) -> int:
    return _COMPACT_BYTES if type(entry) is int else entry[1]  # type: ignore[index]


def _entry_to_wire(entry: int | tuple[Response, int]) -> Any:
    return entry if type(entry) is int else message_to_wire(entry[0])  # type: ignore[index]


def _expand(entry: int | tuple[Response, int]) -> Response:
    if type(entry) is int:
        return PutResponse(ResponseHeader(revision=entry))
    return entry[0]  # type: ignore[index]


def _response_size(response: Response) -> int:
    """A deterministic estimate of the memory a stored response holds."""
    size = 64
    if isinstance(response, PutResponse):
        if response.prev_kv is not None:
            size += len(response.prev_kv.key) + len(response.prev_kv.value)
    elif isinstance(response, RangeResponse):
        size += sum(48 + len(kv.key) + len(kv.value) for kv in response.kvs)
    elif isinstance(response, DeleteRangeResponse):
        size += sum(48 + len(kv.key) + len(kv.value) for kv in response.prev_kvs)
    elif isinstance(response, TxnResponse):
        size += sum(_response_size(inner) for inner in response.responses)
    elif isinstance(response, ErrorResponse):
        size += len(response.message)
    return size


# --------------------------------------------------------------------------- state machine


@attrs.define
class KVStateMachine:
    """The replicated key-value state machine of one member.

    Replicated state (identical on every member, all in ``snapshot``): the MVCC store,
    the lease table, the dedup table and ``applied_index``. Member-local helpers, driven
    by what is applied: ``lessor`` (lease deadlines, active on the leader only) and
    ``watches`` (the watch hub). ``limits`` must be the same on every member.
    """

    limits: Limits = DEFAULT_LIMITS
    watch_limits: WatchLimits = attrs.Factory(WatchLimits)
    dedup_window: int = 8192
    dedup_max_clients: int = 16_384
    dedup_max_bytes: int = 64 << 20
    lessor: Lessor = attrs.Factory(Lessor)
    mvcc: MVCCStore = attrs.field(init=False)
    leases: LeaseTable = attrs.field(init=False)
    dedup: DedupTable = attrs.field(init=False)
    watches: WatchHub = attrs.field(init=False)
    _applied_index: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self.leases = LeaseTable(self.limits)
        self.mvcc = MVCCStore(lease_exists=self.leases.__contains__)
        self.watches = WatchHub(self.mvcc, self.watch_limits)
        self.mvcc.on_commit = self.watches.notify
        self.dedup = DedupTable(self.dedup_window, self.dedup_max_clients, self.dedup_max_bytes)

    @property
    def applied_index(self) -> int:
        """The Raft index of the last entry applied (or restored from a snapshot)."""
        return self._applied_index

    @property
    def revision(self) -> int:
        return self.mvcc.revision

    def header(self) -> ResponseHeader:
        return self.mvcc.header()

    # ------------------------------------------------------------------ apply

    def apply_entry(self, index: int, data: bytes) -> Response | None:
        """Apply the data of a committed normal Raft entry. An empty entry (a new
        leader's no-op) only moves ``applied_index``. Returns the response, or None when
        there is none (no-op, or an index already applied)."""
        if not data:
            self._applied_index = max(self._applied_index, index)
            return None
        try:
            command = decode_command(data, self.limits)
        except PnyxError as exc:
            if index <= self._applied_index:
                return None
            self._applied_index = index
            return error_response_from_exception(exc, self.header())
        return self.apply(index, command)

    def apply(self, index: int, command: Command) -> Response | None:
        """Apply one committed command at Raft ``index`` and return its response. Indexes
        must increase; an index at or below ``applied_index`` (a replay after restart) is
        skipped and answered with None. A ``ClientBatch`` is applied whole and answered
        with None here: ``apply_batch`` returns its responses."""
        if index <= self._applied_index:
            return None
        self._applied_index = index
        if isinstance(command, ClientCommand):
            return self._apply_client(index, command)
        if isinstance(command, ClientBatch):
            for one in command.commands:
                self._apply_client(index, one)
            return None
        if isinstance(command, ExpireLeases):
            for lease in command.leases:
                # A lease revoked (or expired) meanwhile is simply gone already.
                if lease in self.leases:
                    self._revoke(lease)
            return LeaseRevokeResponse(self.header())
        if isinstance(command, CompactHistory):
            return self._execute(index, CompactionRequest(command.revision))
        return error_response_from_exception(
            InvalidRequestError(f"not a command: {type(command).__name__}"), self.header()
        )

    def apply_batch(
        self,
        index: int,
        batch: ClientBatch,
        wanted: Container[tuple[bytes, int]] | None = None,
    ) -> list[Response | None] | None:
        """Apply a ``ClientBatch`` committed at Raft ``index``: the response of each of its
        commands, in order; None for an index already applied (see ``apply``).

        ``wanted``, if given, holds the ``(client_id, seq)`` of the commands whose
        responses the caller will use (those it has someone waiting for): the response
        of another plain put comes back as None instead of being built (what the
        exactly-once table keeps of it, its revision, is recorded all the same). Every
        member applies every write and mostly answers none of them."""
        if index <= self._applied_index:
            return None
        self._applied_index = index
        if wanted is None:
            return [self._apply_client(index, command) for command in batch.commands]
        out: list[Response | None] = []
        for command in batch.commands:
            request = command.request
            if (
                type(request) is PutRequest
                and not request.prev_kv
                and (command.client_id, command.seq) not in wanted
            ):
                out.append(self._apply_put_unanswered(index, command, request))
            else:
                out.append(self._apply_client(index, command))
        return out

    def _apply_put_unanswered(
        self, index: int, command: ClientCommand, request: PutRequest
    ) -> Response | None:
        """``_apply_client`` for a plain put nobody waits for: the same effect on the
        state and the exactly-once table, without building the response."""
        exactly_once = command.seq > 0
        if exactly_once:
            try:
                if self.dedup.lookup(command.client_id, command.seq) is not None:
                    return None
            except DuplicateRequestError:
                return None
        try:
            self.mvcc.put_only(request)
        except PnyxError:
            return self._apply_client_executed(index, command, exactly_once)
        except Exception as exc:
            # A bug (see ``_execute``): answered, never applied a second time.
            _log.error("apply failed", index=index, request="PutRequest", exc_info=exc)
            response = error_response_from_exception(exc, self.header())
            if exactly_once:
                self.dedup.record(command.client_id, command.seq, response)
            return response
        if exactly_once:
            self.dedup.record_put(command.client_id, command.seq, self.mvcc.revision)
        return None

    def _apply_client_executed(
        self, index: int, command: ClientCommand, exactly_once: bool
    ) -> Response:
        # The put was refused before it wrote anything: run it the ordinary way, which
        # gives (and records) the refusal.
        response = self._execute(index, command.request)
        if exactly_once:
            self.dedup.record(command.client_id, command.seq, response)
        return response

    def _apply_client(self, index: int, command: ClientCommand) -> Response:
        request = command.request
        exactly_once = command.seq > 0 and type(request) in MUTATING_REQUESTS
        if exactly_once:
            try:
                first = self.dedup.lookup(command.client_id, command.seq)
            except DuplicateRequestError as exc:
                return error_response_from_exception(exc, self.header())
            if first is not None:
                return first
        response = self._execute(index, request)
        if exactly_once:
            self.dedup.record(command.client_id, command.seq, response)
        return response

    def _execute(self, index: int, request: Request) -> Response:
        try:
            if isinstance(request, PutRequest):
                return self.mvcc.put(request)
            if isinstance(request, DeleteRangeRequest):
                return self.mvcc.delete_range(request)
            if isinstance(request, TxnRequest):
                return self.mvcc.txn(request)
            if isinstance(request, RangeRequest):
                return self.mvcc.range(request)
            if isinstance(request, LeaseGrantRequest):
                lease, ttl = self.leases.grant(request.id, request.ttl, index)
                self.lessor.granted(lease, ttl)
                return LeaseGrantResponse(self.header(), lease, ttl)
            if isinstance(request, LeaseRevokeRequest):
                if request.id not in self.leases:
                    raise LeaseNotFoundError(f"lease {request.id} not found")
                self._revoke(request.id)
                return LeaseRevokeResponse(self.header())
            if isinstance(request, CompactionRequest):
                self.mvcc.compact(request.revision)
                self.watches.compacted()
                return CompactionResponse(self.header())
            raise InvalidRequestError(f"{type(request).__name__} is not applied through the log")
        except PnyxError as exc:
            return error_response_from_exception(exc, self.header())
        except Exception as exc:
            # A bug. Every member hits it identically (apply is deterministic), and the
            # MVCC store undid the failed write, so answering keeps the cluster available
            # where raising would crash every member on the same entry, forever.
            _log.error("apply failed", index=index, request=type(request).__name__, exc_info=exc)
            return error_response_from_exception(exc, self.header())

    def _revoke(self, lease: int) -> None:
        self.mvcc.delete_keys(self.mvcc.lease_keys(lease))
        self.leases.revoke(lease)
        self.lessor.revoked(lease)

    # ------------------------------------------------------------------ local reads

    def range(self, request: RangeRequest) -> RangeResponse:
        """Serve a read locally (after ReadIndex for a linearizable one). Raises
        CompactedError / FutureRevisionError."""
        return self.mvcc.range(request)

    def lease_leases(self, request: LeaseLeasesRequest | None = None) -> LeaseLeasesResponse:
        return LeaseLeasesResponse(self.header(), tuple(self.leases.ids()))

    def lease_time_to_live(
        self, request: LeaseTimeToLiveRequest, now: float
    ) -> LeaseTimeToLiveResponse:
        """Remaining TTL as the leader's ``Lessor`` sees it (NotLeaderError elsewhere);
        ``ttl == -1`` for a lease that does not exist or has expired."""
        if request.id not in self.leases:
            self.lessor.remaining(request.id, now)  # NotLeaderError on a follower
            return LeaseTimeToLiveResponse(self.header(), request.id, -1, 0)
        remaining = self.lessor.remaining(request.id, now)
        keys = tuple(self.mvcc.lease_keys(request.id)) if request.keys else ()
        return LeaseTimeToLiveResponse(
            self.header(), request.id, remaining, self.leases.ttl(request.id), keys
        )

    def lease_keep_alive(
        self, request: LeaseKeepAliveRequest, now: float
    ) -> LeaseKeepAliveResponse:
        """Refresh a lease on the leader (NotLeaderError elsewhere); ``ttl == 0`` in the
        response means the lease is gone."""
        try:
            ttl = self.lessor.keep_alive(request.id, now)
        except LeaseNotFoundError:
            ttl = 0
        return LeaseKeepAliveResponse(self.header(), request.id, ttl)

    def expired_leases(self, now: float, limit: int = 0) -> ExpireLeases | None:
        """On the leader: the command to propose for leases whose TTL ran out, if any."""
        expired = self.lessor.expired(now, limit)
        return ExpireLeases(tuple(expired)) if expired else None

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """All replicated state, as msgpack. Identical state gives identical bytes."""
        return b"".join(self.snapshot_chunks())

    def snapshot_chunks(self) -> Iterator[bytes]:
        """``snapshot()`` in chunks (about a megabyte each), encoded as they are taken:
        the state's history is never built as one nested list."""
        yield b"\x95"  # an array of 5
        yield _packb(SNAPSHOT_FORMAT) + _packb(self._applied_index)
        yield from self.mvcc.dump_packed()
        yield _packb(self.leases.dump()) + _packb(self.dedup.dump())

    def restore(self, data: bytes) -> None:
        """Replace all replicated state by a snapshot's. The lessor forgets deadlines
        (a leader restarts full TTLs) and every watcher catches up from the new history
        where it was (or is canceled as compacted)."""
        try:
            value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:
            raise InvalidRequestError(f"snapshot is not msgpack: {type(exc).__name__}") from None
        self.restore_value(value)

    def restore_value(self, value: Any) -> None:
        """``restore`` from a snapshot already decoded (``msgpack.unpackb`` with
        ``raw=False``), e.g. as part of a bigger document."""
        if type(value) is not list or len(value) != 5 or value[0] != SNAPSHOT_FORMAT:
            raise InvalidRequestError("snapshot: unknown format")
        _, applied_index, mvcc, leases, dedup = value
        # Build everything before replacing anything: a bad snapshot leaves the state as
        # it was.
        lease_table = LeaseTable(self.limits)
        lease_table.load(leases)
        store = MVCCStore.load(
            mvcc, lease_exists=lease_table.__contains__, on_commit=self.watches.notify
        )
        dedup_table = DedupTable(self.dedup_window, self.dedup_max_clients, self.dedup_max_bytes)
        dedup_table.load(dedup, self.limits)
        self.leases = lease_table
        self.mvcc = store
        self.dedup = dedup_table
        self._applied_index = applied_index
        self.lessor.reset(self.leases.items())
        self.watches.rebind(self.mvcc)
