"""The result of a ``pnyx bench`` / ``pnyx check perf`` run, and its two renderings: the
human summary (text) and the stable JSON document of ``-w json``.

JSON schema ``pnyx.bench/1`` (documented in docs/performance.md; fields are only ever
added within a schema version, never renamed, retyped or removed)::

    {
      "schema": "pnyx.bench/1",
      "command": "put" | "get" | "txn-cas" | "watch" | "lock" | "elect" | "failover"
                 | "check-perf",
      "started_at": "2026-01-31T12:00:00.000Z",      # UTC, when the measured phase began
      "endpoints": ["tcp://127.0.0.1:7101", ...],
      "config": {"<option>": value, ...},            # the run's options (scalars)
      "elapsed_s": 2.5,                              # wall time of the measured phase
      "client": null | {                             # the load generator's own cost
        "connections": 4, "concurrency": 100,
        "cpu_s": 1.9,                                # process CPU time, all threads
        "cpu_cores": 0.76,                           # cpu_s / elapsed_s
        "cpu_per_op_us": 190.0 | null                # cpu_s per completed operation
      },
      "series": {                                    # one or more latency series
        "<name>": {
          "description": "...", "unit": "ms",
          "count": 10000,                            # successful samples
          "throughput_per_s": 4000.0 | null,         # null where a rate means nothing
          "min", "mean", "stddev", "p50", "p90", "p99", "p999", "max": float | null,
          "histogram": [{"le_ms": 0.1, "count": 0}, ..., {"le_ms": null, "count": 0}]
        }
      },
      "errors": {"<ErrorClass>": count, ...},        # failed operations by type
      "details": {...},                              # command-specific, see the docs
      "checks": [{"name", "passed", "value", "limit", "message"}, ...],   # check perf
      "passed": true | false | null,                 # null: the command has no verdict
      "machine": null | {"cpus": 2, "memory_bytes": 25769803776, "platform": "Linux-...",
                         "python": "3.11.7", "load_average_1m": 1.3 | null}
    }

Every statistic is null, not 0, when nothing was measured. Histogram bounds are fixed
(``stats.HISTOGRAM_BOUNDS_MS``) so documents from different runs compare bucket by bucket.

Plain data and formatting only: this module must never do I/O or talk to a cluster.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pnyx.clients.bench.stats import HISTOGRAM_BOUNDS_MS, PERCENTILES, Summary

__all__ = [
    "COMMANDS",
    "SCHEMA",
    "BenchResult",
    "Check",
    "ClientUsage",
    "Series",
    "render_text",
    "to_json",
    "validate_json",
]

SCHEMA = "pnyx.bench/1"
COMMANDS = ("put", "get", "txn-cas", "watch", "lock", "elect", "failover", "check-perf")
_STATISTICS = ("min", "mean", "stddev", "p50", "p90", "p99", "p999", "max")

Scalar = str | int | float | bool | None


@attrs.frozen
class Series:
    """One named latency distribution of a run."""

    name: str
    description: str
    summary: Summary
    throughput: float | None = None
    """Successful operations per second of the measured phase; None where a rate is
    meaningless (e.g. failover recovery times)."""


@attrs.frozen
class ClientUsage:
    """What the load generator itself cost: on a 2-core machine shared with the nodes,
    every core-second the client burns is one the cluster did not get."""

    connections: int
    concurrency: int
    cpu_seconds: float
    operations: int
    """Operations the CPU time is divided by (completed requests, delivered events...)."""


@attrs.frozen
class Check:
    """One pass/fail rule of ``check perf``."""

    name: str
    passed: bool
    value: float | None
    limit: float
    message: str


@attrs.frozen
class Machine:
    """The machine a run measured from (the load generator's; with ``pnyx up`` or
    ``make run`` the nodes share it)."""

    cpus: int | None
    memory_bytes: int | None
    platform: str
    python: str
    load_average_1m: float | None
    """How busy the machine already was when the run started."""


@attrs.frozen
class BenchResult:
    command: str
    started_at: float
    """Seconds since the epoch (UTC) when the measured phase began."""
    endpoints: tuple[str, ...]
    config: Mapping[str, Scalar]
    elapsed: float
    series: tuple[Series, ...]
    client: ClientUsage | None = None
    errors: Mapping[str, int] = attrs.field(factory=dict)
    details: Mapping[str, Any] = attrs.field(factory=dict)
    checks: tuple[Check, ...] = ()
    passed: bool | None = None
    machine: Machine | None = None


# --------------------------------------------------------------------------- JSON


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _number(value: float | None) -> float | None:
    # JSON has no NaN or infinity; a statistic that is not a finite number is "unknown".
    if value is None or not math.isfinite(value):
        return None
    return round(value, 6)


def _series_json(series: Series) -> dict[str, Any]:
    summary = series.summary
    document: dict[str, Any] = {
        "description": series.description,
        "unit": "ms",
        "count": summary.count,
        "throughput_per_s": _number(series.throughput),
    }
    for name in _STATISTICS:
        document[name] = _number(getattr(summary, name))
    document["histogram"] = [
        {"le_ms": bucket.le, "count": bucket.count} for bucket in summary.histogram
    ]
    return document


def _client_json(client: ClientUsage | None, elapsed: float) -> dict[str, Any] | None:
    if client is None:
        return None
    return {
        "connections": client.connections,
        "concurrency": client.concurrency,
        "cpu_s": _number(client.cpu_seconds),
        "cpu_cores": _number(client.cpu_seconds / elapsed) if elapsed > 0 else None,
        "cpu_per_op_us": (
            _number(client.cpu_seconds / client.operations * 1e6) if client.operations else None
        ),
    }


def to_json(result: BenchResult) -> dict[str, Any]:
    """The ``pnyx.bench/1`` document of ``result`` (see the module docstring)."""
    return {
        "schema": SCHEMA,
        "command": result.command,
        "started_at": _iso(result.started_at),
        "endpoints": list(result.endpoints),
        "config": dict(result.config),
        "elapsed_s": _number(result.elapsed),
        "client": _client_json(result.client, result.elapsed),
        "series": {series.name: _series_json(series) for series in result.series},
        "errors": dict(sorted(result.errors.items())),
        "details": dict(result.details),
        "checks": [
            {
                "name": check.name,
                "passed": check.passed,
                "value": _number(check.value),
                "limit": check.limit,
                "message": check.message,
            }
            for check in result.checks
        ],
        "passed": result.passed,
        "machine": _machine_json(result.machine),
    }


def _machine_json(machine: Machine | None) -> dict[str, Any] | None:
    if machine is None:
        return None
    return {
        "cpus": machine.cpus,
        "memory_bytes": machine.memory_bytes,
        "platform": machine.platform,
        "python": machine.python,
        "load_average_1m": _number(machine.load_average_1m),
    }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_fields(
    where: str, document: Mapping[str, Any], fields: Mapping[str, Any], problems: list[str]
) -> None:
    for name, check in fields.items():
        if name not in document:
            problems.append(f"{where}: missing {name!r}")
        elif not check(document[name]):
            problems.append(f"{where}: bad {name!r}: {document[name]!r}")


def _optional_number(value: object) -> bool:
    return value is None or _is_number(value)


def validate_json(document: Any) -> list[str]:
    """Every way ``document`` departs from schema ``pnyx.bench/1`` (empty: it conforms).
    Scripts can use it to refuse a document they do not understand."""
    problems: list[str] = []
    if not isinstance(document, dict):
        return ["document: not an object"]
    _check_fields(
        "document",
        document,
        {
            "schema": lambda v: v == SCHEMA,
            "command": lambda v: v in COMMANDS,
            "started_at": lambda v: isinstance(v, str) and v.endswith("Z"),
            "endpoints": lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v),
            "config": lambda v: (
                isinstance(v, dict)
                and all(v2 is None or isinstance(v2, str | int | float | bool) for v2 in v.values())
            ),
            "elapsed_s": _is_number,
            "client": lambda v: v is None or isinstance(v, dict),
            "series": lambda v: isinstance(v, dict) and len(v) > 0,
            "errors": lambda v: (
                isinstance(v, dict) and all(isinstance(c, int) and c > 0 for c in v.values())
            ),
            "details": lambda v: isinstance(v, dict),
            "checks": lambda v: isinstance(v, list),
            "passed": lambda v: v is None or isinstance(v, bool),
        },
        problems,
    )
    machine = document.get("machine")
    if machine is not None:
        if not isinstance(machine, dict):
            problems.append(f"document: bad 'machine': {machine!r}")
        else:
            _check_fields(
                "machine",
                machine,
                {
                    "cpus": lambda v: v is None or isinstance(v, int),
                    "memory_bytes": lambda v: v is None or isinstance(v, int),
                    "platform": lambda v: isinstance(v, str),
                    "python": lambda v: isinstance(v, str),
                    "load_average_1m": _optional_number,
                },
                problems,
            )
    client = document.get("client")
    if isinstance(client, dict):
        _check_fields(
            "client",
            client,
            {
                "connections": lambda v: isinstance(v, int),
                "concurrency": lambda v: isinstance(v, int),
                "cpu_s": _optional_number,
                "cpu_cores": _optional_number,
                "cpu_per_op_us": _optional_number,
            },
            problems,
        )
    series_map = document.get("series")
    if isinstance(series_map, dict):
        for name, series in series_map.items():
            where = f"series[{name!r}]"
            if not isinstance(series, dict):
                problems.append(f"{where}: not an object")
                continue
            fields: dict[str, Any] = {
                "description": lambda v: isinstance(v, str),
                "unit": lambda v: v == "ms",
                "count": lambda v: isinstance(v, int) and v >= 0,
                "throughput_per_s": _optional_number,
                "histogram": lambda v: isinstance(v, list),
            }
            fields.update(dict.fromkeys(_STATISTICS, _optional_number))
            _check_fields(where, series, fields, problems)
            problems.extend(_histogram_problems(where, series))
    for index, check in enumerate(document.get("checks") or []):
        if not isinstance(check, dict):
            problems.append(f"checks[{index}]: not an object")
            continue
        _check_fields(
            f"checks[{index}]",
            check,
            {
                "name": lambda v: isinstance(v, str),
                "passed": lambda v: isinstance(v, bool),
                "value": _optional_number,
                "limit": _is_number,
                "message": lambda v: isinstance(v, str),
            },
            problems,
        )
    return problems


def _histogram_problems(where: str, series: Mapping[str, Any]) -> list[str]:
    buckets = series.get("histogram")
    if not isinstance(buckets, list):
        return []
    bounds = [b.get("le_ms") if isinstance(b, dict) else "?" for b in buckets]
    if bounds != [*HISTOGRAM_BOUNDS_MS, None]:
        return [f"{where}: histogram bounds {bounds} are not the schema's"]
    counts = [b.get("count") for b in buckets]
    if not all(isinstance(c, int) and c >= 0 for c in counts):
        return [f"{where}: histogram counts must be non-negative integers"]
    if sum(counts) != series.get("count"):
        return [f"{where}: histogram counts add up to {sum(counts)}, not {series.get('count')}"]
    for name in _STATISTICS:
        value = series.get(name)
        if (series.get("count") == 0) != (value is None):
            return [f"{where}: {name} must be null exactly when count is 0"]
    return []


# --------------------------------------------------------------------------- text

_BAR_WIDTH = 40


def format_ms(value: float | None) -> str:
    """A latency for people: 3 significant digits below 100 ms, whole ms above."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _histogram_lines(summary: Summary) -> list[str]:
    buckets = summary.histogram
    used = [index for index, bucket in enumerate(buckets) if bucket.count]
    if not used:
        return []
    peak = max(bucket.count for bucket in buckets)
    lines = []
    for bucket in buckets[used[0] : used[-1] + 1]:
        label = f"<= {bucket.le:g}" if bucket.le is not None else f" > {HISTOGRAM_BOUNDS_MS[-1]:g}"
        bar = "#" * math.ceil(bucket.count / peak * _BAR_WIDTH) if bucket.count else ""
        lines.append(f"    {label:>9} ms |{bar:<{_BAR_WIDTH}}| {bucket.count}")
    return lines


def _series_lines(series: Series) -> list[str]:
    summary = series.summary
    lines = [f"  {series.name}: {series.description}"]
    if series.throughput is not None:
        lines.append(f"    throughput  {series.throughput:,.1f} /s")
    lines.append(
        f"    samples     {summary.count}    min {format_ms(summary.min)}  "
        f"mean {format_ms(summary.mean)}  stddev {format_ms(summary.stddev)}  "
        f"max {format_ms(summary.max)} ms"
    )
    percentiles = "  ".join(
        f"{name} {format_ms(getattr(summary, name))}" for name, _ in PERCENTILES
    )
    lines.append(f"    latency     {percentiles} ms")
    lines.extend(_histogram_lines(summary))
    return lines


def _detail_lines(details: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, value in details.items():
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            lines.append(f"  {key}:")
            lines.extend(_table(value))
        elif isinstance(value, dict):
            inner = ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
            lines.append(f"  {key}: {inner}")
        else:
            lines.append(f"  {key}: {_plain(value)}")
    return lines


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    if value is None:
        return "-"
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_plain(row.get(column)) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    header = "  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))
    body = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    ]
    return ["    " + header, *("    " + line for line in body)]


def render_text(result: BenchResult) -> str:
    """The human summary of a run (what ``pnyx bench`` prints without ``-w json``)."""
    name = "check perf" if result.command == "check-perf" else f"bench {result.command}"
    lines = [f"pnyx {name}: {result.elapsed:.3f} s against {', '.join(result.endpoints)}"]
    for series in result.series:
        lines.extend(_series_lines(series))
    if result.errors:
        counts = ", ".join(f"{kind} x{count}" for kind, count in sorted(result.errors.items()))
        lines.append(f"  errors: {sum(result.errors.values())} ({counts})")
    else:
        lines.append("  errors: none")
    client = result.client
    if client is not None:
        cores = client.cpu_seconds / result.elapsed if result.elapsed > 0 else 0.0
        per_op = (
            f", {client.cpu_seconds / client.operations * 1e6:,.0f} us per operation"
            if client.operations
            else ""
        )
        lines.append(
            f"  client: {client.concurrency} concurrent over {client.connections} "
            f"connection(s), CPU {client.cpu_seconds:.2f} s = {cores:.2f} cores{per_op}"
        )
    lines.extend(_detail_lines(result.details))
    machine = result.machine
    if machine is not None:
        memory = f", {machine.memory_bytes / (1 << 30):.1f} GiB" if machine.memory_bytes else ""
        load = (
            f", load {machine.load_average_1m:.2f} at start"
            if machine.load_average_1m is not None
            else ""
        )
        lines.append(
            f"  machine: {machine.cpus or '?'} CPUs{memory}, {machine.platform}, "
            f"Python {machine.python}{load}"
        )
    for check in result.checks:
        lines.append(f"{'PASS' if check.passed else 'FAIL'}: {check.message}")
    if result.passed is not None:
        lines.append("PASS" if result.passed else "FAIL")
    return "\n".join(lines)
