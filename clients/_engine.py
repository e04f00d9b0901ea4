"""The I/O of a client: one protocol engine (``EngineCore``) and two ways of driving it.

``EngineCore`` owns the sockets and the table of attempts in flight: one DEALER per
endpoint, connected eagerly, with ZMTP heartbeats and a socket monitor (a refused, lost
or silent connection is seen within about a second and fails the attempts there at once
instead of at the end of their timeout; ``IMMEDIATE`` keeps ZeroMQ from queueing requests
for a peer that is not connected, so until the handshake succeeds the engine holds them
itself). Calls started in one turn go to their endpoint as ONE ZeroMQ message (split
only at the size limits); replies come back in batches and resolve their calls; expired
attempts fail. It never waits and never starts a thread: a driver calls it, from one
thread at a time.

Watch events are the one reply a node sends many copies of: every watch that wants the
same events gets its own response in the same message. ``decode_replies`` decodes each
distinct response once and hands the copies over with their own watch ids, and the
watches fed from one message share the batches built from it (``_core.BatchMemo``), so
what a client pays per watch per event is a comparison, a little bookkeeping and the
wake-up of its consumer (``StreamSink`` for a thread, ``AsyncStreamSink`` for a task).

``ThreadEngine`` drives it for the blocking ``Client`` (leader/followers). Whoever holds
the I/O lock runs the engine: a caller thread that finds the lock free runs its own
attempt to the end itself - sends, polls the sockets, receives, and serves anything
else that arrives meanwhile - so a lone sequential call costs no thread switch at all.
A caller that finds the lock taken queues its call (a thread-safe deque, one wake-up of
the poller per drain through an inproc PAIR socket) and waits on its own lock; the
current holder sends it with everything else queued, in one message. When a caller
finishes its own attempt while others are still in flight, the engine's background
thread takes the lock over and runs until nothing is left in flight, then sleeps on an
event without touching any socket (so the next lone call can take the fast path).

``LoopEngine`` drives it for ``AsyncClient`` from the client's asyncio event loop, with
no thread at all: the sockets' file descriptors are registered with ``add_reader``
(ZeroMQ's descriptor is edge-triggered: after every send the socket's ``EVENTS`` is
checked and a receive scheduled if a reply is already waiting), calls started by the
tasks of one loop iteration are sent together by one ``call_soon`` callback, futures
are resolved directly, and one ``call_at`` timer serves every deadline.

A call here is ONE attempt: retries, backoff and the exactly-once ``seq`` are the faces'
business (``client.py``, ``aio.py``) with the decisions in ``_core``. Never retry here,
never block except in the poller, and never touch a socket without owning the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information
import zmq
from zmq.utils.monitor import recv_monitor_message

from pnyx.clients._core import (
    BatchMemo,
    EndpointSelector,
    StreamError,
    StreamItem,
    WatchState,
    whole_message_refused,
)
from pnyx.clients.log import library_logger
from pnyx.core import errors
from pnyx.core.wire import (
    PROTOCOL_VERSION,
    TAG_OF,
    DecodeError,
    Envelope,
    ErrorResponse,
    Limits,
    MemberListResponse,
    Message,
    Response,
    SharedWatchResponse,
    StatusRequest,
    WatchCancelRequest,
    WatchResponse,
    decode_batch,
    encode_batch,
    error_from_response,
    message_from_wire,
)

_log = library_logger("pnyx.clients")

RESPONSE_LIMITS = Limits(max_message_bytes=1 << 30, max_batch=1 << 20)
"""Replies are decoded with generous bounds: a node that answers is trusted not to be
hostile, and a large range read must not be refused by its own client."""

REQUEST_MESSAGE_BYTES = Limits().max_message_bytes
"""Requests are packed into messages no larger than a node accepts by default."""
MAX_ENVELOPES_PER_MESSAGE = 1024
MAX_BUFFERED_BATCHES = 10_000
"""Watch batches waiting for a slow consumer before its watch is dropped and resumed
later (from where the consumer is) instead of buffering without bound."""

UNANSWERABLE_REQUEST_ID = 0
"""Request id of a node's reply to a message it could not decode as a whole (oversized,
malformed): no request of it can be answered by its own id."""

HEARTBEAT_INTERVAL_MS = 500
HEARTBEAT_TIMEOUT_MS = 1500
HANDSHAKE_TIMEOUT_MS = 2000
RECONNECT_INTERVAL_MS = 100
RECONNECT_INTERVAL_MAX_MS = 1000
TIMER_SLACK = 0.01
"""Deadlines are checked at most this often: an attempt may fail up to this late, and a
busy client does not wake once per finished call to pop its stale deadline."""

_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_RECV_BURST = 256
"""Messages taken from one socket per turn, so one busy node cannot starve others."""

_instances = itertools.count(1)


class StreamSink:
    """Where a stream's items go, in order, for a consumer thread (a ``SimpleQueue``:
    the engine's owner may be any thread)."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()

    def put_items(self, items: list[StreamItem]) -> None:
        put = self.queue.put_nowait
        for item in items:
            put(item)

    def qsize(self) -> int:
        return self.queue.qsize()


class AsyncStreamSink:
    """Where a stream's items go, in order, for consumer tasks of one event loop: a deque
    and the futures of the tasks waiting on it. Lighter than an ``asyncio.Queue`` on the
    path every event of every watch takes (no unbounded-queue bookkeeping, no
    ``join`` event, one future per wait). Not thread safe: called in the loop's thread
    only (the ``LoopEngine``'s owner and the consumer)."""

    __slots__ = ("_waiters", "items", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[StreamItem] = deque()
        self._waiters: list[asyncio.Future[None]] = []

    def put_items(self, items: list[StreamItem]) -> None:
        self.items.extend(items)
        waiters = self._waiters
        if waiters:
            # Every waiter (usually one) looks again; whoever finds nothing waits again.
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def qsize(self) -> int:
        return len(self.items)

    async def get(self, timeout: float | None = None) -> StreamItem | None:
        """The next item, or None if none came within ``timeout`` seconds. A canceled
        wait takes nothing (the item stays for the next one)."""
        items = self.items
        if not items:
            loop = self.loop
            deadline = None if timeout is None else loop.time() + timeout
            while not items:
                if deadline is not None and loop.time() >= deadline:
                    return None
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                timer = None if deadline is None else loop.call_at(deadline, _release, waiter)
                try:
                    await waiter
                finally:
                    if timer is not None:
                        timer.cancel()
                    if self._waiters:  # not woken by put_items: timed out or canceled
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(waiter)
        return items.popleft()


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


Sink = StreamSink | AsyncStreamSink


class Call:
    """One attempt of one request. Filled by the face, completed by the engine.

    For a unary request exactly one of ``response``/``error`` is set when ``done``
    becomes true (and then its waiter is woken: ``lock`` released for a thread,
    ``future`` resolved for a task). For a stream (a watch) every response goes through
    ``stream`` to ``sink``; the attempt ends with a ``StreamError`` item.
    """

    __slots__ = (
        "client_id",
        "deadline",
        "done",
        "endpoint",
        "error",
        "fixed_endpoint",
        "future",
        "lock",
        "message",
        "request_id",
        "response",
        "sent",
        "seq",
        "sink",
        "stream",
        "timeout",
    )

    def __init__(
        self,
        message: Message,
        seq: int,
        timeout: float,
        *,
        client_id: bytes = b"",
        endpoint: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        stream: WatchState | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.message = message
        self.seq = seq
        self.client_id = client_id if seq else b""
        """With ``seq``, the exactly-once identity of a write (see ``_core.Ticket``)."""
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.fixed_endpoint = endpoint
        self.endpoint = ""
        self.request_id = 0
        self.sent = False
        self.done = False
        self.response: Response | None = None
        self.error: errors.PnyxError | None = None
        self.stream = stream
        self.sink = sink
        self.lock: threading.Lock | None = None
        """Created by ``ThreadEngine.submit`` for a thread that waits on it."""
        self.future: asyncio.Future[None] | None = None
        if stream is None and loop is not None:
            self.future = loop.create_future()


@attrs.define(eq=False)
class _Connection:
    endpoint: str
    socket: zmq.Socket[bytes]
    monitor: zmq.Socket[bytes]
    up: bool = False
    down: bool = False
    """Known unreachable since the last failed connect or lost connection."""
    held: list[Call] = attrs.Factory(list)
    """Attempts waiting for the handshake (not sent yet)."""
    inflight: set[int] = attrs.Factory(set)
    """Request ids sent on this connection and not answered yet."""
    canceled_watches: set[int] = attrs.Factory(set)
    """Watch ids we already asked this node to cancel (strays), so we ask once."""


@attrs.frozen
class _Cancel:
    call: Call


@attrs.frozen
class _Stop:
    pass


class EngineCore:
    """The protocol engine of one client; see the module docstring. Not thread safe:
    exactly one thread at a time (the driver's owner) may call any method."""

    def __init__(
        self,
        selector: EndpointSelector,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self._selector = selector
        self._context = context or zmq.Context.instance()
        self._connections: dict[str, _Connection] = {}
        self._by_socket: dict[zmq.Socket[bytes], _Connection] = {}
        self._by_monitor: dict[zmq.Socket[bytes], _Connection] = {}
        self._pending: dict[int, Call] = {}
        self._outbox: dict[_Connection, list[Call]] = {}
        """Started attempts for connections that are up, to send at the next flush."""
        self._timers: list[tuple[float, int]] = []
        self._request_ids = itertools.count(1)
        self._probes: dict[int, str] = {}
        """Request id -> endpoint of the status probes sent on each new connection."""
        self._learned: Any = None
        """The response ``_learn`` saw last in the message being dispatched."""
        self._shut = False

    @property
    def is_closed(self) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------ driver hooks

    def _watch_connection(self, connection: _Connection) -> None:
        """A connection's sockets exist: start watching them for input."""
        raise NotImplementedError

    def _unwatch_connection(self, connection: _Connection) -> None:
        """Before closing a connection's sockets: stop watching them."""
        raise NotImplementedError

    def _finish(self, call: Call) -> None:
        """``call`` has its response or error: mark it done and wake its waiter."""
        raise NotImplementedError

    def _deliver(self, call: Call, items: list[StreamItem]) -> None:
        sink = call.sink
        if sink is not None:
            sink.put_items(items)

    # ------------------------------------------------------------------ starting

    def _connect_all(self) -> None:
        for endpoint in list(self._selector.endpoints):
            self._connection(endpoint)

    def _start(self, call: Call) -> None:
        """Give ``call`` an endpoint and a request id; it goes out at the next flush (or
        when its connection comes up)."""
        endpoint = call.fixed_endpoint or self._selector.choose()
        call.endpoint = endpoint
        request_id = next(self._request_ids)
        call.request_id = request_id
        self._pending[request_id] = call
        heapq.heappush(self._timers, (call.deadline, request_id))
        connection = self._connection(endpoint)
        if connection.up:
            calls = self._outbox.get(connection)
            if calls is None:
                self._outbox[connection] = [call]
            else:
                calls.append(call)
        else:
            connection.held.append(call)

    def _flush(self) -> None:
        """Send every started attempt, one message per endpoint."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        for connection, calls in outbox.items():
            live = [call for call in calls if self._pending.get(call.request_id) is call]
            if not live:
                continue
            if connection.up:
                self._send(connection, live)
                self._after_send(connection)
            else:  # lost between start and flush: wait for it to come back
                connection.held.extend(live)

    def _after_send(self, connection: _Connection) -> None:
        """Hook: a message went out on ``connection``'s socket."""

    # ------------------------------------------------------------------ connections

    def _connection(self, endpoint: str) -> _Connection:
        connection = self._connections.get(endpoint)
        if connection is not None:
            return connection
        sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_INTERVAL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_INTERVAL_MAX_MS)
        monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_MONITOR_EVENTS)
        connection = _Connection(endpoint, sock, monitor)
        self._connections[endpoint] = connection
        self._by_socket[sock] = connection
        self._by_monitor[monitor] = connection
        self._watch_connection(connection)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            # A malformed endpoint: the connection stays down; attempts fail fast.
            _log.warning("cannot connect", endpoint=endpoint, error=str(exc))
            connection.down = True
            self._selector.on_connection(endpoint, up=False)
        return connection

    def _monitor_event(self, connection: _Connection) -> None:
        while True:
            try:
                event = recv_monitor_message(connection.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # pragma: no cover - monitor closed under us
                return
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._on_up(connection)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._on_down(connection, "connection lost")
            else:
                self._on_down(connection, "cannot connect")

    def _on_up(self, connection: _Connection) -> None:
        _log.debug("connected", endpoint=connection.endpoint)
        connection.up = True
        connection.down = False
        self._selector.on_connection(connection.endpoint, up=True)
        self._probe(connection)
        held, connection.held = connection.held, []
        live = [call for call in held if self._pending.get(call.request_id) is call]
        if live:
            self._send(connection, live)
        self._after_send(connection)

    def _on_down(self, connection: _Connection, why: str) -> None:
        was_up = connection.up
        connection.up = False
        connection.down = True
        connection.canceled_watches.clear()
        if was_up:
            _log.debug("connection lost", endpoint=connection.endpoint)
        self._selector.on_connection(connection.endpoint, up=False)
        held, connection.held = connection.held, []
        held.extend(self._outbox.pop(connection, ()))
        for call in held:
            if self._pending.get(call.request_id) is call:
                # Never sent: certainly not applied, safe to retry anywhere.
                self._fail(
                    call, errors.NoEndpointError(f"{why}: {connection.endpoint} is unreachable")
                )
        inflight, connection.inflight = connection.inflight, set()
        for request_id in inflight:
            sent = self._pending.get(request_id)
            if sent is not None:
                # Sent, answer lost: the outcome is unknown.
                self._fail(
                    sent, errors.UnavailableError(f"{why} to {connection.endpoint} mid-request")
                )

    # ------------------------------------------------------------------ sending

    def _send(self, connection: _Connection, calls: list[Call]) -> None:
        for start in range(0, len(calls), MAX_ENVELOPES_PER_MESSAGE):
            self._send_chunk(connection, calls[start : start + MAX_ENVELOPES_PER_MESSAGE])

    def _send_chunk(self, connection: _Connection, calls: list[Call]) -> None:
        try:
            data = encode_batch(
                [
                    Envelope(call.request_id, call.message, call.client_id, call.seq)
                    for call in calls
                ]
            )
        except errors.PnyxError as exc:
            if len(calls) == 1:
                self._fail(calls[0], exc)
                return
            for call in calls:  # find the one that cannot be encoded
                self._send_chunk(connection, [call])
            return
        if len(data) > REQUEST_MESSAGE_BYTES:
            if len(calls) == 1:
                self._fail(
                    calls[0],
                    errors.RequestTooLargeError(
                        f"request of {len(data)} bytes exceeds the message limit of "
                        f"{REQUEST_MESSAGE_BYTES}"
                    ),
                )
                return
            half = len(calls) // 2
            self._send_chunk(connection, calls[:half])
            self._send_chunk(connection, calls[half:])
            return
        try:
            connection.socket.send(data, zmq.NOBLOCK, copy=len(data) < 65536)
        except zmq.Again:
            # IMMEDIATE and no live pipe: the peer went away before the monitor told us
            # (or before anyone read the monitor). Down until it says the peer is back,
            # so that retries go elsewhere.
            if connection.up:
                self._on_down(connection, "not connected")
            for call in calls:
                self._fail(call, errors.NoEndpointError(f"{connection.endpoint} is not connected"))
            return
        inflight = connection.inflight
        for call in calls:
            call.sent = True
            inflight.add(call.request_id)

    def _cancel(self, call: Call) -> None:
        """The consumer closed the watch (it has marked ``canceling`` and queued its own
        end marker): forget the attempt and ask the node to drop the watch."""
        state = call.stream
        if state is None or self._pending.get(call.request_id) is not call:
            return  # the attempt already ended (or never started)
        del self._pending[call.request_id]
        connection = self._connections.get(call.endpoint)
        if connection is None:
            return
        connection.inflight.discard(call.request_id)
        if call in connection.held:
            connection.held.remove(call)
        if connection.up and state.watch_id:
            self._send_cancel(connection, state.watch_id)

    def _probe(self, connection: _Connection) -> None:
        """Ask a newly connected node who it is: its header maps its member id to this
        endpoint, so the leader's endpoint is known once any answer names the leader."""
        request_id = next(self._request_ids)
        if len(self._probes) > 1000:  # answers that never came (dead nodes): forget them
            self._probes.clear()
        self._probes[request_id] = connection.endpoint
        with contextlib.suppress(zmq.Again):
            connection.socket.send(
                encode_batch([Envelope(request_id, StatusRequest())]), zmq.NOBLOCK
            )

    def _send_cancel(self, connection: _Connection, watch_id: int) -> None:
        connection.canceled_watches.add(watch_id)
        # Fire and forget: the answer comes back under an id nobody waits for and is
        # dropped; a lost cancel leaves a watch the node drops with the connection.
        envelope = Envelope(next(self._request_ids), WatchCancelRequest(watch_id))
        with contextlib.suppress(zmq.Again):
            connection.socket.send(encode_batch([envelope]), zmq.NOBLOCK)
        self._after_send(connection)

    # ------------------------------------------------------------------ receiving

    def _receive(self, connection: _Connection) -> bool:
        """Take the replies waiting on ``connection``; True if some may be left (the
        burst limit was reached)."""
        sock = connection.socket
        for _ in range(_RECV_BURST):
            # EVENTS, not recv until zmq.Again: raising and catching that exception on
            # every drain costs more than asking.
            if not _has_input(sock):
                return False
            data = sock.recv(zmq.NOBLOCK, copy=True)
            try:
                replies = decode_replies(data)
            except errors.PnyxError as exc:
                _log.warning("undecodable reply", endpoint=connection.endpoint, error=str(exc))
                continue
            # The watches fed from this message share the batches of a shared events
            # tuple; the memo lives as long as the message's replies.
            memo: BatchMemo = {}
            self._learned = None
            # Streams (watches, keep-alives) first, then the one-shot replies: a write's
            # reply and the events it caused often share a message, and the event is
            # what someone waits on (the next holder of a lock), while the writer's
            # continuation can wait a turn. A stream's own replies keep their order.
            later: list[tuple[int, Any, int]] = []
            for request_id, response, watch_id in replies:
                if type(response) is DecodeError:
                    if request_id is not None:
                        call = self._pending.get(request_id)
                        if call is not None:
                            connection.inflight.discard(request_id)
                            self._fail(call, response.error)
                    continue
                if request_id == UNANSWERABLE_REQUEST_ID:
                    self._refused_message(connection, response)
                    continue
                assert request_id is not None
                call = self._pending.get(request_id)
                if call is not None and call.stream is None:
                    later.append((request_id, response, watch_id))
                else:
                    self._dispatch(connection, request_id, response, watch_id, memo)
            for request_id, response, watch_id in later:
                self._dispatch(connection, request_id, response, watch_id, memo)
        return True

    def _refused_message(self, connection: _Connection, response: Any) -> None:
        """The node could not decode one of our messages as a whole (its reply carries
        no request id): some attempts in flight on this connection were in it, which
        ones is unknown. A connection-level error: every attempt in flight there fails
        (see ``_core.whole_message_refused``)."""
        if type(response) is ErrorResponse:
            cause = error_from_response(response)
        else:
            cause = errors.PnyxError(
                f"protocol error: a reply without request id carried {type(response).__name__}"
            )
        refused = [
            call
            for request_id in connection.inflight
            if (call := self._pending.get(request_id)) is not None
            and (call.stream is None or not call.stream.created)
        ]
        _log.warning(
            "node refused a whole message",
            endpoint=connection.endpoint,
            error=str(cause),
            attempts_failed=len(refused),
        )
        for call in refused:
            connection.inflight.discard(call.request_id)
            self._fail(call, whole_message_refused(connection.endpoint, cause, len(refused)))

    def _dispatch(
        self,
        connection: _Connection,
        request_id: int,
        response: Any,
        watch_id: int,
        memo: BatchMemo | None = None,
    ) -> None:
        """Hand one reply to the attempt it answers. ``response`` may be shared by many
        watches of one message (``decode_replies``): ``watch_id`` is the reply's own."""
        call = self._pending.get(request_id)
        if call is None or call.endpoint != connection.endpoint:
            if self._probes.pop(request_id, None) == connection.endpoint:
                self._learned = None
                self._selector.on_identity(connection.endpoint, getattr(response, "header", None))
            else:
                self._stray(connection, response, watch_id)
            return
        if response is not self._learned:
            # A response shared by many watches of one message says the same thing each
            # time: learn from it once (unless something else was learned in between).
            self._learn(connection.endpoint, response)
        if call.stream is None:
            del self._pending[request_id]
            connection.inflight.discard(request_id)
            call.response = response
            self._finish(call)
            return
        state = call.stream
        items = state.on_response(response, watch_id, memo)
        if items and type(items[-1]) is StreamError:
            del self._pending[request_id]
            connection.inflight.discard(request_id)
        elif call.sink is not None and call.sink.qsize() >= MAX_BUFFERED_BATCHES:
            # The consumer is not keeping up: rather than buffer without bound, drop
            # this attempt (the node forgets the watch) and let the consumer resume
            # from next_revision once it has drained what it already has.
            del self._pending[request_id]
            connection.inflight.discard(request_id)
            if state.watch_id and connection.up:
                self._send_cancel(connection, state.watch_id)
            items.append(
                StreamError(
                    errors.SlowWatcherError(
                        f"watch consumer fell behind ({MAX_BUFFERED_BATCHES} batches buffered)"
                    ),
                    resumable=True,
                )
            )
        if items:
            self._deliver(call, items)

    def _learn(self, endpoint: str, response: Any) -> None:
        self._learned = response
        selector = self._selector
        if type(response) is ErrorResponse:
            error_class = response.code
            if error_class == errors.NotLeaderError.code:
                selector.on_not_leader(endpoint, response.leader_hint)
            elif error_class in (errors.NoLeaderError.code, errors.StorageError.code):
                selector.on_failure(endpoint)
            return
        header = getattr(response, "header", None)
        selector.on_answer(endpoint, header)
        if type(response) is MemberListResponse:
            selector.on_members(response.members)

    def _stray(self, connection: _Connection, response: Any, watch_id: int) -> None:
        """A reply nobody waits for (a late answer to an expired attempt): dropped. A
        live watch nobody reads any more is canceled, once."""
        if (
            type(response) is WatchResponse
            and watch_id
            and not response.canceled
            and watch_id not in connection.canceled_watches
            and connection.up
        ):
            self._send_cancel(connection, watch_id)

    # ------------------------------------------------------------------ completion

    def _fail(self, call: Call, error: errors.PnyxError) -> None:
        if self._pending.get(call.request_id) is call:
            del self._pending[call.request_id]
        connection = self._connections.get(call.endpoint)
        if connection is not None:
            connection.inflight.discard(call.request_id)
        if call.stream is not None:
            self._deliver(call, [StreamError(error, call.stream.resumable(error))])
            return
        call.error = error
        self._finish(call)

    def _next_deadline(self) -> float | None:
        """When ``_expire`` should run next (None: nothing in flight has a deadline)."""
        if not self._timers:
            return None
        return max(self._timers[0][0], time.monotonic() + TIMER_SLACK)

    def _expire(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _deadline, request_id = heapq.heappop(timers)
            call = self._pending.get(request_id)
            if call is None or call.deadline > now:
                continue
            if call.stream is not None and call.stream.created:
                continue  # a created watch has no deadline
            connection = self._connections.get(call.endpoint)
            if not call.sent:
                if connection is not None and call in connection.held:
                    connection.held.remove(call)
                self._selector.on_failure(call.endpoint)
                self._fail(
                    call,
                    errors.NoEndpointError(
                        f"could not reach {call.endpoint} within {call.timeout:.3g}s"
                    ),
                )
            else:
                self._selector.on_failure(call.endpoint)
                self._fail(
                    call,
                    errors.TimeoutError(
                        f"no answer from {call.endpoint} within {call.timeout:.3g}s"
                    ),
                )

    def _shutdown(self, leftovers: Iterable[Call] = ()) -> None:
        """Fail everything in flight (and ``leftovers``, never started) with
        ``ClientError``, then close every socket. Idempotent."""
        if self._shut:
            return
        self._shut = True
        closed = errors.ClientError("client is closed")
        for call in list(self._pending.values()) + list(leftovers):
            self._fail(call, closed)
        self._outbox.clear()
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                self._unwatch_connection(connection)
            with contextlib.suppress(zmq.ZMQError):
                connection.socket.disable_monitor()
            connection.monitor.close(linger=0)
            connection.socket.close(linger=0)


class ThreadEngine(EngineCore):
    """``EngineCore`` for the blocking client: run by whichever thread holds the I/O
    lock (a caller on the fast path, else the background thread). Thread-safe entry
    points: ``call``, ``submit``, ``cancel``, ``close`` and ``is_closed``."""

    def __init__(
        self,
        selector: EndpointSelector,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        name: str = "pnyx-client",
    ) -> None:
        super().__init__(selector, context=context)
        self._io = threading.Lock()
        """Held by whoever runs the engine (touches its sockets and tables)."""
        self._lock = threading.Lock()
        """Guards the submission queue, the waker's sending end and ``_closed``."""
        self._queue: deque[Call | _Cancel | _Stop] = deque()
        self._wake_requested = False
        self._closed = False
        self._work = threading.Event()
        """Set when the background thread should take over (work is queued or left in
        flight by a caller)."""
        address = f"inproc://pnyx-client-waker-{id(self)}-{next(_instances)}"
        self._wake_receiver: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        self._wake_receiver.linger = 0
        self._wake_receiver.bind(address)
        self._waker: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        self._waker.linger = 0
        self._waker.connect(address)
        self._poller = zmq.Poller()
        self._poller.register(self._wake_receiver, zmq.POLLIN)
        with self._io:
            self._connect_all()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    @property
    def is_closed(self) -> bool:
        return self._closed

    def call(self, call: Call, slack: float) -> None:
        """Run one unary attempt until it is done (its ``response`` or ``error`` set):
        in this thread if no other one is doing I/O, else through the thread that is.
        Raises ``TimeoutError`` only if nothing completed it ``slack`` seconds after its
        deadline (a crashed engine)."""
        if self._io.acquire(blocking=False):
            if self._pending:
                # Others are in flight: join them (one message, one poller) rather than
                # take the engine over and hand it back for every call.
                self._io.release()
                self.submit(call)
                self._wait(call, slack)
                return
            try:
                if self._closed:
                    raise errors.ClientError("client is closed")
                # Connections may have come and gone while nobody ran the engine.
                for connection in list(self._connections.values()):
                    if _has_input(connection.monitor):
                        self._monitor_event(connection)
                self._start(call)
                self._lead(call)
            finally:
                handoff = bool(self._pending) or bool(self._queue)
                self._io.release()
                if handoff:
                    # Others' attempts (or watches) are in flight: the background
                    # thread runs the engine from here.
                    self._work.set()
            if not call.done:  # pragma: no cover - _lead returns only once it is
                raise errors.ClientError("client is closed")
            return
        self.submit(call)
        self._wait(call, slack)

    def _wait(self, call: Call, slack: float) -> None:
        assert call.lock is not None
        wait = max(0.0, call.deadline - time.monotonic()) + slack
        if not call.lock.acquire(timeout=wait) and not call.done:
            raise errors.TimeoutError("the client's I/O thread did not answer")

    def submit(self, call: Call) -> None:
        """Queue ``call`` for whoever runs the engine; its waiter waits on ``call.lock``
        (unary) or its sink (stream)."""
        if call.stream is None and call.lock is None:
            call.lock = threading.Lock()
            call.lock.acquire()
        self._enqueue(call)

    def cancel(self, call: Call) -> None:
        """Drop a stream attempt and ask its node to cancel the watch. Nothing more is
        delivered to its sink; the caller ends its consumer itself."""
        self._enqueue(_Cancel(call))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the engine; every call still pending fails with ``ClientError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.append(_Stop())
            self._wake_locked()
        self._work.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            self._waker.close(linger=0)

    def _enqueue(self, item: Call | _Cancel | _Stop) -> None:
        with self._lock:
            if self._closed:
                raise errors.ClientError("client is closed")
            self._queue.append(item)
            if not self._wake_requested:
                self._wake_locked()
        self._work.set()

    def _wake_locked(self) -> None:
        self._wake_requested = True
        # Again only if the engine is already flooded with wake-ups: it will wake anyway.
        with contextlib.suppress(zmq.Again):
            self._waker.send(b"", zmq.NOBLOCK)

    # ------------------------------------------------------------------ running it

    def _run(self) -> None:
        """The background thread: sleep until there is work nobody else runs, then run
        the engine until nothing is in flight."""
        try:
            while True:
                self._work.wait()
                with self._io:
                    self._work.clear()
                    if not self._shut:
                        self._lead(None)
                    if self._shut:
                        return
        except Exception:  # pragma: no cover - a bug; fail loudly but release waiters
            _log.exception("client I/O thread crashed")
            with self._io:
                self._stop()

    def _lead(self, until: Call | None) -> None:
        """Run the engine (holding ``_io``) until ``until`` is done, or with None until
        nothing is queued or in flight."""
        while not self._shut:
            if not self._take_submissions():
                self._stop()
                return
            self._flush()
            if until is not None:
                if until.done:
                    return
            elif not self._pending:
                return
            self._turn()

    def _turn(self) -> None:
        deadline = self._next_deadline()
        timeout_ms = (
            None if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))
        )
        ready = self._poller.poll(timeout_ms)
        for sock, _event in ready:
            if sock is self._wake_receiver:
                self._drain_waker()
                continue
            connection = self._by_socket.get(sock)
            if connection is not None:
                self._receive(connection)
                continue
            connection = self._by_monitor.get(sock)
            if connection is not None:
                self._monitor_event(connection)
        if self._timers and self._timers[0][0] <= time.monotonic():
            self._expire()

    def _drain_waker(self) -> None:
        while True:
            try:
                self._wake_receiver.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _take_submissions(self) -> bool:
        """Start what callers queued; False once asked to stop."""
        with self._lock:
            self._wake_requested = False
            if not self._queue:
                return True
            items = list(self._queue)
            self._queue.clear()
        keep_going = True
        for item in items:
            if type(item) is Call:
                self._start(item)
            elif type(item) is _Cancel:
                self._cancel(item.call)
            else:
                keep_going = False
        return keep_going

    def _stop(self) -> None:
        with self._lock:
            self._closed = True
            leftovers = [item for item in self._queue if type(item) is Call]
            self._queue.clear()
        self._shutdown(leftovers)
        self._wake_receiver.close(linger=0)

    # ------------------------------------------------------------------ hooks

    def _watch_connection(self, connection: _Connection) -> None:
        self._poller.register(connection.socket, zmq.POLLIN)
        self._poller.register(connection.monitor, zmq.POLLIN)

    def _unwatch_connection(self, connection: _Connection) -> None:
        self._poller.unregister(connection.socket)
        self._poller.unregister(connection.monitor)

    def _finish(self, call: Call) -> None:
        call.done = True
        if call.lock is not None:
            call.lock.release()


class LoopEngine(EngineCore):
    """``EngineCore`` driven by one asyncio event loop (bound at first use), for
    ``AsyncClient``. Every method must be called in that loop's thread."""

    def __init__(
        self,
        selector: EndpointSelector,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        super().__init__(selector, context=context)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Sockets now, so connections are being made before the first call; they are
        # watched from the loop once it is known.
        self._connect_all()

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def submit(self, call: Call) -> None:
        """Start ``call`` (unary: its future resolves when done; stream: items go to its
        sink); sent with everything else started in this loop iteration."""
        loop = self._bind()
        self._start(call)
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush_now)
        if call.deadline < self._timer_at:
            self._arm(max(call.deadline, time.monotonic() + TIMER_SLACK))

    def cancel(self, call: Call) -> None:
        if self._closed or self._loop is None:
            return
        self._cancel(call)

    def close(self) -> None:
        """Fail every call in flight with ``ClientError`` and close the sockets."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._flush_handle, self._timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._timer = None
        self._shutdown()

    # ------------------------------------------------------------------ the loop

    def _bind(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise errors.ClientError("client is closed")
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return loop
        if self._loop is not None:
            if not self._loop.is_closed():
                raise errors.ClientError(
                    "this AsyncClient is used by another event loop; use one client per loop"
                )
            # Its first loop has ended (e.g. a second asyncio.run): what was in flight
            # there has nobody left to wake; carry on in this loop.
            for call in list(self._pending.values()):
                self._fail(call, errors.ClientError("the client's event loop was closed"))
            self._flush_handle = self._timer = None
            self._timer_at = math.inf
        self._loop = loop
        for connection in self._connections.values():
            self._watch_connection(connection)
        return loop

    def _flush_now(self) -> None:
        self._flush_handle = None
        if not self._closed:
            self._flush()

    def _on_socket(self, connection: _Connection) -> None:
        if self._closed or self._by_socket.get(connection.socket) is not connection:
            return
        if self._receive(connection):
            # The burst limit: let the loop breathe, then carry on (the descriptor will
            # not signal again for messages that are already waiting).
            assert self._loop is not None
            self._loop.call_soon(self._on_socket, connection)
        self._flush()

    def _on_monitor(self, connection: _Connection) -> None:
        if self._closed or self._by_monitor.get(connection.monitor) is not connection:
            return
        self._monitor_event(connection)
        self._flush()

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        # loop.time() is time.monotonic() on every asyncio loop: deadlines need no
        # conversion.
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if self._closed:
            return
        self._expire()
        deadline = self._next_deadline()
        if deadline is not None:
            self._arm(deadline)

    # ------------------------------------------------------------------ hooks

    def _watch_connection(self, connection: _Connection) -> None:
        loop = self._loop
        if loop is None:
            return  # watched once bound
        loop.add_reader(connection.socket.FD, self._on_socket, connection)
        loop.add_reader(connection.monitor.FD, self._on_monitor, connection)
        # Anything that arrived before we watched will not make the descriptor signal.
        loop.call_soon(self._on_socket, connection)
        loop.call_soon(self._on_monitor, connection)

    def _unwatch_connection(self, connection: _Connection) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.remove_reader(connection.socket.FD)
        loop.remove_reader(connection.monitor.FD)

    def _after_send(self, connection: _Connection) -> None:
        # Sending processes the socket's pending commands, which may consume the
        # descriptor's signal for a reply that is already in: look now, not never.
        if self._loop is not None and _has_input(connection.socket):
            self._loop.call_soon(self._on_socket, connection)

    def _finish(self, call: Call) -> None:
        call.done = True
        future = call.future
        if future is not None and not future.done():
            # RuntimeError: the future's loop is closed; nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                future.set_result(None)


_WATCH_RESPONSE_TAG = TAG_OF[WatchResponse]
_WATCH_RESPONSE_FIELDS = len(attrs.fields(WatchResponse))
Reply = tuple[int | None, Any, int]
"""``(request_id, response or DecodeError, watch_id)``: one envelope of a reply."""


def decode_replies(data: bytes) -> list[Reply]:
    """The envelopes of one message from a node, in order, as ``Reply`` tuples; raises
    ``PnyxError`` for a message that is wrong as a whole (as ``decode_batch`` does).

    A node sends the events that several watches of this connection get the same way
    once, in a ``SharedWatchResponse`` naming those watches: it becomes one reply per
    watch, all sharing one ``WatchResponse``. Otherwise a node sends one response per
    watch, and every watch that wants the same events gets the same response but for its
    watch id (a member of a version before shared responses sends 100 copies of each
    event to a connection with 100 watches of one prefix). Each copy is compared (in C,
    by msgpack value) with the watch response decoded last in this message and, if only
    the watch id differs, the decoded one is reused: one ``WatchResponse`` with its
    events is built per distinct response, not per watch, and the reply's own watch id
    travels beside it. Everything else is decoded envelope by envelope with the same
    type checks as ``decode_batch``. (A value that equals the decoded one without having
    its exact type, ``True`` for ``1``, is taken as equal: replies are trusted, as
    ``RESPONSE_LIMITS`` says.)"""
    if len(data) > RESPONSE_LIMITS.max_message_bytes:
        decode_batch(data, RESPONSE_LIMITS, validate=False)  # raises the precise error
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception:
        value = None
    if (
        type(value) is not list
        or len(value) != 2
        or type(value[0]) is not int
        or value[0] != PROTOCOL_VERSION
        or type(value[1]) is not list
        or len(value[1]) > RESPONSE_LIMITS.max_batch
    ):
        # Wrong as a whole: the strict decoder says how (or, should it accept what we
        # did not, decodes it).
        return [
            (item.request_id, item.message, _watch_id_of(item.message))
            if isinstance(item, Envelope)
            else (item.request_id, item, 0)
            for item in decode_batch(data, RESPONSE_LIMITS, validate=False)
        ]
    replies: list[Reply] = []
    append = replies.append
    last_body: list[Any] | None = None
    last_response: WatchResponse | None = None
    for item in value[1]:
        if (
            type(item) is list
            and len(item) == 5
            and type(item[0]) is int
            and item[1] == _WATCH_RESPONSE_TAG
            and type(item[1]) is int
            and type(item[3]) is bytes
            and type(item[4]) is int
            and last_body is not None
        ):
            body = item[2]
            if (
                type(body) is list
                and len(body) == _WATCH_RESPONSE_FIELDS
                and type(body[1]) is int
                and body[0] == last_body[0]
                and body[2:] == last_body[2:]
            ):
                append((item[0], last_response, body[1]))
                continue
        request_id, response = _decode_reply(item)
        if type(response) is WatchResponse:
            last_body = item[2]
            last_response = response
            append((request_id, response, response.watch_id))
        elif type(response) is SharedWatchResponse:
            _expand_shared(response, request_id, append)
        else:
            append((request_id, response, 0))
    return replies


def _expand_shared(
    shared: SharedWatchResponse, request_id: int | None, append: Callable[[Reply], None]
) -> None:
    """One reply per watch a ``SharedWatchResponse`` names, all carrying one
    ``WatchResponse`` of its events (each with its own watch id beside it)."""
    streams = shared.streams
    if len(streams) < 2 or len(streams) % 2:
        error = errors.InvalidRequestError(
            "SharedWatchResponse.streams: expected (request_id, watch_id) pairs"
        )
        append((request_id, DecodeError(request_id, error), 0))
        return
    response = WatchResponse(shared.header, 0, events=shared.events)
    for index in range(0, len(streams), 2):
        append((streams[index], response, streams[index + 1]))


def _decode_reply(item: Any) -> tuple[int | None, Any]:
    """One envelope ``[request_id, tag, body, client_id, seq]`` of a reply: its request id
    (None if it has none) and its message, or a ``DecodeError`` in its place."""
    request_id: int | None = None
    try:
        if type(item) is not list or len(item) != 5:
            if type(item) is list and item and type(item[0]) is int:
                request_id = item[0]
            raise errors.InvalidRequestError(
                "envelope: expected [request_id, tag, body, client_id, seq]"
            )
        if type(item[0]) is not int:
            raise errors.InvalidRequestError("envelope.request_id: expected int")
        request_id = item[0]
        if type(item[3]) is not bytes or type(item[4]) is not int:
            raise errors.InvalidRequestError("envelope: client_id and seq must be bytes and int")
        return request_id, message_from_wire(item[1:3], RESPONSE_LIMITS)
    except errors.PnyxError as exc:
        return request_id, DecodeError(request_id, exc)


def _watch_id_of(message: Any) -> int:
    return message.watch_id if type(message) is WatchResponse else 0


_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
"""Plain ints: pyzmq's constants are enum flags, whose ``&`` runs Python code."""


def _has_input(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on ``sock`` (``EVENTS`` also resets its descriptor)."""
    events: int = sock.get(_EVENTS)  # type: ignore[assignment]
    return bool(events & _POLLIN)


def run_callback_safely(callback: Callable[[], None]) -> None:
    """Run a user callback from a background thread without letting it kill the thread."""
    try:
        callback()
    except Exception:
        _log.exception("callback raised")
