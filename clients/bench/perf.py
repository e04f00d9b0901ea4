"""``pnyx check perf``: etcd's ``etcdctl check perf``, rule for rule, against pnyx.

A load (``s``, ``m``, ``l``, ``xl``) is a number of concurrent clients putting
256-byte keys (under ``--prefix``) with 1 KiB values, started at a fixed rate for the
duration (etcd: 60 s; ``--duration`` shortens it). The cluster passes when, as in etcd:

- no request failed;
- throughput is above 90% of the load's rate (150 / 1000 / 8000 / 15000 writes/s);
- the slowest request took at most 500 ms;
- the standard deviation of the latencies is at most 100 ms.

Like etcd, it refuses to run when the prefix already holds keys, and deletes the prefix
afterwards (``--auto-compact`` also compacts at that revision). ``evaluate`` holds the
rules as a pure function; this module drives clients through the public API only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import attrs

from pnyx.clients.bench.load import LoadPlan, Progress, run_load
from pnyx.clients.bench.report import BenchResult, Check
from pnyx.clients.bench.stats import Summary
from pnyx.clients.bench.workloads import connected, request_result

__all__ = [
    "ALIASES",
    "DEFAULT_PREFIX",
    "KEY_SIZE",
    "LOADS",
    "MAX_SLOWEST_MS",
    "MAX_STDDEV_MS",
    "MIN_THROUGHPUT_SHARE",
    "VALUE_SIZE",
    "PerfLoad",
    "PrefixNotEmptyError",
    "check_perf",
    "evaluate",
]


@attrs.frozen
class PerfLoad:
    name: str
    rate: int
    """Writes started per second (etcd's ``limit``)."""
    clients: int
    duration: float = 60.0


LOADS: Mapping[str, PerfLoad] = {
    "s": PerfLoad("s", 150, 50),
    "m": PerfLoad("m", 1000, 200),
    "l": PerfLoad("l", 8000, 500),
    "xl": PerfLoad("xl", 15000, 1000),
}
ALIASES: Mapping[str, str] = {
    "s": "s",
    "small": "s",
    "m": "m",
    "medium": "m",
    "l": "l",
    "large": "l",
    "xl": "xl",
    "xlarge": "xl",
}
DEFAULT_PREFIX = b"/pnyx-check-perf/"
KEY_SIZE = 256
VALUE_SIZE = 1024
MIN_THROUGHPUT_SHARE = 0.9
MAX_SLOWEST_MS = 500.0
MAX_STDDEV_MS = 100.0


class PrefixNotEmptyError(Exception):
    """The check's prefix already holds keys (they would be deleted afterwards)."""


def evaluate(
    summary: Summary, throughput: float, errors: Mapping[str, int], rate: float
) -> tuple[Check, ...]:
    """etcd's four rules (see the module docstring), as ``Check`` values."""
    failed = sum(errors.values())
    detail = ", ".join(f"{kind} x{count}" for kind, count in sorted(errors.items()))
    checks = [
        Check(
            "errors",
            failed == 0,
            float(failed),
            0.0,
            "no request failed" if failed == 0 else f"too many errors: {failed} ({detail})",
        )
    ]
    threshold = MIN_THROUGHPUT_SHARE * rate
    passed = throughput > threshold
    checks.append(
        Check(
            "throughput_writes_per_s",
            passed,
            throughput,
            threshold,
            f"Throughput is {throughput:.0f} writes/s"
            if passed
            else f"Throughput too low: {throughput:.0f} writes/s (needs > {threshold:.0f})",
        )
    )
    slowest = summary.max
    passed = slowest is not None and slowest <= MAX_SLOWEST_MS
    checks.append(
        Check(
            "slowest_ms",
            passed,
            slowest,
            MAX_SLOWEST_MS,
            "no request succeeded"
            if slowest is None
            else f"Slowest request took {slowest / 1000:.6f}s"
            if passed
            else f"Slowest request took too long: {slowest / 1000:.6f}s",
        )
    )
    stddev = summary.stddev
    passed = stddev is not None and stddev <= MAX_STDDEV_MS
    checks.append(
        Check(
            "stddev_ms",
            passed,
            stddev,
            MAX_STDDEV_MS,
            "no request succeeded"
            if stddev is None
            else f"Stddev is {stddev / 1000:.6f}s"
            if passed
            else f"Stddev too high: {stddev / 1000:.6f}s",
        )
    )
    return tuple(checks)


async def check_perf(
    load: PerfLoad,
    endpoints: str | Sequence[str] | None = None,
    *,
    duration: float | None = None,
    conns: int = 8,
    prefix: bytes = DEFAULT_PREFIX,
    auto_compact: bool = False,
    timeout: float = 5.0,
    progress: Progress | None = None,
) -> BenchResult:
    """Run one load and judge it (see the module docstring)."""
    seconds = load.duration if duration is None else duration
    value = bytes(VALUE_SIZE)
    rng = random.Random()
    conns = max(1, min(conns, load.clients))
    async with connected(endpoints, conns, timeout) as clients:
        existing = await clients[0].get(prefix, prefix=True, limit=1, keys_only=True)
        if existing.kvs:
            raise PrefixNotEmptyError(
                f"prefix {prefix.decode(errors='replace')!r} has keys; delete them first"
            )

        async def put(requester: int, number: int) -> None:
            key = prefix + b"%0*x" % (KEY_SIZE, rng.getrandbits(63))
            await clients[requester % len(clients)].put(key, value)

        plan = LoadPlan(load.clients, duration=seconds, rate=float(load.rate))
        outcome = await run_load(put, plan, progress=progress)
        deleted = await clients[0].delete(prefix, prefix=True, timeout=max(30.0, timeout))
        if auto_compact:
            await clients[0].compact(deleted.revision, timeout=max(30.0, timeout))
        endpoints_used = clients[0].endpoints
    base = request_result(
        "check-perf",
        outcome,
        endpoints=endpoints_used,
        config={
            "load": load.name,
            "rate": load.rate,
            "clients": load.clients,
            "conns": conns,
            "duration_s": seconds,
            "key_size": KEY_SIZE,
            "val_size": VALUE_SIZE,
            "prefix": prefix.decode(errors="replace"),
            "auto_compact": auto_compact,
            "timeout_s": timeout,
        },
        connections=conns,
        concurrency=load.clients,
        description=f"put of a {KEY_SIZE}-byte key and {VALUE_SIZE}-byte value",
        details={"deleted_keys": deleted.deleted},
    )
    series = base.series[0]
    checks = evaluate(series.summary, series.throughput or 0.0, base.errors, load.rate)
    return attrs.evolve(base, checks=checks, passed=all(check.passed for check in checks))
