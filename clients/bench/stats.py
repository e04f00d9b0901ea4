"""Latency statistics of ``pnyx bench``: what a run records and how it is summarised.

- ``Recorder`` collects one run's samples: latencies in seconds (successes only, as
  etcd's ``benchmark`` does) and failures counted by error type.
- ``summarize`` turns samples into a ``Summary``: count, min, mean, population standard
  deviation, nearest-rank percentiles (p50/p90/p99/p99.9), max, all in milliseconds, and
  a ``histogram`` over FIXED bucket bounds (``HISTOGRAM_BOUNDS_MS``), so that the
  histograms of two runs, or of two machines, line up bucket by bucket.

Plain computation only: this module must never do I/O, read a clock or import anything
of pnyx (the load generators time requests and hand the numbers in).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence

import attrs

__all__ = [
    "HISTOGRAM_BOUNDS_MS",
    "PERCENTILES",
    "Bucket",
    "Recorder",
    "Summary",
    "error_name",
    "histogram",
    "percentile",
    "summarize",
]

HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1000.0,
    2000.0,
    5000.0,
    10000.0,
)
"""Upper bounds (inclusive) of the histogram buckets, in ms; one more bucket (``le`` None)
takes everything above the last bound. A 1-2-5 series: two buckets per factor of ~3, so
a sub-millisecond read and a multi-second failover both land in a readable bucket."""

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)
"""The percentiles a summary reports: (field name, percent)."""


def error_name(error: BaseException) -> str:
    """The key under which a failure is counted: the exception's class name (the pnyx
    error tree has one class per cause, e.g. ``TimeoutError``, ``NoLeaderError``)."""
    return type(error).__name__


@attrs.define
class Recorder:
    """The samples of one run (or of one series of a run, e.g. "acquire" vs "handoff")."""

    latencies: array[float] = attrs.field(factory=lambda: array("d"))
    """Seconds, one per successful operation, in completion order."""
    errors: Counter[str] = attrs.field(factory=Counter)
    """Failed operations by ``error_name``."""

    def record(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def fail(self, error: BaseException) -> None:
        self.errors[error_name(error)] += 1

    @property
    def succeeded(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def completed(self) -> int:
        """Operations that ended, either way."""
        return self.succeeded + self.failed

    def merge(self, other: Recorder) -> None:
        """Add ``other``'s samples to this one (e.g. per-task recorders into one)."""
        self.latencies.extend(other.latencies)
        self.errors.update(other.errors)


@attrs.frozen
class Bucket:
    """One histogram bucket: samples in (previous bound, ``le``]; ``le`` None = above the
    last bound."""

    le: float | None
    count: int


@attrs.frozen
class Summary:
    """A latency distribution in milliseconds. Every statistic is None when ``count`` is
    0 (nothing succeeded), never a made-up zero."""

    count: int
    min: float | None
    mean: float | None
    stddev: float | None
    """Population standard deviation (what etcd's ``check perf`` tests)."""
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None
    histogram: tuple[Bucket, ...]


def percentile(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty sequence: the smallest
    sample with at least ``percent``% of the samples at or below it. Always a value that
    was observed (no interpolation between two requests)."""
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent must be within [0, 100], got {percent}")
    rank = math.ceil(percent / 100.0 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def histogram(
    ordered: Sequence[float], bounds: Sequence[float] = HISTOGRAM_BOUNDS_MS
) -> tuple[Bucket, ...]:
    """Counts of an ascending sequence per bucket of ``bounds`` (inclusive upper bounds,
    ascending), plus the overflow bucket. The counts add up to ``len(ordered)``."""
    buckets: list[Bucket] = []
    below = 0
    for bound in bounds:
        at_or_below = bisect_right(ordered, bound)
        buckets.append(Bucket(bound, at_or_below - below))
        below = at_or_below
    buckets.append(Bucket(None, len(ordered) - below))
    return tuple(buckets)


def summarize(latencies_seconds: Iterable[float]) -> Summary:
    """Summarise latencies given in seconds; the summary is in milliseconds."""
    ordered = sorted(value * 1000.0 for value in latencies_seconds)
    count = len(ordered)
    if count == 0:
        return Summary(0, None, None, None, None, None, None, None, None, histogram(ordered))
    mean = math.fsum(ordered) / count
    # Two passes over the data: exact enough, and statistics.pstdev (exact fractions) is
    # far too slow for a million samples.
    variance = math.fsum((value - mean) ** 2 for value in ordered) / count
    p50, p90, p99, p999 = (percentile(ordered, percent) for _, percent in PERCENTILES)
    return Summary(
        count=count,
        min=ordered[0],
        mean=mean,
        stddev=math.sqrt(variance),
        p50=p50,
        p90=p90,
        p99=p99,
        p999=p999,
        max=ordered[-1],
        histogram=histogram(ordered),
    )
