"""The ``pnyx bench ...`` and ``pnyx check perf`` commands (registered in cli.py).

Command-line glue only: options, the progress bar (on stderr), the text or ``-w json``
summary (on stdout) and exit codes. The benchmarks themselves live in
``pnyx.clients.bench``. Exit status: 0 when the run completed (even with failed
requests, which the summary reports), 1 when it could not run or ``check perf`` failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import attrs
import click
import structlog

from pnyx.clients.bench.load import Progress
from pnyx.clients.bench.report import BenchResult, render_text, to_json

__all__ = ["bench", "check"]

F = TypeVar("F", bound=Callable[..., Any])

_ENDPOINTS_HELP = (
    "Comma-separated client URLs (host:port or tcp://host:port). "
    "Default: $PNYX_ENDPOINTS, else the endpoints of `pnyx up`."
)


def _quiet_logs(level: int = logging.WARNING) -> None:
    # The client logs connection events at debug level; a benchmark's stdout is its report.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _output_options(function: F) -> F:
    function = click.option(
        "--no-progress", is_flag=True, help="Do not draw the progress bar (stderr)."
    )(function)
    function = click.option(
        "-w",
        "--write-out",
        "write_out",
        type=click.Choice(["text", "simple", "json"]),
        default=None,
        help="Summary format (default: pnyx's global -w, else text; simple = text); "
        "json follows the documented schema pnyx.bench/1.",
    )(function)
    return function


def _root_option(name: str) -> Any:
    """A global option of the ``pnyx`` group (``pnyx --endpoints X -w json bench ...``),
    None when absent or when this group runs on its own."""
    context = click.get_current_context(silent=True)
    return None if context is None else context.find_root().params.get(name)


def _endpoints(given: str | None) -> str | None:
    return given if given is not None else _root_option("endpoints")


def _endpoint_option(function: F) -> F:
    return click.option("--endpoints", default=None, metavar="URLS", help=_ENDPOINTS_HELP)(function)


def _int_option(
    name: str, default: int, help: str | None = None, *, minimum: int = 1
) -> Callable[[F], F]:
    """``--name N``: a whole number of at least ``minimum``, its default shown."""
    return click.option(
        name, type=click.IntRange(minimum), default=default, show_default=True, help=help
    )


def _seconds_option(
    name: str, default: float | None, help: str, *, zero: bool = False
) -> Callable[[F], F]:
    """``--name S``: a positive number (or zero, with ``zero``), its default shown if
    any."""
    shown: dict[str, Any] = {} if default is None else {"show_default": True}
    return click.option(
        name, type=click.FloatRange(0, min_open=not zero), default=default, help=help, **shown
    )


def _conns_option(help: str, default: int = 1) -> Callable[[F], F]:
    return _int_option("--conns", default, help)


def _val_size_option(default: int) -> Callable[[F], F]:
    return _int_option("--val-size", default, minimum=0)


_REQUEST_TIMEOUT_HELP = "Deadline of one request in seconds, retries included."


def _request_options(function: F) -> F:
    """Options shared by put, get and txn-cas (etcd's ``benchmark`` names)."""
    for decorator in reversed(
        [
            _int_option("--clients", 1, "Concurrent requesters."),
            _conns_option("Client connections (AsyncClient instances) the requesters share."),
            _int_option("--total", 10_000, "Requests to make (ignored with --duration)."),
            _seconds_option(
                "--duration", None, "Run for this many seconds instead of --total requests."
            ),
            _seconds_option(
                "--rate", None, "Requests started per second (default: as fast as possible)."
            ),
            _int_option("--key-size", 8),
            _val_size_option(8),
            _int_option(
                "--key-space", 1, "Distinct keys used (1: every request touches the same key)."
            ),
            click.option(
                "--sequential-keys",
                is_flag=True,
                help="Use keys 0, 1, 2... (mod --key-space) instead of random ones.",
            ),
            _seconds_option("--timeout", 5.0, _REQUEST_TIMEOUT_HELP),
            _endpoint_option,
            _output_options,
        ]
    ):
        function = decorator(function)
    return function


@contextlib.contextmanager
def _progress_bar(enabled: bool, length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A click progress bar on stderr (only on a terminal: in a pipe or a log file it
    would be noise); yields ``advance_to(position)``."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _position: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, width=30) as bar:
        shown = 0

        def advance_to(position: int) -> None:
            nonlocal shown
            position = min(position, length)
            if position > shown:
                bar.update(position - shown)
                shown = position

        yield advance_to


def _load_progress(advance_to: Callable[[int], None], duration: float | None) -> Progress:
    if duration is None:
        return lambda completed, _elapsed: advance_to(completed)
    return lambda _completed, elapsed: advance_to(int(elapsed * 10))


T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # A PnyxError propagates: the pnyx group prints it as one line with its exit code.
    try:
        return asyncio.run(coroutine)
    except ValueError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None


def _emit(result: BenchResult, write_out: str | None) -> None:
    if (write_out or _root_option("write_out")) == "json":
        click.echo(json.dumps(to_json(result), indent=2))
    else:
        click.echo(render_text(result))


C = TypeVar("C")


def _config(make: Callable[[], C]) -> C:
    """A benchmark's configuration; the ValueError of a bad one is a usage error."""
    try:
        return make()
    except ValueError as error:
        raise click.UsageError(str(error)) from None


def _run_and_emit(
    label: str,
    length: int,
    show_progress: bool,
    write_out: str | None,
    start: Callable[[Callable[[int], None]], Coroutine[Any, Any, BenchResult]],
    *,
    fatal: tuple[type[Exception], ...] = (),
) -> BenchResult:
    """Run the benchmark ``start(advance_to)`` under a progress bar of ``length`` steps
    and print its summary. An error of a ``fatal`` type ends it as one line (exit 1)."""
    from pnyx.clients.bench.machine import machine_now  # noqa: PLC0415

    machine = machine_now()
    with _progress_bar(show_progress, length, label) as advance_to:
        try:
            result = _run(start(advance_to))
        except fatal as error:
            raise click.ClickException(str(error)) from None
    result = attrs.evolve(result, machine=machine)
    _emit(result, write_out)
    return result


def _request_bench(
    kind: str,
    options: dict[str, Any],
    runner: Callable[[Any, Progress], Coroutine[Any, Any, BenchResult]],
) -> None:
    from pnyx.clients.bench.workloads import RequestBench  # noqa: PLC0415

    _quiet_logs()
    write_out = options.pop("write_out")
    show = not options.pop("no_progress")
    config = _config(
        lambda: RequestBench(
            endpoints=_endpoints(options.pop("endpoints")),
            clients=options.pop("clients"),
            conns=options.pop("conns"),
            total=None if options["duration"] is not None else options["total"],
            duration=options.pop("duration"),
            rate=options.pop("rate"),
            key_size=options.pop("key_size"),
            val_size=options.pop("val_size"),
            key_space=options.pop("key_space"),
            sequential_keys=options.pop("sequential_keys"),
            timeout=options.pop("timeout"),
        )
    )
    length = config.total if config.total is not None else int((config.duration or 0) * 10)
    _run_and_emit(
        kind,
        length,
        show,
        write_out,
        lambda advance_to: runner(config, _load_progress(advance_to, config.duration)),
    )


# --------------------------------------------------------------------------- bench


@click.group()
def bench() -> None:
    """Load generators for a pnyx cluster (in the spirit of etcd's `benchmark`).

    Every command prints a summary: throughput, latency min/p50/p90/p99/p99.9/max,
    mean and standard deviation, a latency histogram, failed requests by error type and
    the benchmark client's own CPU cost; `-w json` prints the same as one JSON document
    (schema pnyx.bench/1, see docs/performance.md).

    \b
    Start a cluster first, e.g.:
      pnyx up &            # or: make run
      pnyx bench put --clients 100 --conns 4 --val-size 256 --total 50000
    """


@bench.command("put")
@_request_options
def bench_put(**options: Any) -> None:
    """Write keys: each request is a put, acknowledged after a quorum fsynced it.

    \b
    Examples:
      pnyx bench put                                    # 10000 puts, 1 client, 1 key
      pnyx bench put --clients 1 --sequential-keys --key-space 100000 --val-size 256
      pnyx bench put --clients 500 --conns 8 --total 100000 --val-size 256 \\
                     --key-space 100000
      pnyx bench put --clients 100 --duration 30 --rate 5000 -w json > put.json
    """
    from pnyx.clients.bench.workloads import bench_put as run  # noqa: PLC0415

    _request_bench("put", options, run)


@bench.command("get")
@click.option(
    "--consistency",
    type=click.Choice(["l", "s"]),
    default="l",
    show_default=True,
    help="l: linearizable (ReadIndex via the leader); s: serializable (local state).",
)
@_request_options
def bench_get(consistency: str, **options: Any) -> None:
    """Read keys (the key space is written once first, not measured).

    \b
    Examples:
      pnyx bench get                                    # linearizable, one client
      pnyx bench get --consistency s --clients 100 --conns 4 --total 100000
      pnyx bench get --key-space 1000 --val-size 256 --clients 50 --duration 20
    """
    from pnyx.clients.bench.workloads import bench_get as run  # noqa: PLC0415

    async def runner(config: Any, progress: Progress) -> BenchResult:
        return await run(config, consistency, progress)

    _request_bench("get", options, runner)


@bench.command("txn-cas")
@_request_options
def bench_txn_cas(**options: Any) -> None:
    """Compare-and-swap transactions: if version(key) == last seen then put else get.

    With a key space smaller than --clients the requesters contend; lost races
    (the failure branch ran) are reported as cas_conflicts, not as errors.

    \b
    Examples:
      pnyx bench txn-cas --clients 10 --key-space 1000 --key-size 16
      pnyx bench txn-cas --clients 100 --conns 4 --key-space 10   # heavy contention
    """
    from pnyx.clients.bench.workloads import bench_txn_cas as run  # noqa: PLC0415

    _request_bench("txn-cas", options, run)


@bench.command("watch")
@_int_option("--watchers", 100)
@_int_option("--puts", 1000, "Keys written.")
@_seconds_option("--put-rate", 100.0, "Puts per second.")
@_conns_option("Client connections the watchers share (the writer has its own).")
@_val_size_option(8)
@_seconds_option(
    "--timeout", 10.0, "Request deadline, and how long to wait for events after the last put."
)
@_endpoint_option
@_output_options
def bench_watch(
    *,
    watchers: int,
    puts: int,
    put_rate: float,
    conns: int,
    val_size: int,
    timeout: float,
    endpoints: str | None,
    write_out: str | None,
    no_progress: bool,
) -> None:
    """Put-to-event latency: W watchers on one prefix, P puts under it.

    Each sample is one event at one watcher: from handing the put to the client to
    the event reaching the watcher's task (W x P samples).

    \b
    Examples:
      pnyx bench watch                                  # 100 watchers, 1000 puts
      pnyx bench watch --watchers 1000 --conns 4 --puts 200 --put-rate 50
    """
    from pnyx.clients.bench.watch import WatchBench, bench_watch  # noqa: PLC0415

    _quiet_logs()
    config = _config(
        lambda: WatchBench(
            _endpoints(endpoints), watchers, puts, put_rate, conns, val_size, timeout
        )
    )
    _run_and_emit(
        "watch",
        puts,
        not no_progress,
        write_out,
        lambda advance_to: bench_watch(config, _load_progress(advance_to, None)),
    )


@bench.command("failover")
@_int_option("--kills", 5)
@click.option(
    "--sigterm", is_flag=True, help="Stop the leader gracefully (SIGTERM) instead of kill -9."
)
@click.option("--nodes", type=click.IntRange(3, 9), default=3, show_default=True)
@_seconds_option("--rate", 200.0, "Writes started per second during the whole run.")
@_val_size_option(256)
@_seconds_option(
    "--settle", 1.0, "Seconds of load on the healthy cluster before each kill.", zero=True
)
@_seconds_option(
    "--timeout", 5.0, "Deadline of one write, retries included; a write past it counts as failed."
)
@_seconds_option(
    "--recover-timeout",
    30.0,
    "Give up when the cluster has not recovered after this many seconds.",
)
@click.option(
    "--node-arg",
    "node_args",
    multiple=True,
    help="Extra option for every node, e.g. --node-arg=--election-ticks=20.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the cluster's data and logs here (default: a temporary directory).",
)
@_output_options
def bench_failover(
    *,
    kills: int,
    sigterm: bool,
    nodes: int,
    rate: float,
    val_size: int,
    settle: float,
    timeout: float,
    recover_timeout: float,
    node_args: tuple[str, ...],
    data_dir: str | None,
    write_out: str | None,
    no_progress: bool,
) -> None:
    """Kill the Raft leader of a local cluster K times under a steady write load.

    Starts its own cluster (like `pnyx up`, on free ports, in a temporary directory)
    and reports, per kill and as median/worst: the time until a write started after the
    kill succeeds, and until the survivors agree on a new leader; plus failed writes.

    \b
    Examples:
      pnyx bench failover --kills 20
      pnyx bench failover --kills 5 --sigterm          # graceful: expect 0 failed writes
      pnyx bench failover --kills 3 --rate 1000 -w json
    """
    from pnyx.clients.bench.failover import (  # noqa: PLC0415
        FailoverBench,
        FailoverError,
        bench_failover,
    )

    _quiet_logs()
    config = _config(
        lambda: FailoverBench(
            kills=kills,
            sigterm=sigterm,
            nodes=nodes,
            rate=rate,
            val_size=val_size,
            settle=settle,
            timeout=timeout,
            recover_timeout=recover_timeout,
            node_args=node_args,
            directory=data_dir,
        )
    )
    _run_and_emit(
        "failover",
        kills,
        not no_progress,
        write_out,
        lambda advance_to: bench_failover(config, advance_to),
        fatal=(FailoverError,),
    )


@bench.command("lock")
@_int_option("--workers", 10)
@_int_option("--rounds", 20, "Acquisitions per worker.")
@_seconds_option("--hold", 0.0, "Seconds each holder keeps the lock.", zero=True)
@_conns_option("Client connections the workers' sessions share.")
@_int_option("--ttl", 10, "Session TTL.")
@_seconds_option("--timeout", 30.0, "Longest wait for one acquisition.")
@_endpoint_option
@_output_options
def bench_lock(
    *,
    workers: int,
    rounds: int,
    hold: float,
    conns: int,
    ttl: int,
    timeout: float,
    endpoints: str | None,
    write_out: str | None,
    no_progress: bool,
) -> None:
    """Lock acquire latency and handoff time (pnyx.recipes.Lock).

    W workers, each with its own session, take one lock R times each. handoff: from
    the holder calling release to the next waiting worker holding the lock.

    \b
    Examples:
      pnyx bench lock                                   # 10 workers x 20 rounds
      pnyx bench lock --workers 2 --rounds 200 --hold 0.01
      pnyx bench lock --workers 50 --conns 4 --rounds 10 -w json
    """
    from pnyx.clients.bench.recipe_loads import (  # noqa: PLC0415
        LockBench,
        RecipeMissingError,
        bench_lock,
    )

    _quiet_logs()
    config = _config(
        lambda: LockBench(_endpoints(endpoints), workers, rounds, hold, conns, ttl, timeout)
    )
    _run_and_emit(
        "lock",
        workers * rounds,
        not no_progress,
        write_out,
        lambda advance_to: bench_lock(config, _load_progress(advance_to, None)),
        fatal=(RecipeMissingError,),
    )


@bench.command("elect")
@_int_option("--candidates", 3, minimum=2)
@_int_option("--rounds", 10, "Leader changes to measure.")
@_seconds_option("--lead", 0.0, "Seconds a leader leads before leaving.", zero=True)
@click.option(
    "--crash",
    is_flag=True,
    help="Leave as a crashed process would (client closed, no resign): the next "
    "candidate wins when the lease expires.",
)
@_int_option("--ttl", 5, "Session TTL (the cluster may raise it to its minimum).")
@_seconds_option("--timeout", 60.0, "Give up when no new leader came this long after a departure.")
@_endpoint_option
@_output_options
def bench_elect(
    *,
    candidates: int,
    rounds: int,
    lead: float,
    crash: bool,
    ttl: int,
    timeout: float,
    endpoints: str | None,
    write_out: str | None,
    no_progress: bool,
) -> None:
    """Time from a recipe leader leaving to a new one elected (pnyx.recipes.Election).

    \b
    Examples:
      pnyx bench elect                                  # 3 candidates, 10 resignations
      pnyx bench elect --crash --rounds 3               # lease expiry decides (>= TTL)
      pnyx bench elect --candidates 10 --lead 0.1 -w json
    """
    from pnyx.clients.bench.recipe_loads import (  # noqa: PLC0415
        ElectBench,
        RecipeMissingError,
        bench_elect,
    )

    # A simulated crash makes the abandoned session warn that it could not revoke.
    _quiet_logs(logging.ERROR if crash else logging.WARNING)
    config = _config(
        lambda: ElectBench(_endpoints(endpoints), candidates, rounds, lead, crash, ttl, timeout)
    )
    _run_and_emit(
        "elect",
        rounds,
        not no_progress,
        write_out,
        lambda advance_to: bench_elect(config, _load_progress(advance_to, None)),
        fatal=(RecipeMissingError, TimeoutError),
    )


# --------------------------------------------------------------------------- check


@click.group()
def check() -> None:
    """Check properties of a pnyx cluster (as `etcdctl check`)."""


@check.command("perf")
@click.option(
    "--load",
    type=click.Choice(
        ["s", "m", "l", "xl", "small", "medium", "large", "xlarge"], case_sensitive=False
    ),
    default="s",
    show_default=True,
    help="Workload: s 150 writes/s from 50 clients, m 1000/200, l 8000/500, xl 15000/1000.",
)
@_seconds_option("--duration", 60.0, "Seconds of load (etcd: 60).")
@_conns_option("Client connections the load's clients share (etcd: one per client).", default=8)
@click.option(
    "--prefix",
    default="/pnyx-check-perf/",
    show_default=True,
    help="Where the keys go; must be empty, deleted afterwards.",
)
@click.option("--auto-compact", is_flag=True, help="Compact at the deleting revision afterwards.")
@_seconds_option("--timeout", 5.0, _REQUEST_TIMEOUT_HELP)
@_endpoint_option
@_output_options
def check_perf(
    *,
    load: str,
    duration: float,
    conns: int,
    prefix: str,
    auto_compact: bool,
    timeout: float,
    endpoints: str | None,
    write_out: str | None,
    no_progress: bool,
) -> None:
    """Pass or fail a write load with etcd's rules.

    PASS needs: no failed request, throughput above 90% of the load's rate, slowest
    request at most 500 ms, standard deviation at most 100 ms. Exit status 1 on FAIL.

    \b
    Examples:
      pnyx check perf                                   # load s, 60 s
      pnyx check perf --load l
      pnyx check perf --load m --duration 10 -w json
    """
    from pnyx.clients.bench.perf import (  # noqa: PLC0415
        ALIASES,
        LOADS,
        PrefixNotEmptyError,
    )
    from pnyx.clients.bench.perf import check_perf as run  # noqa: PLC0415

    _quiet_logs()
    chosen = LOADS[ALIASES[load.lower()]]
    result = _run_and_emit(
        f"check perf --load {chosen.name}",
        int(duration * 10),
        not no_progress,
        write_out,
        lambda advance_to: run(
            chosen,
            _endpoints(endpoints),
            duration=duration,
            conns=conns,
            prefix=prefix.encode(),
            auto_compact=auto_compact,
            timeout=timeout,
            progress=_load_progress(advance_to, duration),
        ),
        fatal=(PrefixNotEmptyError,),
    )
    if not result.passed:
        sys.exit(1)
