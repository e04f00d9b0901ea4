"""Whole-cluster simulation over many seeds: no safety violation, liveness after the faults
stop, linearizable histories; and the same seed gives the same run."""

from __future__ import annotations

import attrs
import pytest
import structlog
from click.testing import CliRunner

from pnyx.core.sim.__main__ import main
from pnyx.core.sim.cluster import SimConfig
from pnyx.core.sim.runner import run_seed, seed_configs

# 320 seeds of 800 ticks (80 election timeouts of faults, then the liveness phase), half
# 3-node and half 5-node clusters, split so that two xdist workers share the chunks.
CHUNKS = 8
SEEDS_PER_CHUNK = 40
TICKS = 800


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_seeds_keep_raft_safe_live_and_linearizable(chunk: int) -> None:
    failures = []
    operations = 0
    for config in seed_configs(SEEDS_PER_CHUNK, start=chunk * SEEDS_PER_CHUNK, ticks=TICKS):
        result = run_seed(config)
        operations += result.operations
        if not result.ok:
            failures.append(result.report())
    assert not failures, "\n".join(failures)
    # The runs must do real work, or passing proves nothing.
    assert operations > SEEDS_PER_CHUNK * 100


def test_seeds_with_the_real_write_ahead_log_and_the_real_kv_store() -> None:
    """The same with pnyx.core.storage over its crash-simulating file system (crashes
    tear WAL tails that recovery must repair without losing anything acknowledged) and,
    for half the seeds, pnyx.core.kv as the state machine."""
    failures = []
    configs = [
        *seed_configs(15, start=5000, ticks=TICKS, disk="wal"),
        *seed_configs(15, start=5100, ticks=TICKS, disk="wal", machine="kv"),
    ]
    with structlog.testing.capture_logs() as logs:
        for config in configs:
            result = run_seed(config)
            if not result.ok:
                failures.append(result.report())
    assert not failures, "\n".join(failures)
    assert any(entry["event"] == "wal.torn_tail_truncated" for entry in logs)


def _all_pass(configs: list[SimConfig]) -> None:
    failures = [result.report() for result in map(run_seed, configs) if not result.ok]
    assert not failures, "\n".join(failures)


def _changes_the_run(seed: int, **mode: bool) -> None:
    """The mode really changes what happens (else its seeds would prove nothing)."""
    plain = run_seed(SimConfig(seed=seed, ticks=300))
    changed = run_seed(SimConfig(seed=seed, ticks=300, **mode))  # type: ignore[arg-type]
    assert plain.digest != changed.digest


def test_seeds_with_the_leader_sending_before_its_own_fsync() -> None:
    """The server sends a leader's appends while its own write of the same Ready runs
    (the exception the Ready contract allows): the same properties must hold."""
    _all_pass(
        [
            *seed_configs(30, start=7000, ticks=TICKS, leader_early_send=True),
            *seed_configs(10, start=7100, ticks=TICKS, leader_early_send=True, disk="wal"),
        ]
    )
    _changes_the_run(7000, leader_early_send=True)


def test_seeds_with_leader_lease_reads() -> None:
    """Leaders answer reads on their lease, reading the virtual clock (which runs on
    while the nemesis pauses a leader): the histories must stay linearizable."""
    _all_pass(
        [
            *seed_configs(30, start=7200, ticks=TICKS, lease_reads=True, leader_early_send=True),
            *seed_configs(6, start=7300, ticks=TICKS, lease_reads=True, disk="wal", machine="kv"),
        ]
    )
    _changes_the_run(7200, lease_reads=True)


def test_seeds_with_quorum_first_replication() -> None:
    """Spare followers get new entries at the leader's tick when the needed ones are
    idle (``RaftConfig.quorum_first``, on in the server), except eager ones (members
    with watchers, ``RaftNode.set_eager``): the same properties hold."""
    _all_pass(
        [
            *seed_configs(
                24,
                start=7400,
                ticks=TICKS,
                quorum_first=True,
                lease_reads=True,
                leader_early_send=True,
            ),
            *seed_configs(12, start=7450, ticks=TICKS, quorum_first=True, eager=True),
            *seed_configs(6, start=7500, ticks=TICKS, quorum_first=True, disk="wal", machine="kv"),
        ]
    )
    _changes_the_run(7400, quorum_first=True)
    _changes_the_run(7400, quorum_first=True, eager=True)


def test_seeds_with_commit_updates_before_applies() -> None:
    """Leaders ask for commit updates before applying (``send_commit_updates``, what the
    server does before an entry of unbounded cost), which also tells followers whose
    answer is still on its way the commit through an empty append: the same properties
    hold."""
    _all_pass(
        [
            *seed_configs(
                16,
                start=7600,
                ticks=TICKS,
                quorum_first=True,
                commit_updates=True,
                leader_early_send=True,
            ),
            *seed_configs(8, start=7650, ticks=TICKS, commit_updates=True, lease_reads=True),
        ]
    )
    plain = run_seed(SimConfig(seed=7600, ticks=300, quorum_first=True))
    asking = run_seed(SimConfig(seed=7600, ticks=300, quorum_first=True, commit_updates=True))
    assert plain.digest != asking.digest


def test_a_seed_replays_identically() -> None:
    config = SimConfig(seed=12345, nodes=5, ticks=300)
    first, second = run_seed(config), run_seed(config)
    assert first.digest == second.digest
    assert first.operations == second.operations > 0
    assert run_seed(SimConfig(seed=12346, nodes=5, ticks=300)).digest != first.digest


def test_runs_exercise_every_kind_of_fault() -> None:
    totals: dict[str, int] = {}
    pending = 0
    for config in seed_configs(6, start=9000, ticks=TICKS):
        result = run_seed(config)
        assert result.ok, result.report()
        pending += result.pending
        for name, value in attrs.asdict(result.stats).items():
            totals[name] = totals.get(name, 0) + value
    for name in ("crashes", "restarts", "pauses", "partitions", "conf_changes", "snapshots"):
        assert totals[name] > 0, name
    assert pending > 0  # crashed clients leave operations of unknown outcome


def test_cli_prints_a_summary_and_succeeds() -> None:
    outcome = CliRunner().invoke(main, ["--seeds", "2", "--start", "5", "--ticks", "150"])
    assert outcome.exit_code == 0, outcome.output
    assert "seeds=2 ops=" in outcome.output
    assert "violations=0" in outcome.output


def test_reproduction_command_names_every_non_default_setting() -> None:
    config = SimConfig(seed=77, nodes=5, ticks=123, membership=False)
    assert config.command() == (
        "python -m pnyx.core.sim --seeds 1 --start 77 --nodes 5 --ticks 123 --no-membership"
    )
    config = SimConfig(seed=8, disk="wal", machine="kv", faults=False)
    assert config.command() == (
        "python -m pnyx.core.sim --seeds 1 --start 8 --nodes 3 --no-faults --disk wal --machine kv"
    )
    config = SimConfig(seed=9, leader_early_send=True)
    assert config.command() == (
        "python -m pnyx.core.sim --seeds 1 --start 9 --nodes 3 --leader-early-send"
    )
