"""The request benchmarks: ``bench put``, ``bench get`` and ``bench txn-cas``, and what
they share (connections, keys, turning a load outcome into a ``BenchResult``).

Shape of every run, as etcd's ``benchmark``: ``concurrency`` requesters (``--clients``)
share ``connections`` ``AsyncClient`` instances (``--conns``; requester i uses client
i mod N) in one event loop, so the many calls in flight on one client leave in one
ZeroMQ message per loop turn of its I/O thread. Each client is warmed up (one read) before
the clock starts, so connection set-up is not counted.

Keys are ``--key-size`` bytes: the key's number in ``[0, --key-space)``, zero-padded
decimal (``--key-space 1``, etcd's default, writes one key over and over). Numbers are
random, or with ``--sequential-keys`` the operation number modulo the key space. Values
are ``--val-size`` random bytes, the same for every request. ``bench put`` leaves its
keys behind, as etcd's does.

This module drives clients through the public ``pnyx.clients`` API only.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence

import attrs

from pnyx.clients import AsyncClient
from pnyx.clients.bench.load import LoadOutcome, LoadPlan, Progress, run_load
from pnyx.clients.bench.report import BenchResult, ClientUsage, Scalar, Series
from pnyx.clients.bench.stats import summarize
from pnyx.clients.results import GetResult

__all__ = [
    "KeySpace",
    "RequestBench",
    "bench_get",
    "bench_put",
    "bench_txn_cas",
    "connected",
    "request_result",
]


@attrs.frozen
class KeySpace:
    """Which key an operation touches (see the module docstring)."""

    size: int
    count: int = 1
    sequential: bool = False

    def __attrs_post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("the key space needs at least one key")
        digits = len(str(self.count - 1))
        if self.size < digits:
            raise ValueError(
                f"key size {self.size} is too small for {self.count} distinct keys "
                f"(needs {digits} bytes)"
            )

    def key(self, number: int, rng: random.Random) -> bytes:
        index = number % self.count if self.sequential else rng.randrange(self.count)
        return self.nth(index)

    def nth(self, index: int) -> bytes:
        return b"%0*d" % (self.size, index)


@attrs.frozen
class RequestBench:
    """Options shared by the request benchmarks."""

    endpoints: str | Sequence[str] | None = None
    clients: int = 1
    """Concurrent requesters."""
    conns: int = 1
    """Client connections (``AsyncClient`` instances) they share."""
    total: int | None = 10_000
    duration: float | None = None
    rate: float | None = None
    key_size: int = 8
    val_size: int = 8
    key_space: int = 1
    sequential_keys: bool = False
    timeout: float = 5.0
    """Deadline of one request, retries included."""

    def __attrs_post_init__(self) -> None:
        if self.conns < 1 or self.clients < 1:
            raise ValueError("--clients and --conns must be at least 1")
        if self.val_size < 0:
            raise ValueError("--val-size must not be negative")
        if self.key_size < 1:
            raise ValueError("--key-size must be at least 1")
        self.keys()  # validates the key space
        self.plan()  # validates total / duration / rate

    def keys(self) -> KeySpace:
        return KeySpace(self.key_size, self.key_space, self.sequential_keys)

    def plan(self) -> LoadPlan:
        return LoadPlan(self.clients, self.total, self.duration, self.rate)

    def config(self) -> dict[str, Scalar]:
        return {
            "clients": self.clients,
            "conns": self.conns,
            "total": self.total,
            "duration_s": self.duration,
            "rate": self.rate,
            "key_size": self.key_size,
            "val_size": self.val_size,
            "key_space": self.key_space,
            "sequential_keys": self.sequential_keys,
            "timeout_s": self.timeout,
        }


@contextlib.asynccontextmanager
async def connected(
    endpoints: str | Sequence[str] | None, count: int, timeout: float, warm_key: bytes = b"\0"
) -> AsyncIterator[list[AsyncClient]]:
    """``count`` clients, each warmed up by one serializable read, closed on exit."""
    clients: list[AsyncClient] = []
    try:
        for _ in range(count):
            clients.append(AsyncClient(endpoints, timeout=timeout))
        for client in clients:
            await client.get(warm_key, serializable=True)
        yield clients
    finally:
        for client in clients:
            await client.close()


def request_result(
    command: str,
    outcome: LoadOutcome,
    *,
    endpoints: Sequence[str],
    config: Mapping[str, Scalar],
    connections: int,
    concurrency: int,
    description: str,
    details: Mapping[str, object] | None = None,
) -> BenchResult:
    """The ``BenchResult`` of a request load: one series named ``request``."""
    summary = summarize(outcome.recorder.latencies)
    throughput = summary.count / outcome.elapsed if outcome.elapsed > 0 else None
    return BenchResult(
        command=command,
        started_at=outcome.started_at,
        endpoints=tuple(endpoints),
        config=dict(config),
        elapsed=outcome.elapsed,
        series=(Series("request", description, summary, throughput),),
        client=ClientUsage(
            connections, concurrency, outcome.cpu_seconds, outcome.recorder.completed
        ),
        errors=dict(outcome.recorder.errors),
        details=dict(details or {}),
    )


async def bench_put(options: RequestBench, progress: Progress | None = None) -> BenchResult:
    """Puts of ``val_size`` bytes: the write path (forward, Raft, fsync, apply, reply)."""
    keys = options.keys()
    value = os.urandom(options.val_size)
    rng = random.Random()
    async with connected(options.endpoints, options.conns, options.timeout) as clients:

        async def put(requester: int, number: int) -> None:
            await clients[requester % len(clients)].put(keys.key(number, rng), value)

        outcome = await run_load(put, options.plan(), progress=progress)
        endpoints = clients[0].endpoints
    return request_result(
        "put",
        outcome,
        endpoints=endpoints,
        config=options.config(),
        connections=options.conns,
        concurrency=options.clients,
        description="put round trip (acknowledged after quorum fsync and apply)",
    )


async def _populate(
    clients: Sequence[AsyncClient], keys: KeySpace, value: bytes, timeout: float
) -> None:
    """Write every key of the key space once (not measured)."""

    async def put(requester: int, number: int) -> None:
        await clients[requester % len(clients)].put(keys.nth(number), value, timeout=timeout)

    outcome = await run_load(put, LoadPlan(min(64, keys.count), total=keys.count))
    if outcome.recorder.failed:
        raise RuntimeError(
            f"could not write the key space: {dict(outcome.recorder.errors)} "
            f"of {keys.count} puts failed"
        )


async def bench_get(
    options: RequestBench, consistency: str = "l", progress: Progress | None = None
) -> BenchResult:
    """Reads of one key each: linearizable (``l``: ReadIndex round through the leader) or
    serializable (``s``: the answering member's own state). The key space is written
    first (not measured)."""
    if consistency not in ("l", "s"):
        raise ValueError("consistency is l (linearizable) or s (serializable)")
    keys = options.keys()
    value = os.urandom(options.val_size)
    rng = random.Random()
    serializable = consistency == "s"
    async with connected(options.endpoints, options.conns, options.timeout) as clients:
        await _populate(clients, keys, value, options.timeout)

        async def get(requester: int, number: int) -> None:
            await clients[requester % len(clients)].get(
                keys.key(number, rng), serializable=serializable
            )

        outcome = await run_load(get, options.plan(), progress=progress)
        endpoints = clients[0].endpoints
    kind = "serializable" if serializable else "linearizable"
    return request_result(
        "get",
        outcome,
        endpoints=endpoints,
        config={**options.config(), "consistency": consistency},
        connections=options.conns,
        concurrency=options.clients,
        description=f"{kind} get of one key",
        details={"prepopulated_keys": keys.count},
    )


async def bench_txn_cas(options: RequestBench, progress: Progress | None = None) -> BenchResult:
    """Compare-and-swap transactions: ``if version(key) == v then put(key) else get(key)``,
    with ``v`` the version this process last saw for the key. With fewer keys than
    requesters they contend: a lost race is a conflict (the failure branch ran), which is
    a successful request, counted in ``details``, not an error."""
    keys = options.keys()
    value = os.urandom(options.val_size)
    rng = random.Random()
    known_versions: dict[bytes, int] = {}
    outcomes = {"swapped": 0, "conflicts": 0}
    async with connected(options.endpoints, options.conns, options.timeout) as clients:

        async def cas(requester: int, number: int) -> None:
            client = clients[requester % len(clients)]
            key = keys.key(number, rng)
            expected = known_versions.get(key, 0)
            result = await client.txn(
                compare=[client.cmp.version(key) == expected],
                success=[client.op.put(key, value)],
                failure=[client.op.get(key)],
            )
            if result.succeeded:
                outcomes["swapped"] += 1
                known_versions[key] = max(known_versions.get(key, 0), expected + 1)
                return
            outcomes["conflicts"] += 1
            current = result.responses[0] if result.responses else None
            if isinstance(current, GetResult):
                known_versions[key] = current.kvs[0].version if current.kvs else 0

        outcome = await run_load(cas, options.plan(), progress=progress)
        endpoints = clients[0].endpoints
    return request_result(
        "txn-cas",
        outcome,
        endpoints=endpoints,
        config=options.config(),
        connections=options.conns,
        concurrency=options.clients,
        description="compare-and-swap transaction (version compare, put or get)",
        details={"cas_swapped": outcomes["swapped"], "cas_conflicts": outcomes["conflicts"]},
    )
