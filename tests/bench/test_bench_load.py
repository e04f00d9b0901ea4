"""Units of the load loop, the rate limiter, key spaces, options and check perf's rules
(no cluster: operations are fakes)."""

from __future__ import annotations

import asyncio
import random

import pytest

from pnyx.clients.bench.failover import FailoverBench, _Writes
from pnyx.clients.bench.load import LoadPlan, RateLimiter, run_load
from pnyx.clients.bench.perf import ALIASES, LOADS, evaluate
from pnyx.clients.bench.recipe_loads import (
    ElectBench,
    LockBench,
    RecipeMissingError,
    bench_elect,
)
from pnyx.clients.bench.stats import summarize
from pnyx.clients.bench.watch import WatchBench
from pnyx.clients.bench.workloads import KeySpace, RequestBench
from pnyx.core.errors import NoLeaderError, TimeoutError

# ----------------------------------------------------------------- run_load


def test_every_operation_number_is_claimed_once_and_concurrency_is_bounded() -> None:
    seen: list[tuple[int, int]] = []
    running = 0
    most = 0

    async def operation(requester: int, number: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        seen.append((requester, number))
        running -= 1

    outcome = asyncio.run(run_load(operation, LoadPlan(concurrency=7, total=100)))
    assert sorted(number for _, number in seen) == list(range(100))
    assert {requester for requester, _ in seen} == set(range(7))
    assert most == 7
    assert outcome.claimed == 100
    assert outcome.recorder.succeeded == 100
    assert outcome.recorder.failed == 0
    assert outcome.cpu_seconds >= 0 and outcome.elapsed > 0


def test_pnyx_errors_are_counted_by_type_and_not_timed() -> None:
    async def operation(_requester: int, number: int) -> None:
        if number % 3 == 0:
            raise TimeoutError("slow")
        if number % 3 == 1:
            raise NoLeaderError("none")

    outcome = asyncio.run(run_load(operation, LoadPlan(concurrency=2, total=30)))
    assert dict(outcome.recorder.errors) == {"TimeoutError": 10, "NoLeaderError": 10}
    assert outcome.recorder.succeeded == 10
    assert summarize(outcome.recorder.latencies).count == 10


def test_a_bug_in_an_operation_propagates() -> None:
    async def operation(_requester: int, _number: int) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        asyncio.run(run_load(operation, LoadPlan(concurrency=3, total=5)))


def test_progress_is_reported_at_the_end() -> None:
    reports: list[int] = []

    async def operation(_requester: int, _number: int) -> None:
        await asyncio.sleep(0)

    asyncio.run(
        run_load(
            operation,
            LoadPlan(concurrency=2, total=20),
            progress=lambda completed, _elapsed: reports.append(completed),
        )
    )
    assert reports[-1] == 20
    assert reports == sorted(reports)


def test_a_zero_total_runs_nothing() -> None:
    async def operation(_requester: int, _number: int) -> None:
        raise AssertionError("must not run")

    outcome = asyncio.run(run_load(operation, LoadPlan(concurrency=4, total=0)))
    assert outcome.claimed == 0


def test_a_rate_limited_total_run_makes_exactly_total_operations() -> None:
    numbers: list[int] = []

    async def operation(_requester: int, number: int) -> None:
        numbers.append(number)

    # A high rate keeps the test quick; what matters is that sleeping requesters that
    # wake after the total was reached do not start extra operations.
    plan = LoadPlan(concurrency=10, total=25, rate=5000.0)
    outcome = asyncio.run(run_load(operation, plan))
    assert sorted(numbers) == list(range(25))
    assert outcome.claimed == 25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0, "total": 1},
        {"concurrency": 1},
        {"concurrency": 1, "total": -1},
        {"concurrency": 1, "duration": 0.0},
        {"concurrency": 1, "total": 1, "rate": 0.0},
    ],
)
def test_bad_plans_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------- rate limiter


def test_rate_limiter_spaces_slots() -> None:
    limiter = RateLimiter(100.0, burst=1)
    delays = [limiter.reserve(10.0) for _ in range(4)]
    assert delays == pytest.approx([0.0, 0.01, 0.02, 0.03])


def test_rate_limiter_allows_a_small_burst_and_banks_no_more() -> None:
    limiter = RateLimiter(1000.0, burst=5)
    assert [limiter.reserve(0.0) for _ in range(5)] == [0.0] * 5
    assert limiter.reserve(0.0) == pytest.approx(0.001)
    # After a long idle time, still at most `burst` slots at once.
    later = [limiter.reserve(100.0) for _ in range(6)]
    assert later[:5] == pytest.approx([0.0] * 5, abs=1e-9)
    assert later[5] == pytest.approx(0.001)


def test_rate_limiter_default_burst_covers_timer_granularity() -> None:
    assert RateLimiter(15000.0).burst == pytest.approx(75.0)
    assert RateLimiter(10.0).burst == 1.0
    with pytest.raises(ValueError):
        RateLimiter(0.0)


# ----------------------------------------------------------------- keys and options


def test_key_space_sequential_and_random() -> None:
    keys = KeySpace(size=6, count=100, sequential=True)
    assert [keys.key(number, random.Random(0)) for number in (0, 1, 100, 199)] == [
        b"000000",
        b"000001",
        b"000000",
        b"000099",
    ]
    rng = random.Random(1)
    sampled = {KeySpace(size=3, count=10).key(0, rng) for _ in range(200)}
    assert sampled == {b"%03d" % index for index in range(10)}
    assert KeySpace(size=8).key(5, rng) == b"00000000"  # one key, etcd's default


def test_key_space_must_fit_the_key_size() -> None:
    with pytest.raises(ValueError, match="too small"):
        KeySpace(size=2, count=1000)
    KeySpace(size=3, count=1000)
    with pytest.raises(ValueError):
        KeySpace(size=3, count=0)


def test_request_options_are_validated_before_connecting() -> None:
    with pytest.raises(ValueError):
        RequestBench(key_size=2, key_space=1000)
    with pytest.raises(ValueError):
        RequestBench(total=None, duration=None)
    with pytest.raises(ValueError):
        RequestBench(conns=0)
    assert RequestBench(total=None, duration=2.0).plan().duration == 2.0
    with pytest.raises(ValueError):
        WatchBench(watchers=0)
    with pytest.raises(ValueError):
        FailoverBench(nodes=1)


def test_failover_recovery_counts_only_writes_started_after_the_kill() -> None:
    writes = _Writes(succeeded=[(1.0, 5.2), (4.9, 5.1), (5.0, 5.6), (5.3, 5.4)])
    assert writes.first_success_started_after(5.0) == 5.4
    assert writes.first_success_started_after(6.0) is None


# ----------------------------------------------------------------- check perf rules


def _summary(max_ms: float, spread_ms: float = 0.0) -> object:
    return summarize([0.001, (1 + spread_ms) / 1000, max_ms / 1000])


def test_check_perf_loads_are_etcds() -> None:
    assert {name: (load.rate, load.clients) for name, load in LOADS.items()} == {
        "s": (150, 50),
        "m": (1000, 200),
        "l": (8000, 500),
        "xl": (15000, 1000),
    }
    assert all(load.duration == 60.0 for load in LOADS.values())
    assert ALIASES["xlarge"] == "xl" and ALIASES["medium"] == "m"


def test_check_perf_passes_a_good_run() -> None:
    checks = evaluate(summarize([0.002] * 100), 980.0, {}, 1000)
    assert [check.name for check in checks] == [
        "errors",
        "throughput_writes_per_s",
        "slowest_ms",
        "stddev_ms",
    ]
    assert all(check.passed for check in checks)
    assert checks[1].message == "Throughput is 980 writes/s"


def test_check_perf_rules_and_their_boundaries() -> None:
    good = summarize([0.002] * 10)

    def verdicts(summary: object, throughput: float, errors: dict[str, int]) -> list[bool]:
        return [check.passed for check in evaluate(summary, throughput, errors, 1000)]  # type: ignore[arg-type]

    assert verdicts(good, 900.0, {}) == [True, False, True, True]  # needs MORE than 90%
    assert verdicts(good, 900.5, {}) == [True, True, True, True]
    assert verdicts(good, 1000.0, {"TimeoutError": 1}) == [False, True, True, True]
    exactly_500 = summarize([0.5] * 3)
    assert verdicts(exactly_500, 1000.0, {}) == [True, True, True, True]
    assert verdicts(summarize([0.0005, 0.501]), 1000.0, {}) == [True, True, False, False]
    spread = summarize([0.001] * 5 + [0.3] * 5)  # stddev about 150 ms, max 300 ms
    assert verdicts(spread, 1000.0, {}) == [True, True, True, False]


def test_check_perf_without_successes_fails_every_latency_rule() -> None:
    checks = evaluate(summarize([]), 0.0, {"NoEndpointError": 50}, 150)
    assert [check.passed for check in checks] == [False, False, False, False]
    assert checks[2].message == "no request succeeded"
    assert "NoEndpointError x50" in checks[0].message


# ----------------------------------------------------------------- recipe benchmarks


def test_recipe_benchmarks_validate_options() -> None:
    with pytest.raises(ValueError):
        LockBench(workers=0)
    with pytest.raises(ValueError):
        LockBench(hold=-1.0)
    with pytest.raises(ValueError):
        ElectBench(candidates=1)
    with pytest.raises(ValueError):
        ElectBench(rounds=0)


def test_a_missing_recipe_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pnyx.recipes  # noqa: PLC0415

    monkeypatch.delattr(pnyx.recipes, "Election")
    with pytest.raises(RecipeMissingError, match=r"pnyx\.recipes\.Election"):
        asyncio.run(bench_elect(ElectBench(endpoints="tcp://127.0.0.1:1")))
