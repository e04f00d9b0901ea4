"""One short smoke run of `pnyx bench put` and `pnyx check perf --duration 2` against a
real local cluster, through the command line. Benchmarks are commands, not timed tests:
nothing here asserts a throughput or a latency, only that the runs complete and report
what they did in the documented JSON schema."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from pnyx.clients import Client
from pnyx.clients.bench.report import validate_json
from pnyx.clients.cli import main
from pnyx.clients.testing import LocalCluster, free_port

pytestmark = [pytest.mark.xdist_group("pnyx-cluster"), pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, directory=str(tmp_path_factory.mktemp("bench") / "cluster")) as local:
        yield local


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # The commands configure structlog (they are entry points); other tests in this
    # worker must get the configuration they had.
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


def _run(args: list[str]) -> tuple[int, Any]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {result.exit_code}): {result.output}")
    return result.exit_code, document


def test_bench_put_smoke(cluster: LocalCluster) -> None:
    endpoints = ",".join(cluster.endpoints)
    # The global options of `pnyx` (before the command) apply to the benchmarks too.
    code, document = _run(
        [
            "--endpoints",
            endpoints,
            "-w",
            "json",
            "bench",
            "put",
            "--clients",
            "8",
            "--conns",
            "2",
            "--total",
            "300",
            "--key-size",
            "6",
            "--val-size",
            "64",
            "--key-space",
            "50",
            "--sequential-keys",
        ]
    )
    assert code == 0
    assert validate_json(document) == []
    assert document["command"] == "put"
    request = document["series"]["request"]
    assert request["count"] + sum(document["errors"].values()) == 300
    assert document["client"]["concurrency"] == 8
    assert document["client"]["connections"] == 2
    # The machine the figures came from, as the README quotes it.
    machine = document["machine"]
    assert machine["cpus"] == os.cpu_count() and machine["python"] == platform.python_version()
    assert machine["memory_bytes"] > 0
    # The puts really happened: with sequential keys every key of the space was written.
    with Client(cluster.endpoints) as kv:
        written = kv.get(b"000000", range_end=b"000050", count_only=True)
    if request["count"] == 300:
        assert written.count == 50
    else:
        assert written.count > 0


def test_check_perf_smoke(cluster: LocalCluster) -> None:
    code, document = _run(
        [
            "check",
            "perf",
            "--endpoints",
            ",".join(cluster.endpoints),
            "--duration",
            "2",
            "--conns",
            "2",
            "-w",
            "json",
        ]
    )
    assert validate_json(document) == []
    assert document["command"] == "check-perf"
    assert isinstance(document["passed"], bool)
    # Exit status follows the verdict (1 on FAIL, as etcdctl).
    assert code == (0 if document["passed"] else 1)
    assert [check["name"] for check in document["checks"]] == [
        "errors",
        "throughput_writes_per_s",
        "slowest_ms",
        "stddev_ms",
    ]
    assert document["config"]["load"] == "s"
    # The check cleans up after itself.
    with Client(cluster.endpoints) as kv:
        assert kv.get(b"/pnyx-check-perf/", prefix=True, count_only=True).count == 0


def test_check_perf_refuses_a_prefix_with_keys(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints) as kv:
        kv.put(b"/occupied/key", b"v")
    result = CliRunner().invoke(
        main,
        [
            "check",
            "perf",
            "--endpoints",
            ",".join(cluster.endpoints),
            "--duration",
            "1",
            "--prefix",
            "/occupied/",
        ],
    )
    assert result.exit_code == 1
    assert "has keys" in result.output


def test_an_unreachable_cluster_is_one_line_and_exit_3() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main, ["bench", "put", "--endpoints", nobody, "--timeout", "0.5", "--total", "3"]
    )
    assert result.exit_code == 3
    assert "NoEndpointError" in result.output
    assert "Traceback" not in result.output


def test_bad_options_are_usage_errors() -> None:
    result = CliRunner().invoke(main, ["bench", "put", "--key-size", "2", "--key-space", "1000"])
    assert result.exit_code == 2
    assert "too small" in result.output
