"""The simulated network between cluster members: per-message loss, delay, duplication and
reordering, and partitions (symmetric, one-way, "isolate this node"), all drawn from one
seeded generator.

The network only decides the fate of a message (when, if ever, and how many times it
arrives); the simulation owns the event queue that delivers it. It must never draw from
any randomness but its own ``rng``, nor iterate an unordered collection, so that a seed
always produces the same fates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs


@attrs.frozen
class LinkQuality:
    """How the network treats each message while no partition blocks it. Delays are in
    virtual time units (a Raft tick is ``SimConfig.tick_units`` units)."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    min_delay: int = 1
    max_delay: int = 6
    slow_rate: float = 0.0
    """Probability that a message is held back much longer (up to ``slow_delay``): this is
    what reorders messages across heartbeats and elections."""
    slow_delay: int = 60


CALM = LinkQuality()
"""No loss, short delays: the network of the liveness phase."""


@attrs.define
class Network:
    rng: random.Random
    quality: LinkQuality = CALM
    blocked: set[tuple[int, int]] = attrs.field(factory=set)
    """Directed links (sender, recipient) that carry nothing."""
    stalled: dict[int, int] = attrs.field(factory=dict)
    """node -> the time until which its links are stalled: everything it sends or is
    sent queues up and arrives after that (a congested NIC, a stuck I/O thread)."""
    sent: int = 0
    dropped: int = 0

    def fate(self, sender: int, recipient: int, now: int) -> list[int]:
        """Delays (in units) after which copies of one message sent at ``now`` arrive:
        empty when the message is lost, two entries when it is duplicated."""
        self.sent += 1
        if (sender, recipient) in self.blocked or self.rng.random() < self.quality.drop_rate:
            self.dropped += 1
            return []
        copies = 2 if self.rng.random() < self.quality.duplicate_rate else 1
        stall = max(self.stalled.get(sender, 0), self.stalled.get(recipient, 0)) - now
        return [max(self._delay(), stall + self._delay()) for _ in range(copies)]

    def stall(self, node: int, until: int) -> None:
        self.stalled[node] = max(self.stalled.get(node, 0), until)

    def _delay(self) -> int:
        quality = self.quality
        if self.rng.random() < quality.slow_rate:
            return self.rng.randint(quality.max_delay, max(quality.max_delay, quality.slow_delay))
        return self.rng.randint(quality.min_delay, quality.max_delay)

    def connected(self, sender: int, recipient: int) -> bool:
        """Checked again at delivery, so a partition also swallows messages in flight."""
        return (sender, recipient) not in self.blocked

    # --- partitions -------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every link between different groups (both directions)."""
        sides = [sorted(group) for group in groups]
        for i, left in enumerate(sides):
            for right in sides[i + 1 :]:
                for a in left:
                    for b in right:
                        self.blocked.add((a, b))
                        self.blocked.add((b, a))

    def bridge(self, left: Iterable[int], right: Iterable[int]) -> None:
        """Cut every link between ``left`` and ``right``; a node in neither group keeps
        talking to both (a non-transitive network: the bridge hears two sides that
        cannot hear each other)."""
        self.partition([left, right])

    def cut_one_way(self, sender: int, recipients: Iterable[int]) -> None:
        """``sender`` can still hear the others but nothing it says reaches them."""
        for recipient in recipients:
            if recipient != sender:
                self.blocked.add((sender, recipient))

    def isolate(self, node: int, others: Iterable[int]) -> None:
        self.partition([[node], [o for o in others if o != node]])

    def heal(self) -> None:
        self.blocked.clear()
        self.stalled.clear()

    def describe(self) -> str:
        return ",".join(f"{a}->{b}" for a, b in sorted(self.blocked)) or "none"
