"""``pnyx bench watch``: put-to-event latency.

``--watchers`` watches on one fresh prefix (spread over ``--conns`` clients) and one
more client that puts ``--puts`` keys under it at ``--put-rate`` per second. Each put
writes its own key (the put's number), so a watcher that receives the event computes the
latency from the moment just before that put was handed to the client, to the moment the
event reached the watcher's task: the whole path (client, forward, Raft, apply, watch hub,
delivery, client) is in it. Every event of every watcher is one sample (W x P samples);
an event that has not arrived ``--timeout`` seconds after the last put is counted as an
error (``MissingEvent``). The keys are deleted afterwards.

This module drives clients through the public ``pnyx.clients`` API only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Sequence

import attrs

from pnyx.clients import AsyncClient, AsyncWatch
from pnyx.clients.bench.load import LoadPlan, Progress, run_load
from pnyx.clients.bench.report import BenchResult, ClientUsage, Series
from pnyx.clients.bench.stats import Recorder, summarize
from pnyx.clients.bench.workloads import connected

__all__ = ["WatchBench", "bench_watch"]

PREFIX = b"/pnyx-bench-watch/"


@attrs.frozen
class WatchBench:
    endpoints: str | Sequence[str] | None = None
    watchers: int = 100
    puts: int = 1000
    put_rate: float = 100.0
    conns: int = 1
    val_size: int = 8
    timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        if self.watchers < 1 or self.puts < 1 or self.conns < 1:
            raise ValueError("--watchers, --puts and --conns must be at least 1")
        if self.put_rate <= 0:
            raise ValueError("--put-rate must be positive")


async def bench_watch(options: WatchBench, progress: Progress | None = None) -> BenchResult:
    prefix = PREFIX + uuid.uuid4().hex.encode() + b"/"
    value = os.urandom(options.val_size)
    sent_at: dict[int, float] = {}
    delivered = Recorder()
    received = [0] * options.watchers
    all_received = asyncio.Event()
    done_watchers = 0
    clock = time.perf_counter

    async def consume(index: int, watch: AsyncWatch) -> None:
        nonlocal done_watchers
        async for batch in watch:
            now = clock()
            for event in batch.events:
                number = int(event.kv.key[len(prefix) :])
                delivered.record(now - sent_at[number])
                received[index] += 1
            if received[index] >= options.puts:
                done_watchers += 1
                if done_watchers == options.watchers:
                    all_received.set()
                return

    async with (
        connected(options.endpoints, options.conns, options.timeout) as clients,
        AsyncClient(clients[0].endpoints, timeout=options.timeout) as writer,
    ):
        await writer.get(prefix, serializable=True)
        watches = [
            await clients[index % len(clients)].watch(prefix, prefix=True)
            for index in range(options.watchers)
        ]
        consumers = [
            asyncio.create_task(consume(index, watch)) for index, watch in enumerate(watches)
        ]

        async def put(_requester: int, number: int) -> None:
            # Recorded before the call: the event may well arrive before the reply.
            sent_at[number] = clock()
            await writer.put(prefix + b"%d" % number, value)

        cpu_before = time.process_time()
        phase_start = clock()
        puts = await run_load(
            put, LoadPlan(1, total=options.puts, rate=options.put_rate), progress=progress
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), options.timeout)
        elapsed = clock() - phase_start
        cpu_seconds = time.process_time() - cpu_before
        for task in consumers:
            task.cancel()
        for watch in watches:
            await watch.aclose()
        await asyncio.gather(*consumers, return_exceptions=True)
        endpoints = clients[0].endpoints
        with contextlib.suppress(Exception):
            await writer.delete(prefix, prefix=True)
    expected = options.watchers * puts.recorder.succeeded
    missing = max(0, expected - delivered.succeeded)
    errors = dict(puts.recorder.errors)
    if missing:
        errors["MissingEvent"] = missing
    put_summary = summarize(puts.recorder.latencies)
    return BenchResult(
        command="watch",
        started_at=puts.started_at,
        endpoints=tuple(endpoints),
        config={
            "watchers": options.watchers,
            "puts": options.puts,
            "put_rate": options.put_rate,
            "conns": options.conns,
            "val_size": options.val_size,
            "timeout_s": options.timeout,
        },
        elapsed=elapsed,
        series=(
            Series(
                "put_to_event",
                "from handing a put to the client to each watcher receiving its event",
                summarize(delivered.latencies),
                None,
            ),
            Series(
                "put",
                "put round trip of the writer",
                put_summary,
                put_summary.count / puts.elapsed if puts.elapsed > 0 else None,
            ),
        ),
        client=ClientUsage(options.conns + 1, options.watchers, cpu_seconds, delivered.succeeded),
        errors=errors,
        details={"events_expected": expected, "events_delivered": delivered.succeeded},
    )
