"""Proof that the simulator can fail: plant a known bug in the Raft core (monkeypatching
one of the decision methods the core documents for this purpose) and require that a
bounded number of seeds reports a violation, with a command that reproduces it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from pnyx.core.raft.node import RaftNode, VoteResult
from pnyx.core.raft.read_only import ReadRequest
from pnyx.core.raft.types import NONE, HardState, Message, Role, VoteRequest, VoteResponse
from pnyx.core.sim.__main__ import main
from pnyx.core.sim.runner import first_violation, seed_configs

# --- the bugs ---------------------------------------------------------------------------


def grant_vote_twice(self: RaftNode, message: VoteRequest) -> bool:
    """Forgets "one vote per term": grants anyone whose log is up to date."""
    return self._log.is_up_to_date(message.last_log_index, message.last_log_term)


def count_pre_votes_as_votes(self: RaftNode, message: VoteResponse) -> None:
    """Counts answers of the pre-vote round (for a term not yet started) as real votes."""
    if message.sender in self._conf.voters:
        self._votes.setdefault(message.sender, message.granted)


def commit_by_counting_old_replicas(self: RaftNode) -> bool:
    """Figure 8 of the Raft paper: commits whatever a quorum holds, whatever its term."""
    voters = self._conf.voters
    log = self._log
    matches = sorted(
        (log.stable if voter == self._id else self._progress[voter].match)
        for voter in voters
        if voter == self._id or voter in self._progress
    )
    matches += [0] * (len(voters) - len(matches))
    matches.sort(reverse=True)
    index = matches[len(voters) // 2]
    if index > log.committed:
        self._on_commit(log.committed, index)
        return True
    return False


def forget_to_persist_vote(self: RaftNode) -> HardState:
    return HardState(term=self._term, vote=NONE, commit=self._log.committed)


def forget_to_persist_term(self: RaftNode) -> HardState:
    return HardState(term=0, vote=self._vote, commit=self._log.committed)


def read_without_quorum_round(self: RaftNode, context: bytes, requester: int) -> None:
    """A leader answers reads from its commit index without confirming it still leads."""
    self._answer_read(ReadRequest(context, requester), self._log.committed)


# name: (RaftNode method replaced, the bug, seed budget). The budgets are several times
# the number of seeds that the bug needs on average (measured over 100 seeds: every
# budget leaves well under a 1-in-1000 chance of missing a bug whose rate is unchanged).
BUGS: dict[str, tuple[str, Callable[..., object], int]] = {
    "grant_vote_twice": ("_grant_vote", grant_vote_twice, 20),
    "count_pre_votes_as_votes": ("_poll_votes", count_pre_votes_as_votes, 20),
    "commit_by_counting_old_replicas": ("_maybe_commit", commit_by_counting_old_replicas, 60),
    "forget_to_persist_vote": ("_hard_state", forget_to_persist_vote, 60),
    "forget_to_persist_term": ("_hard_state", forget_to_persist_term, 25),
    "read_without_quorum_round": ("_leader_read", read_without_quorum_round, 100),
}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_planted_bug_is_reported(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    method, bug, budget = BUGS[name]
    monkeypatch.setattr(RaftNode, method, bug)
    found = first_violation(seed_configs(budget, start=0))
    assert found is not None, f"{name} went unnoticed in {budget} seeds"
    report = found.report()
    assert "VIOLATION" in report
    assert found.config.command() in report


def test_count_stale_term_votes_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate that counts vote answers of a past term (they arrive late: a voter's
    slow fsync, a long network delay) as votes for its current term."""
    original = RaftNode._on_stale_term

    def count_stale(self: RaftNode, message: Message) -> None:
        if isinstance(message, VoteResponse) and self.role is Role.CANDIDATE:
            self._votes.setdefault(message.sender, message.granted)
            if self._tally_votes() is VoteResult.WON:
                self._become_leader()
            return
        original(self, message)

    monkeypatch.setattr(RaftNode, "_on_stale_term", count_stale)
    # The rarest of these bugs to surface (about 1 seed in 40: a late grant must reach a
    # candidate of a later term), hence the larger budget.
    found = first_violation(seed_configs(300, start=0))
    assert found is not None


def test_a_lease_longer_than_the_followers_vote_refusal_is_reported() -> None:
    """A leader lease of 8 election timeouts (the safe one is under one): a leader cut
    off or paused keeps answering reads after another leader took writes."""
    found = first_violation(seed_configs(100, start=0, lease_reads=True, lease_ticks=80))
    assert found is not None
    assert found.violation is not None and found.violation.kind == "linearizability"
    assert "--lease-reads --lease-ticks 80" in found.config.command()


def test_liveness_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that ignores heartbeat answers never resends lost appends nor confirms
    reads: once the faults stop, some client operations stay undecided."""
    monkeypatch.setattr(RaftNode, "_handle_heartbeat_response", lambda self, message: None)
    found = first_violation(seed_configs(3, start=0))
    assert found is not None and found.violation is not None
    assert found.violation.kind == "liveness"


def test_cli_reports_a_violation_whose_reproduction_command_reproduces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RaftNode, "_grant_vote", grant_vote_twice)
    outcome = CliRunner().invoke(main, ["--seeds", "20", "--start", "0"])
    assert outcome.exit_code == 1
    assert "VIOLATION" in outcome.output
    assert "violations=0" not in outcome.output
    lines = outcome.output.splitlines()
    first = next(i for i, line in enumerate(lines) if "VIOLATION" in line)
    command = lines[first + 1].strip()
    prefix = "reproduce: python -m pnyx.core.sim "
    assert command.startswith(prefix + "--seeds 1 --start ")
    again = CliRunner().invoke(main, command.removeprefix(prefix).split())
    assert again.exit_code == 1
    # The very same violation, at the very same moment.
    assert again.output.splitlines()[0] == lines[first]
    assert "seeds=1 " in again.output and "violations=1" in again.output
