"""Leases: the replicated table of granted leases (``LeaseTable``) and the leader-only
expiry tracker (``Lessor``).

Which leases exist, and with which TTL, is replicated state: grants and revokes are log
entries, applied identically everywhere. When a lease expires is not: only the leader
tracks deadlines, with times handed in as floats (``now``, seconds on any monotonic
clock), and proposes a revoke through the log for each lease whose deadline passed. A
leader that takes over restarts every lease's full TTL (``Lessor.promote``) rather than
expiring leases whose keep-alives went to the old leader.

The keys attached to a lease are tracked by the MVCC store (``MVCCStore.lease_keys``);
revoking deletes them all in one revision (``KVStateMachine``).

Nothing here reads a clock, sleeps, or draws random numbers: lease ids chosen by the
cluster come from the log index through a fixed mixing function, and the ``Lessor`` only
knows the ``now`` values it is given.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import attrs

from pnyx.core.errors import InvalidRequestError, LeaseNotFoundError, NotLeaderError
from pnyx.core.wire.limits import DEFAULT_LIMITS, Limits, effective_lease_ttl

__all__ = [
    "LeaseTable",
    "Lessor",
    "lease_id_from_index",
]

_MAX_LEASE_ID = (1 << 63) - 1


def lease_id_from_index(index: int, attempt: int = 0) -> int:
    """A positive int64 lease id derived from a log index (splitmix64 finaliser), so that
    every member picks the same id for a grant that left the choice to the cluster, and
    ids of successive grants do not look like small counters clients might also pick."""
    z = (index * 0x9E3779B97F4A7C15 + attempt * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z & _MAX_LEASE_ID) or 1


@attrs.define
class LeaseTable:
    """The granted leases, id -> TTL in seconds. Replicated: changed only by applying log
    entries. Iteration order is ascending id, never hash order.

    ``limits`` (``min_lease_ttl``, ``max_lease_ttl``) must be the same on every member:
    the TTL a grant ends up with is part of the replicated state."""

    limits: Limits = DEFAULT_LIMITS
    _ttls: dict[int, int] = attrs.field(init=False, factory=dict)

    def __contains__(self, lease: int) -> bool:
        return lease in self._ttls

    def __len__(self) -> int:
        return len(self._ttls)

    def ttl(self, lease: int) -> int:
        try:
            return self._ttls[lease]
        except KeyError:
            raise LeaseNotFoundError(f"lease {lease} not found") from None

    def ids(self) -> list[int]:
        return sorted(self._ttls)

    def items(self) -> list[tuple[int, int]]:
        return sorted(self._ttls.items())

    def grant(self, lease: int, ttl: int, index: int) -> tuple[int, int]:
        """Grant a lease; returns ``(id, ttl)`` as granted. ``lease == 0`` lets the cluster
        choose the id from the log ``index`` of the grant entry."""
        if ttl <= 0:
            raise InvalidRequestError(f"lease TTL {ttl} is not positive")
        if ttl > self.limits.max_lease_ttl:
            raise InvalidRequestError(
                f"lease TTL {ttl} is over the maximum {self.limits.max_lease_ttl}"
            )
        if lease < 0 or lease > _MAX_LEASE_ID:
            raise InvalidRequestError(f"lease id {lease} is not a positive int64")
        if lease == 0:
            attempt = 0
            lease = lease_id_from_index(index)
            while lease in self._ttls:
                attempt += 1
                lease = lease_id_from_index(index, attempt)
        elif lease in self._ttls:
            raise InvalidRequestError(f"lease {lease} already exists")
        ttl = effective_lease_ttl(ttl, self.limits)
        self._ttls[lease] = ttl
        return lease, ttl

    def revoke(self, lease: int) -> None:
        if self._ttls.pop(lease, None) is None:
            raise LeaseNotFoundError(f"lease {lease} not found")

    def dump(self) -> list[list[int]]:
        return [[lease, ttl] for lease, ttl in self.items()]

    def load(self, dumped: Iterable[Iterable[int]]) -> None:
        self._ttls = {lease: ttl for lease, ttl in dumped}


@attrs.define
class Lessor:
    """Lease deadlines, kept by the leader only (``primary``).

    Every member feeds it the applied grants and revokes (``granted`` / ``revoked``), so a
    member that becomes leader knows every lease; only a primary tracks deadlines.
    Deadlines start lazily at the first call that brings a ``now`` after the grant, which
    can only lengthen a lease, never shorten it.

    ``expired(now)`` returns leases whose deadline passed; the caller proposes a revoke for
    each. A returned lease is not returned again before ``retry_interval`` seconds, so a
    revoke in flight is not proposed every tick, yet is proposed again if it got lost.
    """

    retry_interval: float = 3.0
    _ttls: dict[int, int] = attrs.field(init=False, factory=dict)
    _primary: bool = attrs.field(init=False, default=False)
    _deadlines: dict[int, float] = attrs.field(init=False, factory=dict)
    # Leases granted while primary that have no deadline yet (no `now` seen since).
    _unstarted: list[int] = attrs.field(init=False, factory=list)
    # Leases returned by expired() and the time before which not to return them again.
    _revoking: dict[int, float] = attrs.field(init=False, factory=dict)
    # Min-heap of (deadline, lease); entries made stale by keep-alives are skipped.
    _heap: list[tuple[float, int]] = attrs.field(init=False, factory=list)

    @property
    def primary(self) -> bool:
        return self._primary

    # ------------------------------------------------------------------ replicated feed

    def granted(self, lease: int, ttl: int) -> None:
        self._ttls[lease] = ttl
        if self._primary:
            self._unstarted.append(lease)

    def revoked(self, lease: int) -> None:
        self._ttls.pop(lease, None)
        self._deadlines.pop(lease, None)
        self._revoking.pop(lease, None)

    def reset(self, leases: Iterable[tuple[int, int]]) -> None:
        """Replace the known leases (after a snapshot was restored). A primary restarts
        every lease's full TTL at the next ``now``."""
        self._ttls = dict(leases)
        self._deadlines.clear()
        self._revoking.clear()
        self._heap.clear()
        self._unstarted = sorted(self._ttls) if self._primary else []

    # ------------------------------------------------------------------ leadership

    def promote(self, now: float) -> None:
        """This member became leader: every lease gets its full TTL from ``now``."""
        self._primary = True
        self._deadlines = {lease: now + ttl for lease, ttl in sorted(self._ttls.items())}
        self._heap = [(deadline, lease) for lease, deadline in self._deadlines.items()]
        heapq.heapify(self._heap)
        self._unstarted = []
        self._revoking.clear()

    def demote(self) -> None:
        """This member is no longer leader: forget every deadline."""
        self._primary = False
        self._deadlines.clear()
        self._heap.clear()
        self._unstarted = []
        self._revoking.clear()

    # ------------------------------------------------------------------ leader-only

    def keep_alive(self, lease: int, now: float) -> int:
        """Restart the lease's TTL from ``now``; returns the TTL. Raises NotLeaderError on a
        follower and LeaseNotFoundError for an unknown or already expired lease."""
        self._require_primary()
        self._start(now)
        ttl = self._ttls.get(lease)
        deadline = self._deadlines.get(lease)
        if ttl is None or deadline is None:
            raise LeaseNotFoundError(f"lease {lease} not found")
        if deadline <= now or lease in self._revoking:
            # Its revoke is (or is about to be) on its way through the log; reviving it
            # here would let the holder believe in a lease that is about to vanish.
            raise LeaseNotFoundError(f"lease {lease} has expired")
        self._set_deadline(lease, now + ttl)
        return ttl

    def remaining(self, lease: int, now: float) -> int:
        """Whole seconds left (rounded up), -1 if unknown or expired."""
        self._require_primary()
        self._start(now)
        deadline = self._deadlines.get(lease)
        if deadline is None or deadline <= now or lease in self._revoking:
            return -1
        left = deadline - now
        whole = int(left)
        return whole if whole == left else whole + 1

    def expired(self, now: float, limit: int = 0) -> list[int]:
        """Leases whose deadline is at or before ``now`` (earliest first, at most ``limit``
        if positive) that need a revoke proposed. Empty on a follower."""
        if not self._primary:
            return []
        self._start(now)
        out: list[int] = []
        for lease, retry_at in sorted(self._revoking.items()):
            if retry_at <= now and (not limit or len(out) < limit):
                out.append(lease)
                self._revoking[lease] = now + self.retry_interval
        heap = self._heap
        deadlines = self._deadlines
        while heap and heap[0][0] <= now and (not limit or len(out) < limit):
            deadline, lease = heapq.heappop(heap)
            if deadlines.get(lease) != deadline or lease in self._revoking:
                continue  # stale heap entry (kept alive since, or revoked)
            out.append(lease)
            self._revoking[lease] = now + self.retry_interval
        return out

    # ------------------------------------------------------------------ internals

    def _require_primary(self) -> None:
        if not self._primary:
            raise NotLeaderError("leases are kept alive by the leader")

    def _start(self, now: float) -> None:
        if self._unstarted:
            for lease in self._unstarted:
                ttl = self._ttls.get(lease)
                if ttl is not None and lease not in self._deadlines:
                    self._set_deadline(lease, now + ttl)
            self._unstarted = []

    def _set_deadline(self, lease: int, deadline: float) -> None:
        self._deadlines[lease] = deadline
        heapq.heappush(self._heap, (deadline, lease))
        # Keep-alives leave stale entries behind; rebuild before they dominate the heap.
        if len(self._heap) > 2 * len(self._deadlines) + 64:
            self._heap = [(when, lease) for lease, when in self._deadlines.items()]
            heapq.heapify(self._heap)
