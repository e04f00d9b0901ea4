"""Running simulations: one seed (``run_seed``) or many (``run_seeds``), each ending in a
``SimResult`` that says what was checked and, on failure, the violation and the one-line
command that reproduces the run exactly.

A run fails on a safety violation seen while it runs, on a liveness failure after the
faults stop, on any exception escaping the Raft core (a bug by definition), or when the
recorded client history is not linearizable. Nothing here may introduce nondeterminism:
the result of a seed depends on its ``SimConfig`` alone.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator

import attrs

from pnyx.core.sim.checks import Violation
from pnyx.core.sim.cluster import Phase, SimConfig, Simulation, Stats
from pnyx.core.sim.disk import Disk
from pnyx.core.sim.linearizability import check_history
from pnyx.core.sim.statemachine import KVStateMachine


@attrs.frozen
class SimResult:
    config: SimConfig
    operations: int
    """Client operations that completed (returned to the client)."""
    pending: int
    """Operations recorded without a return (abandoned by a crashing client)."""
    ticks: float
    """Virtual time simulated, in Raft ticks."""
    digest: str
    """SHA-256 of the run's trace: equal for equal runs."""
    stats: Stats
    violation: Violation | None = None

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self) -> str:
        config = self.config
        head = f"seed {config.seed} nodes={config.nodes}"
        if self.violation is None:
            return (
                f"{head}: ok ops={self.operations} pending={self.pending} "
                f"ticks={self.ticks:.0f} {_describe_stats(self.stats)}"
            )
        return (
            f"{head}: VIOLATION at tick {self.ticks:.1f}: {self.violation}\n"
            f"  reproduce: {config.command()}"
        )


def _describe_stats(stats: Stats) -> str:
    return (
        f"crashes={stats.crashes} pauses={stats.pauses} partitions={stats.partitions} "
        f"learners={stats.learners_added} promotions={stats.promotions} "
        f"removals={stats.removals} (leader {stats.leader_removals}) "
        f"transfers={stats.transfers} snapshots={stats.snapshots} "
        f"installed={stats.snapshots_installed}"
    )


def run_seed(
    config: SimConfig,
    *,
    trace: Callable[[str], None] | None = None,
    disk_factory: Callable[[], Disk] | None = None,
    machine_factory: Callable[[], KVStateMachine] | None = None,
) -> SimResult:
    """Run one seed. The factories, when given, replace the disk and the state machine
    that ``config`` names (``config.disk``, ``config.machine``)."""
    sim = Simulation(
        config, trace=trace, disk_factory=disk_factory, machine_factory=machine_factory
    )
    violation: Violation | None = None
    try:
        sim.run()
        if sim.phase is not Phase.DONE:
            violation = Violation("liveness", "the simulation ran out of events")
    except Violation as found:
        violation = found
    except Exception as error:  # any other exception out of the core is a bug
        where = traceback.extract_tb(error.__traceback__)[-3:]
        frames = " <- ".join(f"{frame.name}:{frame.lineno}" for frame in reversed(where))
        violation = Violation("exception", f"{type(error).__name__}: {error} (in {frames})")
    operations = sim.history.operations
    if violation is None:
        result = check_history(operations)
        if not result.ok:
            violation = Violation("linearizability", result.explain())
    sim.trace(f"result {violation}")
    return SimResult(
        config=config,
        operations=sum(1 for op in operations if op.ret is not None),
        pending=sum(1 for op in operations if op.ret is None),
        ticks=sim.now / config.tick_units,
        digest=sim.digest.hexdigest(),
        stats=sim.stats,
        violation=violation,
    )


def seed_configs(
    seeds: int, start: int = 0, nodes: int | None = None, **overrides: object
) -> Iterator[SimConfig]:
    """``seeds`` configurations from ``start`` on; without ``nodes``, even seeds get 3
    nodes and odd seeds 5 (the reproduction command always names the count)."""
    for seed in range(start, start + seeds):
        count = nodes if nodes is not None else (3 if seed % 2 == 0 else 5)
        yield SimConfig(seed=seed, nodes=count, **overrides)  # type: ignore[arg-type]


def first_violation(configs: Iterator[SimConfig]) -> SimResult | None:
    """Run until one seed fails; that seed's result, or None if all passed."""
    for config in configs:
        result = run_seed(config)
        if not result.ok:
            return result
    return None
