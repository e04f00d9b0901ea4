"""The values that enter and leave the Raft core: log entries, hard state, snapshots,
configuration, messages, and the ``Ready`` batch.

Everything here is immutable (``attrs.frozen``) plain data. Nothing here performs I/O.

Node ids are positive integers; ``NONE`` (0) means "no node" (no vote, no leader).
"""

from __future__ import annotations

import enum

import attrs

NONE = 0
"""The id that means "no node": no vote cast, no leader known."""


class EntryType(enum.IntEnum):
    NORMAL = 0
    """Application data (or an empty no-op appended by a new leader)."""
    CONF_CHANGE = 1
    """A membership change; ``data`` is an encoded ``ConfChange``."""


@attrs.frozen
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@attrs.frozen
class HardState:
    """What must be durable before any message that depends on it leaves the node."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    """Add a voter, or promote an existing learner to voter."""
    ADD_LEARNER = 1
    """Add a non-voting member that receives the log."""
    REMOVE_NODE = 2


@attrs.frozen
class ConfChange:
    """One membership change (one server at a time). ``context`` is opaque to Raft
    (the server puts the member's name and address there)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""


@attrs.frozen
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()


@attrs.frozen
class SnapshotMetadata:
    index: int
    term: int
    conf_state: ConfState


@attrs.frozen
class Snapshot:
    """The application's state machine at ``metadata.index``, as opaque bytes."""

    metadata: SnapshotMetadata
    data: bytes = b""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@attrs.frozen
class SoftState:
    """Volatile state the application may want to observe; not persisted."""

    leader_id: int
    role: Role


@attrs.frozen
class ReadState:
    """A linearizable read became safe: once the application has applied up to
    ``index``, it may answer the read identified by ``context``."""

    index: int
    context: bytes


# --- Messages --------------------------------------------------------------------------
# Every message carries the sender, the recipient and the sender's term. A message with
# term 0 is local (never sent over the network).


@attrs.frozen
class VoteRequest:
    to: int
    sender: int
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    leader_transfer: bool = False
    """Set when campaigning because of TimeoutNow: voters then ignore their leader lease."""


@attrs.frozen
class VoteResponse:
    to: int
    sender: int
    term: int
    granted: bool
    pre_vote: bool = False


@attrs.frozen
class AppendRequest:
    to: int
    sender: int
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    commit: int


@attrs.frozen
class AppendResponse:
    """Success: ``index`` is the last index the follower now holds from this request.
    Reject: ``index`` is the ``prev_log_index`` that did not match, ``reject_hint`` is a
    suggested index to retry from and ``hint_term`` the follower's term at that index
    (0 if it has no entry there), for fast back-off over a conflicting suffix."""

    to: int
    sender: int
    term: int
    index: int
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0
    eager: bool = False
    """The sender has clients that wait for every commit (``RaftNode.set_eager``)."""


@attrs.frozen
class HeartbeatRequest:
    to: int
    sender: int
    term: int
    commit: int
    context: bytes = b""
    """Identifies a ReadIndex confirmation round (empty for a plain heartbeat)."""


@attrs.frozen
class HeartbeatResponse:
    to: int
    sender: int
    term: int
    context: bytes = b""
    eager: bool = False
    """As ``AppendResponse.eager``."""


@attrs.frozen
class SnapshotRequest:
    """InstallSnapshot. The follower answers with an ``AppendResponse``."""

    to: int
    sender: int
    term: int
    snapshot: Snapshot


@attrs.frozen
class TimeoutNow:
    """Leadership transfer: the recipient campaigns at once, skipping PreVote."""

    to: int
    sender: int
    term: int


@attrs.frozen
class ProposalForward:
    """A follower forwards proposals it received to the leader."""

    to: int
    sender: int
    term: int
    entries: tuple[Entry, ...]


@attrs.frozen
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its own clients."""

    to: int
    sender: int
    term: int
    context: bytes


@attrs.frozen
class ReadIndexResponse:
    to: int
    sender: int
    term: int
    index: int
    context: bytes


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | HeartbeatRequest
    | HeartbeatResponse
    | SnapshotRequest
    | TimeoutNow
    | ProposalForward
    | ReadIndexRequest
    | ReadIndexResponse
)


@attrs.frozen
class Ready:
    """Work the application must do, handed out by ``RaftNode.ready()``.

    The ordering contract — the application must, in this order:

    1. Persist ``snapshot`` (if any), then ``entries`` (which may replace a suffix of the
       stable log starting at ``entries[0].index``), then ``hard_state`` (if not None).
       When ``must_sync`` is true, fsync before going on.
    2. Only then send ``messages``. (A vote or an append acknowledgement must never
       leave the node before the state it depends on is durable.) One exception is
       allowed: while the node is leader, its AppendRequests, heartbeats and snapshots
       may be sent before its own write of the same Ready completes (Raft thesis
       10.2.1), because the core counts the leader's own copy of an entry toward commit
       only after ``advance``. ``pnyx.core.server`` does this; the simulator keeps the
       strict order.
    3. Apply ``snapshot`` (if any) to the state machine, then ``committed_entries`` in
       order. Answer ``read_states`` once the applied index reaches their index.
    4. Call ``RaftNode.advance(ready)`` with this very object.

    Between ``ready()`` and ``advance()`` the application may keep calling ``step``,
    ``tick``, ``propose`` and ``read_index``; what they produce appears in the next Ready.
    Only one Ready is outstanding at a time.
    """

    soft_state: SoftState | None = None
    """Set when leader or role changed since the previous Ready."""
    hard_state: HardState | None = None
    """Set when term, vote or commit changed since the previous Ready."""
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False

    def is_empty(self) -> bool:
        return (
            self.soft_state is None
            and self.hard_state is None
            and not self.entries
            and self.snapshot is None
            and not self.committed_entries
            and not self.messages
            and not self.read_states
        )


@attrs.frozen
class PersistedState:
    """What a restarting node read back from its disk: the hard state, the latest
    snapshot's metadata and data (if any), and the log entries after it."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()


@attrs.frozen
class RaftConfig:
    id: int
    election_tick: int = 10
    """Followers wait a random number of ticks in [election_tick, 2*election_tick)."""
    heartbeat_tick: int = 1
    max_append_bytes: int = 1 << 20
    """Bound on the total entry payload of one AppendRequest."""
    max_inflight: int = 256
    """Bound on unacknowledged AppendRequests per follower in the replicate state."""
    pre_vote: bool = True
    check_quorum: bool = True
    max_uncommitted_bytes: int = 64 << 20
    """Proposals beyond this much uncommitted payload are dropped (backpressure)."""
    quorum_first: bool = False
    """At low load, send a new entry at once only to the followers a quorum needs (the
    most up to date voters, while none of them has an append unanswered); the other
    voters get it with the leader's next tick, many entries at a time. On a machine
    whose cores the members share, their work then stays off the path of the write.
    Under load (an append in flight to a needed follower), everyone gets every entry
    at once, as without it. A follower with a client waiting (``commit_wanted``) is
    always sent at once."""
    lease_duration: float = 0.0
    """Leader lease for linearizable reads (Raft thesis 6.4.1), in the units of the
    ``clock`` given to ``RaftNode``; 0 (the default): every read takes a ReadIndex round.

    A leader answers a read at once, with its commit index, while a quorum of voters
    acknowledged a heartbeat sent less than ``lease_duration`` ago. That is safe because
    a follower refuses (pre-)votes for ``election_tick`` of its ticks after hearing from
    its leader (CheckQuorum, so ``check_quorum`` is required): the application must pick
    a duration shorter than the real time those ticks can take at the least (mind ticks
    it runs in a burst to catch up), less clock drift. A leader that starts a leadership
    transfer gives its lease up for the rest of its term, and a member restarted with a
    term refuses votes for an election timeout (it may have acknowledged a heartbeat
    before it went down)."""
