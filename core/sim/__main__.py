"""``python -m pnyx.core.sim``: run many simulation seeds, print each failure with its
reproduction command and a summary line, exit non-zero on any violation.

This entry point is the only place of the simulator that reads the wall clock (to report
how long the run took); the simulations themselves never do.
"""

from __future__ import annotations

import logging
import sys
import time

import click
import structlog

from pnyx.core.sim.runner import run_seed, seed_configs


@click.command()
@click.option("--seeds", default=100, show_default=True, help="How many seeds to run.")
@click.option("--start", default=0, show_default=True, help="The first seed.")
@click.option(
    "--nodes",
    type=click.Choice(["3", "5"]),
    default=None,
    help="Cluster size (default: 3 for even seeds, 5 for odd ones).",
)
@click.option("--ticks", default=600, show_default=True, help="Length of the fault phase.")
@click.option("--faults/--no-faults", default=True, show_default=True)
@click.option("--membership/--no-membership", default=True, show_default=True)
@click.option(
    "--disk",
    type=click.Choice(["memory", "wal"]),
    default="memory",
    show_default=True,
    help="memory: a model disk; wal: pnyx.core.storage over a crash-simulating memory fs.",
)
@click.option(
    "--machine",
    type=click.Choice(["simple", "kv"]),
    default="simple",
    show_default=True,
    help="simple: a dict of registers; kv: the real pnyx.core.kv store.",
)
@click.option(
    "--leader-early-send/--strict-send",
    default=False,
    show_default=True,
    help="A leader sends appends before its own fsync completes, as the server does.",
)
@click.option(
    "--quorum-first/--all-at-once",
    default=False,
    show_default=True,
    help="At low load, spare followers get new entries at the leader's next tick.",
)
@click.option(
    "--eager/--no-eager",
    default=False,
    show_default=True,
    help="Half the nodes (drawn at each start) say their clients wait for every commit.",
)
@click.option(
    "--commit-updates/--no-commit-updates",
    default=False,
    show_default=True,
    help="Leaders ask for commit updates before applying, as before a long apply.",
)
@click.option(
    "--lease-reads/--read-index",
    default=False,
    show_default=True,
    help="Leaders answer reads on their lease instead of a heartbeat round each.",
)
@click.option(
    "--lease-ticks",
    type=float,
    default=0.0,
    help="Lease length in ticks (default: election_tick - 2); for planting a bug.",
)
@click.option("-v", "--verbose", count=True, help="-v: one line per seed; -vv: full trace.")
def main(
    *,
    seeds: int,
    start: int,
    nodes: str | None,
    ticks: int,
    faults: bool,
    membership: bool,
    disk: str,
    machine: str,
    leader_early_send: bool,
    quorum_first: bool,
    eager: bool,
    commit_updates: bool,
    lease_reads: bool,
    lease_ticks: float,
    verbose: int,
) -> None:
    # The storage logs every torn tail it repairs: expected here, thousands of times.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose >= 2 else logging.ERROR
        )
    )
    began = time.perf_counter()
    operations = violations = 0
    configs = seed_configs(
        seeds,
        start,
        int(nodes) if nodes is not None else None,
        ticks=ticks,
        faults=faults,
        membership=membership,
        disk=disk,
        machine=machine,
        leader_early_send=leader_early_send,
        quorum_first=quorum_first,
        eager=eager,
        commit_updates=commit_updates,
        lease_reads=lease_reads,
        lease_ticks=lease_ticks,
    )
    for config in configs:
        result = run_seed(config, trace=click.echo if verbose >= 2 else None)
        operations += result.operations
        if not result.ok:
            violations += 1
            click.echo(result.report())
        elif verbose:
            click.echo(result.report())
    elapsed = time.perf_counter() - began
    click.echo(
        f"seeds={seeds} ops={operations} violations={violations} "
        f"time={elapsed:.1f}s ({elapsed / max(seeds, 1):.2f}s/seed)"
    )
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
