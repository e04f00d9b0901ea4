"""pnyx.core.sim: a deterministic whole-cluster simulation of the Raft core, and a
linearizability checker for client histories.

One seed drives everything (network, disks, clocks, clients, faults), so a failing run is
reproduced exactly by ``python -m pnyx.core.sim --seeds 1 --start SEED --nodes N``. The
simulation runs the real ``RaftNode`` and the real codec; it never uses sockets, threads,
files, the wall clock or the global ``random`` module.

Modules: ``cluster`` (the simulation and its event loop), ``nemesis`` (the fault
schedule), ``network``, ``disk`` (a model disk, or the real WAL), ``statemachine`` (a
simple KV, or ``kvadapter``: the real ``pnyx.core.kv`` store), ``workload`` (clients),
``checks`` (the safety monitor), ``history`` and ``linearizability`` (the checker),
``runner`` (one seed or many) and ``__main__`` (the command line).
"""

from pnyx.core.sim.checks import SafetyMonitor, Violation
from pnyx.core.sim.cluster import SimConfig, Simulation
from pnyx.core.sim.disk import Disk, MemoryDisk, WalDisk
from pnyx.core.sim.history import Operation, OpKind
from pnyx.core.sim.kvadapter import RealKV
from pnyx.core.sim.linearizability import CheckResult, Verdict, check_history
from pnyx.core.sim.runner import SimResult, first_violation, run_seed, seed_configs
from pnyx.core.sim.statemachine import KVStateMachine, SimKV, StateMachine

__all__ = [
    "CheckResult",
    "Disk",
    "KVStateMachine",
    "MemoryDisk",
    "OpKind",
    "Operation",
    "RealKV",
    "SafetyMonitor",
    "SimConfig",
    "SimKV",
    "SimResult",
    "Simulation",
    "StateMachine",
    "Verdict",
    "Violation",
    "WalDisk",
    "check_history",
    "first_violation",
    "run_seed",
    "seed_configs",
]
