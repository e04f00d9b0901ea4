"""What the two faces of a watch (``Watch``, ``AsyncWatch``) and of a lease keep-alive
(``LeaseKeepAlive``, ``AsyncLeaseKeepAlive``) share: their state and every decision
they take (what a stream item means, when resuming gives up and how long it backs off,
how long a refresh may take and what a failed one means). The faces keep only the
waiting: a blocking queue, a thread and ``threading.Event`` on one side, an
``AsyncStreamSink``, a task and ``asyncio.Event`` on the other.

Must never wait, sleep, start a thread or a task, nor import the faces (``client``,
``aio``); like ``_base`` it may read the clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import ClassVar, NoReturn, Protocol

from pnyx.clients import _core
from pnyx.clients._base import ClientBase
from pnyx.clients._core import StreamError, WatchCreated, WatchState
from pnyx.clients._engine import Call, Sink, run_callback_safely
from pnyx.clients.results import LeaseKeepAliveResult, WatchBatch
from pnyx.core import errors


class StreamEngine(Protocol):
    """The part of an engine a watch uses (``ThreadEngine`` and ``LoopEngine`` both)."""

    @property
    def is_closed(self) -> bool: ...

    def submit(self, call: Call) -> None: ...

    def cancel(self, call: Call) -> None: ...


class Flag(Protocol):
    """``threading.Event`` or ``asyncio.Event``: only their non-waiting half."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class WatchBase:
    """The state and decisions of one watch; the face waits for the stream's items."""

    _stop_iteration: ClassVar[type[Exception]]
    """What ends iteration: ``StopIteration`` or ``StopAsyncIteration``."""

    def __init__(
        self,
        client: ClientBase,
        engine: StreamEngine,
        state: WatchState,
        timeout: float,
        sink: Sink | None,
    ) -> None:
        self._client = client
        self._engine = engine
        self._state = state
        self._timeout = timeout
        self._sink = sink
        self._call: Call | None = None
        self._closed = False
        self._failed: errors.PnyxError | None = None
        self._fruitless_resumes = 0
        self._fruitless_since = 0.0

    @property
    def next_revision(self) -> int:
        """The first revision not delivered yet: watch from here to continue."""
        return self._state.next_revision

    @property
    def watch_id(self) -> int:
        return self._state.watch_id

    def _cancel(self) -> None:
        """Cancel the watch once, and wake a consumer waiting for an item."""
        if self._closed:
            return
        self._closed = True
        self._state.canceling = True
        if self._call is not None and not self._engine.is_closed:
            # ClientError: the client closed meanwhile, nothing left to cancel.
            with contextlib.suppress(errors.ClientError):
                self._engine.cancel(self._call)
        if self._sink is not None:
            self._sink.put_items([StreamError(errors.ClientError("watch canceled"), False)])

    def _check_live(self, drained: bool) -> None:
        """Before waiting for an item: raise the watch's failure, or end iteration once
        it is closed and ``drained`` (no item left to hand out)."""
        if self._failed is not None:
            raise self._failed
        if self._closed and drained:
            raise self._stop_iteration

    def _take(self, item: _core.StreamItem) -> WatchBatch | errors.PnyxError | None:
        """What an item of the stream means: a batch for the consumer, the error of an
        attempt to resume after, or None (the ``WatchCreated`` of a resumed attempt).
        Ends iteration if the watch was canceled; raises an error that cannot be
        resumed after."""
        if type(item) is WatchBatch:
            if item.events:
                self._fruitless_resumes = 0
            return item
        if type(item) is StreamError:
            if self._closed or self._state.canceling:
                raise self._stop_iteration
            if not item.resumable:
                self._fail(item.error)
            return item.error
        return None

    def _resume_failed(self, error: errors.PnyxError) -> NoReturn:
        """Resuming raised ``error``: the watch fails, unless closed while resuming."""
        if self._state.canceling:
            raise self._stop_iteration from None
        self._fail(error)

    def _fail(self, error: errors.PnyxError) -> NoReturn:
        self._failed = error
        self._closed = True
        raise error

    def _resume_pause(self, cause: errors.PnyxError) -> float:
        """The attempt ended with a resumable error: how long to back off before opening
        a new one from next_revision. A node that keeps accepting and then dropping the
        watch gets backed off from; after the watch's timeout without a delivered event
        this gives up (raises)."""
        now = time.monotonic()
        if self._fruitless_resumes == 0:
            self._fruitless_since = now
        elif now - self._fruitless_since > self._timeout:
            raise _core.give_up(cause, self._timeout) from cause
        pause = _core.backoff(self._fruitless_resumes + 1, cause, self._client._random.random())
        self._fruitless_resumes += 1
        return pause

    def _submit_attempt(self, deadline: float) -> Call:
        """Start one attempt at creating the watch; its first item says how it went
        (``_check_created``)."""
        if self._closed:
            raise errors.ClientError("watch canceled")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.TimeoutError("deadline passed before the attempt")
        assert self._sink is not None
        self._state.begin_attempt()
        call = Call(
            self._state.create_request(),
            0,
            min(self._client._attempt_timeout, remaining),
            stream=self._state,
            sink=self._sink,
        )
        self._call = call
        self._engine.submit(call)
        return call

    @staticmethod
    def _check_created(item: _core.StreamItem) -> None:
        """The first item of an attempt: the watch exists, or the attempt's error."""
        if type(item) is WatchCreated:
            return
        if type(item) is StreamError:
            raise item.error
        # Anything else before "created" breaks the protocol.
        raise errors.PnyxError(f"protocol error: watch got {type(item).__name__} first")


class LeaseKeepAliveBase:
    """The state and decisions of one lease keep-alive; the face runs the refresh loop
    (a thread or a task) and waits between refreshes."""

    _stop: Flag
    _lost: Flag

    def __init__(
        self,
        client: ClientBase,
        lease_id: int,
        *,
        ttl: int | None,
        on_lost: Callable[[errors.PnyxError], None] | None,
    ) -> None:
        self.id = lease_id
        self._client = client
        self._on_lost = on_lost
        self.error: errors.PnyxError | None = None
        self.ttl: int | None = ttl
        """Seconds the lease had left at the last acknowledged refresh."""
        self.valid_until = time.monotonic() + (ttl if ttl is not None else client.timeout)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def _refresh_timeout(self, sent_at: float) -> float | None:
        """How long a refresh sent at ``sent_at`` may take; None (reported lost) once
        ``valid_until`` has passed without an acknowledged refresh."""
        remaining = self.valid_until - sent_at
        if remaining <= 0:
            self._report(errors.TimeoutError(f"lease {self.id:x}: no refresh acknowledged in time"))
            return None
        return min(self._client.timeout, remaining)

    def _refreshed(self, result: LeaseKeepAliveResult, sent_at: float) -> float:
        """A refresh sent at ``sent_at`` was acknowledged: the pause before the next."""
        self.ttl = result.ttl
        self.valid_until = sent_at + result.ttl
        return max(0.05, result.ttl / 3 - (time.monotonic() - sent_at))

    def _refresh_failed(self, error: errors.PnyxError) -> float | None:
        """The pause before trying again, or None to stop (the lease is gone, the client
        closed, or the keep-alive is stopping)."""
        if isinstance(error, errors.LeaseNotFoundError):
            self._report(error)
            return None
        if self._stop.is_set():
            return None
        if isinstance(error, errors.ClientError):
            self._report(error)
            return None
        # Unavailable for now: try again soon, while the lease may still live.
        return min(1.0, max(0.05, (self.valid_until - time.monotonic()) / 4))

    def _report(self, error: errors.PnyxError) -> None:
        self.error = error
        self._lost.set()
        callback = self._on_lost
        if callback is not None:
            run_callback_safely(lambda: callback(error))
