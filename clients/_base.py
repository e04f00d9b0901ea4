"""What ``Client`` and ``AsyncClient`` share besides ``_core``: construction (endpoints,
timeouts, the exactly-once identity), the start of a call (its deadline, each attempt's
``Call``, what a finished attempt answered) and the tenacity settings of the retry loop.
The faces differ in how they wait and in the engine that does their I/O (each makes its
own: ``ThreadEngine`` for ``Client``, ``LoopEngine`` for ``AsyncClient``). What their
watches and keep-alives share is in ``_handles``.

Must never import the faces (``client``, ``aio``) nor anything of pnyx but ``core.wire``,
``core.errors`` and the other private client modules.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import tenacity

from pnyx.clients import _core, txn
from pnyx.clients._core import KeyLike, WatchState
from pnyx.clients._engine import Call, EngineCore
from pnyx.core import errors
from pnyx.core.wire import (
    ErrorResponse,
    Request,
    Response,
    WatchFilterType,
    error_from_response,
    validate_request,
)

MIN_ATTEMPT_SECONDS = 0.01
"""An attempt needs at least this long to have a chance; less left means give up."""


def default_attempt_timeout(timeout: float) -> float:
    """A third of the call's timeout: a dead or paused node costs at most that before
    the attempt moves to another endpoint, and two more attempts still fit."""
    return max(min(timeout, 0.1), timeout / 3)


def answer_of(call: Call) -> tuple[str, Response]:
    """What a finished attempt got: the endpoint that answered and its (non-error)
    response; else raises the attempt's error."""
    if call.error is not None:
        raise call.error
    response = call.response
    assert response is not None
    if type(response) is ErrorResponse:
        raise error_from_response(response)
    return call.endpoint, response


class ClientBase:
    """Shared state of both faces. Not public: use ``Client`` or ``AsyncClient``."""

    cmp = txn.cmp
    """Compare builders for ``txn``: ``kv.cmp.version("k") == 0``."""
    op = txn.op
    """Operation builders for ``txn``: ``kv.op.put("k", "v")``."""

    _engine: EngineCore
    """Set by each face's constructor, after this one."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
    ) -> None:
        if timeout <= 0:
            raise errors.InvalidRequestError(f"timeout must be positive, got {timeout}")
        self._endpoints = _core.resolve_endpoints(endpoints)
        self._timeout = float(timeout)
        self._attempt_timeout = (
            float(attempt_timeout)
            if attempt_timeout is not None
            else default_attempt_timeout(self._timeout)
        )
        self._identity = _core.Identity()
        self._selector = _core.EndpointSelector(list(self._endpoints))
        # Jitter only; a private generator keeps the global one untouched.
        self._random = random.Random()

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints in use (those given, plus any learned from leader hints)."""
        return tuple(self._selector.endpoints)

    @property
    def timeout(self) -> float:
        """Default deadline of one call, retries included, in seconds."""
        return self._timeout

    @property
    def closed(self) -> bool:
        return self._engine.is_closed

    def _check_open(self) -> None:
        if self._engine.is_closed:
            raise errors.ClientError("client is closed")

    def _call_deadline(self, message: Request, timeout: float | None) -> tuple[float, float]:
        """A new call of ``message`` (the client open, the request valid): its total time
        (``timeout``, default the client's) and its deadline."""
        self._check_open()
        validate_request(message)
        total = self._timeout if timeout is None else timeout
        return total, time.monotonic() + total

    def _new_attempt(
        self,
        message: Request,
        ticket: _core.Ticket,
        deadline: float,
        endpoint: str | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Call:
        """One attempt of a call, given the time left before ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.TimeoutError("deadline passed before the attempt")
        return Call(
            message,
            ticket.seq,
            min(self._attempt_timeout, remaining),
            client_id=ticket.client_id,
            endpoint=endpoint,
            loop=loop,
        )

    def _new_watch_state(  # noqa: PLR0917 - ``watch``'s arguments, in its order
        self,
        key: KeyLike,
        prefix: bool,
        range_end: KeyLike | None,
        start_revision: int,
        prev_kv: bool,
        filters: Iterable[WatchFilterType | str],
        progress_notify: bool,
    ) -> WatchState:
        """The state of a new watch from ``watch``'s arguments (its create request
        validated), once the client is known to be open."""
        start, end = _core.key_range(key, prefix, range_end)
        state = WatchState(
            key=start,
            range_end=end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=_core.watch_filters(filters),
            progress_notify=progress_notify,
        )
        validate_request(state.create_request())
        self._check_open()
        return state

    def _retry_settings(
        self, message: Request, seq: int, deadline: float, total: float
    ) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` that run the
        attempts after the first (the first goes without tenacity: building a
        ``Retrying`` costs about as much as a whole round trip, measured at ~45 µs)."""
        jitter = self._random.random

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            # tenacity counts its own attempts; the first one was made before it.
            pause = _core.backoff(state.attempt_number + 1, error, jitter())
            remaining = deadline - time.monotonic()
            return max(0.0, min(pause, remaining / 2))

        def stop(state: tenacity.RetryCallState) -> bool:
            remaining = deadline - time.monotonic() - state.upcoming_sleep
            return remaining < MIN_ATTEMPT_SECONDS

        def give_up(state: tenacity.RetryCallState) -> Any:
            error = state.outcome.exception() if state.outcome else None
            raise _core.give_up(error, total) from error

        def retry(error: BaseException) -> bool:
            return _core.should_retry(message, seq, error)

        return {
            "retry": tenacity.retry_if_exception(retry),
            "wait": wait,
            "stop": stop,
            "retry_error_callback": give_up,
            "reraise": True,
        }
