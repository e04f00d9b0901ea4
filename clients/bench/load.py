"""The closed-loop load generator under every request benchmark.

``run_load(operation, plan)`` runs ``plan.concurrency`` requester tasks on the running
event loop. Each requester repeatedly claims the next operation number, waits for its
slot if the plan has a rate, awaits ``operation(requester, number)`` and records the
latency (success) or the error type (a ``PnyxError``). It stops when ``plan.total``
operations have been claimed or, with ``plan.duration``, when no new operation may start;
operations in flight always finish. Anything that is not a ``PnyxError`` is a bug of the
benchmark and propagates.

The rate limiter (``RateLimiter``) hands out start slots ``1/rate`` apart, like Go's
``rate.Limiter`` that etcd's ``check perf`` uses, with a burst of a few milliseconds'
worth of slots: an asyncio timer cannot wake a task to the microsecond, and a burst of 1
would lose every slot a late wake-up skipped. Requesters that are all busy do not bank
slots beyond that burst, so a slow cluster is not hit by a catch-up storm.

The requesters share the process (and the GIL) with the clients' I/O threads; the
caller measures the process CPU time around the run to report the client's own cost.
This module times and counts; it must never decide what the operations are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from pnyx.clients.bench.stats import Recorder
from pnyx.core.errors import PnyxError

__all__ = ["LoadOutcome", "LoadPlan", "Operation", "Progress", "RateLimiter", "run_load"]

Operation = Callable[[int, int], Awaitable[Any]]
"""``operation(requester_index, operation_number)``: one request of the workload."""

Progress = Callable[[int, float], None]
"""``progress(operations_completed, seconds_elapsed)``, called a few times a second."""

PROGRESS_INTERVAL = 0.1
BURST_SECONDS = 0.005
"""The limiter's burst, as time: at most this long's worth of slots may be used at once."""


@attrs.frozen
class LoadPlan:
    concurrency: int
    total: int | None = None
    """Stop after claiming this many operations."""
    duration: float | None = None
    """Or: start no operation after this many seconds."""
    rate: float | None = None
    """Operations started per second, over all requesters (None: as fast as they can)."""

    def __attrs_post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.total is None and self.duration is None:
            raise ValueError("a load needs a total or a duration")
        if self.total is not None and self.total < 0:
            raise ValueError("total must not be negative")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")


@attrs.define
class RateLimiter:
    """Start slots ``1/rate`` apart; see the module docstring. Not thread-safe (one loop)."""

    rate: float
    burst: float = attrs.field(default=0.0)
    """Slots that may be taken at once after an idle period (at least 1)."""
    _next_slot: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.burst < 1:
            self.burst = max(1.0, self.rate * BURST_SECONDS)

    def reserve(self, now: float) -> float:
        """Reserve the next slot; returns how long to wait for it (0: start now)."""
        interval = 1.0 / self.rate
        earliest = now - (self.burst - 1) * interval
        slot = earliest if self._next_slot is None else max(self._next_slot, earliest)
        self._next_slot = slot + interval
        return max(0.0, slot - now)


@attrs.define
class LoadOutcome:
    recorder: Recorder
    started_at: float
    """Epoch seconds when the first operation could start."""
    elapsed: float
    """Seconds from the start until the last operation ended (at least the duration)."""
    cpu_seconds: float
    """Process CPU time (every thread) spent during the run."""
    claimed: int


async def run_load(
    operation: Operation,
    plan: LoadPlan,
    *,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LoadOutcome:
    """Run ``operation`` under ``plan`` (see the module docstring)."""
    recorder = Recorder()
    limiter = RateLimiter(plan.rate) if plan.rate is not None else None
    claimed = 0
    start = clock()
    last_end = start
    deadline = start + plan.duration if plan.duration is not None else None

    def may_start() -> bool:
        if plan.total is not None and claimed >= plan.total:
            return False
        return deadline is None or clock() < deadline

    async def requester(index: int) -> None:
        nonlocal claimed, last_end
        while may_start():
            if limiter is not None:
                now = clock()
                delay = limiter.reserve(now)
                if deadline is not None and now + delay >= deadline:
                    return  # the slot is past the end: the run is over for this task
                if delay > 0:
                    await asyncio.sleep(delay)
                    if not may_start():
                        return
            number = claimed
            claimed += 1
            began = clock()
            try:
                await operation(index, number)
            except PnyxError as error:
                recorder.fail(error)
            else:
                recorder.record(clock() - began)
            last_end = max(last_end, clock())

    async def report_progress() -> None:
        assert progress is not None
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            progress(recorder.completed, clock() - start)

    started_at = time.time()
    cpu_before = time.process_time()
    ticker = asyncio.create_task(report_progress()) if progress is not None else None
    try:
        await asyncio.gather(*(requester(index) for index in range(plan.concurrency)))
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    # The run lasts until its last operation ended, and at least its planned duration
    # (a rate-limited run that finished early still spread its operations over it).
    elapsed = max(last_end, deadline if deadline is not None else start) - start
    cpu_seconds = time.process_time() - cpu_before
    if progress is not None:
        progress(recorder.completed, elapsed)
    return LoadOutcome(recorder, started_at, elapsed, cpu_seconds, claimed)
