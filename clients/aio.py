"""``AsyncClient``: the asyncio client. Same methods, names, arguments and results as
``Client`` (awaitable here), the same retry and failover behaviour (see ``client.py``),
built on the same ``_core``. Its I/O runs in the event loop itself (``LoopEngine``: the
sockets' descriptors are watched with ``add_reader``), with no thread: calls started by
the tasks of one loop iteration go out together, and answers resolve their futures
directly. Writes get exactly-once tickets as ``Client``'s do (see ``client.py``).

Use it from one event loop (the one it is first used in; after that loop is closed, a
new one may take over). This module waits; it must never touch a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any

import tenacity

from pnyx.clients import _core
from pnyx.clients._base import ClientBase, answer_of
from pnyx.clients._core import KeyLike, WatchState
from pnyx.clients._engine import AsyncStreamSink, LoopEngine
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

__all__ = ["AsyncClient", "AsyncLeaseKeepAlive", "AsyncWatch"]


class AsyncClient(ClientBase):
    """An asyncio pnyx client; see ``Client`` for the arguments. ``async with`` closes
    it, or ``await kv.close()``."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
    ) -> None:
        super().__init__(endpoints, timeout=timeout, attempt_timeout=attempt_timeout)
        self._engine: LoopEngine = LoopEngine(self._selector)
        self._seq_waiters: deque[asyncio.Future[_core.Ticket]] = deque()
        """Writes waiting for room in a seq window, in order: each is handed its ticket."""
        self._children: weakref.WeakSet[AsyncWatch | AsyncLeaseKeepAlive] = weakref.WeakSet()

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop watches and keep-alives, fail calls in flight, stop the I/O thread."""
        children = list(self._children)
        for child in children:
            child.close()  # watches end; keep-alives make no new refresh
        # Fails every call in flight, so the keep-alives' refreshes end at once.
        self._engine.close()
        self._fail_seq_waiters()
        for child in children:
            await child.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ key-value

    async def put(
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
        return _core.put_result((await self._request(request, timeout))[1])

    async def get(
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
        return _core.get_result((await self._request(request, timeout))[1])

    async def delete(
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
        return _core.delete_result((await self._request(request, timeout))[1])

    async def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[RequestOp] = (),
        failure: Iterable[RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``, atomically."""
        request = _core.txn_request(compare, success, failure)
        return _core.txn_result((await self._request(request, timeout))[1])

    async def compact(
        self, revision: int, physical: bool = False, *, timeout: float | None = None
    ) -> CompactResult:
        """Drop history before ``revision``."""
        request = CompactionRequest(revision, physical)
        return _core.compact_result((await self._request(request, timeout))[1])

    # ------------------------------------------------------------------ leases

    async def lease_grant(
        self, ttl: int, id: int = 0, *, timeout: float | None = None
    ) -> LeaseGrantResult:
        """A new lease of ``ttl`` seconds (``id`` 0: the cluster picks one)."""
        return _core.lease_grant_result(
            (await self._request(LeaseGrantRequest(ttl, id), timeout))[1]
        )

    async def lease_revoke(self, id: int, *, timeout: float | None = None) -> None:
        """End the lease now, deleting its keys."""
        _core.lease_revoke_result((await self._request(LeaseRevokeRequest(id), timeout))[1])

    async def lease_keep_alive_once(
        self, id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResult:
        """Refresh the lease once; ``LeaseNotFoundError`` if it is gone."""
        return _core.lease_keep_alive_result(
            (await self._request(LeaseKeepAliveRequest(id), timeout))[1]
        )

    async def lease_time_to_live(
        self, id: int, keys: bool = False, *, timeout: float | None = None
    ) -> LeaseTimeToLiveResult:
        """Seconds left (-1 if gone), and with ``keys`` the keys attached."""
        return _core.lease_time_to_live_result(
            (await self._request(LeaseTimeToLiveRequest(id, keys), timeout))[1]
        )

    async def lease_list(self, *, timeout: float | None = None) -> LeaseListResult:
        return _core.lease_list_result((await self._request(LeaseLeasesRequest(), timeout))[1])

    def lease_keep_alive(
        self,
        id: int,
        *,
        ttl: int | None = None,
        on_lost: Callable[[errors.PnyxError], None] | None = None,
    ) -> AsyncLeaseKeepAlive:
        """Keep lease ``id`` alive from a task (every ttl/3) until closed; see
        ``AsyncLeaseKeepAlive``. Call it inside the running event loop."""
        self._check_open()
        handle = AsyncLeaseKeepAlive(self, id, ttl=ttl, on_lost=on_lost)
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
    ) -> AsyncWatch:
        """Watch a key, a prefix or a range from ``start_revision`` (0: from when the
        watch is created). ``await kv.watch(...)`` or ``async with kv.watch(...) as w``
        creates it; ``async for batch in kv.watch(...)`` creates it on first use."""
        state = self._new_watch_state(
            key, prefix, range_end, start_revision, prev_kv, filters, progress_notify
        )
        watch = AsyncWatch(self, state, self._timeout if timeout is None else timeout)
        self._children.add(watch)
        return watch

    # ------------------------------------------------------------------ cluster

    async def member_list(
        self, linearizable: bool = False, *, timeout: float | None = None
    ) -> MemberListResult:
        return _core.member_list_result(
            (await self._request(MemberListRequest(linearizable), timeout))[1]
        )

    async def member_add(
        self,
        name: str,
        peer_urls: Sequence[str],
        *,
        learner: bool = False,
        timeout: float | None = None,
    ) -> MemberAddResult:
        """Add a member (as a non-voting learner with ``learner``)."""
        request = MemberAddRequest(tuple(peer_urls), name, learner)
        return _core.member_add_result((await self._request(request, timeout))[1])

    async def member_promote(self, id: int, *, timeout: float | None = None) -> MemberPromoteResult:
        """Make learner ``id`` a voting member."""
        return _core.member_promote_result(
            (await self._request(MemberPromoteRequest(id), timeout))[1]
        )

    async def member_remove(self, id: int, *, timeout: float | None = None) -> MemberRemoveResult:
        return _core.member_remove_result(
            (await self._request(MemberRemoveRequest(id), timeout))[1]
        )

    async def status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> StatusResult:
        """The status of the member at ``endpoint`` (default: the one the client uses)."""
        target = _core.normalize_endpoint(endpoint) if endpoint is not None else None
        answered_by, response = await self._request(StatusRequest(), timeout, target)
        return _core.status_result(answered_by, response)

    # ------------------------------------------------------------------ calls

    async def _request(
        self, message: Request, timeout: float | None, endpoint: str | None = None
    ) -> tuple[str, Response]:
        total, deadline = self._call_deadline(message, timeout)
        if not self._identity.needs_seq(message):
            return await self._attempts(message, _core.NO_TICKET, deadline, total, endpoint)
        # Nobody overtakes a write already waiting for room.
        ticket = None if self._seq_waiters else self._identity.take()
        if ticket is None:
            ticket = await self._wait_for_ticket(deadline, total)
        try:
            return await self._attempts(message, ticket, deadline, total, endpoint)
        finally:
            self._finish_ticket(ticket)

    async def _attempts(
        self,
        message: Request,
        ticket: _core.Ticket,
        deadline: float,
        total: float,
        endpoint: str | None,
    ) -> tuple[str, Response]:
        try:
            return await self._attempt(message, ticket, deadline, endpoint)
        except errors.PnyxError as exc:
            if not _core.should_retry(message, ticket.seq, exc):
                raise
        async for attempt in tenacity.AsyncRetrying(
            **self._retry_settings(message, ticket.seq, deadline, total)
        ):
            with attempt:
                return await self._attempt(message, ticket, deadline, endpoint)
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    async def _wait_for_ticket(self, deadline: float, total: float) -> _core.Ticket:
        """The exactly-once ticket of a new write, handed over by ``_finish_ticket`` once
        a window has room for it (writes waiting get theirs in order)."""
        self._check_open()
        waiter: asyncio.Future[_core.Ticket] = asyncio.get_running_loop().create_future()
        self._seq_waiters.append(waiter)
        handed: _core.Ticket | None = None
        try:
            # asyncio.wait, not a timeout context: that would cancel this task, and a
            # cancellation racing the hand-over could outlive the wait.
            await asyncio.wait((waiter,), timeout=max(0.0, deadline - time.monotonic()))
            if waiter.done():
                handed = waiter.result()  # raises ClientError if the client closed
                return handed
            raise errors.TimeoutError(
                f"no answer within {total:g}s: {self._identity.in_flight} writes of this "
                "client were in flight ahead of it"
            )
        finally:
            if handed is None:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._finish_ticket(waiter.result())  # handed one as we stopped waiting
                waiter.cancel()  # skipped by _finish_ticket from now on

    def _finish_ticket(self, ticket: _core.Ticket) -> None:
        identity = self._identity
        if not identity.finish(ticket):
            return
        waiters = self._seq_waiters
        while waiters:
            if waiters[0].done():  # gave up waiting
                waiters.popleft()
                continue
            handed = identity.take()
            if handed is None:
                return
            waiters.popleft().set_result(handed)

    def _fail_seq_waiters(self) -> None:
        waiters, self._seq_waiters = self._seq_waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(errors.ClientError("client is closed"))

    async def _attempt(
        self, message: Request, ticket: _core.Ticket, deadline: float, endpoint: str | None
    ) -> tuple[str, Response]:
        call = self._new_attempt(message, ticket, deadline, endpoint, asyncio.get_running_loop())
        self._engine.submit(call)
        assert call.future is not None
        # The engine resolves every call by its deadline (or when the client closes).
        await call.future
        return answer_of(call)


class AsyncWatch(WatchBase):
    """The asyncio face of ``Watch`` (same guarantees: per-revision batches, resume
    without gap or duplicate, ``CompactedError`` on a compacted start). Awaiting it or
    entering ``async with`` creates the watch; ``async for`` creates it on first use."""

    _stop_iteration = StopAsyncIteration
    _client: AsyncClient
    _sink: AsyncStreamSink | None

    def __init__(self, client: AsyncClient, state: WatchState, timeout: float) -> None:
        super().__init__(client, client._engine, state, timeout, None)
        self._started = False

    def __await__(self) -> Generator[Any, None, AsyncWatch]:
        return self._start().__await__()

    async def _start(self) -> AsyncWatch:
        if not self._started:
            self._started = True
            self._sink = AsyncStreamSink(asyncio.get_running_loop())
            await self._open()
        return self

    async def __aenter__(self) -> AsyncWatch:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, WatchBatch]:
        # _next itself, not a coroutine awaiting it: one frame less per batch (this is
        # the path of every event of every watch). Without a timeout it never gives None.
        return self._next(None)  # type: ignore[return-value]

    async def get(self, timeout: float | None = None) -> WatchBatch | None:
        """The next batch, or None if none came within ``timeout`` seconds."""
        return await self._next(timeout)

    def close(self) -> None:
        """Cancel the watch; iteration ends (``StopAsyncIteration``)."""
        self._cancel()

    cancel = close

    async def aclose(self) -> None:
        self.close()

    async def _next(self, timeout: float | None) -> WatchBatch | None:
        if not self._started and not self._closed:
            await self._start()
        assert self._sink is not None or self._closed
        while True:
            sink = self._sink
            if self._closed or self._failed is not None:
                self._check_live(sink is None or not sink.items)
            assert sink is not None
            items = sink.items
            if items:
                item = items.popleft()
            else:
                got = await sink.get(timeout)
                if got is None:
                    return None
                item = got
            taken = self._take(item)
            if isinstance(taken, WatchBatch):
                return taken
            if taken is not None:
                try:
                    await self._resume(taken)
                except errors.PnyxError as exc:
                    self._resume_failed(exc)

    async def _resume(self, cause: errors.PnyxError) -> None:
        pause = self._resume_pause(cause)
        if pause:
            await asyncio.sleep(pause)
        await self._open()

    async def _open(self) -> None:
        request = self._state.create_request()
        total = self._timeout
        deadline = time.monotonic() + total
        try:
            await self._attempt(deadline)
            return
        except errors.PnyxError as exc:
            if not _core.should_retry(request, 0, exc):
                raise
        async for attempt in tenacity.AsyncRetrying(
            **self._client._retry_settings(request, 0, deadline, total)
        ):
            with attempt:
                await self._attempt(deadline)
                return

    async def _attempt(self, deadline: float) -> None:
        call = self._submit_attempt(deadline)
        assert self._sink is not None
        item = await self._sink.get(call.timeout + 1.0)
        if item is None:
            raise errors.TimeoutError("the client's I/O thread did not answer")
        self._check_created(item)


class AsyncLeaseKeepAlive(LeaseKeepAliveBase):
    """The asyncio face of ``LeaseKeepAlive``: a task refreshing the lease every ttl/3
    until ``close()``/``aclose()``; ``lost``, ``error``, ``valid_until``, ``on_lost``
    (called in the event loop) and ``await wait_lost()`` report loss."""

    _client: AsyncClient
    _stop: asyncio.Event
    _lost: asyncio.Event

    def __init__(
        self,
        client: AsyncClient,
        lease_id: int,
        *,
        ttl: int | None = None,
        on_lost: Callable[[errors.PnyxError], None] | None = None,
    ) -> None:
        self._lost = asyncio.Event()
        self._stop = asyncio.Event()
        super().__init__(client, lease_id, ttl=ttl, on_lost=on_lost)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"pnyx-keepalive-{lease_id:x}"
        )

    async def wait_lost(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._lost.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop refreshing (the lease itself stays until revoked or expired)."""
        self._stop.set()

    async def aclose(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> AsyncLeaseKeepAlive:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self) -> None:
        while not self._stop.is_set():
            sent_at = time.monotonic()
            refresh_timeout = self._refresh_timeout(sent_at)
            if refresh_timeout is None:
                return
            try:
                result = await self._client.lease_keep_alive_once(self.id, timeout=refresh_timeout)
            except errors.PnyxError as exc:
                pause = self._refresh_failed(exc)
                if pause is None:
                    return
            else:
                pause = self._refreshed(result, sent_at)
            await self._sleep(pause)
