"""Units of pnyx.clients.bench.report: the JSON document (schema pnyx.bench/1), its
validator, and the text summary."""

from __future__ import annotations

import copy
import json
from typing import Any

import attrs
import pytest

from pnyx.clients.bench.report import (
    SCHEMA,
    BenchResult,
    Check,
    ClientUsage,
    Machine,
    Series,
    format_ms,
    render_text,
    to_json,
    validate_json,
)
from pnyx.clients.bench.stats import HISTOGRAM_BOUNDS_MS, summarize

# The documented top-level fields (docs/performance.md); changing them breaks scripts.
DOCUMENTED_FIELDS = [
    "schema",
    "command",
    "started_at",
    "endpoints",
    "config",
    "elapsed_s",
    "client",
    "series",
    "errors",
    "details",
    "checks",
    "passed",
    "machine",
]
SERIES_FIELDS = [
    "description",
    "unit",
    "count",
    "throughput_per_s",
    "min",
    "mean",
    "stddev",
    "p50",
    "p90",
    "p99",
    "p999",
    "max",
    "histogram",
]


MACHINE = Machine(
    cpus=2,
    memory_bytes=24 << 30,
    platform="Linux-6.1-x86_64",
    python="3.11.7",
    load_average_1m=1.25,
)


def _result(**changes: Any) -> BenchResult:
    base = BenchResult(
        command="put",
        started_at=1_700_000_000.25,
        endpoints=("tcp://127.0.0.1:7101",),
        config={"clients": 10, "rate": None, "sequential_keys": False, "prefix": "/x/"},
        elapsed=2.0,
        series=(
            Series("request", "put round trip", summarize([0.001, 0.002, 0.004]), 1.5),
            Series("empty", "nothing measured", summarize([]), None),
        ),
        client=ClientUsage(connections=2, concurrency=10, cpu_seconds=0.5, operations=4),
        errors={"TimeoutError": 1},
        details={"kills": [{"kill": 1, "leader": "n1", "new_leader_ms": 312.5}], "note": 1.0},
        machine=MACHINE,
    )
    return attrs.evolve(base, **changes)


def test_document_has_the_documented_shape() -> None:
    document = to_json(_result())
    assert list(document) == DOCUMENTED_FIELDS
    assert document["schema"] == SCHEMA == "pnyx.bench/1"
    assert document["started_at"] == "2023-11-14T22:13:20.250Z"
    request = document["series"]["request"]
    assert list(request) == SERIES_FIELDS
    assert request["unit"] == "ms"
    assert request["count"] == 3
    assert request["p50"] == pytest.approx(2.0)
    assert request["throughput_per_s"] == 1.5
    assert [bucket["le_ms"] for bucket in request["histogram"]] == [*HISTOGRAM_BOUNDS_MS, None]
    assert document["client"] == {
        "connections": 2,
        "concurrency": 10,
        "cpu_s": 0.5,
        "cpu_cores": 0.25,
        "cpu_per_op_us": 125000.0,
    }
    assert document["errors"] == {"TimeoutError": 1}
    assert document["passed"] is None
    assert document["machine"] == {
        "cpus": 2,
        "memory_bytes": 24 << 30,
        "platform": "Linux-6.1-x86_64",
        "python": "3.11.7",
        "load_average_1m": 1.25,
    }
    assert validate_json(document) == []


def test_a_document_without_machine_still_conforms() -> None:
    """``machine`` was added within pnyx.bench/1: older documents lack it."""
    document = to_json(_result(machine=None))
    assert document["machine"] is None
    assert validate_json(document) == []
    del document["machine"]
    assert validate_json(document) == []


def test_document_survives_strict_json() -> None:
    document = to_json(_result())
    text = json.dumps(document, allow_nan=False)
    assert json.loads(text) == document


def test_empty_series_reports_nulls_not_zeros() -> None:
    empty = to_json(_result())["series"]["empty"]
    assert empty["count"] == 0
    assert all(empty[name] is None for name in ("min", "mean", "stddev", "p50", "max"))
    assert empty["throughput_per_s"] is None


def test_checks_and_verdict() -> None:
    result = _result(
        command="check-perf",
        checks=(Check("slowest_ms", False, 612.0, 500.0, "Slowest request took too long"),),
        passed=False,
    )
    document = to_json(result)
    assert document["checks"] == [
        {
            "name": "slowest_ms",
            "passed": False,
            "value": 612.0,
            "limit": 500.0,
            "message": "Slowest request took too long",
        }
    ]
    assert document["passed"] is False
    assert validate_json(document) == []
    text = render_text(result)
    assert "FAIL: Slowest request took too long" in text
    assert text.splitlines()[-1] == "FAIL"


def test_client_usage_without_operations() -> None:
    document = to_json(_result(client=ClientUsage(1, 1, 0.1, 0), elapsed=0.0))
    assert document["client"]["cpu_per_op_us"] is None
    assert document["client"]["cpu_cores"] is None
    assert to_json(_result(client=None))["client"] is None
    assert validate_json(to_json(_result(client=None))) == []


@pytest.mark.parametrize(
    ("damage", "complaint"),
    [
        (lambda d: d.pop("series"), "missing 'series'"),
        (lambda d: d.update(schema="pnyx.bench/0"), "bad 'schema'"),
        (lambda d: d.update(command="dance"), "bad 'command'"),
        (lambda d: d.update(elapsed_s="2"), "bad 'elapsed_s'"),
        (lambda d: d.update(errors={"TimeoutError": 0}), "bad 'errors'"),
        (lambda d: d["series"]["request"].update(count=4), "add up to 3, not 4"),
        (lambda d: d["series"]["request"]["histogram"].pop(), "bounds"),
        (lambda d: d["series"]["request"].update(p50=None), "null exactly when"),
        (lambda d: d["series"]["empty"].update(p50=0.0), "null exactly when"),
        (lambda d: d["series"]["request"].pop("p99"), "missing 'p99'"),
        (lambda d: d["client"].pop("cpu_s"), "client: missing 'cpu_s'"),
        (lambda d: d.update(checks=[{"name": "x"}]), "checks[0]: missing 'passed'"),
        (lambda d: d["config"].update(nested={"a": 1}), "bad 'config'"),
        (lambda d: d["machine"].update(cpus="2"), "machine: bad 'cpus'"),
        (lambda d: d["machine"].pop("python"), "machine: missing 'python'"),
        (lambda d: d.update(machine=[2]), "bad 'machine'"),
    ],
)
def test_validator_finds_departures(damage: Any, complaint: str) -> None:
    document = copy.deepcopy(to_json(_result()))
    damage(document)
    problems = validate_json(document)
    assert any(complaint in problem for problem in problems), problems


def test_validator_rejects_non_objects() -> None:
    assert validate_json([]) == ["document: not an object"]


def test_text_summary_has_every_figure() -> None:
    text = render_text(_result())
    assert text.startswith("pnyx bench put: 2.000 s against tcp://127.0.0.1:7101")
    assert "throughput  1.5 /s" in text
    assert "p50 2.00" in text and "p99 4.00" in text and "stddev" in text
    assert "<= 2 ms |" in text  # histogram rows
    assert "errors: 1 (TimeoutError x1)" in text
    assert "client: 10 concurrent over 2 connection(s)" in text
    assert "new_leader_ms" in text and "312.5" in text  # a details table
    assert "machine: 2 CPUs, 24.0 GiB, Linux-6.1-x86_64, Python 3.11.7, load 1.25 at start" in text


def test_text_histogram_shows_only_the_used_range() -> None:
    text = render_text(_result())
    assert "<= 0.1 ms" not in text
    assert "> 10000" not in text


def test_format_ms() -> None:
    assert format_ms(None) == "-"
    assert format_ms(0.8123) == "0.812"
    assert format_ms(4.567) == "4.57"
    assert format_ms(45.67) == "45.7"
    assert format_ms(456.7) == "457"
