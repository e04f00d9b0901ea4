"""``Client``: the blocking client, for threads. Same methods, names and results as
``AsyncClient`` (``aio.py``); both share ``_core`` (decisions), ``_base`` (setup and
retry settings) and ``_engine`` (I/O: here a ``ThreadEngine``). A ``Client`` may be
shared by many threads: every call is independent, and calls made at the same time
travel together. A call made while no other is in flight does its I/O in the calling
thread (no thread switch); one made while others are in flight joins them.

Every call has a deadline (``timeout``, default the client's): attempts go to the
leader if known, else the endpoint that answered last, else the next one; an attempt
that fails with an error that proves nothing was applied, or with an unknown outcome on
a request that is safe to repeat (reads, and writes carrying their exactly-once
``seq``), is retried elsewhere with backoff until the deadline. Then the call raises
``pnyx TimeoutError`` (or ``NoEndpointError`` if no node could be reached at all).

Writes carry an exactly-once ticket (client id, seq): per client id at most
``MAX_WRITES_IN_FLIGHT`` (64) seqs ahead of the oldest unfinished write, a client with
more in flight using more client ids (``MAX_LANES``, see ``_core.Identity``); only a
write beyond all of them waits for room, within its deadline.

This module waits; it must never touch a socket (that is the engine's job).
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType

import tenacity

from pnyx.clients import _core
from pnyx.clients._base import ClientBase, answer_of
from pnyx.clients._core import KeyLike, WatchState
from pnyx.clients._engine import StreamSink, ThreadEngine
from pnyx.clients._handles import LeaseKeepAliveBase, WatchBase
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
    PutResult,
    StatusResult,
    TxnResult,
    WatchBatch,
)
from pnyx.core import errors
from pnyx.core.wire import (
    CompactionRequest,
    Compare,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    MemberAddRequest,
    MemberListRequest,
    MemberPromoteRequest,
    MemberRemoveRequest,
    Request,
    RequestOp,
    Response,
    SortOrder,
    SortTarget,
    StatusRequest,
    WatchFilterType,
)

__all__ = ["Client", "LeaseKeepAlive", "Watch"]

_WAIT_SLACK = 1.0
"""The engine always completes an attempt by its deadline; waiting a little longer only
guards against a crashed I/O thread."""


class Client(ClientBase):
    """A blocking pnyx client. ``endpoints``: a list or a comma-separated string; default
    ``$PNYX_ENDPOINTS``, else ``pnyx up``'s ``tcp://127.0.0.1:7101,7102,7103``.
    ``timeout``: default deadline of a call, retries included (seconds).
    ``attempt_timeout``: how long one attempt may take before the next endpoint is tried
    (default a third of ``timeout``). ``str`` keys and values are UTF-8 encoded; results
    carry ``bytes``."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
    ) -> None:
        super().__init__(endpoints, timeout=timeout, attempt_timeout=attempt_timeout)
        self._engine: ThreadEngine = ThreadEngine(self._selector, name=f"pnyx-client-{id(self):x}")
        self._seqs_changed = threading.Condition()
        """Guards the identity's seq windows; notified when they make room or close."""
        self._children: weakref.WeakSet[Watch | LeaseKeepAlive] = weakref.WeakSet()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop watches and keep-alives, fail calls in flight, stop the I/O thread."""
        children = list(self._children)
        for child in children:
            if isinstance(child, LeaseKeepAlive):
                child._stop.set()  # no new refresh; the one in flight fails below
            else:
                child.close()
        self._engine.close()
        with self._seqs_changed:
            self._seqs_changed.notify_all()  # writes waiting for a seq: the client closed
        for child in children:
            child.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ key-value

    def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> PutResult:
        """Set ``key`` to ``value`` (attached to ``lease`` if non-zero)."""
        request = _core.put_request(key, value, lease=lease, prev_kv=prev_kv)
        return _core.put_result(self._request(request, timeout)[1])

    def get(
        self,
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
        timeout: float | None = None,
    ) -> GetResult:
        """Read one key, every key with ``prefix``, or ``[key, range_end)``; at
        ``revision`` if non-zero. Linearizable unless ``serializable``."""
        request = _core.range_request(
            key,
            prefix=prefix,
            range_end=range_end,
            revision=revision,
            limit=limit,
            sort_order=sort_order,
            sort_target=sort_target,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        return _core.get_result(self._request(request, timeout)[1])

    def delete(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        range_end: KeyLike | None = None,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete one key, every key with ``prefix``, or ``[key, range_end)``."""
        request = _core.delete_request(key, prefix=prefix, range_end=range_end, prev_kv=prev_kv)
        return _core.delete_result(self._request(request, timeout)[1])

    def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[RequestOp] = (),
        failure: Iterable[RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``, atomically. Build the
        parts with ``kv.cmp`` and ``kv.op``."""
        request = _core.txn_request(compare, success, failure)
        return _core.txn_result(self._request(request, timeout)[1])

    def compact(
        self, revision: int, physical: bool = False, *, timeout: float | None = None
    ) -> CompactResult:
        """Drop history before ``revision``."""
        request = CompactionRequest(revision, physical)
        return _core.compact_result(self._request(request, timeout)[1])

    # ------------------------------------------------------------------ leases

    def lease_grant(
        self, ttl: int, id: int = 0, *, timeout: float | None = None
    ) -> LeaseGrantResult:
        """A new lease of ``ttl`` seconds (``id`` 0: the cluster picks one)."""
        return _core.lease_grant_result(self._request(LeaseGrantRequest(ttl, id), timeout)[1])

    def lease_revoke(self, id: int, *, timeout: float | None = None) -> None:
        """End the lease now, deleting its keys."""
        _core.lease_revoke_result(self._request(LeaseRevokeRequest(id), timeout)[1])

    def lease_keep_alive_once(
        self, id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResult:
        """Refresh the lease once; ``LeaseNotFoundError`` if it is gone."""
        return _core.lease_keep_alive_result(self._request(LeaseKeepAliveRequest(id), timeout)[1])

    def lease_time_to_live(
        self, id: int, keys: bool = False, *, timeout: float | None = None
    ) -> LeaseTimeToLiveResult:
        """Seconds left (-1 if gone), and with ``keys`` the keys attached."""
        return _core.lease_time_to_live_result(
            self._request(LeaseTimeToLiveRequest(id, keys), timeout)[1]
        )

    def lease_list(self, *, timeout: float | None = None) -> LeaseListResult:
        return _core.lease_list_result(self._request(LeaseLeasesRequest(), timeout)[1])

    def lease_keep_alive(
        self,
        id: int,
        *,
        ttl: int | None = None,
        on_lost: Callable[[errors.PnyxError], None] | None = None,
    ) -> LeaseKeepAlive:
        """Keep lease ``id`` alive in the background (every ttl/3) until closed; see
        ``LeaseKeepAlive``. ``ttl``: the lease's TTL if known (else learned from the
        first refresh)."""
        self._check_open()
        handle = LeaseKeepAlive(self, id, ttl=ttl, on_lost=on_lost)
        self._children.add(handle)
        return handle

    # ------------------------------------------------------------------ watches

    def watch(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        range_end: KeyLike | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Iterable[WatchFilterType | str] = (),
        progress_notify: bool = False,
        timeout: float | None = None,
    ) -> Watch:
        """Watch a key, a prefix or a range from ``start_revision`` (0: from now). The
        watch exists when this returns; iterate it for ``WatchBatch`` values. See
        ``Watch``."""
        state = self._new_watch_state(
            key, prefix, range_end, start_revision, prev_kv, filters, progress_notify
        )
        watch = Watch(self, state, self._timeout if timeout is None else timeout)
        self._children.add(watch)
        watch._open()
        return watch

    # ------------------------------------------------------------------ cluster

    def member_list(
        self, linearizable: bool = False, *, timeout: float | None = None
    ) -> MemberListResult:
        return _core.member_list_result(self._request(MemberListRequest(linearizable), timeout)[1])

    def member_add(
        self,
        name: str,
        peer_urls: Sequence[str],
        *,
        learner: bool = False,
        timeout: float | None = None,
    ) -> MemberAddResult:
        """Add a member (as a non-voting learner with ``learner``). Not deduplicated by
        the cluster, so it is retried only when the cluster surely did not apply it."""
        request = MemberAddRequest(tuple(peer_urls), name, learner)
        return _core.member_add_result(self._request(request, timeout)[1])

    def member_promote(self, id: int, *, timeout: float | None = None) -> MemberPromoteResult:
        """Make learner ``id`` a voting member."""
        return _core.member_promote_result(self._request(MemberPromoteRequest(id), timeout)[1])

    def member_remove(self, id: int, *, timeout: float | None = None) -> MemberRemoveResult:
        return _core.member_remove_result(self._request(MemberRemoveRequest(id), timeout)[1])

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> StatusResult:
        """The status of the member at ``endpoint`` (default: the one the client uses)."""
        target = _core.normalize_endpoint(endpoint) if endpoint is not None else None
        answered_by, response = self._request(StatusRequest(), timeout, target)
        return _core.status_result(answered_by, response)

    # ------------------------------------------------------------------ calls

    def _request(
        self, message: Request, timeout: float | None, endpoint: str | None = None
    ) -> tuple[str, Response]:
        """Send ``message`` until it is answered or the deadline passes; the endpoint
        that answered and its (non-error) response."""
        total, deadline = self._call_deadline(message, timeout)
        if not self._identity.needs_seq(message):
            return self._attempts(message, _core.NO_TICKET, deadline, total, endpoint)
        ticket = self._take_ticket(deadline, total)
        try:
            return self._attempts(message, ticket, deadline, total, endpoint)
        finally:
            self._finish_ticket(ticket)

    def _attempts(
        self,
        message: Request,
        ticket: _core.Ticket,
        deadline: float,
        total: float,
        endpoint: str | None,
    ) -> tuple[str, Response]:
        try:
            return self._attempt(message, ticket, deadline, endpoint)
        except errors.PnyxError as exc:
            if not _core.should_retry(message, ticket.seq, exc):
                raise
        for attempt in tenacity.Retrying(
            sleep=time.sleep, **self._retry_settings(message, ticket.seq, deadline, total)
        ):
            with attempt:
                return self._attempt(message, ticket, deadline, endpoint)
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def _take_ticket(self, deadline: float, total: float) -> _core.Ticket:
        """The exactly-once ticket of a new write, once some window has room for it."""
        identity = self._identity
        with self._seqs_changed:
            while True:
                ticket = identity.take()
                if ticket is not None:
                    return ticket
                self._check_open()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.TimeoutError(
                        f"no answer within {total:g}s: {identity.in_flight} writes of this "
                        "client were in flight ahead of it"
                    )
                self._seqs_changed.wait(remaining)

    def _finish_ticket(self, ticket: _core.Ticket) -> None:
        identity = self._identity
        with self._seqs_changed:
            if identity.finish(ticket):
                # As many as can take one now, not all of them to fight over it.
                self._seqs_changed.notify(identity.room)

    def _attempt(
        self, message: Request, ticket: _core.Ticket, deadline: float, endpoint: str | None
    ) -> tuple[str, Response]:
        call = self._new_attempt(message, ticket, deadline, endpoint)
        self._engine.call(call, _WAIT_SLACK)
        return answer_of(call)


class Watch(WatchBase):
    """A live watch: iterate it for ``WatchBatch`` values, one per revision (all of that
    revision's events together), in revision order, each once. With
    ``progress_notify`` some batches have no events and ``progress_notify`` set.

    If the node serving it dies, the connection drops or the node cuts the watch off as
    too slow, the watch is created again on another endpoint from ``next_revision``: no
    gap, no duplicate. Resuming gives up after the client's timeout and raises
    (``TimeoutError`` / ``NoEndpointError``); the caller may watch again from
    ``next_revision``. A compacted start revision raises ``CompactedError`` (with
    ``compact_revision``); nothing is ever skipped silently.

    Iteration blocks until the next batch; ``get(timeout)`` waits at most ``timeout``.
    ``close()`` (or leaving ``with``) cancels it and ends any iteration.
    """

    _stop_iteration = StopIteration
    _client: Client
    _sink: StreamSink

    def __init__(self, client: Client, state: WatchState, timeout: float) -> None:
        sink = StreamSink()
        super().__init__(client, client._engine, state, timeout, sink)
        self._queue: queue.SimpleQueue[_core.StreamItem] = sink.queue

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchBatch]:
        return self

    def __next__(self) -> WatchBatch:
        batch = self._next(None)
        assert batch is not None
        return batch

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        """The next batch, or None if none came within ``timeout`` seconds. Raises
        ``StopIteration`` once closed."""
        return self._next(timeout)

    def close(self) -> None:
        """Cancel the watch; iteration ends (``StopIteration``)."""
        self._cancel()

    cancel = close

    def _next(self, timeout: float | None) -> WatchBatch | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_live(self._queue.empty())
            try:
                if deadline is None:
                    item = self._queue.get()
                else:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            taken = self._take(item)
            if isinstance(taken, WatchBatch):
                return taken
            if taken is not None:
                try:
                    self._resume(taken)
                except errors.PnyxError as exc:
                    self._resume_failed(exc)

    def _resume(self, cause: errors.PnyxError) -> None:
        """The attempt ended with a resumable error: open a new one from next_revision."""
        pause = self._resume_pause(cause)
        if pause:
            time.sleep(pause)
        self._open()

    def _open(self) -> None:
        """Create the watch (first time or resuming), retrying until the timeout."""
        request = self._state.create_request()
        total = self._timeout
        deadline = time.monotonic() + total
        try:
            self._attempt(deadline)
            return
        except errors.PnyxError as exc:
            if not _core.should_retry(request, 0, exc):
                raise
        for attempt in tenacity.Retrying(
            sleep=time.sleep, **self._client._retry_settings(request, 0, deadline, total)
        ):
            with attempt:
                self._attempt(deadline)
                return

    def _attempt(self, deadline: float) -> None:
        call = self._submit_attempt(deadline)
        try:
            item = self._queue.get(timeout=call.timeout + 1.0)
        except queue.Empty:
            raise errors.TimeoutError("the client's I/O thread did not answer") from None
        self._check_created(item)


class LeaseKeepAlive(LeaseKeepAliveBase):
    """Keeps one lease alive from a background thread: a refresh every ttl/3 (sooner
    after a failed one), until ``close()``.

    ``valid_until`` (``time.monotonic()`` seconds) is when the lease can expire at the
    latest, given the last acknowledged refresh (counted from when it was *sent*, so it
    errs early). The lease is reported lost, once, when the cluster says it is gone
    (``LeaseNotFoundError``) or when ``valid_until`` passes without an acknowledged
    refresh (``TimeoutError``): ``lost`` becomes true, ``error`` says why, ``on_lost``
    is called (from the keep-alive thread) and the thread ends.
    """

    _client: Client
    _stop: threading.Event
    _lost: threading.Event

    def __init__(
        self,
        client: Client,
        lease_id: int,
        *,
        ttl: int | None = None,
        on_lost: Callable[[errors.PnyxError], None] | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._lost = threading.Event()
        super().__init__(client, lease_id, ttl=ttl, on_lost=on_lost)
        self._thread = threading.Thread(
            target=self._run, name=f"pnyx-keepalive-{lease_id:x}", daemon=True
        )
        self._thread.start()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost (True) or ``timeout`` passes (False)."""
        return self._lost.wait(timeout)

    def close(self) -> None:
        """Stop refreshing (the lease itself stays until revoked or expired)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(self._client.timeout + 1.0)

    def __enter__(self) -> LeaseKeepAlive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent_at = time.monotonic()
            refresh_timeout = self._refresh_timeout(sent_at)
            if refresh_timeout is None:
                return
            try:
                result = self._client.lease_keep_alive_once(self.id, timeout=refresh_timeout)
            except errors.PnyxError as exc:
                pause = self._refresh_failed(exc)
                if pause is None:
                    return
            else:
                pause = self._refreshed(result, sent_at)
            self._stop.wait(pause)
