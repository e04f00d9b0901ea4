"""A small deterministic in-process cluster of ``RaftNode``s, for tests.

``LocalCluster`` plays the application for every node: it persists each Ready into an
in-memory disk, then queues its messages on a FIFO network, then applies committed
entries and advances, in exactly the order ``types.Ready`` prescribes. Tests move time
(``tick``), deliver messages (``deliver``, ``stabilize``), cut links (``partition``,
``isolate``, ``drop_if``) and crash/restart nodes (``crash``, ``restart``).

Test support only: the server never imports this. Like the core, it must never use wall
time, threads or global randomness.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable

import attrs

from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.types import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    PersistedState,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    Snapshot,
)


@attrs.define
class MemoryDisk:
    """What one node persisted: survives ``crash``."""

    hard_state: HardState = attrs.field(factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.field(factory=list)
    syncs: int = 0

    def persist(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            # The node hands out a snapshot only when it replaced its whole log by it.
            self.snapshot = ready.snapshot
            self.entries = []
        if ready.entries:
            first = ready.entries[0].index
            entries = self.entries
            if entries and entries[0].index <= first:
                del entries[first - entries[0].index :]
            else:
                entries.clear()
            entries.extend(ready.entries)
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if ready.must_sync:
            self.syncs += 1

    def compact(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        index = snapshot.metadata.index
        self.entries = [e for e in self.entries if e.index > index]

    def persisted_state(self) -> PersistedState:
        return PersistedState(
            hard_state=self.hard_state, snapshot=self.snapshot, entries=tuple(self.entries)
        )


@attrs.define
class Member:
    """One node and what the application did with its Readys."""

    node: RaftNode
    disk: MemoryDisk
    applied: list[Entry] = attrs.field(factory=list)
    """Every entry applied to the state machine, in order (snapshots replace it)."""
    read_states: list[ReadState] = attrs.field(factory=list)
    readies: list[Ready] = attrs.field(factory=list)

    @property
    def data(self) -> list[bytes]:
        """The state machine: the payloads of the applied non-empty NORMAL entries."""
        return [e.data for e in self.applied if e.type is EntryType.NORMAL and e.data]


class LocalCluster:
    def __init__(
        self,
        voters: Iterable[int] = (1, 2, 3),
        learners: Iterable[int] = (),
        seed: int = 0,
        **config: float | bool,
    ) -> None:
        self._seed = seed
        self._config_overrides = config
        self.members: dict[int, Member] = {}
        self.crashed: dict[int, MemoryDisk] = {}
        self.network: deque[Message] = deque()
        self.delivered: list[Message] = []
        """Every message that reached a live node, in order (for assertions)."""
        self.cut: set[tuple[int, int]] = set()
        self.filters: list[Callable[[Message], bool]] = []
        self.snapshot_states: dict[bytes, list[Entry]] = {}
        self.now = 0.0
        """The clock every node reads (only for ``lease_duration``); tests move it."""
        bootstrap = ConfState(voters=frozenset(voters), learners=frozenset(learners))
        for node_id in sorted(bootstrap.voters | bootstrap.learners):
            self.add_node(node_id, bootstrap)

    def config(self, node_id: int) -> RaftConfig:
        return RaftConfig(id=node_id, **self._config_overrides)  # type: ignore[arg-type]

    def add_node(self, node_id: int, bootstrap: ConfState | None = None) -> RaftNode:
        """Start a node: part of a new cluster (``bootstrap``) or joining (None)."""
        rng = random.Random(self._seed * 1000 + node_id)
        node = RaftNode(self.config(node_id), rng, bootstrap=bootstrap, clock=self.clock)
        self.members[node_id] = Member(node=node, disk=MemoryDisk())
        return node

    def clock(self) -> float:
        return self.now

    def node(self, node_id: int) -> RaftNode:
        return self.members[node_id].node

    def __getitem__(self, node_id: int) -> RaftNode:
        return self.members[node_id].node

    # --- the application's loop ------------------------------------------------------

    def handle_ready(self, node_id: int) -> Ready | None:
        """Do one Ready of one node, in the contract's order. None if it had nothing."""
        member = self.members[node_id]
        node = member.node
        if not node.has_ready():
            return None
        ready = node.ready()
        member.readies.append(ready)
        member.disk.persist(ready)
        self.network.extend(ready.messages)
        if ready.snapshot is not None:
            member.applied = list(self.snapshot_states.get(ready.snapshot.data, []))
        member.applied.extend(ready.committed_entries)
        member.read_states.extend(ready.read_states)
        node.advance(ready)
        return ready

    def handle_all_ready(self) -> None:
        progress = True
        while progress:
            progress = False
            for node_id in sorted(self.members):
                if self.handle_ready(node_id) is not None:
                    progress = True

    def _blocked(self, message: Message) -> bool:
        if (message.sender, message.to) in self.cut:
            return True
        return any(f(message) for f in self.filters)

    def deliver(self, limit: int | None = None) -> int:
        """Deliver queued messages in FIFO order (dropping blocked ones and those for
        crashed or unknown nodes). Returns how many reached a node."""
        count = 0
        network = self.network
        budget = len(network) if limit is None else min(limit, len(network))
        for _ in range(budget):
            message = network.popleft()
            member = self.members.get(message.to)
            if member is None or self._blocked(message):
                continue
            self.delivered.append(message)
            member.node.step(message)
            count += 1
        return count

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Handle Readys and deliver messages until nothing is left to do."""
        for _ in range(max_rounds):
            self.handle_all_ready()
            if not self.network:
                return
            self.deliver()
        raise AssertionError("the cluster did not stabilize")

    def tick(self, node_ids: Iterable[int] | None = None, times: int = 1) -> None:
        """Tick the given nodes (all live ones by default), stabilizing after each tick."""
        for _ in range(times):
            for node_id in sorted(self.members if node_ids is None else node_ids):
                if node_id in self.members:
                    self.members[node_id].node.tick()
            self.stabilize()

    def spread_commit(self) -> None:
        """Tick the leader once: it tells followers a commit index they have not heard
        (a commit sends no message of its own; see ``RaftNode._send_commit_updates``)."""
        leader = self.leader()
        if leader:
            self.tick(node_ids=[leader])

    def tick_until(
        self,
        predicate: Callable[[], bool],
        max_ticks: int = 500,
        node_ids: Iterable[int] | None = None,
    ) -> int:
        """Tick until ``predicate()`` holds; returns the ticks it took. Fails after
        ``max_ticks`` (a deadline in simulated time, never a wall-clock sleep)."""
        ids = None if node_ids is None else list(node_ids)
        for ticks in range(max_ticks + 1):
            if predicate():
                return ticks
            self.tick(ids)
        raise AssertionError(f"condition not reached within {max_ticks} ticks")

    # --- shortcuts -------------------------------------------------------------------

    def leader(self) -> int:
        """The id of the live leader with the highest term, or NONE."""
        best, best_term = NONE, -1
        for node_id, member in sorted(self.members.items()):
            node = member.node
            if node.role is Role.LEADER and node.term > best_term:
                best, best_term = node_id, node.term
        return best

    def elect(self, node_id: int) -> None:
        """Make ``node_id`` campaign and run the election to its end."""
        self.node(node_id).campaign()
        self.stabilize()
        if self.node(node_id).role is not Role.LEADER:
            raise AssertionError(f"node {node_id} did not win the election")

    def propose(self, node_id: int, data: bytes) -> None:
        self.node(node_id).propose(data)
        self.stabilize()

    def compact(self, node_id: int, data: bytes | None = None) -> Snapshot:
        """Have ``node_id`` snapshot its state machine at its applied index."""
        member = self.members[node_id]
        node = member.node
        index = node.applied_index
        key = data if data is not None else f"snapshot:{node_id}:{index}".encode()
        self.snapshot_states[key] = [e for e in member.applied if e.index <= index]
        node.compact(index, key)
        snapshot = node.snapshot
        assert snapshot is not None
        member.disk.compact(snapshot)
        return snapshot

    # --- faults ----------------------------------------------------------------------

    def isolate(self, node_id: int) -> None:
        for other in self.members:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different groups."""
        sets = [set(g) for g in groups]
        for a_index, a_group in enumerate(sets):
            for b_index, b_group in enumerate(sets):
                if a_index != b_index:
                    for a in a_group:
                        for b in b_group:
                            self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()
        self.filters.clear()

    def drop_if(self, predicate: Callable[[Message], bool]) -> None:
        self.filters.append(predicate)

    def crash(self, node_id: int) -> None:
        """The node stops; what it persisted survives; in-flight messages to it are lost."""
        member = self.members.pop(node_id)
        self.crashed[node_id] = member.disk

    def restart(self, node_id: int, seed: int = 1) -> RaftNode:
        disk = self.crashed.pop(node_id)
        rng = random.Random(self._seed * 1000 + node_id + seed * 7919)
        node = RaftNode(
            self.config(node_id), rng, persisted=disk.persisted_state(), clock=self.clock
        )
        member = Member(node=node, disk=disk)
        if disk.snapshot is not None:
            member.applied = list(self.snapshot_states.get(disk.snapshot.data, []))
        self.members[node_id] = member
        return node

    def set_log(self, node_id: int, terms: Iterable[int], term: int | None = None) -> RaftNode:
        """Restart ``node_id`` with the bootstrap entries followed by one entry per item
        of ``terms`` (payload: its index), current term ``term`` (default: the last of
        ``terms``), commit index at the end of the bootstrap entries."""
        member = self.members[node_id]
        while member.node.has_ready():
            self.handle_ready(node_id)
        disk = member.disk
        self.crash(node_id)
        bootstrap = [e for e in disk.entries if e.term == 1 and e.type is EntryType.CONF_CHANGE]
        disk.entries = list(bootstrap)
        terms = list(terms)
        for term_of_entry in terms:
            index = len(disk.entries) + 1
            disk.entries.append(Entry(term_of_entry, index, EntryType.NORMAL, b"%d" % index))
        current = term if term is not None else max([1, *terms])
        disk.hard_state = HardState(term=current, vote=NONE, commit=len(bootstrap))
        return self.restart(node_id)

    # --- inspection ------------------------------------------------------------------

    def queued(
        self, kind: type | None = None, to: int | None = None, sender: int | None = None
    ) -> list[Message]:
        """Messages waiting on the network, optionally filtered."""
        return [
            m
            for m in self.network
            if (kind is None or type(m) is kind)
            and (to is None or m.to == to)
            and (sender is None or m.sender == sender)
        ]
