"""What a leader knows about each follower's log: ``Progress`` (match and next index, the
PROBE / REPLICATE / SNAPSHOT state machine) and ``Inflights`` (the window of
unacknowledged AppendRequests in the REPLICATE state).

Only bookkeeping lives here; deciding what to send is ``RaftNode``'s job. Nothing here
may allocate per entry: the window records one int per AppendRequest.
"""

from __future__ import annotations

import collections
import enum

import attrs


class ProgressState(enum.Enum):
    PROBE = "probe"
    """Match unknown: one AppendRequest in flight until the follower answers."""
    REPLICATE = "replicate"
    """Match known: AppendRequests are pipelined, next index advanced optimistically."""
    SNAPSHOT = "snapshot"
    """An InstallSnapshot was sent; nothing more until it is acknowledged."""


@attrs.define(slots=True)
class Inflights:
    """Last index of each unacknowledged AppendRequest, oldest first."""

    capacity: int
    queue: collections.deque[int] = attrs.field(factory=collections.deque)

    def full(self) -> bool:
        return len(self.queue) >= self.capacity

    def add(self, last_index: int) -> None:
        self.queue.append(last_index)

    def free_up_to(self, index: int) -> None:
        """An acknowledgement of ``index`` acknowledges every request ending at or before it."""
        queue = self.queue
        while queue and queue[0] <= index:
            queue.popleft()

    def free_first(self) -> None:
        if self.queue:
            self.queue.popleft()

    def clear(self) -> None:
        self.queue.clear()


@attrs.define(slots=True)
class Progress:
    inflights: Inflights
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    """PROBE state: an AppendRequest is out; wait for its answer (or a heartbeat answer)."""
    pending_snapshot: int = 0
    """SNAPSHOT state: the index of the snapshot sent."""
    snapshot_checks: int = 0
    """Election timeouts spent in the SNAPSHOT state (a lost snapshot is retried)."""
    recent_active: bool = True
    """Heard from since the last CheckQuorum round."""
    commit_wanted: int = 0
    """A client of this follower waits for this index (a write it forwarded, a read it
    asked for): tell it of the commit at once, not with the next append or tick."""
    eager: bool = False
    """The follower said (``AppendResponse.eager``) that its clients wait for every
    commit (watches): it gets new entries and every commit at once, never at the next
    tick."""
    heartbeat_ack: int = 0
    """The newest heartbeat (by the leader's sequence number) this follower answered:
    what the ReadIndex rounds and the leader lease go by."""
    is_learner: bool = False
    commit_sent: int = 0
    """The highest commit index this follower was told (in an AppendRequest or a
    heartbeat): the leader tells it more on its next tick, not in a message of its own
    for every commit (see ``RaftNode._send_commit_updates``)."""

    def is_paused(self) -> bool:
        state = self.state
        if state is ProgressState.REPLICATE:
            return self.inflights.full()
        if state is ProgressState.PROBE:
            return self.probe_sent
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_checks = 0
        self.probe_sent = False
        self.inflights.clear()

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged holding the leader's log up to ``index``. Returns
        whether the match index moved (False for a stale or duplicate answer)."""
        updated = False
        if index > self.match:
            self.match = index
            self.probe_sent = False
            updated = True
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, probe_hint: int) -> bool:
        """The follower rejected an AppendRequest whose previous index was ``rejected``;
        ``probe_hint`` is the leader-side index to probe next (already adjusted by the
        conflicting term). Returns False when the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, probe_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
