"""The fault schedule of a simulation run: partitions (random split, isolate the leader,
one-way), lossy/duplicating/reordering network, crashes and restarts, pauses, membership
changes (add a learner, promote it, remove a voter — the leader included), leadership
transfers and snapshots, at random moments of the fault phase, most of them undone after a
random duration so that the cluster keeps making some progress.

The nemesis draws only from its own generator and acts only through the simulation's
public operations; it must never break the rules a real operator could not break (e.g. it
never edits a disk or a message).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from pnyx.core.errors import PnyxError
from pnyx.core.raft.types import ConfChange, ConfChangeType
from pnyx.core.sim.network import LinkQuality

if TYPE_CHECKING:
    from pnyx.core.sim.cluster import NodeProcess, Simulation

VOTE_CRASH_RATE = 0.4
"""Probability of a crash right after a node granted a vote (rare events, crucial ones)."""
ACK_CRASH_RATE = 0.005
"""Probability of a crash right after a node acknowledged entries (frequent events)."""

BASE_QUALITY = LinkQuality(drop_rate=0.01, duplicate_rate=0.01, slow_rate=0.02)
"""The network of the fault phase when no network fault is active."""


class Nemesis:
    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.until = 0
        self.actions: list[tuple[int, Callable[[], None]]] = [
            (4, self.partition_random),
            (3, self.isolate_leader),
            (3, self.bridge),
            (2, self.one_way_leader),
            (4, self.crash),
            (2, self.crash_leader),
            (1, self.power_outage),
            (4, self.bounce),
            (2, self.pause),
            (3, self.pause_leader),
            (3, self.degrade_network),
            (3, self.stall_links),
            (3, self.slow_disk),
            (2, self.transfer_leadership),
            (2, self.compact),
        ]
        if sim.config.membership:
            self.actions.append((4, self.change_membership))

    def start(self, until: int) -> None:
        self.until = until
        self.sim.network.quality = BASE_QUALITY
        self._schedule()

    def _schedule(self) -> None:
        low, high = self.sim.config.fault_gap_ticks
        self.sim.later(self.sim.ticks(self.rng.randint(low, high)), self._act)

    def _act(self) -> None:
        if self.sim.now >= self.until:
            return
        total = sum(weight for weight, _ in self.actions)
        roll = self.rng.randrange(total)
        for weight, action in self.actions:
            if roll < weight:
                action()
                break
            roll -= weight
        self._schedule()

    def _duration(self) -> int:
        low, high = self.sim.config.fault_duration_ticks
        return self.sim.ticks(self.rng.randint(low, high))

    def _undo_later(self, action: Callable[[], None]) -> None:
        """Undo a fault after a while, unless the fault phase is over (then the
        liveness phase undoes everything anyway)."""

        def undo() -> None:
            if self.sim.now < self.until:
                action()

        self.sim.later(self._duration(), undo)

    def _live(self) -> list[NodeProcess]:
        return [p for p in self.sim.sorted_processes() if p.up and not p.retired]

    def _members(self) -> list[int]:
        return self.sim.addressable()

    # --- network ------------------------------------------------------------------------

    def partition_random(self) -> None:
        members = self._members()
        self.rng.shuffle(members)
        minority = self.rng.randint(1, max(1, (len(members) - 1) // 2))
        groups = [members[:minority], members[minority:]]
        self.sim.network.partition(groups)
        self.sim.stats.partitions += 1
        self.sim.trace(f"nemesis partition {groups}")
        self._undo_later(self._heal)

    def bridge(self) -> None:
        members = self._members()
        if len(members) < 3:
            return
        self.rng.shuffle(members)
        bridge, rest = members[0], members[1:]
        half = len(rest) // 2
        self.sim.network.bridge(rest[:half], rest[half:])
        self.sim.stats.partitions += 1
        self.sim.trace(
            f"nemesis bridge n{bridge} between {sorted(rest[:half])} and {sorted(rest[half:])}"
        )
        self._undo_later(self._heal)

    def isolate_leader(self) -> None:
        leader = self.sim.leader()
        if leader is None:
            return
        self.sim.network.isolate(leader.id, self._members())
        self.sim.stats.partitions += 1
        self.sim.trace(f"nemesis isolate leader n{leader.id}")
        self._undo_later(self._heal)

    def one_way_leader(self) -> None:
        leader = self.sim.leader()
        if leader is None:
            return
        self.sim.network.cut_one_way(leader.id, self._members())
        self.sim.stats.partitions += 1
        self.sim.trace(f"nemesis leader n{leader.id} can hear but not speak")
        self._undo_later(self._heal)

    def _heal(self) -> None:
        self.sim.network.heal()
        self.sim.trace("nemesis heal")

    def degrade_network(self) -> None:
        quality = LinkQuality(
            drop_rate=self.rng.choice([0.0, 0.05, 0.2]),
            duplicate_rate=self.rng.choice([0.0, 0.05, 0.2]),
            max_delay=self.rng.choice([6, 15, 30]),
            slow_rate=self.rng.choice([0.0, 0.05, 0.15, 0.4]),
            # Up to 30 ticks late: older than an election timeout, so answers of past
            # terms and stale leaders' requests arrive among the current ones.
            slow_delay=self.rng.choice([60, 300]),
        )
        self.sim.network.quality = quality
        self.sim.trace(f"nemesis network {quality}")

        def restore() -> None:
            self.sim.network.quality = BASE_QUALITY
            self.sim.trace("nemesis network back to normal")

        self._undo_later(restore)

    def stall_links(self) -> None:
        """One node keeps running but its traffic (both ways) is held up, then arrives
        all at once and late: answers of past terms land in the middle of new ones."""
        live = self._live()
        if not live:
            return
        target = self.rng.choice(live)
        until = self.sim.now + self._duration()
        self.sim.network.stall(target.id, until)
        self.sim.trace(f"nemesis stall links of n{target.id} until {until}")

    # --- processes ----------------------------------------------------------------------

    def crash(self, target: NodeProcess | None = None) -> None:
        live = self._live()
        if target is None:
            if not live:
                return
            target = self.rng.choice(live)
        self.sim.crash(target)
        victim = target
        self._undo_later(lambda: self.sim.restart(victim))

    def crash_leader(self) -> None:
        leader = self.sim.leader()
        if leader is not None:
            self.crash(leader)

    def slow_disk(self) -> None:
        """fsync latency spikes on one node: everything it says after a vote or an
        append (grants, acknowledgements) leaves late, often after the term moved on."""
        live = self._live()
        if not live:
            return
        target = self.rng.choice(live)
        target.slow_disk_until = self.sim.now + self._duration()
        self.sim.trace(f"nemesis slow disk on n{target.id} until {target.slow_disk_until}")

    def bounce(self) -> None:
        """A crash followed by a restart within a few ticks (a supervisor restarting the
        process): the node is back in the same term it crashed in, with only what it
        had made durable."""
        live = self._live()
        if not live:
            return
        target = self.rng.choice(live)
        self.sim.crash(target)
        delay = self.sim.ticks(self.rng.randint(0, 3))
        self.sim.later(delay, functools.partial(self.sim.restart, target))

    def after_promise(self, process: NodeProcess, *, voted: bool) -> None:
        """Called when a node has just granted a vote or acknowledged entries: the moment
        when everything it promised must already be durable. Sometimes crash it right
        there (and restart it soon), before anything else can happen."""
        rate = VOTE_CRASH_RATE if voted else ACK_CRASH_RATE
        if self.sim.now < self.until and self.rng.random() < rate:
            self.sim.trace(f"nemesis crash n{process.id} right after a promise")
            self.sim.crash(process)
            # Often back at once, while the messages around the promise are in flight.
            delay = self.rng.choice([0, self.rng.randint(0, self.sim.ticks(3))])
            self.sim.later(delay, functools.partial(self.sim.restart, process))

    def power_outage(self) -> None:
        """Every member crashes at once and comes back after a short while, in a random
        order: all election timers restart together (split votes) while messages from
        before the outage are still in flight."""
        live = self._live()
        for process in live:
            self.sim.crash(process)
        self.rng.shuffle(live)
        for process in live:
            delay = self.sim.ticks(self.rng.randint(0, 10))
            self.sim.later(delay, functools.partial(self.sim.restart, process))

    def pause(self) -> None:
        live = self._live()
        if not live:
            return
        target = self.rng.choice(live)
        self.sim.pause(target)
        self._undo_later(lambda: self.sim.resume(target))

    def pause_leader(self) -> None:
        """The leader stops for a while (a long GC pause, SIGSTOP), often cut off as
        well: the others elect a new leader and move on; when it resumes it still
        believes it leads, with its clients' requests piled up, until it learns better."""
        leader = self.sim.leader()
        if leader is None:
            return
        pause = self._duration()
        self.sim.pause(leader)
        self.sim.later(pause, lambda: self.sim.resume(leader))
        if self.rng.random() < 0.5:
            self.sim.network.isolate(leader.id, self._members())
            self.sim.stats.partitions += 1
            self.sim.trace(f"nemesis isolate paused leader n{leader.id}")
            extra = self.sim.ticks(self.rng.randint(5, 30))

            def heal() -> None:
                if self.sim.now < self.until:
                    self._heal()

            self.sim.later(pause + extra, heal)

    def compact(self) -> None:
        live = self._live()
        if live:
            self.sim.compact(self.rng.choice(live))

    # --- leadership and membership ---------------------------------------------------

    def transfer_leadership(self) -> None:
        leader = self.sim.leader()
        if leader is None or leader.raft is None:
            return
        voters = sorted(leader.raft.conf_state.voters - {leader.id})
        if not voters:
            return
        target = self.rng.choice(voters)
        self.sim.stats.transfers += 1
        self.sim.trace(f"nemesis transfer leadership n{leader.id} -> n{target}")
        try:
            leader.raft.transfer_leadership(target)
        except PnyxError as error:
            self.sim.trace(f"nemesis transfer refused: {error}")
        self.sim.drive(leader)

    def change_membership(self) -> None:
        leader = self.sim.leader()
        if leader is None or leader.raft is None:
            return
        conf = leader.raft.conf_state
        voters, learners = sorted(conf.voters), sorted(conf.learners)
        nodes = self.sim.config.nodes
        min_voters, max_voters = 3, max(4, nodes)
        if learners and (len(voters) < max_voters):
            change = ConfChange(ConfChangeType.ADD_NODE, self.rng.choice(learners))
        elif len(voters) > min_voters and (self.rng.random() < 0.5 or learners):
            # The leader removing itself is the delicate case: make it a frequent one.
            target = leader.id if self.rng.random() < 0.4 else self.rng.choice(voters)
            change = ConfChange(ConfChangeType.REMOVE_NODE, target)
            if target == leader.id:
                self.sim.leaders_removing_themselves.add(target)
        elif not learners:
            process = self.sim.add_process()
            change = ConfChange(ConfChangeType.ADD_LEARNER, process.id)
        else:
            return
        self.sim.stats.conf_changes += 1
        self.sim.trace(f"nemesis propose {change.type.name} n{change.node_id} via n{leader.id}")
        try:
            leader.raft.propose_conf_change(change)
        except PnyxError as error:
            self.sim.trace(f"nemesis conf change refused: {error}")
        self.sim.drive(leader)
