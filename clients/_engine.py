"""The one I/O engine of a client: a background thread running a ``zmq.Poller`` loop.

Callers (any thread, or an asyncio loop) hand ``Call`` objects to ``Engine.submit``: the
call goes on a thread-safe deque and the engine is woken through an inproc PAIR socket
(at most one wake-up message per drain, however many calls are queued). Each loop turn
the engine

1. receives every ready reply message from every node (a batch of envelopes each),
   resolves the calls they answer and feeds watch responses to their ``WatchState``;
2. takes everything queued, picks an endpoint per call (``EndpointSelector``), and sends
   all calls for one endpoint as ONE ZeroMQ message (split only at the size limits);
3. expires attempts whose deadline passed;
4. wakes the waiters: a thread waiter's lock is released; for asyncio, one
   ``call_soon_threadsafe`` per event loop per turn resolves all its futures and stream
   items together (one per reply would cost a self-pipe write each).

One DEALER per endpoint, connected eagerly, with ZMTP heartbeats and a socket monitor:
a refused connection, a lost connection or a silent peer (heartbeat timeout) is seen
within about a second and fails the attempts at that endpoint at once instead of at the
end of their timeout. ``IMMEDIATE`` keeps ZeroMQ from queueing requests for a peer that
is not connected (they would be delivered, stale, on reconnect); until the handshake
succeeds the engine holds them itself.

A call here is ONE attempt: retries, backoff and the exactly-once ``seq`` are the faces'
business (``client.py``, ``aio.py``) with the decisions in ``_core``. The engine never
retries on its own and never blocks on anything but the poller; its sockets are touched
by its own thread only (the waker's sending end is guarded by a lock).
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
from collections.abc import Callable
from typing import Any

import attrs
import zmq
from zmq.utils.monitor import recv_monitor_message

from pnyx.clients._core import EndpointSelector, StreamError, StreamItem, WatchState
from pnyx.clients._log import library_logger
from pnyx.core import errors
from pnyx.core.wire import (
    DecodeError,
    Envelope,
    ErrorResponse,
    Limits,
    MemberListResponse,
    Message,
    Response,
    StatusRequest,
    WatchCancelRequest,
    WatchResponse,
    decode_batch,
    encode_batch,
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

HEARTBEAT_INTERVAL_MS = 500
HEARTBEAT_TIMEOUT_MS = 1500
HANDSHAKE_TIMEOUT_MS = 2000
RECONNECT_INTERVAL_MS = 100
RECONNECT_INTERVAL_MAX_MS = 1000

_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_RECV_BURST = 256
"""Messages taken from one socket per loop turn, so one busy node cannot starve others."""

_instances = itertools.count(1)


class StreamSink:
    """Where a stream's items go, in order. ``loop`` is None for a thread consumer (a
    ``queue.SimpleQueue``) or the event loop whose ``asyncio.Queue`` receives them."""

    __slots__ = ("loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.queue: queue.SimpleQueue[StreamItem] | asyncio.Queue[StreamItem] = (
            queue.SimpleQueue() if loop is None else asyncio.Queue()
        )

    def put_items(self, items: list[StreamItem]) -> None:
        """Called on the consumer's side: the engine thread (SimpleQueue is thread
        safe) or the loop's thread (asyncio.Queue is not)."""
        put = self.queue.put_nowait
        for item in items:
            put(item)


class Call:
    """One attempt of one request. Filled by the face, completed by the engine.

    For a unary request exactly one of ``response``/``error`` is set when the waiter is
    woken. For a stream (a watch) every response goes through ``stream`` to ``sink``;
    the attempt ends with a ``StreamError`` item.
    """

    __slots__ = (
        "deadline",
        "endpoint",
        "error",
        "fixed_endpoint",
        "future",
        "lock",
        "loop",
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
        endpoint: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        stream: WatchState | None = None,
        sink: StreamSink | None = None,
    ) -> None:
        self.message = message
        self.seq = seq
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.fixed_endpoint = endpoint
        self.endpoint = ""
        self.request_id = 0
        self.sent = False
        self.response: Response | None = None
        self.error: errors.PnyxError | None = None
        self.loop = loop
        self.stream = stream
        self.sink = sink
        self.lock: threading.Lock | None = None
        self.future: asyncio.Future[None] | None = None
        if stream is None:
            if loop is None:
                self.lock = threading.Lock()
                self.lock.acquire()
            else:
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


def _resolve_in_loop(
    futures: list[asyncio.Future[None]], deliveries: list[tuple[StreamSink, list[StreamItem]]]
) -> None:
    """Runs in an event loop's thread: wake every future and stream of one engine turn."""
    for future in futures:
        if not future.done():
            future.set_result(None)
    for sink, items in deliveries:
        sink.put_items(items)


class Engine:
    """The background I/O thread of one client. Thread-safe entry points: ``submit``,
    ``cancel``, ``close``, and ``is_closed``."""

    def __init__(
        self,
        selector: EndpointSelector,
        client_id: bytes,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        name: str = "pnyx-client",
    ) -> None:
        self._selector = selector
        self._client_id = client_id
        self._context = context or zmq.Context.instance()
        self._queue: deque[Call | _Cancel | _Stop] = deque()
        self._lock = threading.Lock()
        self._wake_requested = False
        self._closed = False
        address = f"inproc://pnyx-client-waker-{id(self)}-{next(_instances)}"
        self._wake_receiver: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        self._wake_receiver.linger = 0
        self._wake_receiver.bind(address)
        self._waker: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        self._waker.linger = 0
        self._waker.connect(address)
        self._poller = zmq.Poller()
        self._poller.register(self._wake_receiver, zmq.POLLIN)
        self._connections: dict[str, _Connection] = {}
        self._by_socket: dict[zmq.Socket[bytes], _Connection] = {}
        self._by_monitor: dict[zmq.Socket[bytes], _Connection] = {}
        self._pending: dict[int, Call] = {}
        self._timers: list[tuple[float, int]] = []
        self._request_ids = itertools.count(1)
        self._probes: dict[int, str] = {}
        """Request id -> endpoint of the status probes sent on each new connection."""
        self._async_futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        self._async_items: dict[
            asyncio.AbstractEventLoop, list[tuple[StreamSink, list[StreamItem]]]
        ] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    @property
    def is_closed(self) -> bool:
        return self._closed

    def submit(self, call: Call) -> None:
        self._enqueue(call)

    def cancel(self, call: Call) -> None:
        """Drop a stream attempt and ask its node to cancel the watch. Nothing more is
        delivered to its sink; the caller ends its consumer itself."""
        self._enqueue(_Cancel(call))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; every call still pending fails with ``ClientError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.append(_Stop())
            self._wake_locked()
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

    def _wake_locked(self) -> None:
        self._wake_requested = True
        # Again only if the engine is already flooded with wake-ups: it will wake anyway.
        with contextlib.suppress(zmq.Again):
            self._waker.send(b"", zmq.NOBLOCK)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            for endpoint in list(self._selector.endpoints):
                self._connection(endpoint)
            while self._turn():
                pass
        except Exception:  # pragma: no cover - a bug; fail loudly but release waiters
            _log.exception("client I/O thread crashed")
        finally:
            self._shutdown()

    def _turn(self) -> bool:
        """One loop turn; False once asked to stop."""
        timeout_ms: int | None = None
        if self._timers:
            timeout_ms = max(0, math.ceil((self._timers[0][0] - time.monotonic()) * 1000))
        ready = dict(self._poller.poll(timeout_ms))
        if ready:
            if self._wake_receiver in ready:
                self._drain_waker()
            for sock in ready:
                connection = self._by_socket.get(sock)
                if connection is not None:
                    self._receive(connection)
                    continue
                connection = self._by_monitor.get(sock)
                if connection is not None:
                    self._monitor_event(connection)
        keep_going = self._take_submissions()
        if self._timers and self._timers[0][0] <= time.monotonic():
            self._expire()
        self._flush_async()
        return keep_going

    def _drain_waker(self) -> None:
        while True:
            try:
                self._wake_receiver.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _take_submissions(self) -> bool:
        with self._lock:
            self._wake_requested = False
            if not self._queue:
                return True
            items = list(self._queue)
            self._queue.clear()
        by_endpoint: dict[str, list[Call]] = {}
        keep_going = True
        for item in items:
            if type(item) is Call:
                endpoint = item.fixed_endpoint or self._selector.choose()
                item.endpoint = endpoint
                item.request_id = next(self._request_ids)
                self._pending[item.request_id] = item
                heapq.heappush(self._timers, (item.deadline, item.request_id))
                by_endpoint.setdefault(endpoint, []).append(item)
            elif type(item) is _Cancel:
                self._cancel(item.call)
            else:
                keep_going = False
        for endpoint, calls in by_endpoint.items():
            connection = self._connection(endpoint)
            if connection.up:
                self._send(connection, calls)
            else:
                connection.held.extend(calls)
        return keep_going

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
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)
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

    def _on_down(self, connection: _Connection, why: str) -> None:
        was_up = connection.up
        connection.up = False
        connection.down = True
        connection.canceled_watches.clear()
        if was_up:
            _log.debug("connection lost", endpoint=connection.endpoint)
        self._selector.on_connection(connection.endpoint, up=False)
        held, connection.held = connection.held, []
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
        client_id = self._client_id
        try:
            data = encode_batch(
                [
                    Envelope(
                        call.request_id, call.message, client_id if call.seq else b"", call.seq
                    )
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
            # IMMEDIATE and no live pipe: the peer went away before the monitor told us.
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

    # ------------------------------------------------------------------ receiving

    def _receive(self, connection: _Connection) -> None:
        sock = connection.socket
        for _ in range(_RECV_BURST):
            try:
                data = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                envelopes = decode_batch(data, RESPONSE_LIMITS, validate=False)
            except errors.PnyxError as exc:
                _log.warning("undecodable reply", endpoint=connection.endpoint, error=str(exc))
                continue
            for envelope in envelopes:
                if type(envelope) is DecodeError:
                    if envelope.request_id is not None:
                        call = self._pending.get(envelope.request_id)
                        if call is not None:
                            connection.inflight.discard(call.request_id)
                            self._fail(call, envelope.error)
                    continue
                assert type(envelope) is Envelope
                self._dispatch(connection, envelope)

    def _dispatch(self, connection: _Connection, envelope: Envelope) -> None:
        response: Any = envelope.message
        call = self._pending.get(envelope.request_id)
        if call is None or call.endpoint != connection.endpoint:
            if self._probes.pop(envelope.request_id, None) == connection.endpoint:
                self._selector.on_identity(connection.endpoint, getattr(response, "header", None))
            else:
                self._stray(connection, response)
            return
        self._learn(connection.endpoint, response)
        if call.stream is None:
            del self._pending[envelope.request_id]
            connection.inflight.discard(envelope.request_id)
            call.response = response
            self._finish(call)
            return
        state = call.stream
        items = state.on_response(response)
        if items and type(items[-1]) is StreamError:
            del self._pending[envelope.request_id]
            connection.inflight.discard(envelope.request_id)
        elif call.sink is not None and call.sink.queue.qsize() >= MAX_BUFFERED_BATCHES:
            # The consumer is not keeping up: rather than buffer without bound, drop
            # this attempt (the node forgets the watch) and let the consumer resume
            # from next_revision once it has drained what it already has.
            del self._pending[envelope.request_id]
            connection.inflight.discard(envelope.request_id)
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

    def _stray(self, connection: _Connection, response: Any) -> None:
        """A reply nobody waits for (a late answer to an expired attempt): dropped. A
        live watch nobody reads any more is canceled, once."""
        if (
            type(response) is WatchResponse
            and response.watch_id
            and not response.canceled
            and response.watch_id not in connection.canceled_watches
            and connection.up
        ):
            self._send_cancel(connection, response.watch_id)

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

    def _finish(self, call: Call) -> None:
        if call.lock is not None:
            call.lock.release()
        elif call.future is not None and call.loop is not None:
            futures = self._async_futures.get(call.loop)
            if futures is None:
                self._async_futures[call.loop] = [call.future]
            else:
                futures.append(call.future)

    def _deliver(self, call: Call, items: list[StreamItem]) -> None:
        sink = call.sink
        if sink is None:  # pragma: no cover - a stream call always has a sink
            return
        if sink.loop is None:
            sink.put_items(items)
        else:
            self._async_items.setdefault(sink.loop, []).append((sink, items))

    def _flush_async(self) -> None:
        if not self._async_futures and not self._async_items:
            return
        loops = set(self._async_futures) | set(self._async_items)
        for loop in loops:
            futures = self._async_futures.get(loop, [])
            deliveries = self._async_items.get(loop, [])
            # RuntimeError: the loop is closed, nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_in_loop, futures, deliveries)
        self._async_futures.clear()
        self._async_items.clear()

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

    def _shutdown(self) -> None:
        closed = errors.ClientError("client is closed")
        with self._lock:
            self._closed = True
            leftovers = [item for item in self._queue if type(item) is Call]
            self._queue.clear()
        for call in list(self._pending.values()) + leftovers:
            self._fail(call, closed)
        self._flush_async()
        for connection in self._connections.values():
            with contextlib.suppress(zmq.ZMQError):
                connection.socket.disable_monitor()
            connection.monitor.close(linger=0)
            connection.socket.close(linger=0)
        self._wake_receiver.close(linger=0)


def run_callback_safely(callback: Callable[[], None]) -> None:
    """Run a user callback from a background thread without letting it kill the thread."""
    try:
        callback()
    except Exception:
        _log.exception("callback raised")
