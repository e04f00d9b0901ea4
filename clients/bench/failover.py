"""``pnyx bench failover``: how long a leader's death stops writes.

The command starts its own local cluster (``LocalCluster``: real node processes on free
ports, in a temporary directory, all killed by pid at the end) and one ``AsyncClient``
that writes at a steady ``--rate`` (open loop: a write is started at every slot whether
or not earlier ones finished, so writes keep being attempted during the outage). Then,
``--kills`` times:

1. let the load run ``--settle`` seconds on a healthy cluster;
2. find the Raft leader and send it SIGKILL (or SIGTERM with ``--sigterm``: a graceful
   stop, where the leader hands over first);
3. measure, from the signal, ``new_leader``: until the survivors agree on a new leader
   (polled; resolution about 20 ms), and ``writes_recovered``: until the first
   successful write among those *started after* the signal (resolution 1/rate);
4. restart the node on its data and wait until it has caught up.

A write that fails (its deadline ``--timeout`` passed, retries included) is counted in
``errors`` and, per kill, in the row of the kill whose window it ended in. With
``--sigterm`` the goal is no failed write at all.

This module drives the cluster through ``pnyx.clients.testing`` and writes through the
public client API; it must never reach into a node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from pnyx.clients import AsyncClient
from pnyx.clients.bench.load import RateLimiter
from pnyx.clients.bench.report import BenchResult, ClientUsage, Series
from pnyx.clients.bench.stats import error_name, summarize
from pnyx.clients.testing import LocalCluster
from pnyx.core.errors import PnyxError

__all__ = ["FailoverBench", "FailoverError", "bench_failover"]

T = TypeVar("T")
KEY_PREFIX = b"/pnyx-bench-failover/"
KEY_COUNT = 1000


class FailoverError(Exception):
    """The cluster did not recover within ``--recover-timeout`` (or did not start)."""


@attrs.frozen
class FailoverBench:
    kills: int = 5
    sigterm: bool = False
    nodes: int = 3
    rate: float = 200.0
    """Writes started per second."""
    val_size: int = 256
    settle: float = 1.0
    """Seconds of load on a healthy cluster before each kill."""
    timeout: float = 5.0
    """Deadline of one write, retries included."""
    recover_timeout: float = 30.0
    node_args: tuple[str, ...] = ()
    directory: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kills < 1:
            raise ValueError("--kills must be at least 1")
        if self.nodes < 3:
            raise ValueError("a failover needs at least 3 nodes (a quorum must survive)")
        if self.rate <= 0 or self.settle < 0 or self.timeout <= 0:
            raise ValueError("--rate and --timeout must be positive, --settle not negative")


@attrs.define
class _Writes:
    """Every write of the run: (started, ended) for successes, (ended, error) failures."""

    succeeded: list[tuple[float, float]] = attrs.field(factory=list)
    failed: list[tuple[float, str]] = attrs.field(factory=list)

    def first_success_started_after(self, moment: float) -> float | None:
        ends = [ended for started, ended in self.succeeded if started >= moment]
        return min(ends) if ends else None


async def bench_failover(
    options: FailoverBench, progress: Callable[[int], None] | None = None
) -> BenchResult:
    """Run the failover benchmark; ``progress(kills_done)`` after each kill."""
    loop = asyncio.get_running_loop()
    # LocalCluster blocks (process waits, status polls): it runs on one worker thread,
    # one call at a time, so its sockets are only ever used by that thread.
    executor = ThreadPoolExecutor(1, thread_name_prefix="pnyx-bench-cluster")

    def blocking(function: Callable[..., T], *args: Any) -> Awaitable[T]:
        return loop.run_in_executor(executor, function, *args)

    cluster = LocalCluster(
        options.nodes,
        directory=options.directory,
        extra_args=options.node_args,
        test_admin=False,
    )
    try:
        try:
            await blocking(cluster.start)
        except Exception as error:
            cluster.mark_failed()
            raise FailoverError(f"the local cluster did not start: {error}") from error
        try:
            return await _run(options, cluster, blocking, progress)
        except BaseException:
            cluster.mark_failed()
            raise
    finally:
        await blocking(cluster.close)
        executor.shutdown(wait=True)


async def _run(
    options: FailoverBench,
    cluster: LocalCluster,
    blocking: Callable[..., Awaitable[Any]],
    progress: Callable[[int], None] | None,
) -> BenchResult:
    clock = time.perf_counter
    writes = _Writes()
    value = os.urandom(options.val_size)
    stopping = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()
    rows: list[dict[str, Any]] = []
    most_in_flight = 0
    kill_times: list[float] = []
    signal_name = "SIGTERM" if options.sigterm else "SIGKILL"

    async with AsyncClient(cluster.endpoints, timeout=options.timeout) as client:

        async def write(number: int) -> None:
            started = clock()
            try:
                await client.put(KEY_PREFIX + b"%d" % (number % KEY_COUNT), value)
            except PnyxError as error:
                writes.failed.append((clock(), error_name(error)))
            else:
                writes.succeeded.append((started, clock()))

        async def writer() -> None:
            nonlocal most_in_flight
            limiter = RateLimiter(options.rate)
            number = 0
            while not stopping.is_set():
                delay = limiter.reserve(clock())
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(write(number))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                number += 1
                most_in_flight = max(most_in_flight, len(in_flight))

        async def wait_for_write_after(moment: float, what: str) -> float:
            deadline = clock() + options.recover_timeout
            while (ended := writes.first_success_started_after(moment)) is None:
                if clock() > deadline:
                    raise FailoverError(f"no write succeeded {what}")
                await asyncio.sleep(0.005)
            return ended

        cpu_before = time.process_time()
        started_at = time.time()
        run_start = clock()
        load = asyncio.create_task(writer())
        try:
            await wait_for_write_after(run_start, "on the fresh cluster")
            for kill in range(options.kills):
                await asyncio.sleep(options.settle)
                leader = await blocking(cluster.leader, options.recover_timeout)
                process = cluster.nodes[leader].process
                assert process is not None
                survivors = [name for name in cluster.running_names() if name != leader]
                killed_at = clock()
                kill_times.append(killed_at)
                os.kill(process.pid, signal.SIGTERM if options.sigterm else signal.SIGKILL)
                new_leader = await blocking(cluster.leader, options.recover_timeout, survivors)
                leader_at = clock()
                writes_at = await wait_for_write_after(killed_at, f"after {signal_name} {kill}")
                await blocking(process.wait, options.recover_timeout)
                await blocking(cluster.kill, leader)  # reaps and forgets its connection
                await blocking(cluster.restart, leader)
                await blocking(cluster.wait_caught_up, leader, options.recover_timeout)
                await blocking(cluster.wait_ready, options.recover_timeout)
                rows.append(
                    {
                        "kill": kill + 1,
                        "signal": signal_name,
                        "leader": leader,
                        "new_leader": new_leader,
                        "new_leader_ms": round((leader_at - killed_at) * 1000, 3),
                        "writes_recovered_ms": round((writes_at - killed_at) * 1000, 3),
                    }
                )
                if progress is not None:
                    progress(kill + 1)
        finally:
            stopping.set()
            await load
            await asyncio.gather(*in_flight, return_exceptions=True)
        elapsed = clock() - run_start
        cpu_seconds = time.process_time() - cpu_before
        endpoints = client.endpoints

    windows = [*kill_times, float("inf")]
    for index, row in enumerate(rows):
        row["failed_writes"] = sum(
            1 for ended, _ in writes.failed if windows[index] <= ended < windows[index + 1]
        )
    errors: dict[str, int] = {}
    for _, name in writes.failed:
        errors[name] = errors.get(name, 0) + 1
    write_latencies = [ended - started for started, ended in writes.succeeded]
    write_summary = summarize(write_latencies)
    return BenchResult(
        command="failover",
        started_at=started_at,
        endpoints=tuple(endpoints),
        config={
            "kills": options.kills,
            "signal": signal_name,
            "nodes": options.nodes,
            "rate": options.rate,
            "val_size": options.val_size,
            "settle_s": options.settle,
            "timeout_s": options.timeout,
            "node_args": " ".join(options.node_args),
        },
        elapsed=elapsed,
        series=(
            Series(
                "writes_recovered",
                f"from {signal_name} of the leader to the first successful write started after it",
                summarize(row["writes_recovered_ms"] / 1000 for row in rows),
            ),
            Series(
                "new_leader",
                f"from {signal_name} of the leader until the survivors agree on a new one",
                summarize(row["new_leader_ms"] / 1000 for row in rows),
            ),
            Series(
                "write",
                "every write of the steady load, outages included",
                write_summary,
                write_summary.count / elapsed if elapsed > 0 else None,
            ),
        ),
        client=ClientUsage(
            1, most_in_flight, cpu_seconds, len(writes.succeeded) + len(writes.failed)
        ),
        errors=errors,
        details={
            "kills": rows,
            "writes": {"succeeded": len(writes.succeeded), "failed": len(writes.failed)},
            "failed_before_first_kill": sum(
                1 for ended, _ in writes.failed if kill_times and ended < kill_times[0]
            ),
        },
    )
