"""ReadIndex bookkeeping of a leader: reads waiting for the leader's first commit in its
term, reads queued for the next confirmation round, and the one round in flight.

One heartbeat round with a quorum confirms every read queued before the round started,
at the commit index the leader had when the round started; reads that arrive during a
round wait for the next one. This module only keeps the lists; ``RaftNode`` sends the
heartbeats and answers the reads. It must never answer a read by itself.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ReadRequest:
    context: bytes
    requester: int
    """The node whose client asked (the leader itself, or a follower that forwarded it)."""


@attrs.define(slots=True)
class ReadRound:
    seq: int
    """The sequence number of the heartbeat broadcast that starts the round: an answer to
    that heartbeat or any later one (their number travels as the heartbeat's context)
    confirms the round."""
    index: int
    """The leader's commit index when the round started: the reads' read index."""
    requests: list[ReadRequest]
    acks: set[int] = attrs.field(factory=set)


@attrs.define(slots=True)
class ReadOnly:
    waiting_for_commit: list[ReadRequest] = attrs.field(factory=list)
    """Reads that arrived before the leader committed an entry of its own term."""
    queued: list[ReadRequest] = attrs.field(factory=list)
    """Reads for the next round."""
    round: ReadRound | None = None

    def start_round(self, index: int, seq: int) -> ReadRound:
        self.round = ReadRound(seq=seq, index=index, requests=self.queued)
        self.queued = []
        return self.round

    def clear(self) -> None:
        self.waiting_for_commit = []
        self.queued = []
        self.round = None
