"""A small fake pnyx node for client tests: a real ZeroMQ ROUTER in a thread that speaks
the wire protocol (``pnyx.core.wire`` batches) over TCP on an ephemeral port.

It is a test double of the wire peer, not of the client: the client under test runs
unchanged, over real sockets. Several ``FakeServer`` objects may share one ``FakeStore``
to stand for the members of one cluster (same data, same exactly-once table), each with
its own connections and watches. Tests inject faults with ``hook`` (answer a request
with an error, or drop it unapplied), ``drop_replies`` (apply, then lose the answer),
``stop()``/``start()`` (the node dies and comes back on the
same port), ``silent`` (the node stays connected but never answers) and
``cancel_watches`` (the node cuts its watchers off) and ``refuse_messages`` (the node
answers a whole message with request id 0, as it does one it cannot decode).

Semantics follow etcd closely enough for protocol tests (one revision per write,
per-revision watch responses, compaction, leases without expiry); it is not a model of
the real state machine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import zmq

from pnyx.core import errors
from pnyx.core.wire import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DecodeError,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Envelope,
    Event,
    EventType,
    KeyValue,
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
    Member,
    MemberAddRequest,
    MemberAddResponse,
    MemberListRequest,
    MemberListResponse,
    MemberPromoteRequest,
    MemberPromoteResponse,
    MemberRemoveRequest,
    MemberRemoveResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    StatusRequest,
    StatusResponse,
    TxnRequest,
    TxnResponse,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchFilterType,
    WatchResponse,
    decode_batch,
    encode_batch,
    error_response_from_exception,
    in_range,
)

DROP = object()
"""Returned by a hook: do not answer this request at all."""

Hook = Callable[["FakeServer", Envelope], Any]


class FakeStore:
    """The replicated state of a fake cluster. Thread-safe (one lock)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.revision = 1
        self.compact_revision = 0
        self.kvs: dict[bytes, KeyValue] = {}
        self.history: list[tuple[int, list[Event]]] = []
        self.leases: dict[int, int] = {}
        self.lease_keys: dict[int, set[bytes]] = {}
        self.next_lease = 0x1000
        self.dedup: dict[tuple[bytes, int], Any] = {}
        self.applied = 0
        """Mutating requests applied (duplicates answered from ``dedup`` not counted)."""
        self.members: list[Member] = []
        self.servers: list[FakeServer] = []

    # ------------------------------------------------------------------ writes

    def _commit(self, events: list[Event]) -> int:
        """Record one write transaction's events at a new revision and fan them out."""
        self.revision += 1
        self.history.append((self.revision, events))
        for server in list(self.servers):
            server.notify(self.revision, events)
        return self.revision

    def header(self, server: FakeServer | None = None) -> ResponseHeader:
        member = server.member_id if server else 0
        leader = server.leader_id if server else 0
        return ResponseHeader(1, member, self.revision, 1, leader)


class FakeServer:
    """One fake node; see the module docstring."""

    def __init__(
        self,
        store: FakeStore | None = None,
        *,
        member_id: int = 1,
        leader_id: int = 1,
        port: int = 0,
    ) -> None:
        self.store = store or FakeStore()
        self.member_id = member_id
        self.leader_id = leader_id
        self.port = port
        self.hook: Hook | None = None
        self.silent = False
        self.drop_replies = 0
        """Apply the next this-many mutating requests but swallow their replies."""
        self.refuse_messages = 0
        """Refuse the next this-many messages as a whole, as a node refuses one it cannot
        decode: one error reply with request id 0, nothing of the message applied."""
        self.received: list[Envelope] = []
        self.messages = 0
        """ZeroMQ messages received (each a batch of envelopes)."""
        self.watches: dict[tuple[bytes, int], tuple[int, WatchCreateRequest]] = {}
        self._watch_ids = 0
        self._outbox: list[tuple[bytes, Envelope]] = []
        self._lock = threading.Lock()
        self._context = zmq.Context.instance()
        self._thread: threading.Thread | None = None
        self._running = False
        self._waker: zmq.Socket[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeServer:
        router: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        router.linger = 0
        if self.port:
            router.bind(self.endpoint)
        else:
            self.port = router.bind_to_random_port("tcp://127.0.0.1")
        address = f"inproc://fake-server-{id(self)}-{self.port}-{threading.get_ident()}"
        wake_receiver: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        wake_receiver.bind(address)
        waker: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        waker.connect(address)
        with self._lock:
            self._waker = waker
        self._running = True
        with self.store.lock:
            if self not in self.store.servers:
                self.store.servers.append(self)
            if not any(member.id == self.member_id for member in self.store.members):
                self.store.members.append(
                    Member(self.member_id, f"node{self.member_id}", (), (self.endpoint,))
                )
        self._thread = threading.Thread(target=self._run, args=(router, wake_receiver), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """The node dies: its socket closes (clients see the connection drop) and its
        watches are forgotten."""
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            if self._waker is not None:
                self._waker.close(linger=0)
                self._waker = None
        with self.store.lock:
            if self in self.store.servers:
                self.store.servers.remove(self)
        self.watches.clear()
        self._outbox.clear()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake(self) -> None:
        with self._lock:
            if self._waker is not None:
                # NOBLOCK: a thread that already left its loop (stop() racing its last
                # turn) has closed the other end, and a blocking send would wait forever.
                with contextlib.suppress(zmq.Again):
                    self._waker.send(b"", zmq.NOBLOCK)

    # ------------------------------------------------------------------ fault injection

    def cancel_watches(self, reason: str) -> None:
        """Cut every watcher off with ``cancel_reason`` (e.g. a slow watcher)."""
        with self.store.lock:
            for (routing_id, request_id), (watch_id, _) in list(self.watches.items()):
                response = WatchResponse(
                    self.store.header(self), watch_id, canceled=True, cancel_reason=reason
                )
                self._outbox.append((routing_id, Envelope(request_id, response)))
            self.watches.clear()
        self._wake()

    def progress(self) -> None:
        """Send every watcher a progress notification at the current revision."""
        with self.store.lock:
            for (routing_id, request_id), (watch_id, _) in self.watches.items():
                response = WatchResponse(self.store.header(self), watch_id, progress_notify=True)
                self._outbox.append((routing_id, Envelope(request_id, response)))
        self._wake()

    def notify(self, revision: int, events: list[Event]) -> None:
        """Called by the store (under its lock) after each write."""
        for (routing_id, request_id), (watch_id, request) in self.watches.items():
            if request.start_revision > revision:
                continue
            matching = _filter_events(events, request)
            if matching:
                response = WatchResponse(self.store.header(self), watch_id, events=matching)
                self._outbox.append((routing_id, Envelope(request_id, response)))
        self._wake()

    # ------------------------------------------------------------------ the loop

    def _run(self, router: zmq.Socket[bytes], wake_receiver: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(wake_receiver, zmq.POLLIN)
        try:
            while self._running:
                ready = dict(poller.poll(1000))
                if wake_receiver in ready:
                    while True:
                        try:
                            wake_receiver.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if router in ready:
                    while True:
                        try:
                            routing_id, data = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(router, routing_id, data)
                with self.store.lock:
                    outbox, self._outbox = self._outbox, []
                by_peer: dict[bytes, list[Envelope]] = {}
                for routing_id, envelope in outbox:
                    by_peer.setdefault(routing_id, []).append(envelope)
                for routing_id, envelopes in by_peer.items():
                    router.send_multipart([routing_id, encode_batch(envelopes)])
        finally:
            router.close(linger=0)
            wake_receiver.close(linger=0)

    def _handle(self, router: zmq.Socket[bytes], routing_id: bytes, data: bytes) -> None:
        self.messages += 1
        replies: list[Envelope] = []
        try:
            if self.refuse_messages > 0:
                self.refuse_messages -= 1
                raise errors.InvalidRequestError("refused: malformed message")
            decoded = decode_batch(data)
        except errors.PnyxError as exc:
            refusal = Envelope(0, error_response_from_exception(exc))
            router.send_multipart([routing_id, encode_batch([refusal])])
            return
        for item in decoded:
            if isinstance(item, DecodeError):
                reply = item.to_envelope()
                if reply is not None:
                    replies.append(reply)
                continue
            self.received.append(item)
            if self.silent:
                continue
            if self.hook is not None:
                override = self.hook(self, item)
                if override is DROP:
                    continue
                if override is not None:
                    replies.append(Envelope(item.request_id, override))
                    continue
            with self.store.lock:
                try:
                    response = self._answer(routing_id, item)
                except errors.PnyxError as exc:
                    response = error_response_from_exception(exc, self.store.header(self))
            if self.drop_replies > 0 and item.seq:
                self.drop_replies -= 1
                continue
            # A watch answers with "created" and its history; live events queued since
            # (in the outbox) go out after these replies, so the order holds.
            for one in response if isinstance(response, list) else [response]:
                replies.append(Envelope(item.request_id, one))
        if replies:
            router.send_multipart([routing_id, encode_batch(replies)])

    # ------------------------------------------------------------------ requests

    def _answer(self, routing_id: bytes, envelope: Envelope) -> Any:
        store = self.store
        request = envelope.message
        if envelope.seq:
            first = store.dedup.get((envelope.client_id, envelope.seq))
            if first is not None:
                return first
        response = self._apply(routing_id, envelope.request_id, request)
        if envelope.seq:
            store.dedup[(envelope.client_id, envelope.seq)] = response
            store.applied += 1
        return response

    def _apply(self, routing_id: bytes, request_id: int, request: Any) -> Any:
        store = self.store
        kind = type(request)
        if kind is RangeRequest:
            return self._range(request)
        if kind is PutRequest:
            prev, _ = self._put(request, [])
            return PutResponse(store.header(self), prev if request.prev_kv else None)
        if kind is DeleteRangeRequest:
            deleted = self._delete(request, [])
            return DeleteRangeResponse(
                store.header(self), len(deleted), tuple(deleted) if request.prev_kv else ()
            )
        if kind is TxnRequest:
            events: list[Event] = []
            response = self._txn(request, events)
            if events:
                store._commit(events)
            return TxnResponse(store.header(self), response.succeeded, response.responses)
        if kind is CompactionRequest:
            if request.revision <= store.compact_revision:
                raise errors.CompactedError(compact_revision=store.compact_revision)
            if request.revision > store.revision:
                raise errors.FutureRevisionError("compaction revision is in the future")
            store.compact_revision = request.revision
            return CompactionResponse(store.header(self))
        if kind is LeaseGrantRequest:
            lease_id = request.id or store.next_lease
            store.next_lease += 1
            store.leases[lease_id] = request.ttl
            store.lease_keys[lease_id] = set()
            return LeaseGrantResponse(store.header(self), lease_id, request.ttl)
        if kind is LeaseRevokeRequest:
            if request.id not in store.leases:
                raise errors.LeaseNotFoundError(f"lease {request.id} not found")
            del store.leases[request.id]
            events = []
            for key in sorted(store.lease_keys.pop(request.id, set())):
                self._delete(DeleteRangeRequest(key), events, commit=False)
            if events:
                store._commit(events)
            return LeaseRevokeResponse(store.header(self))
        if kind is LeaseKeepAliveRequest:
            ttl = store.leases.get(request.id, 0)
            return LeaseKeepAliveResponse(store.header(self), request.id, ttl)
        if kind is LeaseTimeToLiveRequest:
            if request.id not in store.leases:
                return LeaseTimeToLiveResponse(store.header(self), request.id, -1)
            ttl = store.leases[request.id]
            keys = tuple(sorted(store.lease_keys[request.id])) if request.keys else ()
            return LeaseTimeToLiveResponse(store.header(self), request.id, ttl, ttl, keys)
        if kind is LeaseLeasesRequest:
            return LeaseLeasesResponse(store.header(self), tuple(sorted(store.leases)))
        if kind is WatchCreateRequest:
            return self._watch(routing_id, request_id, request)
        if kind is WatchCancelRequest:
            for watch_key, (watch_id, _) in list(self.watches.items()):
                if watch_key[0] == routing_id and watch_id == request.watch_id:
                    del self.watches[watch_key]
            return WatchResponse(store.header(self), request.watch_id, canceled=True)
        if kind is MemberListRequest:
            return MemberListResponse(store.header(self), tuple(store.members))
        if kind is MemberAddRequest:
            member = Member(
                max(m.id for m in store.members) + 1,
                request.name,
                request.peer_urls,
                (),
                request.is_learner,
            )
            store.members.append(member)
            return MemberAddResponse(store.header(self), member, tuple(store.members))
        if kind is MemberRemoveRequest:
            if not any(m.id == request.id for m in store.members):
                raise errors.MemberError(f"member {request.id} not found")
            store.members = [m for m in store.members if m.id != request.id]
            return MemberRemoveResponse(store.header(self), tuple(store.members))
        if kind is MemberPromoteRequest:
            store.members = [
                Member(m.id, m.name, m.peer_urls, m.client_urls, False) if m.id == request.id else m
                for m in store.members
            ]
            return MemberPromoteResponse(store.header(self), tuple(store.members))
        if kind is StatusRequest:
            return StatusResponse(
                store.header(self),
                version="fake-0",
                db_size=len(store.kvs),
                leader=self.leader_id,
                raft_index=store.revision,
                raft_term=1,
                raft_applied_index=store.revision,
            )
        raise errors.InvalidRequestError(f"fake server does not handle {kind.__name__}")

    def _range(self, request: RangeRequest) -> RangeResponse:
        store = self.store
        if request.revision and request.revision <= store.compact_revision:
            raise errors.CompactedError(compact_revision=store.compact_revision)
        if request.revision > store.revision:
            raise errors.FutureRevisionError(f"revision {request.revision} is in the future")
        found = [
            kv
            for key, kv in sorted(store.kvs.items())
            if in_range(key, request.key, request.range_end)
        ]
        count = len(found)
        more = bool(request.limit) and count > request.limit
        if request.limit:
            found = found[: request.limit]
        if request.count_only:
            found = []
        elif request.keys_only:
            found = [
                KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
                for kv in found
            ]
        return RangeResponse(store.header(self), tuple(found), more, count)

    def _put(
        self, request: PutRequest, events: list[Event], commit: bool = True
    ) -> tuple[KeyValue | None, int]:
        store = self.store
        if request.lease and request.lease not in store.leases:
            raise errors.LeaseNotFoundError(f"lease {request.lease} not found")
        revision = store.revision + 1
        prev = store.kvs.get(request.key)
        kv = KeyValue(
            request.key,
            prev.create_revision if prev else revision,
            revision,
            (prev.version if prev else 0) + 1,
            request.value,
            request.lease,
        )
        store.kvs[request.key] = kv
        if request.lease:
            store.lease_keys[request.lease].add(request.key)
        events.append(Event(EventType.PUT, kv, prev))
        if commit:
            store._commit(events)
        return prev, revision

    def _delete(
        self, request: DeleteRangeRequest, events: list[Event], commit: bool = True
    ) -> list[KeyValue]:
        store = self.store
        revision = store.revision + 1
        deleted = [
            kv
            for key, kv in sorted(store.kvs.items())
            if in_range(key, request.key, request.range_end)
        ]
        for kv in deleted:
            del store.kvs[kv.key]
            events.append(Event(EventType.DELETE, KeyValue(kv.key, 0, revision, 0), kv))
        if deleted and commit:
            store._commit(events)
        return deleted

    def _txn(self, request: TxnRequest, events: list[Event]) -> TxnResponse:
        store = self.store
        succeeded = all(self._compare(compare) for compare in request.compare)
        responses: list[Any] = []
        for op in request.success if succeeded else request.failure:
            if type(op) is RangeRequest:
                responses.append(self._range(op))
            elif type(op) is PutRequest:
                prev, _ = self._put(op, events, commit=False)
                responses.append(PutResponse(store.header(self), prev if op.prev_kv else None))
            elif type(op) is DeleteRangeRequest:
                deleted = self._delete(op, events, commit=False)
                responses.append(DeleteRangeResponse(store.header(self), len(deleted)))
            else:
                responses.append(self._txn(op, events))
        return TxnResponse(store.header(self), succeeded, tuple(responses))

    def _compare(self, compare: Compare) -> bool:
        store = self.store
        keys = [key for key in sorted(store.kvs) if in_range(key, compare.key, compare.range_end)]
        if not compare.range_end and not keys:
            keys = [compare.key]
        for key in keys:
            kv = store.kvs.get(key)
            actual: Any
            if compare.target == CompareTarget.VALUE:
                if kv is None:
                    return False
                actual = kv.value
            elif compare.target == CompareTarget.VERSION:
                actual = kv.version if kv else 0
            elif compare.target == CompareTarget.CREATE:
                actual = kv.create_revision if kv else 0
            elif compare.target == CompareTarget.MOD:
                actual = kv.mod_revision if kv else 0
            else:
                actual = kv.lease if kv else 0
            expected = compare.value
            result = compare.result
            ok = (
                (result == CompareResult.EQUAL and actual == expected)
                or (result == CompareResult.NOT_EQUAL and actual != expected)
                or (result == CompareResult.LESS and actual < expected)
                or (result == CompareResult.GREATER and actual > expected)
            )
            if not ok:
                return False
        return True

    def _watch(
        self, routing_id: bytes, request_id: int, request: WatchCreateRequest
    ) -> list[WatchResponse]:
        store = self.store
        self._watch_ids += 1
        watch_id = self._watch_ids
        header = store.header(self)
        created = WatchResponse(header, watch_id, created=True)
        if request.start_revision and request.start_revision <= store.compact_revision:
            # As etcd: created, then canceled with the compact revision.
            canceled = WatchResponse(
                header, watch_id, canceled=True, compact_revision=store.compact_revision
            )
            return [created, canceled]
        self.watches[(routing_id, request_id)] = (watch_id, request)
        replies = [created]
        if request.start_revision:
            for revision, events in store.history:
                matching = _filter_events(events, request)
                if revision >= request.start_revision and matching:
                    history_header = ResponseHeader(1, self.member_id, revision, 1, self.leader_id)
                    replies.append(WatchResponse(history_header, watch_id, events=matching))
        return replies


def _filter_events(events: list[Event], request: WatchCreateRequest) -> tuple[Event, ...]:
    matching = []
    for event in events:
        if not in_range(event.kv.key, request.key, request.range_end):
            continue
        if event.type == EventType.PUT and WatchFilterType.NOPUT in request.filters:
            continue
        if event.type == EventType.DELETE and WatchFilterType.NODELETE in request.filters:
            continue
        matching.append(event if request.prev_kv else Event(event.type, event.kv))
    return tuple(matching)
