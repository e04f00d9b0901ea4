"""The safety properties of Raft, checked continuously while a simulation runs.

``SafetyMonitor`` is told what every node does (roles it takes, entries it writes, entries
it applies, commit indexes it reports) and raises ``Violation`` the moment one of these is
broken:

- election safety: at most one leader per term, one granted vote per node and term, and
  a leader holds the votes of a quorum granted in its own term;
- log matching: two logs holding an entry with the same index and term hold the same
  entry there, and agree on the term just before it (by induction, on the whole prefix);
- leader completeness: a new leader's log holds every entry committed in an earlier
  term;
- the commit rule: a leader moves its commit index only to an entry of its own term;
- state machine safety: no two nodes apply different entries at one index, and each node
  applies indexes in order without gaps;
- the commit index never decreases, not even across a restart (never below the commit
  the node had persisted);
- no acknowledged write is lost: at the end, the final leader's log still holds it.

The monitor only observes: it must never change what a node does, and its bookkeeping
must be deterministic (no iteration over unordered collections).
"""

from __future__ import annotations

import attrs

from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.types import Entry
from pnyx.core.sim.disk import LogImage


class Violation(Exception):  # noqa: N818 - "violation" is the domain word
    """A safety or liveness property does not hold."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@attrs.define
class SafetyMonitor:
    leaders: dict[int, int] = attrs.field(factory=dict)
    """term -> the node that led it."""
    written: dict[tuple[int, int], tuple[Entry, int]] = attrs.field(factory=dict)
    """(index, term) -> (the entry, the term of the entry before it)."""
    committed: dict[int, Entry] = attrs.field(factory=dict)
    """index -> the entry committed there (seen in a leader's log when it committed it,
    or at its first application)."""
    votes: dict[tuple[int, int], int] = attrs.field(factory=dict)
    """(term, voter) -> the candidate it granted its vote to (from messages sent)."""
    leader_commits: dict[int, int] = attrs.field(factory=dict)
    """term -> the commit index its leader was last seen with."""
    commit_terms: list[int] = attrs.field(factory=lambda: [0])
    """commit_terms[i]: the term of the leader that first committed index i."""
    acknowledged: dict[tuple[int, int], Entry] = attrs.field(factory=dict)
    """(client, seq) -> the entry whose application was acknowledged to that client."""

    @property
    def commit_frontier(self) -> int:
        return len(self.commit_terms) - 1

    # --- election safety and leader completeness ---------------------------------------

    def observe_leader(self, node: int, raft: RaftNode) -> None:
        """Called after every input of a node that is leader. The first time a (term,
        node) is seen, its log must hold every entry committed in an earlier term."""
        term = raft.term
        holder = self.leaders.get(term)
        if holder == node:
            self._check_commit_rule(node, raft)
            self._observe_commit(raft)
            return
        if holder is not None:
            raise Violation(
                "election safety", f"nodes {holder} and {node} are both leader of term {term}"
            )
        self.leaders[term] = node
        self.leader_commits[term] = raft.commit_index
        self._check_quorum_of_votes(node, raft)
        first = raft.first_index
        for index in range(first, self.commit_frontier + 1):
            if self.commit_terms[index] >= term:
                continue  # committed by a later leader: this one may well lack it
            expected = self.committed.get(index)
            if expected is None:
                continue
            held = raft.entries(index, index + 1)
            if not held or held[0] != expected:
                raise Violation(
                    "leader completeness",
                    f"node {node} became leader of term {term} holding "
                    f"{_show(held[0] if held else None)} at index {index}, but "
                    f"{_show(expected)} was committed there in term "
                    f"{self.commit_terms[index]}",
                )
        self._observe_commit(raft)

    def _check_quorum_of_votes(self, node: int, raft: RaftNode) -> None:
        """A leader of term T was granted votes in term T by a quorum of its voters (its
        own vote included): votes of other terms or of the pre-vote round do not count."""
        term = raft.term
        voters = raft.conf_state.voters
        granted = sorted(
            voter for voter in voters if voter == node or self.votes.get((term, voter)) == node
        )
        if len(granted) < len(voters) // 2 + 1:
            raise Violation(
                "election safety",
                f"node {node} became leader of term {term} with votes of {granted} only "
                f"(voters {sorted(voters)})",
            )

    def _check_commit_rule(self, node: int, raft: RaftNode) -> None:
        """A leader advances its commit index only to an entry of its own term (Raft,
        Figure 2 and Figure 8): older entries commit only together with a newer one."""
        commit = raft.commit_index
        if commit <= self.leader_commits[raft.term]:
            return
        self.leader_commits[raft.term] = commit
        if raft.term_at(commit) != raft.term:
            raise Violation(
                "leader commit rule",
                f"node {node}, leader of term {raft.term}, advanced its commit index to "
                f"{commit}, an entry of term {raft.term_at(commit)}",
            )

    def _observe_commit(self, raft: RaftNode) -> None:
        commit = raft.commit_index
        frontier = self.commit_frontier
        if commit <= frontier:
            return
        # Entries past the frontier were just committed by this leader; they are beyond
        # its applied index, hence still in its in-memory log.
        # (Only the initial configuration entries, committed by bootstrap before any
        # leader, may already be compacted away here.)
        first = max(frontier + 1, raft.first_index)
        entries = raft.entries(first, commit + 1)
        if len(entries) != commit - first + 1:
            raise AssertionError(f"leader lacks entries {first}..{commit} it committed")
        for entry in entries:
            known = self.committed.setdefault(entry.index, entry)
            if known != entry:
                raise Violation(
                    "state machine safety",
                    f"leader of term {raft.term} committed {_show(entry)} at index "
                    f"{entry.index}, where {_show(known)} was applied",
                )
        self.commit_terms.extend([raft.term] * (commit - frontier))

    def observe_vote(self, voter: int, term: int, candidate: int) -> None:
        """A granted (real) vote left ``voter``: one vote per term, ever, even across
        crashes (this is what persisting the vote before answering guarantees)."""
        granted = self.votes.setdefault((term, voter), candidate)
        if granted != candidate:
            raise Violation(
                "double vote",
                f"node {voter} granted its vote in term {term} to {granted} and to {candidate}",
            )

    # --- log matching ------------------------------------------------------------------

    def observe_written(self, node: int, image: LogImage, entries: tuple[Entry, ...]) -> None:
        """``entries`` were just written to ``node``'s log (``image`` already holds them)."""
        for entry in entries:
            if entry.index <= image.snapshot_index:
                continue
            previous_term = image.term_at(entry.index - 1)
            assert previous_term is not None
            known = self.written.get((entry.index, entry.term))
            if known is None:
                self.written[(entry.index, entry.term)] = (entry, previous_term)
            elif known != (entry, previous_term):
                raise Violation(
                    "log matching",
                    f"node {node} holds {_show(entry)} after term {previous_term} at index "
                    f"{entry.index - 1}, another log holds {_show(known[0])} after term "
                    f"{known[1]}",
                )

    # --- state machine safety ----------------------------------------------------------

    def observe_applied(self, node: int, entry: Entry) -> None:
        known = self.committed.setdefault(entry.index, entry)
        if known != entry:
            raise Violation(
                "state machine safety",
                f"node {node} applied {_show(entry)} at index {entry.index}, another node "
                f"applied {_show(known)}",
            )

    def acknowledge(self, client: int, seq: int, entry: Entry) -> None:
        self.acknowledged.setdefault((client, seq), entry)

    def check_acknowledged_kept(self, node: int, image: LogImage, commit: int) -> None:
        """At the end: the final leader still holds every acknowledged write."""
        for (client, seq), entry in sorted(self.acknowledged.items()):
            if entry.index > commit:
                raise Violation(
                    "acknowledged write lost",
                    f"write {client}.{seq} was acknowledged at index {entry.index}, final "
                    f"leader {node} committed only up to {commit}",
                )
            if entry.index > image.snapshot_index and image.entry(entry.index) != entry:
                raise Violation(
                    "acknowledged write lost",
                    f"write {client}.{seq} was acknowledged as {_show(entry)}, final leader "
                    f"{node} holds {_show(image.entry(entry.index))}",
                )


def _show(entry: Entry | None) -> str:
    if entry is None:
        return "no entry"
    kind = "conf" if entry.type else "entry"
    return f"{kind}(index={entry.index}, term={entry.term}, {len(entry.data)}B)"
