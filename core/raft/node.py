"""``RaftNode``: the whole Raft protocol of one member as a deterministic state machine.

Inputs: ``tick()`` (time), ``step(message)`` (the network), ``propose``/``read_index``/
``propose_conf_change``/``transfer_leadership``/``compact`` (the application). Outputs:
``Ready`` batches (entries and hard state to persist, messages to send, entries to
apply, reads that became safe), acknowledged with ``advance()``. See ``types.Ready`` for
the ordering contract.

This module must never touch sockets, files, clocks, threads or the global ``random``
module: time is ``tick()``, randomness is the injected ``random.Random``, and the only
reading of a clock (the leader lease, ``RaftConfig.lease_duration``) goes through the
injected ``clock``. Given the same inputs it produces the same outputs.

The key decisions live in small methods so that the simulator's tests can replace one of
them to plant a known bug and check that the simulator catches it:

- ``_poll_votes`` / ``_tally_votes``: record a vote response, count the votes.
- ``_maybe_commit``: advance the leader's commit index (current-term entries only).
- ``_hard_state``: what the application must persist (term, vote, commit).
- ``_grant_vote``: whether to grant a (pre-)vote request.
- ``_in_leader_lease``: whether a live leader was heard from recently (CheckQuorum).
- ``_handle_append`` / ``_handle_snapshot``: the follower side of replication.
- ``_on_stale_term``: a message from an older term is answered or dropped, never used.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping

import attrs

from pnyx.core.errors import InvalidRequestError, ProposalDroppedError
from pnyx.core.raft.codec import decode_conf_change, encode_conf_change
from pnyx.core.raft.log import RaftLog
from pnyx.core.raft.progress import Inflights, Progress, ProgressState
from pnyx.core.raft.read_only import ReadOnly, ReadRequest
from pnyx.core.raft.types import (
    NONE,
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    HeartbeatRequest,
    HeartbeatResponse,
    Message,
    PersistedState,
    ProposalForward,
    RaftConfig,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMetadata,
    SnapshotRequest,
    SoftState,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

__all__ = ["PeerProgress", "RaftNode", "RaftStatus", "VoteResult", "apply_conf_change"]

_FOLLOWER = Role.FOLLOWER
_PRE_CANDIDATE = Role.PRE_CANDIDATE
_CANDIDATE = Role.CANDIDATE
_LEADER = Role.LEADER
_NORMAL = EntryType.NORMAL
_CONF_CHANGE = EntryType.CONF_CHANGE
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT
_HEARTBEAT_RING = 64
"""Send times kept for the last heartbeat broadcasts (the lease looks one up by number)."""

# Reasons carried by ProposalDroppedError (part of the API: callers may match on them).
NO_LEADER = "no leader"
TRANSFER_IN_PROGRESS = "leadership transfer in progress"
TOO_MANY_UNCOMMITTED_BYTES = "too many uncommitted bytes"
CONF_CHANGE_PENDING = "configuration change pending"
NOT_LEADER = "not leader"
TRANSFER_TARGET_NOT_VOTER = "transfer target is not a voter"
WOULD_REMOVE_LAST_VOTER = "would remove the last voter"


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


@attrs.frozen
class PeerProgress:
    match: int
    next: int
    state: str
    """"probe", "replicate" or "snapshot"."""
    is_learner: bool = False


@attrs.frozen
class RaftStatus:
    id: int
    term: int
    role: Role
    leader: int
    commit: int
    applied: int
    last_index: int
    conf_state: ConfState
    progress: Mapping[int, PeerProgress] = attrs.field(factory=dict, hash=False)
    """Per peer (not the node itself); empty unless the node is the leader."""
    lead_transferee: int = NONE


def apply_conf_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after one change (pure)."""
    node_id = change.node_id
    if change.type is ConfChangeType.ADD_NODE:
        return ConfState(voters=conf.voters | {node_id}, learners=conf.learners - {node_id})
    if change.type is ConfChangeType.ADD_LEARNER:
        return ConfState(voters=conf.voters - {node_id}, learners=conf.learners | {node_id})
    return ConfState(voters=conf.voters - {node_id}, learners=conf.learners - {node_id})


class RaftNode:
    """One Raft member. Not thread-safe: one thread (the node's loop) owns it.

    Starting:

    - New cluster (``bootstrap`` given, nothing persisted): the node writes one committed
      CONF_CHANGE entry per initial member at term 1 (voters by id, then learners), the
      same on every initial member, so the configuration lives in the log and a node that
      joins later learns it from there. The first Ready carries them.
    - Restart (``persisted``): ``bootstrap`` is ignored. The configuration comes from the
      snapshot and the CONF_CHANGE entries after it; the applied index restarts at the
      snapshot's index, and committed entries after it are handed out again.
    - Joining (neither): no configuration, so the node never campaigns; it waits for the
      leader's entries or snapshot.

    The newest configuration in the log is in force as soon as its entry is appended.
    Learners answer vote requests (a candidate's newer configuration may make them
    voters) but never campaign, and only voters count for commit, quorum and ReadIndex.
    ``Ready.snapshot`` is set only when a received snapshot replaced the log; a snapshot
    whose last entry the log already holds just advances the commit index.

    A plain class rather than ``attrs.define``: the constructor derives the state from
    what was persisted, and instances stay monkeypatchable (no ``__slots__``) so that
    simulator tests can plant bugs in the decision methods listed in the module docstring.
    """

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        persisted: PersistedState = PersistedState(),  # noqa: B008 (frozen, so sharing is safe)
        bootstrap: ConfState | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if config.id == NONE:
            raise ValueError("node id must be positive")
        if config.election_tick <= config.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if config.lease_duration > 0 and (clock is None or not config.check_quorum):
            raise ValueError("a leader lease needs a clock and check_quorum")
        self._config = config
        self._id = config.id
        self._rng = rng
        self._election_tick = config.election_tick
        self._heartbeat_tick = config.heartbeat_tick
        self._max_append_bytes = config.max_append_bytes
        self._max_inflight = config.max_inflight

        self._term = 0
        self._vote = NONE
        self._leader_id = NONE
        self._role = _FOLLOWER
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_tick
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self._lead_transferee = NONE
        self._uncommitted_bytes = 0
        self._reads = ReadOnly()
        self._clock = clock
        self._lease_duration = config.lease_duration if clock is not None else 0.0
        self._lease_forfeited = False
        """This leader started a leadership transfer: no lease until its term ends."""
        self._heartbeat_seq = 0
        """Heartbeat broadcasts sent by this node; never reset (contexts are not reused)."""
        self._heartbeat_sent = [0.0] * _HEARTBEAT_RING
        """Clock readings taken just before the last broadcasts, by number."""
        self._heartbeats_queued = False
        """A broadcast's heartbeats may be in ``_msgs`` (for ``take_heartbeats``)."""
        self._boot_lease = False
        """Restarted with a term: refuse votes as if within a leader lease until the
        first election timeout passes (the lease of a leader we answered may still run)."""

        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._forward_buffer: list[Entry] = []
        self._needs_broadcast = False
        self._waiting_followers = False
        """Some follower's ``commit_wanted`` is ahead of what it was told."""
        self._eager = False
        """As a follower: clients here wait for every commit (``set_eager``)."""

        # Every configuration in the log, oldest first, as (index of its entry, state);
        # the first element is the base (a snapshot's, or the empty one at index 0).
        self._conf_history: list[tuple[int, ConfState]] = [(0, ConfState())]
        self._conf = ConfState()

        self._snapshot: Snapshot | None = None
        """The latest snapshot, sent to followers behind the compacted log."""
        self._pending_snapshot: Snapshot | None = None
        """A snapshot received from the leader, not yet handed out in a Ready."""

        self._log = RaftLog()
        self._prev_hard_state = HardState()
        self._prev_hard_key = (-1, -1, -1)
        """(term, vote, commit) when the last Ready was made: a cheap change detector."""
        self._prev_soft_state = SoftState(leader_id=NONE, role=_FOLLOWER)
        self._restore(persisted, bootstrap)

    def _restore(self, persisted: PersistedState, bootstrap: ConfState | None) -> None:
        log = self._log
        hard_state = persisted.hard_state
        snapshot = persisted.snapshot
        if snapshot is not None:
            metadata = snapshot.metadata
            log.snapshot_index = metadata.index
            log.snapshot_term = metadata.term
            log.committed = log.applied = log.applying = log.stable = metadata.index
            self._conf_history = [(metadata.index, metadata.conf_state)]
            self._snapshot = snapshot
        entries = persisted.entries
        if entries:
            if entries[0].index != log.snapshot_index + 1:
                raise ValueError("persisted entries do not follow the snapshot")
            log.entries = list(entries)
            log.stable = log.last_index
            for entry in entries:
                if entry.type is _CONF_CHANGE:
                    self._push_conf(entry)
        log.unstable = log.last_index + 1
        empty = snapshot is None and not entries and hard_state == HardState()
        bootstrapped = False
        if empty and bootstrap is not None:
            bootstrapped = True
            self._bootstrap(bootstrap)
            hard_state = HardState(term=1, vote=NONE, commit=log.last_index)
        else:
            self._prev_hard_state = hard_state
        if hard_state.commit > log.last_index:
            raise ValueError("persisted commit index is beyond the persisted log")
        log.committed = max(log.committed, hard_state.commit)
        self._term = hard_state.term
        self._vote = hard_state.vote
        self._conf = self._conf_history[-1][1]
        self._reset_timers()
        # A member that persisted a term may have answered a leader's heartbeat just
        # before it went down (a new cluster's bootstrap term answered nothing yet).
        self._boot_lease = self._lease_duration > 0 and self._term > 0 and not bootstrapped

    def _bootstrap(self, conf: ConfState) -> None:
        """A new cluster: every initial member writes the same configuration entries at
        term 1, already committed, so that the configuration is in the log (a node that
        joins later learns it from there) and all initial logs agree."""
        changes = [ConfChange(ConfChangeType.ADD_NODE, v) for v in sorted(conf.voters)]
        changes += [ConfChange(ConfChangeType.ADD_LEARNER, n) for n in sorted(conf.learners)]
        entries = [
            Entry(1, position + 1, _CONF_CHANGE, encode_conf_change(change))
            for position, change in enumerate(changes)
        ]
        self._log.append(entries)
        for entry in entries:
            self._push_conf(entry)
        self._log.committed = len(entries)

    # --- observation -----------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> int:
        return self._vote

    @property
    def leader_id(self) -> int:
        return self._leader_id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def conf_state(self) -> ConfState:
        return self._conf

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot this node holds (taken by ``compact`` or received)."""
        return self._snapshot

    def entries(self, low: int, high: int) -> tuple[Entry, ...]:
        """Log entries with ``low <= index < high`` still in memory (for tests/tools)."""
        low = max(low, self._log.first_index)
        high = min(high, self._log.last_index + 1)
        return tuple(self._log.slice(low, high)) if low < high else ()

    def term_at(self, index: int) -> int | None:
        return self._log.term_at(index)

    def status(self) -> RaftStatus:
        progress = {
            node_id: PeerProgress(pr.match, pr.next, pr.state.value, pr.is_learner)
            for node_id, pr in sorted(self._progress.items())
        }
        return RaftStatus(
            id=self._id,
            term=self._term,
            role=self._role,
            leader=self._leader_id,
            commit=self._log.committed,
            applied=self._log.applied,
            last_index=self._log.last_index,
            conf_state=self._conf,
            progress=progress,
            lead_transferee=self._lead_transferee,
        )

    # --- time ------------------------------------------------------------------------

    def tick(self) -> None:
        if self._role is _LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._boot_lease and self._election_elapsed >= self._election_tick:
            self._boot_lease = False
        if self._election_elapsed >= self._randomized_election_timeout:
            self._election_elapsed = 0
            if self._promotable():
                self._campaign(transfer=False)

    def _tick_leader(self) -> None:
        if self._config.quorum_first:
            self._send_entries_left_for_later()
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._election_tick:
            self._election_elapsed = 0
            if self._config.check_quorum and not self._quorum_recently_active():
                self._become_follower(self._term, NONE)
                return
            if self._lead_transferee != NONE:
                # The target did not win within an election timeout: give up on it.
                self._lead_transferee = NONE
            self._retry_lost_snapshots()
        if self._heartbeat_elapsed >= self._heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        else:
            self._send_commit_updates()

    def _send_entries_left_for_later(self) -> None:
        for node_id, pr in self._progress.items():
            if pr.state is _REPLICATE:
                self._fill_pipeline(node_id, pr, False)

    def _owes_commit(self, pr: Progress) -> bool:
        """The follower holds committed entries it was not told are committed, and is not
        one whose new entries wait for the next tick (``quorum_first``: it gets the
        commit with them)."""
        untold = pr.commit_sent < self._log.committed and pr.commit_sent < pr.match
        return untold and not (self._config.quorum_first and pr.next <= self._log.last_index)

    def _send_commit_updates(self) -> None:
        """Tell followers a commit index they have not heard yet, once per tick.

        A commit does not send a message of its own to every follower (and cost an answer
        from each): the next AppendRequest carries it, and when none goes out, this does
        within a tick. Nothing waits on it: the leader answers clients when it applies,
        a follower's ReadIndex learns the commit index from the round's heartbeat, and
        committed entries are already durable on a quorum."""
        for node_id, pr in self._progress.items():
            if self._owes_commit(pr):
                self._send_append(node_id, pr, True)

    def _retry_lost_snapshots(self) -> None:
        # A snapshot (or its acknowledgement) may be lost: after one to two election
        # timeouts without an answer, probe again (which resends it if still needed).
        for pr in self._progress.values():
            if pr.state is _SNAPSHOT:
                pr.snapshot_checks += 1
                if pr.snapshot_checks >= 2:
                    pr.become_probe()

    def _quorum_recently_active(self) -> bool:
        """CheckQuorum: did a quorum of voters (counting this node if it is one) talk to
        us during the last election timeout? Resets the activity marks."""
        voters = self._conf.voters
        active = 1 if self._id in voters else 0
        for node_id, pr in self._progress.items():
            if pr.recent_active and node_id in voters:
                active += 1
            pr.recent_active = False
        return active >= len(voters) // 2 + 1

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # The injected generator makes the timeout random yet reproducible per seed.
        self._randomized_election_timeout = self._rng.randrange(
            self._election_tick, 2 * self._election_tick
        )

    def _in_leader_lease(self) -> bool:
        """Whether this node heard from a live leader within the minimum election timeout
        (or is that leader): it then ignores (pre-)vote requests that would disrupt it."""
        return (
            self._config.check_quorum
            and (self._leader_id != NONE or self._boot_lease)
            and self._election_elapsed < self._election_tick
        )

    def _promotable(self) -> bool:
        """Only a voter of its own (newest) configuration may campaign."""
        return self._id in self._conf.voters

    # --- role changes ----------------------------------------------------------------

    def _become_follower(self, term: int, leader_id: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = NONE
        self._leader_id = leader_id
        self._role = _FOLLOWER
        self._after_role_change()

    def _become_pre_candidate(self) -> None:
        # PreVote: no term bump (and no vote) until a quorum says it would vote for us.
        self._leader_id = NONE
        self._role = _PRE_CANDIDATE
        self._after_role_change()

    def _become_candidate(self) -> None:
        self._term += 1
        self._vote = self._id
        self._leader_id = NONE
        self._role = _CANDIDATE
        self._after_role_change()

    def _after_role_change(self) -> None:
        self._reset_timers()
        self._boot_lease = False
        self._lease_forfeited = False
        self._votes = {}
        self._progress = {}
        self._lead_transferee = NONE
        self._reads.clear()
        self._forward_buffer = []
        self._needs_broadcast = False
        self._waiting_followers = False

    def _become_leader(self) -> None:
        self._leader_id = self._id
        self._role = _LEADER
        self._after_role_change()
        self._uncommitted_bytes = 0
        self._sync_progress()
        # The no-op of the new term: commits everything before it and lets ReadIndex and
        # configuration changes proceed (they wait for a commit in the current term).
        self._append_as_leader([Entry(self._term, self._log.last_index + 1, _NORMAL, b"")])

    # --- elections -------------------------------------------------------------------

    def campaign(self) -> None:
        """Start an election now (with PreVote if configured). No-op for a leader or a
        node that is not a voter of its configuration."""
        if self._role is not _LEADER:
            self._campaign(transfer=False)

    def _campaign(self, transfer: bool) -> None:
        if not self._promotable():
            return
        if self._config.pre_vote and not transfer:
            self._pre_campaign()
        else:
            self._real_campaign(transfer)

    def _pre_campaign(self) -> None:
        self._become_pre_candidate()
        self._votes = {self._id: True}
        if self._tally_votes() is VoteResult.WON:
            self._real_campaign(transfer=False)
            return
        self._request_votes(self._term + 1, pre_vote=True, transfer=False)

    def _real_campaign(self, transfer: bool) -> None:
        self._become_candidate()
        self._votes = {self._id: True}
        if self._tally_votes() is VoteResult.WON:
            self._become_leader()
            return
        self._request_votes(self._term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, pre_vote: bool, transfer: bool) -> None:
        last_index = self._log.last_index
        last_term = self._log.last_term
        for voter in sorted(self._conf.voters):
            if voter != self._id:
                self._send(
                    VoteRequest(
                        to=voter,
                        sender=self._id,
                        term=term,
                        last_log_index=last_index,
                        last_log_term=last_term,
                        pre_vote=pre_vote,
                        leader_transfer=transfer,
                    )
                )

    def _poll_votes(self, message: VoteResponse) -> None:
        """Record one vote response. Only reached by responses of the current term; it
        also ignores answers of the wrong kind (a pre-vote answer during the real
        election) and answers from non-voters, and the first answer of a voter wins."""
        if message.pre_vote != (self._role is _PRE_CANDIDATE):
            return
        if message.sender not in self._conf.voters:
            return
        self._votes.setdefault(message.sender, message.granted)

    def _tally_votes(self) -> VoteResult:
        voters = self._conf.voters
        quorum = len(voters) // 2 + 1
        granted = rejected = 0
        for node_id, vote in self._votes.items():
            if node_id in voters:
                if vote:
                    granted += 1
                else:
                    rejected += 1
        if granted >= quorum:
            return VoteResult.WON
        if rejected > len(voters) - quorum:
            return VoteResult.LOST
        return VoteResult.PENDING

    def _grant_vote(self, message: VoteRequest) -> bool:
        """Raft's vote rule: one vote per term (a pre-vote for a future term does not
        count as one), and only for a log at least as up to date as ours."""
        can_vote = (
            self._vote == message.sender
            or (self._vote == NONE and self._leader_id == NONE)
            or (message.pre_vote and message.term > self._term)
        )
        return can_vote and self._log.is_up_to_date(message.last_log_index, message.last_log_term)

    def _handle_vote_request(self, message: VoteRequest) -> None:
        if self._grant_vote(message):
            # A granted pre-vote answers with the requested (future) term.
            self._send(
                VoteResponse(
                    to=message.sender,
                    sender=self._id,
                    term=message.term,
                    granted=True,
                    pre_vote=message.pre_vote,
                )
            )
            if not message.pre_vote:
                self._election_elapsed = 0
                self._vote = message.sender
        else:
            self._send(
                VoteResponse(
                    to=message.sender,
                    sender=self._id,
                    term=self._term,
                    granted=False,
                    pre_vote=message.pre_vote,
                )
            )

    def _handle_vote_response(self, message: VoteResponse) -> None:
        self._poll_votes(message)
        result = self._tally_votes()
        if result is VoteResult.WON:
            if self._role is _PRE_CANDIDATE:
                self._real_campaign(transfer=False)
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self._term, NONE)

    # --- the single entry point for messages -----------------------------------------

    def step(self, message: Message) -> None:
        """Handle one message from a peer. Messages for another node, from a stale term,
        or that do not fit this node's role are ignored (some stale ones are answered so
        that their sender learns the newer term)."""
        if message.to != self._id:
            return
        term = message.term
        if term > self._term:
            if not self._on_higher_term(message):
                return
        elif term < self._term:
            self._on_stale_term(message)
            return
        if isinstance(message, AppendRequest):
            self._on_leader_message(message)
            self._handle_append(message)
        elif isinstance(message, AppendResponse):
            if self._role is _LEADER:
                self._handle_append_response(message)
        elif isinstance(message, HeartbeatRequest):
            self._on_leader_message(message)
            self._handle_heartbeat(message)
        elif isinstance(message, HeartbeatResponse):
            if self._role is _LEADER:
                self._handle_heartbeat_response(message)
        elif isinstance(message, VoteRequest):
            self._handle_vote_request(message)
        elif isinstance(message, VoteResponse):
            if self._role is _PRE_CANDIDATE or self._role is _CANDIDATE:
                self._handle_vote_response(message)
        elif isinstance(message, SnapshotRequest):
            self._on_leader_message(message)
            self._handle_snapshot(message)
        elif isinstance(message, TimeoutNow):
            if self._role is not _LEADER:
                # Leadership transfer: campaign at once, skipping PreVote, and ask the
                # voters to ignore their leader lease.
                self._campaign(transfer=True)
        elif isinstance(message, ProposalForward):
            if self._role is _LEADER:
                self._handle_proposal_forward(message)
        elif isinstance(message, ReadIndexRequest):
            if self._role is _LEADER:
                self._leader_read(message.context, message.sender)
        elif isinstance(message, ReadIndexResponse) and self._role is not _LEADER:
            self._read_states.append(ReadState(message.index, message.context))

    def _on_higher_term(self, message: Message) -> bool:
        """A message from a newer term. Returns whether to go on handling it."""
        if isinstance(message, VoteRequest):
            if self._in_leader_lease() and not message.leader_transfer:
                # CheckQuorum: we heard from a live leader recently, so this candidate
                # is probably just cut off; refuse without adopting its term.
                self._send(
                    VoteResponse(
                        to=message.sender,
                        sender=self._id,
                        term=self._term,
                        granted=False,
                        pre_vote=message.pre_vote,
                    )
                )
                return False
            if not message.pre_vote:
                self._become_follower(message.term, NONE)
            return True
        if isinstance(message, VoteResponse):
            if message.pre_vote and message.granted:
                return True  # a granted pre-vote carries the term we asked for
            self._become_follower(message.term, NONE)
            return True
        if isinstance(message, (AppendRequest, HeartbeatRequest, SnapshotRequest)):
            self._become_follower(message.term, message.sender)
        else:
            self._become_follower(message.term, NONE)
        return True

    def _on_stale_term(self, message: Message) -> None:
        if isinstance(message, (AppendRequest, HeartbeatRequest)):
            # A leader of an older term (e.g. back from a partition): tell it our term so
            # it steps down instead of waiting for its CheckQuorum.
            self._send(AppendResponse(to=message.sender, sender=self._id, term=self._term, index=0))
        elif isinstance(message, VoteRequest) and message.pre_vote:
            self._send(
                VoteResponse(
                    to=message.sender,
                    sender=self._id,
                    term=self._term,
                    granted=False,
                    pre_vote=True,
                )
            )

    def _on_leader_message(self, message: Message) -> None:
        """An AppendRequest, HeartbeatRequest or SnapshotRequest of the current term."""
        if self._role is not _FOLLOWER:
            self._become_follower(self._term, message.sender)
        else:
            self._leader_id = message.sender
        self._election_elapsed = 0

    # --- follower side of replication ------------------------------------------------

    def _handle_append(self, message: AppendRequest) -> None:
        if self._role is not _FOLLOWER:
            return
        log = self._log
        prev_index = message.prev_log_index
        prev_term = message.prev_log_term
        entries = message.entries
        if entries and (
            entries[0].index != prev_index + 1 or entries[-1].index != prev_index + len(entries)
        ):
            return  # not a run of entries following prev_log_index: a broken peer, drop it
        committed = log.committed
        if prev_index < committed:
            # Everything up to our commit index matches the leader's log already: skip
            # that part (it may also be compacted away here).
            skip = committed - prev_index
            if skip >= len(entries):
                self._answer_append(message.sender, committed)
                return
            entries = entries[skip:]
            prev_index = committed
            prev_term = log.term_at(committed)  # type: ignore[assignment]
        if log.term_at(prev_index) == prev_term:
            last_new = prev_index + len(entries)
            if entries:
                position = log.find_conflict(entries)
                if position < len(entries):
                    # Only entries that conflict (or are new) are written: a late,
                    # reordered request never truncates what a newer one appended.
                    self._append_as_follower(entries[position:] if position else entries)
            commit = message.commit if message.commit < last_new else last_new
            log.commit_to(commit)
            self._answer_append(message.sender, last_new)
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(prev_index, log.last_index), message.prev_log_term
        )
        self._send(
            AppendResponse(
                to=message.sender,
                sender=self._id,
                term=self._term,
                index=message.prev_log_index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
                eager=self._eager,
            )
        )

    def _answer_append(self, to: int, index: int) -> None:
        """A follower's acknowledgement: it holds the leader's log up to ``index``."""
        self._send(
            AppendResponse(to=to, sender=self._id, term=self._term, index=index, eager=self._eager)
        )

    def _append_as_follower(self, entries: tuple[Entry, ...]) -> None:
        log = self._log
        first = entries[0].index
        if first <= log.committed:
            raise AssertionError(f"refusing to overwrite committed entry {first}")
        truncating = first <= log.last_index
        log.append(entries)
        if truncating and self._conf_history[-1][0] >= first:
            # The newest configuration was truncated away: fall back to an older one.
            while self._conf_history[-1][0] >= first:
                self._conf_history.pop()
            self._conf_changed()
        for entry in entries:
            if entry.type is _CONF_CHANGE:
                self._push_conf(entry)
                self._conf_changed()

    def _handle_heartbeat(self, message: HeartbeatRequest) -> None:
        if self._role is not _FOLLOWER:
            return
        # The leader sends min(its commit, our match), so this never passes our log.
        self._log.commit_to(min(message.commit, self._log.last_index))
        self._send(
            HeartbeatResponse(
                to=message.sender,
                sender=self._id,
                term=self._term,
                context=message.context,
                eager=self._eager,
            )
        )

    def _handle_snapshot(self, message: SnapshotRequest) -> None:
        if self._role is not _FOLLOWER:
            return
        snapshot = message.snapshot
        metadata = snapshot.metadata
        index = metadata.index
        log = self._log
        if index <= log.committed:
            answer = log.committed
        elif log.term_at(index) == metadata.term:
            # We hold the snapshot's last entry already: the entries after it match too,
            # keep them and simply commit up to the snapshot.
            log.commit_to(index)
            answer = index
        else:
            log.restore(index, metadata.term)
            self._pending_snapshot = snapshot
            if self._snapshot is None or self._snapshot.metadata.index < index:
                self._snapshot = snapshot
            self._conf_history = [(index, metadata.conf_state)]
            self._conf_changed()
            answer = index
        self._answer_append(message.sender, answer)

    # --- leader side of replication --------------------------------------------------

    def _append_as_leader(self, entries: list[Entry]) -> None:
        self._log.append(entries)
        size = 0
        for entry in entries:
            size += len(entry.data)
            if entry.type is _CONF_CHANGE:
                self._push_conf(entry)
                self._conf_changed()
        self._uncommitted_bytes += size
        self._needs_broadcast = True

    def _send_append(self, to: int, pr: Progress, send_if_empty: bool) -> bool:
        """Send the next AppendRequest (or the snapshot) to one follower, if its progress
        state allows. Returns whether something was sent."""
        if pr.is_paused():
            return False
        log = self._log
        last_index = log.last_index
        pr.next = min(pr.next, last_index + 1)
        prev_index = pr.next - 1
        prev_term = log.term_at(prev_index)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        if pr.next <= last_index:
            entries = self._entries_for_append(pr.next)
        elif send_if_empty:
            entries = ()
        else:
            return False
        self._send_append_request(to, pr, prev_index, prev_term, entries)
        if pr.state is _REPLICATE:
            if entries:
                sent_last = entries[-1].index
                pr.next = sent_last + 1
                pr.inflights.add(sent_last)
        else:
            pr.probe_sent = True
        return True

    def _send_append_request(
        self, to: int, pr: Progress, prev_index: int, prev_term: int, entries: tuple[Entry, ...]
    ) -> None:
        """One AppendRequest after ``prev_index`` / ``prev_term``, carrying the commit."""
        committed = self._log.committed
        self._send(
            AppendRequest(
                to=to,
                sender=self._id,
                term=self._term,
                prev_log_index=prev_index,
                prev_log_term=prev_term,
                entries=entries,
                commit=committed,
            )
        )
        pr.commit_sent = committed

    def _entries_for_append(self, first: int) -> tuple[Entry, ...]:
        """Entries from ``first`` on, at most ``max_append_bytes`` of payload (but always
        at least one entry)."""
        log = self._log
        mine = log.entries
        start = first - log.snapshot_index - 1
        end = start
        stop = len(mine)
        budget = self._max_append_bytes
        size = 0
        while end < stop:
            size += len(mine[end].data)
            if size > budget and end > start:
                break
            end += 1
        return tuple(mine[start:end])

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        snapshot = self._snapshot
        if snapshot is None:
            return False
        pr.become_snapshot(snapshot.metadata.index)
        self._send(SnapshotRequest(to=to, sender=self._id, term=self._term, snapshot=snapshot))
        return True

    def _broadcast_append(self, send_if_empty: bool) -> None:
        later = self._followers_for_later() if self._config.quorum_first else ()
        for node_id, pr in self._progress.items():
            if node_id in later:
                continue
            self._fill_pipeline(node_id, pr, send_if_empty)

    def _fill_pipeline(self, to: int, pr: Progress, send_if_empty: bool) -> None:
        """Send the next AppendRequest, then more while the window allows and entries
        remain (the replicate state pipelines)."""
        sent = self._send_append(to, pr, send_if_empty)
        while sent and pr.state is _REPLICATE and pr.next <= self._log.last_index:
            sent = self._send_append(to, pr, False)

    def _followers_for_later(self) -> tuple[int, ...]:
        """``RaftConfig.quorum_first``: the voters that may get new entries at the next
        tick. Empty while the followers a quorum needs (the most up-to-date voters in the
        replicate state) are not all idle, or if no voter is spare."""
        voters = self._conf.voters
        need = len(voters) // 2 + 1 - (1 if self._id in voters else 0)
        ranked = sorted(
            (
                (pr.match, -node_id, node_id, pr)
                for node_id, pr in self._progress.items()
                if node_id in voters
            ),
            reverse=True,
        )
        if need <= 0 or len(ranked) <= need:
            return ()
        for _, _, _, pr in ranked[:need]:
            if pr.state is not _REPLICATE or pr.inflights.queue:
                return ()  # a needed follower is busy or behind: everyone, now
        return tuple(
            node_id
            for _, _, node_id, pr in ranked[need:]
            if pr.state is _REPLICATE and pr.commit_wanted <= pr.match and not pr.eager
        )

    def _broadcast_heartbeat(self) -> None:
        # Every broadcast carries its number as the context: an answer to a heartbeat
        # sent after a ReadIndex round started confirms the round, and the send time of
        # the newest one a quorum answered starts the leader lease.
        self._heartbeat_seq += 1
        self._heartbeats_queued = True
        seq = self._heartbeat_seq
        if self._clock is not None:
            # Read before the messages exist, so never later than they are received.
            self._heartbeat_sent[seq % _HEARTBEAT_RING] = self._clock()
        context = seq.to_bytes(8, "big")
        committed = self._log.committed
        for node_id, pr in self._progress.items():
            commit = pr.match if pr.match < committed else committed
            pr.commit_sent = max(pr.commit_sent, commit)
            self._send(
                HeartbeatRequest(
                    to=node_id,
                    sender=self._id,
                    term=self._term,
                    commit=commit,
                    context=context,
                )
            )

    def _handle_append_response(self, message: AppendResponse) -> None:
        pr = self._progress.get(message.sender)
        if pr is None:
            return
        pr.recent_active = True
        pr.eager = message.eager
        log = self._log
        if message.reject:
            probe_hint = message.reject_hint
            if message.hint_term > 0:
                probe_hint, _ = log.find_conflict_by_term(message.reject_hint, message.hint_term)
            if pr.maybe_decrease_to(message.index, probe_hint):
                if pr.state is _REPLICATE:
                    pr.become_probe()
                self._send_append(message.sender, pr, True)
            return
        # A probe answered at the match index we already knew also ends the probe.
        if pr.maybe_update(message.index) or (pr.state is _PROBE and message.index == pr.match):
            state = pr.state
            if state is _PROBE:
                pr.become_replicate()
            elif state is _SNAPSHOT:
                if pr.match >= pr.pending_snapshot or pr.match >= log.snapshot_index:
                    pr.become_replicate()
            else:
                pr.inflights.free_up_to(message.index)
            if self._maybe_commit() and self._role is not _LEADER:
                return  # the commit removed this leader: it stepped down
            self._fill_pipeline(message.sender, pr, False)
            if message.sender == self._lead_transferee and pr.match == log.last_index:
                self._send_timeout_now(message.sender)

    def _handle_heartbeat_response(self, message: HeartbeatResponse) -> None:
        pr = self._progress.get(message.sender)
        if pr is None:
            return
        pr.recent_active = True
        pr.eager = message.eager
        pr.probe_sent = False
        if pr.state is _REPLICATE and pr.inflights.full():
            # An acknowledgement may have been lost: make room so replication resumes.
            pr.inflights.free_first()
        if pr.match < self._log.last_index:
            self._send_append(message.sender, pr, True)
        if message.context:
            seq = int.from_bytes(message.context[:8], "big")
            if seq > self._heartbeat_seq:
                return  # not a number we sent: a broken peer
            pr.heartbeat_ack = max(pr.heartbeat_ack, seq)
            self._ack_read_round(seq, message.sender)

    def _maybe_commit(self) -> bool:
        """Advance the commit index to the highest index a quorum of voters holds, but
        only if that entry is of the current term (Raft paper, Figure 8): earlier-term
        entries commit only indirectly. This node's own log counts only up to what the
        application persisted (``advance``). Returns whether the commit index moved."""
        voters = self._conf.voters
        if not voters:
            return False
        log = self._log
        matches = []
        for voter in voters:
            if voter == self._id:
                matches.append(log.stable)
            else:
                pr = self._progress.get(voter)
                matches.append(pr.match if pr is not None else 0)
        matches.sort(reverse=True)
        index = matches[len(voters) // 2]
        if index > log.committed and log.term_at(index) == self._term:
            self._on_commit(log.committed, index)
            return True
        return False

    def _on_commit(self, old: int, new: int) -> None:
        log = self._log
        log.committed = new
        size = 0
        for entry in log.slice(max(old + 1, log.first_index), new + 1):
            size += len(entry.data)
        self._uncommitted_bytes = max(0, self._uncommitted_bytes - size)
        for pr in self._progress.values():
            if pr.eager and new > pr.commit_wanted:
                pr.commit_wanted = new  # its watchers wait: tell it now (_flush)
                self._waiting_followers = True
        reads = self._reads
        if reads.waiting_for_commit and log.term_at(new) == self._term:
            waiting = reads.waiting_for_commit
            reads.waiting_for_commit = []
            for request in waiting:
                self._leader_read(request.context, request.requester)
        conf_index = self._conf_history[-1][0]
        if old < conf_index:
            if new < conf_index:
                return
            # The newest configuration just committed: stop replicating to removed nodes.
            self._sync_progress()
        if self._id not in self._conf.voters and new >= conf_index:
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """The change that removed this leader (or made it a learner) committed: hand over
        to the most up-to-date voter right away rather than let the cluster wait for an
        election timeout, then stop leading."""
        best, best_match = NONE, -1
        for node_id, pr in sorted(self._progress.items()):
            if node_id in self._conf.voters and pr.match > best_match:
                best, best_match = node_id, pr.match
        if best != NONE and best_match == self._log.last_index:
            self._send_timeout_now(best)
        self._become_follower(self._term, NONE)

    # --- proposals -------------------------------------------------------------------

    def propose(self, data: bytes) -> None:
        """Propose one NORMAL entry. On a follower with a known leader it is forwarded.
        Raises ``ProposalDroppedError`` with a reason when it cannot be taken."""
        if self._role is _LEADER:
            if self._lead_transferee != NONE:
                raise ProposalDroppedError(TRANSFER_IN_PROGRESS)
            size = len(data)
            if (
                self._uncommitted_bytes + size > self._config.max_uncommitted_bytes
                and self._uncommitted_bytes > 0
            ):
                raise ProposalDroppedError(TOO_MANY_UNCOMMITTED_BYTES)
            log = self._log
            log.entries.append(Entry(self._term, log.last_index + 1, _NORMAL, data))
            self._uncommitted_bytes += size
            self._needs_broadcast = True
            return
        if self._leader_id == NONE:
            raise ProposalDroppedError(NO_LEADER)
        self._forward_buffer.append(Entry(0, 0, _NORMAL, data))

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose one membership change (one server at a time)."""
        if self._role is _LEADER:
            if self._lead_transferee != NONE:
                raise ProposalDroppedError(TRANSFER_IN_PROGRESS)
            reason = self._conf_change_refusal(change)
            if reason is not None:
                raise ProposalDroppedError(reason)
            data = encode_conf_change(change)
            self._append_as_leader(
                [Entry(self._term, self._log.last_index + 1, _CONF_CHANGE, data)]
            )
            return
        if self._leader_id == NONE:
            raise ProposalDroppedError(NO_LEADER)
        self._forward_buffer.append(Entry(0, 0, _CONF_CHANGE, encode_conf_change(change)))

    def _conf_change_refusal(self, change: ConfChange) -> str | None:
        """Why the leader cannot take a configuration change now (None if it can): one
        is still uncommitted, or the leader has not committed an entry of its own term
        yet (the single-server change bug found after the Raft thesis)."""
        log = self._log
        if self._conf_history[-1][0] > log.committed:
            return CONF_CHANGE_PENDING
        if log.term_at(log.committed) != self._term:
            return CONF_CHANGE_PENDING
        after = apply_conf_change(self._conf, change)
        if not after.voters:
            return WOULD_REMOVE_LAST_VOTER
        return None

    def _handle_proposal_forward(self, message: ProposalForward) -> None:
        if self._lead_transferee != NONE:
            return  # dropped; the client retries
        log = self._log
        limit = self._config.max_uncommitted_bytes
        for entry in message.entries:
            if entry.type is _CONF_CHANGE:
                try:
                    change = decode_conf_change(entry.data)
                except InvalidRequestError:  # malformed payload from a peer: drop it
                    continue
                if self._conf_change_refusal(change) is not None:
                    continue
                self._append_as_leader(
                    [Entry(self._term, log.last_index + 1, _CONF_CHANGE, entry.data)]
                )
                continue
            size = len(entry.data)
            if self._uncommitted_bytes + size > limit and self._uncommitted_bytes > 0:
                continue
            log.entries.append(Entry(self._term, log.last_index + 1, _NORMAL, entry.data))
            self._uncommitted_bytes += size
            self._needs_broadcast = True
        self._wants_commit(message.sender, log.last_index)

    def _wants_commit(self, node_id: int, index: int) -> None:
        pr = self._progress.get(node_id)
        if pr is not None and index > pr.commit_wanted:
            pr.commit_wanted = index
            self._waiting_followers = True

    # --- configuration ---------------------------------------------------------------

    def _push_conf(self, entry: Entry) -> None:
        change = decode_conf_change(entry.data)
        conf = apply_conf_change(self._conf_history[-1][1], change)
        self._conf_history.append((entry.index, conf))

    def _conf_at(self, index: int) -> ConfState:
        for conf_index, conf in reversed(self._conf_history):
            if conf_index <= index:
                return conf
        return self._conf_history[0][1]

    def _conf_changed(self) -> None:
        """The newest configuration in the log changed (appended, truncated away, or
        replaced by a snapshot): it takes effect at once, committed or not."""
        self._conf = self._conf_history[-1][1]
        if self._role is _LEADER:
            self._sync_progress()
            if self._lead_transferee not in self._conf.voters:
                self._lead_transferee = NONE
        elif self._role is not _FOLLOWER and not self._promotable():
            self._become_follower(self._term, NONE)

    def _replication_targets(self) -> set[int]:
        """Everyone in the newest configuration, plus those that an uncommitted change
        removed: they keep getting the log until the change commits, so that a removed
        follower learns of its removal (and stops campaigning)."""
        committed = self._log.committed
        members: set[int] = set()
        for conf_index, conf in reversed(self._conf_history):
            members |= conf.voters
            members |= conf.learners
            if conf_index <= committed:
                break
        members.discard(self._id)
        return members

    def _sync_progress(self) -> None:
        conf = self._conf
        members = self._replication_targets()
        progress = self._progress
        for node_id in list(progress):
            if node_id not in members:
                del progress[node_id]
        next_index = self._log.last_index + 1
        for node_id in members:
            pr = progress.get(node_id)
            if pr is None:
                pr = Progress(inflights=Inflights(self._max_inflight), next=next_index)
                progress[node_id] = pr
            pr.is_learner = node_id in conf.learners

    # --- linearizable reads ----------------------------------------------------------

    def read_index(self, context: bytes) -> None:
        """Ask for a read index for ``context``; the answer comes later as a ``ReadState``
        in a Ready. Raises ``ProposalDroppedError("no leader")`` when none is known."""
        if self._role is _LEADER:
            self._leader_read(context, self._id)
            return
        if self._leader_id == NONE:
            raise ProposalDroppedError(NO_LEADER)
        self._send(
            ReadIndexRequest(to=self._leader_id, sender=self._id, term=self._term, context=context)
        )

    def _leader_read(self, context: bytes, requester: int) -> None:
        reads = self._reads
        request = ReadRequest(context, requester)
        log = self._log
        if log.term_at(log.committed) != self._term:
            # Until an entry of this term commits, our commit index may be behind the
            # true one: wait (the no-op appended on election will get there).
            reads.waiting_for_commit.append(request)
            return
        if self._conf.voters == {self._id} or self._in_own_lease():
            self._answer_read(request, log.committed)
            return
        # The round starts at the next Ready (``_flush``): every read that arrives until
        # then shares it.
        reads.queued.append(request)

    def _in_own_lease(self) -> bool:
        """Leader lease (``RaftConfig.lease_duration``): a quorum of voters (counting
        this leader if it is one) answered a heartbeat broadcast sent less than the lease
        duration ago. None of them grants a vote until at least that long after it got
        it, so no other leader exists yet and our commit index is the cluster's."""
        if self._lease_duration <= 0 or self._lease_forfeited or self._clock is None:
            return False
        voters = self._conf.voters
        need = len(voters) // 2 + 1 - (1 if self._id in voters else 0)
        acks = sorted(
            (pr.heartbeat_ack for node_id, pr in self._progress.items() if node_id in voters),
            reverse=True,
        )
        if need <= 0 or len(acks) < need:
            return need <= 0
        seq = acks[need - 1]
        if seq <= 0 or seq <= self._heartbeat_seq - _HEARTBEAT_RING:
            return False
        sent = self._heartbeat_sent[seq % _HEARTBEAT_RING]
        return self._clock() < sent + self._lease_duration

    def _start_read_round(self) -> None:
        read_round = self._reads.start_round(self._log.committed, self._heartbeat_seq + 1)
        if self._id in self._conf.voters:
            read_round.acks.add(self._id)
        self._broadcast_heartbeat()
        self._maybe_finish_read_round()

    def _ack_read_round(self, seq: int, sender: int) -> None:
        read_round = self._reads.round
        if read_round is not None and seq >= read_round.seq:
            read_round.acks.add(sender)
            self._maybe_finish_read_round()

    def _maybe_finish_read_round(self) -> None:
        reads = self._reads
        read_round = reads.round
        if read_round is None:
            return
        voters = self._conf.voters
        acks = sum(1 for node_id in read_round.acks if node_id in voters)
        if acks < len(voters) // 2 + 1:
            return
        reads.round = None
        for request in read_round.requests:
            self._answer_read(request, read_round.index)

    def _answer_read(self, request: ReadRequest, index: int) -> None:
        if request.requester == self._id:
            self._read_states.append(ReadState(index, request.context))
        else:
            # The follower serves the read once it applied ``index``: it must hear of it.
            self._wants_commit(request.requester, index)
            self._send(
                ReadIndexResponse(
                    to=request.requester,
                    sender=self._id,
                    term=self._term,
                    index=index,
                    context=request.context,
                )
            )

    # --- leadership transfer ---------------------------------------------------------

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to ``target`` (a voter): bring it up to date, then send it
        TimeoutNow. Proposals are refused meanwhile; the transfer is abandoned after an
        election timeout if the target has not won."""
        if self._role is not _LEADER:
            raise ProposalDroppedError(NOT_LEADER)
        if target == self._id:
            return
        if target not in self._conf.voters:
            raise ProposalDroppedError(TRANSFER_TARGET_NOT_VOTER)
        if self._lead_transferee == target:
            return
        self._lead_transferee = target
        self._election_elapsed = 0
        pr = self._progress[target]
        # The target will campaign past its peers' leader lease: ours ends now.
        self._lease_forfeited = True
        if pr.match == self._log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_append(target, pr, True)

    def _send_timeout_now(self, target: int) -> None:
        self._lease_forfeited = True
        self._send(TimeoutNow(to=target, sender=self._id, term=self._term))

    # --- snapshots and transport hints -----------------------------------------------

    def compact(self, index: int, data: bytes) -> None:
        """The application snapshotted its state machine at applied index ``index``
        (and persisted that snapshot): keep it, to send to followers behind the log, and
        drop the in-memory log up to ``index``. Raises ``ValueError`` if ``index`` was
        never handed out to be applied."""
        log = self._log
        if index <= log.snapshot_index:
            return
        # ``applying``: the application may snapshot right after applying a Ready's
        # committed entries, before it calls ``advance``.
        if index > log.applying:
            raise ValueError(f"cannot compact at {index}: only {log.applying} was handed out")
        term = log.term_at(index)
        assert term is not None
        self._snapshot = Snapshot(SnapshotMetadata(index, term, self._conf_at(index)), data)
        log.compact(index)
        # Configurations older than the one in force at `index` can no longer be needed.
        history = self._conf_history
        keep = 0
        for position, (conf_index, _) in enumerate(history):
            if conf_index <= index:
                keep = position
        if keep:
            del history[:keep]

    def set_eager(self, eager: bool) -> None:
        """Whether clients of this member wait for every commit (watches): its answers
        to the leader then say so, and the leader sends it new entries and each commit
        at once instead of with the next append or tick. Costs an AppendRequest and its
        answer per commit at low load; the application sets it while it has watchers."""
        self._eager = eager

    def defer_timeouts(self, ticks: int) -> None:
        """The application could not tick for ``ticks`` ticks, busy with work its peers
        do as well (applying the same long entry). Give them as long again before
        suspecting them: a follower waits that much longer for its leader (and keeps
        refusing votes meanwhile, as within a leader's lease), a leader for its quorum
        (CheckQuorum). Capped at twenty election timeouts. Timers only: it moves when an
        election may happen, never what is safe."""
        if ticks <= 0 or self._role not in (_FOLLOWER, _LEADER):
            return
        ticks = min(ticks, 20 * self._election_tick)
        self._election_elapsed = min(self._election_elapsed, 0) - ticks

    def committed_unapplied(self) -> tuple[Entry, ...]:
        """The committed entries the next ``ready()`` will hand out to apply (a look
        ahead; nothing changes)."""
        log = self._log
        if log.committed <= log.applying:
            return ()
        return tuple(log.slice(max(log.applying + 1, log.first_index), log.committed + 1))

    def send_commit_updates(self, include_later: bool = True) -> None:
        """On a leader: tell followers the commit index now (in the next Ready) instead
        of on the next append or tick. For an application about to apply an entry that
        may take long: its followers then apply it at the same time, rather than hear
        of it only after the leader's stall and take that silence for a dead leader.
        ``include_later``: spare followers (``quorum_first``) get the entries left for
        the next tick now too; False leaves them for the tick, entries and commit
        together (for an application that only wants followers' watchers served soon)."""
        if self._role is _LEADER:
            if include_later and self._config.quorum_first:
                self._send_entries_left_for_later()
            self._send_commit_updates()
            if include_later:
                self._send_commit_behind_entries()

    def _send_commit_behind_entries(self) -> None:
        """Tell the commit index to every follower that was sent the committed entries
        but whose answer has not come back: ``_owes_commit`` waits for that answer, and
        before a long apply it would come only after the leader's stall. An empty
        AppendRequest right behind the entries (one ordered connection per peer) tells
        it: the follower checks that it holds the entry before it and takes the commit up
        to there. If it does not (the entries were lost), it refuses, as for any append."""
        log = self._log
        committed = log.committed
        for node_id, pr in self._progress.items():
            if pr.state is not _REPLICATE or not pr.match < committed < pr.next:
                continue
            if pr.commit_sent >= committed:
                continue
            prev_index = pr.next - 1
            prev_term = log.term_at(prev_index)
            if prev_term is None:
                continue
            self._send_append_request(node_id, pr, prev_index, prev_term, ())

    def report_unreachable(self, node_id: int) -> None:
        """The transport could not reach ``node_id``: stop pipelining to it and probe."""
        if self._role is not _LEADER:
            return
        pr = self._progress.get(node_id)
        if pr is not None and pr.state is _REPLICATE:
            pr.become_probe()

    # --- Ready -----------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self._msgs.append(message)

    def _hard_state(self) -> HardState:
        """The state that must be durable before the messages of the same Ready leave."""
        return HardState(term=self._term, vote=self._vote, commit=self._log.committed)

    def _hard_state_changed(self) -> bool:
        # Cheap test on plain ints first; the HardState is built only when something
        # moved, and compared as ``ready()`` will compare it (so that the two agree even
        # when a test replaces ``_hard_state``).
        if (self._term, self._vote, self._log.committed) == self._prev_hard_key:
            return False
        return self._hard_state() != self._prev_hard_state

    def _flush(self) -> None:
        """Turn deferred work into messages: new entries and commit progress go out once
        per Ready (batching many proposals into one AppendRequest), forwarded proposals
        in one ProposalForward."""
        if self._role is _LEADER:
            if self._needs_broadcast:
                self._needs_broadcast = False
                self._broadcast_append(send_if_empty=False)
            if self._reads.queued and self._reads.round is None:
                self._start_read_round()
            if self._waiting_followers:
                self._send_wanted_commits()
        elif self._forward_buffer:
            if self._leader_id != NONE:
                self._send(
                    ProposalForward(
                        to=self._leader_id,
                        sender=self._id,
                        term=self._term,
                        entries=tuple(self._forward_buffer),
                    )
                )
            self._forward_buffer = []

    def _send_wanted_commits(self) -> None:
        """Followers whose clients wait for an index learn at once that it committed."""
        committed = self._log.committed
        waiting = False
        for node_id, pr in self._progress.items():
            if pr.commit_wanted <= pr.commit_sent:
                continue
            if min(committed, pr.match) > pr.commit_sent:
                self._send_append(node_id, pr, True)
            waiting = waiting or pr.commit_wanted > pr.commit_sent
        self._waiting_followers = waiting

    def take_heartbeats(self) -> list[HeartbeatRequest]:
        """On a leader: the heartbeats queued since the last ``ready()``, taken out of the
        next Ready, for an application whose last Ready is still being persisted. A
        leader may send them before that write completes, like its appends (they carry
        its term, which a leader's Ready has made durable before it leads, and a commit
        index a quorum holds): then a slow disk does not silence the leader, and its
        followers do not start an election over an fsync."""
        if self._role is not _LEADER or not self._heartbeats_queued:
            return []  # no broadcast since the last take or Ready: nothing to look for
        self._heartbeats_queued = False
        msgs = self._msgs
        beats = [m for m in msgs if type(m) is HeartbeatRequest]
        if beats:
            self._msgs = [m for m in msgs if type(m) is not HeartbeatRequest]
        return beats

    def has_unsent_commit(self) -> bool:
        """On a leader: whether a follower holds committed entries it has not been told
        are committed (it hears with the next append, at the next tick, or when the
        application calls ``send_commit_updates``). With ``quorum_first``, a follower
        whose new entries were left for the next tick gets the commit with them."""
        if self._role is not _LEADER:
            return False
        return any(self._owes_commit(pr) for pr in self._progress.values())

    def has_ready(self) -> bool:
        self._flush()
        log = self._log
        return bool(
            self._msgs
            or self._read_states
            or self._pending_snapshot is not None
            or log.unstable <= log.last_index
            or log.committed > log.applying
            or self._hard_state_changed()
            or self._leader_id != self._prev_soft_state.leader_id
            or self._role is not self._prev_soft_state.role
        )

    def ready(self) -> Ready:
        """The next batch of work (see ``types.Ready`` for the order to do it in)."""
        self._flush()
        log = self._log
        soft_state: SoftState | None = None
        previous_soft = self._prev_soft_state
        if self._leader_id != previous_soft.leader_id or self._role is not previous_soft.role:
            soft_state = SoftState(leader_id=self._leader_id, role=self._role)
            self._prev_soft_state = soft_state
        hard_state: HardState | None = self._hard_state()
        previous_hard = self._prev_hard_state
        must_sync = False
        if hard_state == previous_hard:
            hard_state = None
        else:
            assert hard_state is not None
            must_sync = (
                hard_state.term != previous_hard.term or hard_state.vote != previous_hard.vote
            )
            self._prev_hard_state = hard_state
        self._prev_hard_key = (self._term, self._vote, log.committed)
        snapshot = self._pending_snapshot
        self._pending_snapshot = None
        if snapshot is not None:
            must_sync = True
            log.applying = max(log.applying, snapshot.metadata.index)
        last_index = log.last_index
        entries: tuple[Entry, ...] = ()
        if log.unstable <= last_index:
            entries = tuple(log.entries[log.unstable - log.snapshot_index - 1 :])
            log.unstable = last_index + 1
            must_sync = True
        committed_entries: tuple[Entry, ...] = ()
        if log.committed > log.applying:
            committed_entries = tuple(log.slice(log.applying + 1, log.committed + 1))
            log.applying = log.committed
        messages = tuple(self._msgs)
        self._msgs.clear()
        self._heartbeats_queued = False
        read_states = tuple(self._read_states)
        self._read_states.clear()
        return Ready(
            soft_state=soft_state,
            hard_state=hard_state,
            entries=entries,
            snapshot=snapshot,
            committed_entries=committed_entries,
            messages=messages,
            read_states=read_states,
            must_sync=must_sync,
        )

    def advance(self, ready: Ready) -> None:
        """The application did everything ``ready`` asked (persisted, sent, applied)."""
        log = self._log
        if ready.snapshot is not None:
            index = ready.snapshot.metadata.index
            log.applied = max(log.applied, index)
            if log.stable < index and log.snapshot_index >= index:
                log.stable = index
        if ready.entries:
            last = ready.entries[-1]
            if log.term_at(last.index) == last.term and log.stable < last.index:
                log.stable = last.index
        if ready.committed_entries:
            last_applied = ready.committed_entries[-1].index
            log.applied = max(log.applied, last_applied)
        if self._role is _LEADER:
            # The leader's own entries count toward commit only once persisted.
            self._maybe_commit()
