"""``pnyx bench lock`` and ``pnyx bench elect``: the recipes under load.

**lock**: ``--workers`` tasks, each with its own ``Session`` (sessions share ``--conns``
clients), take one lock ``--rounds`` times each, hold it ``--hold`` seconds and release
it. Two series:

- ``acquire``: from calling ``acquire`` to holding the lock (queueing included);
- ``handoff``: from the holder calling ``release`` to the next holder holding it,
  counted only when that next holder was already waiting (otherwise nobody was handed
  anything). The issue's target: p50 at most 2 ms whatever the hold time.

The run also checks the lock in passing: two workers of this process holding it at once
is counted in ``details.overlaps`` (must be 0).

**elect**: ``--candidates`` tasks campaign in one election, each with its own client and
session. The leader leads ``--lead`` seconds, then leaves and joins the line again (with
a new client and session), ``--rounds`` times. ``new_leader`` is the time from the
leader leaving to the next candidate's ``campaign`` returning. Leaving is a graceful
``resign`` (default), or with ``--crash`` a simulated crash: the leader's client is
closed without resigning or revoking, so - as for a ``kill -9`` of its process - the
next candidate only wins once the lease has expired (``--ttl``, raised by the cluster to
its minimum).

The only module of ``pnyx.clients`` that imports ``pnyx.recipes`` (the command line's
benchmarks, allowed by an import-linter exception); it raises ``RecipeMissingError``
with a clear message when the installed ``pnyx.recipes`` lacks a recipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from pnyx.clients import AsyncClient
from pnyx.clients.bench.load import Progress
from pnyx.clients.bench.report import BenchResult, ClientUsage, Series
from pnyx.clients.bench.stats import Recorder, summarize
from pnyx.core.errors import PnyxError

__all__ = ["ElectBench", "LockBench", "RecipeMissingError", "bench_elect", "bench_lock"]


class RecipeMissingError(Exception):
    """The installed ``pnyx.recipes`` does not have the recipe a benchmark needs."""


def _recipes(*names: str) -> list[Any]:
    try:
        from pnyx import recipes  # noqa: PLC0415  # only when a recipe bench runs
    except ImportError as error:  # pragma: no cover - the package ships with pnyx
        raise RecipeMissingError(f"pnyx.recipes cannot be imported: {error}") from None
    missing = [name for name in names if not hasattr(recipes, name)]
    if missing:
        raise RecipeMissingError(
            f"this benchmark needs pnyx.recipes.{', '.join(missing)}, which this "
            "installation of pnyx does not have yet"
        )
    return [getattr(recipes, name) for name in names]


# --------------------------------------------------------------------------- lock


@attrs.frozen
class LockBench:
    endpoints: str | Sequence[str] | None = None
    workers: int = 10
    rounds: int = 20
    """Acquisitions per worker."""
    hold: float = 0.0
    """Seconds a holder keeps the lock."""
    conns: int = 1
    ttl: int = 10
    timeout: float = 30.0
    """Longest wait for one acquisition (``LockTimeoutError`` after it)."""

    def __attrs_post_init__(self) -> None:
        if self.workers < 1 or self.rounds < 1 or self.conns < 1:
            raise ValueError("--workers, --rounds and --conns must be at least 1")
        if self.hold < 0 or self.timeout <= 0 or self.ttl < 1:
            raise ValueError("--hold must not be negative, --timeout and --ttl positive")


async def bench_lock(options: LockBench, progress: Progress | None = None) -> BenchResult:
    lock_class, session_class = _recipes("Lock", "Session")
    name = f"/pnyx-bench-lock/{uuid.uuid4().hex}"
    clock = time.perf_counter
    acquire = Recorder()
    handoff = Recorder()
    holders = 0
    overlaps = 0
    last_release: float | None = None
    completed = 0

    clients = [
        AsyncClient(options.endpoints, timeout=min(options.timeout, 5.0))
        for _ in range(options.conns)
    ]

    async def worker(session: Any) -> None:
        nonlocal holders, overlaps, last_release, completed
        for _ in range(options.rounds):
            lock = lock_class(session, name)
            requested = clock()
            try:
                await lock.acquire_async(options.timeout)
            except PnyxError as error:
                acquire.fail(error)
                completed += 1
                continue
            acquired = clock()
            acquire.record(acquired - requested)
            if holders:
                overlaps += 1
            holders += 1
            if last_release is not None and requested < last_release:
                handoff.record(acquired - last_release)
            if options.hold:
                await asyncio.sleep(options.hold)
            holders -= 1
            last_release = clock()
            try:
                await lock.release_async()
            except PnyxError as error:
                acquire.fail(error)
            completed += 1

    async def report() -> None:
        assert progress is not None
        while True:
            await asyncio.sleep(0.1)
            progress(completed, clock() - start)

    sessions: list[Any] = []
    try:
        # Sessions are opened before the clock starts: a lease grant is not a lock.
        for index in range(options.workers):
            session = session_class(clients[index % len(clients)], ttl=options.ttl)
            await session.open_async()
            sessions.append(session)
        started_at = time.time()
        cpu_before = time.process_time()
        start = clock()
        ticker = asyncio.create_task(report()) if progress is not None else None
        try:
            await asyncio.gather(*(worker(session) for session in sessions))
        finally:
            if ticker is not None:
                ticker.cancel()
        elapsed = clock() - start
        cpu_seconds = time.process_time() - cpu_before
        endpoints = clients[0].endpoints
    finally:
        for session in sessions:
            with contextlib.suppress(PnyxError):
                await session.close_async()
        for client in clients:
            await client.close()
    acquire_summary = summarize(acquire.latencies)
    return BenchResult(
        command="lock",
        started_at=started_at,
        endpoints=tuple(endpoints),
        config={
            "workers": options.workers,
            "rounds": options.rounds,
            "hold_s": options.hold,
            "conns": options.conns,
            "ttl_s": options.ttl,
            "timeout_s": options.timeout,
        },
        elapsed=elapsed,
        series=(
            Series(
                "handoff",
                "from the holder calling release to the next (waiting) holder holding the lock",
                summarize(handoff.latencies),
            ),
            Series(
                "acquire",
                "from calling acquire to holding the lock (queueing included)",
                acquire_summary,
                acquire_summary.count / elapsed if elapsed > 0 else None,
            ),
        ),
        client=ClientUsage(options.conns, options.workers, cpu_seconds, acquire.completed),
        errors=dict(acquire.errors),
        details={"acquisitions": acquire.succeeded, "overlaps": overlaps},
    )


# --------------------------------------------------------------------------- elect


@attrs.frozen
class ElectBench:
    endpoints: str | Sequence[str] | None = None
    candidates: int = 3
    rounds: int = 10
    """Leader changes to measure."""
    lead: float = 0.0
    """Seconds a leader leads before leaving."""
    crash: bool = False
    ttl: int = 5
    timeout: float = 60.0
    """Give up when no new leader came this long after a departure."""

    def __attrs_post_init__(self) -> None:
        if self.candidates < 2:
            raise ValueError("--candidates must be at least 2 (someone must take over)")
        if self.rounds < 1 or self.ttl < 1:
            raise ValueError("--rounds and --ttl must be at least 1")
        if self.lead < 0 or self.timeout <= 0:
            raise ValueError("--lead must not be negative, --timeout positive")


async def bench_elect(options: ElectBench, progress: Progress | None = None) -> BenchResult:
    election_class, session_class = _recipes("Election", "Session")
    name = f"/pnyx-bench-elect/{uuid.uuid4().hex}"
    clock = time.perf_counter
    new_leader = Recorder()
    departed_at: float | None = None
    changes = 0
    finished = asyncio.Event()
    progressed = asyncio.Event()
    rows: list[dict[str, Any]] = []
    endpoints: tuple[str, ...] = ()

    async def candidate(index: int) -> None:
        nonlocal departed_at, changes, endpoints
        while not finished.is_set():
            client = AsyncClient(options.endpoints)
            endpoints = client.endpoints
            session = session_class(client, ttl=options.ttl)
            crashed = False
            try:
                await session.open_async()
                election = election_class(session, name)
                leadership = await election.campaign_async(f"candidate-{index}")
                won_at = clock()
                if departed_at is not None:
                    new_leader.record(won_at - departed_at)
                    rows.append(
                        {
                            "change": changes + 1,
                            "new_leader": f"candidate-{index}",
                            "new_leader_ms": round((won_at - departed_at) * 1000, 3),
                        }
                    )
                    changes += 1
                    progressed.set()
                    if progress is not None:
                        progress(changes, 0.0)
                    if changes >= options.rounds:
                        finished.set()
                        return
                if options.lead:
                    await asyncio.sleep(options.lead)
                departed_at = clock()
                if options.crash:
                    # As a dead process: no resign, no revoke, no more keep-alive.
                    crashed = True
                    await client.close()
                else:
                    await leadership.resign_async()
            except PnyxError as error:
                new_leader.fail(error)
                if departed_at is None:
                    raise
            finally:
                if not crashed:
                    with contextlib.suppress(PnyxError):
                        await session.close_async()
                await client.close()

    started_at = time.time()
    cpu_before = time.process_time()
    start = clock()
    tasks = [asyncio.create_task(candidate(index)) for index in range(options.candidates)]
    try:
        while not finished.is_set():
            progressed.clear()
            waiting = asyncio.ensure_future(progressed.wait())
            done, _ = await asyncio.wait(
                [waiting, *tasks], timeout=options.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                waiting.cancel()
                raise TimeoutError(f"no new leader within {options.timeout}s")
            for task in done:
                if task is not waiting and task.exception() is not None:
                    waiting.cancel()
                    raise task.exception()  # type: ignore[misc]
            if waiting not in done:
                waiting.cancel()
    finally:
        finished.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = clock() - start
    cpu_seconds = time.process_time() - cpu_before
    return BenchResult(
        command="elect",
        started_at=started_at,
        endpoints=endpoints,
        config={
            "candidates": options.candidates,
            "rounds": options.rounds,
            "lead_s": options.lead,
            "crash": options.crash,
            "ttl_s": options.ttl,
            "timeout_s": options.timeout,
        },
        elapsed=elapsed,
        series=(
            Series(
                "new_leader",
                "from the leader leaving ("
                + ("client closed, lease left to expire" if options.crash else "resign")
                + ") to the next candidate's campaign returning",
                summarize(new_leader.latencies),
            ),
        ),
        client=ClientUsage(options.candidates, options.candidates, cpu_seconds, changes),
        errors=dict(new_leader.errors),
        details={"changes": rows},
    )
