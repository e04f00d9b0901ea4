"""Units of pnyx.clients.bench.stats: percentiles, histogram, summary, recorder."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pnyx.clients.bench.stats import (
    HISTOGRAM_BOUNDS_MS,
    Bucket,
    Recorder,
    error_name,
    histogram,
    percentile,
    summarize,
)
from pnyx.core.errors import NoLeaderError, TimeoutError

samples = st.lists(
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1, max_size=300
)


@given(samples, st.floats(min_value=0.0, max_value=100.0))
def test_percentile_is_the_nearest_rank(values: list[float], percent: float) -> None:
    ordered = sorted(values)
    result = percentile(ordered, percent)
    assert result in ordered
    at_or_below = sum(1 for value in ordered if value <= result)
    # At least percent% of the samples are at or below it...
    assert at_or_below >= percent / 100 * len(ordered) - 1e-9
    # ...and no smaller sample would do.
    smaller = [value for value in ordered if value < result]
    if smaller:
        assert len(smaller) < percent / 100 * len(ordered)


def test_percentile_small_cases() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([7.0], 99.9) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_histogram_bounds_are_inclusive_and_counts_add_up() -> None:
    values = sorted([0.05, 0.1, 0.1000001, 0.2, 1.0, 1.5, 10000.0, 10000.5, 99999.0])
    buckets = histogram(values)
    assert [bucket.le for bucket in buckets] == [*HISTOGRAM_BOUNDS_MS, None]
    by_bound = {bucket.le: bucket.count for bucket in buckets}
    assert by_bound[0.1] == 2  # 0.05 and exactly 0.1
    assert by_bound[0.2] == 2  # just above 0.1, and exactly 0.2
    assert by_bound[1.0] == 1
    assert by_bound[2.0] == 1
    assert by_bound[10000.0] == 1
    assert by_bound[None] == 2
    assert sum(bucket.count for bucket in buckets) == len(values)


@given(samples)
def test_histogram_counts_add_up(values: list[float]) -> None:
    buckets = histogram(sorted(values))
    assert sum(bucket.count for bucket in buckets) == len(values)
    assert all(bucket.count >= 0 for bucket in buckets)


def test_histogram_custom_bounds() -> None:
    assert histogram([1.0, 2.0, 3.0], bounds=(2.0,)) == (Bucket(2.0, 2), Bucket(None, 1))


@given(samples)
def test_summary_matches_the_statistics_module(values_ms: list[float]) -> None:
    summary = summarize(value / 1000 for value in values_ms)
    assert summary.count == len(values_ms)
    assert summary.min == pytest.approx(min(values_ms))
    assert summary.max == pytest.approx(max(values_ms))
    assert summary.mean == pytest.approx(statistics.fmean(values_ms), abs=1e-9)
    assert summary.stddev == pytest.approx(statistics.pstdev(values_ms), abs=1e-6)
    assert summary.min is not None and summary.p50 is not None and summary.p90 is not None
    assert summary.p99 is not None and summary.p999 is not None and summary.max is not None
    assert summary.min <= summary.p50 <= summary.p90 <= summary.p99 <= summary.p999
    assert summary.p999 <= summary.max


def test_summary_is_in_milliseconds() -> None:
    summary = summarize([0.001, 0.002, 0.003])
    assert summary.p50 == pytest.approx(2.0)
    assert summary.mean == pytest.approx(2.0)
    assert summary.stddev == pytest.approx(math.sqrt(2 / 3))
    assert {bucket.le: bucket.count for bucket in summary.histogram}[2.0] == 1


def test_empty_summary_has_no_made_up_numbers() -> None:
    summary = summarize([])
    assert summary.count == 0
    for field in ("min", "mean", "stddev", "p50", "p90", "p99", "p999", "max"):
        assert getattr(summary, field) is None
    assert sum(bucket.count for bucket in summary.histogram) == 0


def test_recorder_counts_and_merges() -> None:
    first = Recorder()
    first.record(0.001)
    first.fail(TimeoutError("slow"))
    second = Recorder()
    second.record(0.002)
    second.fail(NoLeaderError("none"))
    second.fail(TimeoutError("slow"))
    first.merge(second)
    assert first.succeeded == 2
    assert first.failed == 3
    assert first.completed == 5
    assert dict(first.errors) == {"TimeoutError": 2, "NoLeaderError": 1}
    assert error_name(ValueError()) == "ValueError"
