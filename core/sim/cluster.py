"""The deterministic whole-cluster simulation: N nodes running the real ``RaftNode``, a
virtual clock, the simulated network and disks, client sessions and a fault schedule, all
driven by one event queue ordered by (virtual time, insertion number).

Each node is driven exactly as the server loop drives it (the ``Ready`` contract): write
the snapshot, entries and hard state to the disk; if ``must_sync``, wait for the simulated
fsync to complete (the node keeps receiving messages and ticks meanwhile); only then send
the messages, apply, answer reads, and ``advance``. Every peer message is encoded and
decoded with the core's codec. The ``SafetyMonitor`` watches everything.

Given the same ``SimConfig`` a run is the same, event for event: every random choice comes
from a generator seeded from ``config.seed`` and a fixed name, and nothing here iterates
an unordered collection without sorting it first. This module must never read the wall
clock or the global ``random`` module.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from pnyx.core.errors import ProposalDroppedError
from pnyx.core.raft import codec
from pnyx.core.raft.node import RaftNode
from pnyx.core.raft.types import (
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HeartbeatRequest,
    Message,
    RaftConfig,
    Ready,
    Role,
    SnapshotMetadata,
    SnapshotRequest,
    VoteResponse,
)
from pnyx.core.sim.checks import SafetyMonitor, Violation
from pnyx.core.sim.disk import Disk, LogImage, MemoryDisk, WalDisk
from pnyx.core.sim.history import OpKind, Value
from pnyx.core.sim.kvadapter import RealKV
from pnyx.core.sim.nemesis import Nemesis
from pnyx.core.sim.network import CALM, Network
from pnyx.core.sim.statemachine import Applied, Command, KVStateMachine, SimKV
from pnyx.core.sim.workload import Client, HistoryRecorder, OutstandingOp

STAMP_SCALE = 1000
"""History stamps are ``time * STAMP_SCALE + n``: readable as virtual time, yet strictly
increasing in the order events happen within one time unit."""


@attrs.frozen
class SimConfig:
    seed: int
    nodes: int = 3
    ticks: int = 600
    """Length of the fault phase, in Raft ticks."""
    faults: bool = True
    membership: bool = True
    disk: str = "memory"
    """"memory" (``MemoryDisk``) or "wal" (the real storage over a memory file system)."""
    machine: str = "simple"
    """"simple" (``SimKV``) or "kv" (the real ``pnyx.core.kv`` store, via ``RealKV``)."""
    tick_units: int = 10
    """Virtual time units per Raft tick; network and disk delays are in units."""
    election_tick: int = 10
    heartbeat_tick: int = 1
    clients: int = 0
    """0: one more than the number of nodes."""
    keys: int = 3
    request_timeout_ticks: int = 25
    client_crash_rate: float = 0.1
    """Probability that a client gives up at a timeout (crash: the op stays pending)."""
    fault_gap_ticks: tuple[int, int] = (5, 40)
    fault_duration_ticks: tuple[int, int] = (10, 80)
    liveness_leader_ticks: int = 150
    """After the faults stop, a leader must be established within this many ticks..."""
    liveness_settle_ticks: int = 500
    """...and every client operation decided and every member caught up within this."""
    compact_every: tuple[int, int] = (15, 60)
    """Each node snapshots its state machine every so many applied entries."""
    sync_delay_units: tuple[int, int] = (1, 8)
    slow_sync_delay_units: tuple[int, int] = (20, 300)
    """fsync latency of a node while the nemesis makes its disk slow."""
    leader_early_send: bool = False
    """Send a leader's AppendRequests, heartbeats and snapshots before its own fsync of
    the same Ready completes, as ``pnyx.core.server`` does (Raft thesis 10.2.1; the
    exception the Ready contract allows). Off: the strict persist-then-send order."""
    quorum_first: bool = False
    """``RaftConfig.quorum_first``: at low load, spare followers get entries at ticks."""
    eager: bool = False
    """Each node, at each start, is eager (``RaftNode.set_eager``: its clients wait for
    every commit, as a member with watchers) with probability one half."""
    commit_updates: bool = False
    """A leader with committed entries to apply asks for commit updates first
    (``RaftNode.send_commit_updates``), at half its Readys drawn at random: what the
    server does before applying an entry of unbounded cost."""
    lease_reads: bool = False
    """Leaders answer reads on their lease (``RaftConfig.lease_duration``), reading the
    virtual clock, which runs on while a process is paused. The lease is
    ``election_tick - 2`` ticks: a follower's ticks come on time here, so it refuses
    votes for at least ``election_tick - 1`` ticks after hearing from its leader."""
    lease_ticks: float = 0.0
    """Overrides that lease length, in ticks (tests plant an unsafe one with it)."""

    def command(self) -> str:
        """The exact command line that reproduces this run."""
        defaults = {field.name: field.default for field in attrs.fields(SimConfig)}
        line = f"python -m pnyx.core.sim --seeds 1 --start {self.seed} --nodes {self.nodes}"
        if self.ticks != defaults["ticks"]:
            line += f" --ticks {self.ticks}"
        if not self.faults:
            line += " --no-faults"
        if not self.membership:
            line += " --no-membership"
        if self.disk != defaults["disk"]:
            line += f" --disk {self.disk}"
        if self.machine != defaults["machine"]:
            line += f" --machine {self.machine}"
        if self.leader_early_send:
            line += " --leader-early-send"
        if self.quorum_first:
            line += " --quorum-first"
        if self.eager:
            line += " --eager"
        if self.commit_updates:
            line += " --commit-updates"
        if self.lease_reads:
            line += " --lease-reads"
        if self.lease_ticks:
            line += f" --lease-ticks {self.lease_ticks}"
        return line

    @property
    def lease_duration(self) -> float:
        """The leader lease in virtual time units (0: none)."""
        if not self.lease_reads:
            return 0.0
        ticks = self.lease_ticks or self.election_tick - 2
        return ticks * self.tick_units


_LEADER_EARLY = (AppendRequest, HeartbeatRequest, SnapshotRequest)
"""What a leader may send before its own write of the same Ready is durable."""


class Phase(enum.Enum):
    FAULTS = "faults"
    LIVENESS = "liveness"
    DONE = "done"


class Ev(enum.IntEnum):
    TICK = 0
    DELIVER = 1
    SYNCED = 2
    REQUEST = 3
    RESPONSE = 4
    CLIENT_TIMEOUT = 5
    CLIENT_NEXT = 6
    ACTION = 7


@attrs.frozen
class ClientRequest:
    slot: int
    session: int
    op_id: int
    attempt: int
    kind: OpKind
    key: str
    seq: int
    value: Value
    expected: Value


@attrs.frozen
class ClientResponse:
    error: str | None = None
    observed: Value = None
    succeeded: bool | None = None


@attrs.define
class NodeProcess:
    """One cluster member: its disk survives crashes; everything else is the process."""

    id: int
    disk: Disk
    bootstrap: ConfState | None
    compact_every: int
    raft: RaftNode | None = None
    machine: KVStateMachine = attrs.field(factory=SimKV)
    log: LogImage = attrs.field(factory=LogImage)
    """What this incarnation has handed to its disk (synced or not), as the checks see
    it; rebuilt from the disk on restart, so any ``Disk`` implementation can be used."""
    incarnation: int = 0
    paused: bool = False
    retired: bool = False
    slow_disk_until: int = 0
    held: list[tuple[Ev, tuple[Any, ...]]] = attrs.field(factory=list)
    syncing: Ready | None = None
    early_sent: bool = False
    """The leader messages of ``syncing`` already left (``leader_early_send``)."""
    applied: int = 0
    applied_term: int = 0
    applied_conf: ConfState = attrs.field(factory=ConfState)
    snapshot_index: int = 0
    commit_floor: int = 0
    write_waiters: dict[tuple[int, int], ClientRequest] = attrs.field(factory=dict)
    read_waiters: dict[bytes, ClientRequest] = attrs.field(factory=dict)
    safe_reads: list[tuple[int, bytes]] = attrs.field(factory=list)

    @property
    def up(self) -> bool:
        return self.raft is not None


@attrs.define
class Stats:
    crashes: int = 0
    restarts: int = 0
    pauses: int = 0
    partitions: int = 0
    conf_changes: int = 0
    """Membership changes proposed; the next three count those committed."""
    learners_added: int = 0
    promotions: int = 0
    removals: int = 0
    leader_removals: int = 0
    """Committed removals that the removed member proposed itself, as leader."""
    transfers: int = 0
    snapshots: int = 0
    """Snapshots taken by nodes (compactions)."""
    snapshots_installed: int = 0
    """Snapshots sent by a leader and installed by a follower that fell behind."""
    events: int = 0


class Simulation:
    """One run. ``run()`` returns normally or raises ``Violation``."""

    def __init__(
        self,
        config: SimConfig,
        *,
        trace: Callable[[str], None] | None = None,
        disk_factory: Callable[[], Disk] | None = None,
        machine_factory: Callable[[], KVStateMachine] | None = None,
    ):
        self.config = config
        if disk_factory is None:
            disk_factory = WalDisk if config.disk == "wal" else MemoryDisk
        self.disk_factory = disk_factory
        if machine_factory is None:
            machine_factory = RealKV if config.machine == "kv" else SimKV
        self.machine_factory = machine_factory
        self.trace_sink = trace
        seed = config.seed
        self.network = Network(random.Random(f"{seed}/network"))
        self.client_network_rng = random.Random(f"{seed}/client-network")
        self.disk_rng = random.Random(f"{seed}/disk")
        self.commit_updates_rng = random.Random(f"{seed}/commit-updates")
        self.config_rng = random.Random(f"{seed}/config")
        self.monitor = SafetyMonitor()
        self.history = HistoryRecorder()
        self.stats = Stats()
        self.digest = hashlib.sha256()
        self.now = 0
        self.last_stamp = 0
        self.queue: list[tuple[int, int, Ev, tuple[Any, ...]]] = []
        self.queue_seq = 0
        self.phase = Phase.FAULTS
        self.committed_conf = ConfState(voters=frozenset(range(1, config.nodes + 1)))
        self.committed_conf_index = 0
        self.next_node_id = config.nodes + 1
        self.nemesis: Nemesis | None = None
        self.leaders_removing_themselves: set[int] = set()
        """Members whose removal was proposed while they were leading."""
        self.next_session = 0
        self.liveness_started = 0
        self.leader_established_at: int | None = None
        self.keys = [f"k{i}" for i in range(config.keys)]
        # Small batches and windows make followers catch up entry by entry, which is
        # where replication and commit bugs show (acknowledgements of old-term entries).
        self.max_append_bytes = self.config_rng.choice([1 << 20, 1 << 20, 100, 1])
        self.max_inflight = self.config_rng.choice([256, 256, 4, 1])

        bootstrap = self.committed_conf
        self.processes: dict[int, NodeProcess] = {}
        for node_id in range(1, config.nodes + 1):
            self.processes[node_id] = self._new_process(node_id, bootstrap)
        client_count = config.clients or config.nodes + 1
        self.clients = [
            Client(slot, self._new_session(), random.Random(f"{seed}/client/{slot}"))
            for slot in range(client_count)
        ]
        self._handlers: list[Callable[..., None]] = [
            self._on_tick,
            self._on_deliver,
            self._on_synced,
            self._on_request,
            self._on_response,
            self._on_client_timeout,
            self._on_client_next,
            self._on_action,
        ]

    # --- the event loop ---------------------------------------------------------------

    def run(self) -> None:
        for process in self.sorted_processes():
            self._start(process)
        for client in self.clients:
            self._push(
                self.config_rng.randint(0, 5 * self.config.tick_units),
                Ev.CLIENT_NEXT,
                (client.slot,),
            )
        fault_end = self.config.ticks * self.config.tick_units
        if self.config.faults:
            self.nemesis = Nemesis(self, random.Random(f"{self.config.seed}/faults"))
            self.nemesis.start(fault_end)
        self._push(fault_end, Ev.ACTION, (self._begin_liveness,))
        while self.queue and self.phase is not Phase.DONE:
            time, _, kind, payload = heapq.heappop(self.queue)
            self.now = time
            self.stats.events += 1
            self._handlers[kind](*payload)

    def _push(self, delay: int, kind: Ev, payload: tuple[Any, ...]) -> None:
        self.queue_seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.queue_seq, kind, payload))

    def later(self, delay: int, action: Callable[[], None]) -> None:
        self._push(delay, Ev.ACTION, (action,))

    def _on_action(self, action: Callable[[], None]) -> None:
        action()

    def stamp(self) -> int:
        self.last_stamp = max(self.last_stamp + 1, self.now * STAMP_SCALE)
        return self.last_stamp

    def trace(self, line: str) -> None:
        self.digest.update(f"{self.now}|{line}\n".encode())
        if self.trace_sink is not None:
            self.trace_sink(f"{self.now / self.config.tick_units:9.1f} {line}")

    def ticks(self, count: int) -> int:
        return count * self.config.tick_units

    # --- node processes ---------------------------------------------------------------

    def _new_process(self, node_id: int, bootstrap: ConfState | None) -> NodeProcess:
        low, high = self.config.compact_every
        return NodeProcess(
            node_id, self.disk_factory(), bootstrap, self.config_rng.randint(low, high)
        )

    def sorted_processes(self) -> list[NodeProcess]:
        return [self.processes[node_id] for node_id in sorted(self.processes)]

    def add_process(self) -> NodeProcess:
        process = self._new_process(self.next_node_id, None)
        self.next_node_id += 1
        self.processes[process.id] = process
        self._start(process)
        return process

    def _start(self, process: NodeProcess) -> None:
        process.incarnation += 1
        persisted = process.disk.recover()
        raft_config = RaftConfig(
            id=process.id,
            election_tick=self.config.election_tick,
            heartbeat_tick=self.config.heartbeat_tick,
            max_append_bytes=self.max_append_bytes,
            max_inflight=self.max_inflight,
            lease_duration=self.config.lease_duration,
            quorum_first=self.config.quorum_first,
        )
        rng = random.Random(f"{self.config.seed}/raft/{process.id}/{process.incarnation}")
        bootstrap = process.bootstrap if persisted.snapshot is None else None
        process.raft = RaftNode(
            raft_config, rng, persisted, bootstrap=bootstrap, clock=self._virtual_clock
        )
        if self.config.eager:
            process.raft.set_eager(rng.random() < 0.5)
        process.machine = self.machine_factory()
        process.log = LogImage(persisted.hard_state, persisted.snapshot, list(persisted.entries))
        process.paused = False
        process.held.clear()
        process.syncing = None
        process.write_waiters.clear()
        process.read_waiters.clear()
        process.safe_reads.clear()
        if persisted.snapshot is not None:
            meta = persisted.snapshot.metadata
            process.machine.restore(persisted.snapshot.data)
            process.applied, process.applied_term = meta.index, meta.term
            process.applied_conf = meta.conf_state
            process.snapshot_index = meta.index
        else:
            process.applied = process.applied_term = process.snapshot_index = 0
            process.applied_conf = ConfState()  # the log replays from index 1
        floor = persisted.hard_state.commit
        if process.raft.commit_index < floor:
            raise Violation(
                "commit index decreased",
                f"node {process.id} restarted with commit {process.raft.commit_index} below "
                f"its persisted commit {floor}",
            )
        process.commit_floor = process.raft.commit_index
        self.trace(f"start n{process.id} #{process.incarnation} commit={floor}")
        phase = self.config_rng.randrange(self.config.tick_units)
        self._push(phase + 1, Ev.TICK, (process.id, process.incarnation))
        self._drive(process)

    def _virtual_clock(self) -> float:
        return float(self.now)

    def crash(self, process: NodeProcess) -> None:
        if not process.up:
            return
        self.stats.crashes += 1
        self.trace(f"crash n{process.id}")
        process.raft = None
        process.paused = False
        process.held.clear()
        process.syncing = None
        process.disk.crash(self.disk_rng)

    def restart(self, process: NodeProcess) -> None:
        if process.up or process.retired:
            return
        self.stats.restarts += 1
        self._start(process)

    def pause(self, process: NodeProcess) -> None:
        if process.up and not process.paused:
            self.stats.pauses += 1
            self.trace(f"pause n{process.id}")
            process.paused = True

    def resume(self, process: NodeProcess) -> None:
        if not process.paused:
            return
        self.trace(f"resume n{process.id} with {len(process.held)} held events")
        process.paused = False
        held, process.held = process.held, []
        for kind, payload in held:
            self._push(0, kind, payload)

    def retire(self, process: NodeProcess) -> None:
        """A member that was removed from the cluster is shut down for good."""
        self.crash(process)
        process.retired = True
        self.trace(f"retire n{process.id}")

    def _hold(self, process: NodeProcess, kind: Ev, payload: tuple[Any, ...]) -> bool:
        """Events for a paused process wait until it resumes."""
        if process.paused:
            process.held.append((kind, payload))
            return True
        return False

    def _on_tick(self, node_id: int, incarnation: int) -> None:
        process = self.processes[node_id]
        if process.incarnation != incarnation or process.raft is None:
            return
        self._push(self.config.tick_units, Ev.TICK, (node_id, incarnation))
        if process.paused:
            return  # a paused process does not see time pass
        process.raft.tick()
        self._after_input(process)

    def _on_deliver(self, sender: int, recipient: int, data: bytes) -> None:
        process = self.processes[recipient]
        if process.raft is None or not self.network.connected(sender, recipient):
            return
        if self._hold(process, Ev.DELIVER, (sender, recipient, data)):
            return
        self.digest.update(data)
        process.raft.step(codec.decode_message(data))
        self._after_input(process)

    def drive(self, process: NodeProcess) -> None:
        """Hand the process's pending Ready work to the loop (after an outside action)."""
        if process.raft is not None and not process.paused:
            self._after_input(process)

    def _after_input(self, process: NodeProcess) -> None:
        raft = process.raft
        assert raft is not None
        if raft.role is Role.LEADER:
            self.monitor.observe_leader(process.id, raft)
        self._drive(process)

    # --- the Ready contract -----------------------------------------------------------

    def _drive(self, process: NodeProcess) -> None:
        raft = process.raft
        if raft is not None and process.syncing is not None and process.early_sent:
            # As the server does: a leader's heartbeats do not wait for its disk.
            for beat in raft.take_heartbeats():
                self._send(beat)
        while (
            raft is not None
            and process.raft is raft
            and process.syncing is None
            and not process.paused
            and raft.has_ready()
        ):
            if (
                self.config.commit_updates
                and raft.role is Role.LEADER
                and raft.committed_unapplied()
                and self.commit_updates_rng.random() < 0.5
            ):
                raft.send_commit_updates()
            ready = raft.ready()
            self._persist(process, raft, ready)
            if ready.must_sync:
                process.syncing = ready
                process.early_sent = self.config.leader_early_send and raft.role is Role.LEADER
                if process.early_sent:
                    for message in ready.messages:
                        if isinstance(message, _LEADER_EARLY):
                            self._send(message)
                low, high = self.config.sync_delay_units
                if self.now < process.slow_disk_until:
                    low, high = self.config.slow_sync_delay_units
                delay = self.disk_rng.randint(low, high)
                self._push(delay, Ev.SYNCED, (process.id, process.incarnation))
                return
            self._complete(process, raft, ready)

    def _on_synced(self, node_id: int, incarnation: int) -> None:
        process = self.processes[node_id]
        if process.incarnation != incarnation or process.raft is None:
            return
        if self._hold(process, Ev.SYNCED, (node_id, incarnation)):
            return
        ready = process.syncing
        assert ready is not None
        process.disk.sync()
        process.syncing = None
        self._complete(process, process.raft, ready, skip_leader_messages=process.early_sent)
        self._drive(process)

    def _persist(self, process: NodeProcess, raft: RaftNode, ready: Ready) -> None:
        hard_state = ready.hard_state
        if hard_state is not None:
            previous = process.log.hard_state
            if hard_state.commit < process.commit_floor:
                raise Violation(
                    "commit index decreased",
                    f"node {process.id} persisted commit {hard_state.commit} after "
                    f"{process.commit_floor}",
                )
            if hard_state.term < previous.term:
                raise Violation(
                    "term decreased",
                    f"node {process.id} persisted term {hard_state.term} after {previous.term}",
                )
        if ready.snapshot is not None:
            meta = ready.snapshot.metadata
            known = self.monitor.committed.get(meta.index)
            if known is not None and known.term != meta.term:
                raise Violation(
                    "snapshot mismatch",
                    f"node {process.id} got a snapshot at index {meta.index} term {meta.term}, "
                    f"but the entry committed there has term {known.term}",
                )
        process.disk.save(hard_state, ready.entries, ready.snapshot)
        process.log.write(hard_state, ready.entries, ready.snapshot)
        if ready.entries or ready.snapshot is not None or hard_state is not None:
            self.trace(
                f"persist n{process.id} hs={_hs(hard_state)} entries="
                f"{_span(ready.entries)} snap="
                f"{ready.snapshot.metadata.index if ready.snapshot else '-'} "
                f"sync={int(ready.must_sync)}"
            )
        self.monitor.observe_written(process.id, process.log, ready.entries)
        if ready.soft_state is not None:
            soft = ready.soft_state
            self.trace(
                f"role n{process.id} {soft.role.value} term {raft.term} lead n{soft.leader_id}"
            )

    def _send(self, message: Message) -> None:
        data = codec.encode_message(message)
        for delay in self.network.fate(message.sender, message.to, self.now):
            self._push(delay, Ev.DELIVER, (message.sender, message.to, data))

    def _complete(
        self, process: NodeProcess, raft: RaftNode, ready: Ready, skip_leader_messages: bool = False
    ) -> None:
        """Persisted (and synced if asked): send, apply, answer reads, advance."""
        voted = acknowledged = False
        for message in ready.messages:
            if isinstance(message, VoteResponse) and message.granted and not message.pre_vote:
                self.monitor.observe_vote(message.sender, message.term, message.to)
                voted = True
            elif isinstance(message, AppendResponse) and not message.reject:
                acknowledged = True
            if skip_leader_messages and isinstance(message, _LEADER_EARLY):
                continue  # already sent before the fsync
            self._send(message)
        if ready.snapshot is not None:
            meta = ready.snapshot.metadata
            process.machine.restore(ready.snapshot.data)
            process.applied, process.applied_term = meta.index, meta.term
            process.applied_conf = meta.conf_state
            process.snapshot_index = max(process.snapshot_index, meta.index)
            self.stats.snapshots_installed += 1
            self.trace(f"install n{process.id} snapshot@{meta.index}")
        for entry in ready.committed_entries:
            self._apply(process, entry)
        for read_state in ready.read_states:
            if read_state.context in process.read_waiters:
                process.safe_reads.append((read_state.index, read_state.context))
        self._answer_reads(process)
        raft.advance(ready)
        if raft.role is Role.LEADER:
            self.monitor.observe_leader(process.id, raft)
        if raft.commit_index < process.commit_floor:
            raise Violation(
                "commit index decreased",
                f"node {process.id} commit {raft.commit_index} after {process.commit_floor}",
            )
        process.commit_floor = raft.commit_index
        if process.applied - process.snapshot_index >= process.compact_every:
            self.compact(process)
        if (voted or acknowledged) and self.nemesis is not None:
            # Last: a crash here ends this incarnation before any other input reaches it.
            self.nemesis.after_promise(process, voted=voted)

    def _apply(self, process: NodeProcess, entry: Entry) -> None:
        if entry.index != process.applied + 1:
            raise Violation(
                "state machine safety",
                f"node {process.id} applied index {entry.index} after {process.applied}",
            )
        self.monitor.observe_applied(process.id, entry)
        process.applied, process.applied_term = entry.index, entry.term
        if entry.type == EntryType.CONF_CHANGE:
            change = codec.decode_conf_change(entry.data)
            process.applied_conf = _changed(process.applied_conf, change)
            if entry.index > self.committed_conf_index:
                self._conf_committed(entry.index, change)
            process.machine.apply(entry.index, b"")
            return
        outcome = process.machine.apply(entry.index, entry.data)
        if not isinstance(outcome, Applied):
            return
        request = process.write_waiters.pop((outcome.client, outcome.seq), None)
        if request is None:
            return
        if outcome.stale:
            self._respond(process, request, ClientResponse(error="stale session sequence"))
            return
        if not outcome.duplicate:
            self.monitor.acknowledge(outcome.client, outcome.seq, entry)
        self._respond(process, request, ClientResponse(succeeded=outcome.succeeded))

    def _answer_reads(self, process: NodeProcess) -> None:
        if not process.safe_reads:
            return
        waiting = []
        for index, context in process.safe_reads:
            if index > process.applied:
                waiting.append((index, context))
                continue
            request = process.read_waiters.pop(context, None)
            if request is not None:
                value = process.machine.read(request.key)
                self._respond(process, request, ClientResponse(observed=value))
        process.safe_reads = waiting

    def compact(self, process: NodeProcess) -> None:
        raft = process.raft
        if raft is None or process.syncing is not None or process.applied <= process.snapshot_index:
            return
        data = process.machine.snapshot()
        raft.compact(process.applied, data)
        snapshot = raft.snapshot
        if snapshot is not None and snapshot.metadata.index > process.applied:
            # A newer snapshot from the leader arrived meanwhile (it is in the next Ready);
            # the node rightly ignored this older one.
            return
        expected = SnapshotMetadata(process.applied, process.applied_term, process.applied_conf)
        if snapshot is None or snapshot.metadata != expected or snapshot.data != data:
            raise Violation(
                "snapshot mismatch",
                f"node {process.id} compacted at {expected} but holds "
                f"{None if snapshot is None else snapshot.metadata}",
            )
        process.disk.save_snapshot(snapshot)
        process.log.install(snapshot)
        process.snapshot_index = process.applied
        self.stats.snapshots += 1
        self.trace(f"compact n{process.id} @{process.applied}")

    def _conf_committed(self, index: int, change: ConfChange) -> None:
        self.committed_conf_index = index
        self.committed_conf = _changed(self.committed_conf, change)
        self.trace(f"conf committed @{index}: {change.type.name} n{change.node_id}")
        if index <= self.config.nodes:
            return  # the bootstrap configuration
        if change.type is ConfChangeType.ADD_LEARNER:
            self.stats.learners_added += 1
        elif change.type is ConfChangeType.ADD_NODE:
            self.stats.promotions += 1
        else:
            self.stats.removals += 1
            if change.node_id in self.leaders_removing_themselves:
                self.stats.leader_removals += 1
        if change.type is ConfChangeType.REMOVE_NODE:
            process = self.processes.get(change.node_id)
            if process is not None and not process.retired:
                # Give the removed member a moment (a removed leader steps down first).
                delay = self.ticks(self.config_rng.randint(0, 30))
                self.later(delay, lambda: self._retire_if_removed(change.node_id))

    def _retire_if_removed(self, node_id: int) -> None:
        conf = self.committed_conf
        if node_id not in conf.voters and node_id not in conf.learners:
            self.retire(self.processes[node_id])

    # --- clients ----------------------------------------------------------------------

    def _new_session(self) -> int:
        self.next_session += 1
        return self.next_session

    def addressable(self) -> list[int]:
        return [p.id for p in self.sorted_processes() if not p.retired]

    def _on_client_next(self, slot: int) -> None:
        if self.phase is not Phase.FAULTS:
            return
        client = self.clients[slot]
        op = client.next_op(self.history.new_id(), self.keys, self.stamp())
        self.trace(f"call c{client.session} #{op.id} {op.kind.value} {op.key} {op.value}")
        self._attempt(client, op)

    def _attempt(self, client: Client, op: OutstandingOp) -> None:
        op.attempt += 1
        op.node = client.rng.choice(self.addressable())
        request = ClientRequest(
            client.slot,
            client.session,
            op.id,
            op.attempt,
            op.kind,
            op.key,
            op.seq,
            op.value,
            op.expected,
        )
        self._push(self.client_network_rng.randint(1, 6), Ev.REQUEST, (op.node, request))
        timeout = self.ticks(self.config.request_timeout_ticks)
        self._push(timeout, Ev.CLIENT_TIMEOUT, (client.slot, client.session, op.id, op.attempt))

    def _on_request(self, node_id: int, request: ClientRequest) -> None:
        process = self.processes[node_id]
        raft = process.raft
        if raft is None or self._hold(process, Ev.REQUEST, (node_id, request)):
            return
        try:
            if request.kind is OpKind.READ:
                context = f"{request.session}:{request.op_id}:{request.attempt}".encode()
                process.read_waiters[context] = request
                raft.read_index(context)
            else:
                command = Command(
                    request.session,
                    request.seq,
                    request.key,
                    request.value or "",
                    request.kind is OpKind.CAS,
                    request.expected,
                )
                process.write_waiters[(request.session, request.seq)] = request
                raft.propose(process.machine.encode(command))
        except ProposalDroppedError as error:
            process.read_waiters.pop(
                f"{request.session}:{request.op_id}:{request.attempt}".encode(), None
            )
            process.write_waiters.pop((request.session, request.seq), None)
            self._respond(process, request, ClientResponse(error=error.reason))
        self._after_input(process)

    def _respond(
        self, process: NodeProcess, request: ClientRequest, response: ClientResponse
    ) -> None:
        delay = self.client_network_rng.randint(1, 6)
        self._push(delay, Ev.RESPONSE, (request, response))

    def _on_response(self, request: ClientRequest, response: ClientResponse) -> None:
        client = self.clients[request.slot]
        op = client.current
        if client.session != request.session or op is None or op.id != request.op_id:
            return
        if response.error is not None:
            if request.attempt != op.attempt:
                return  # an error from an attempt we already gave up on
            self.trace(f"error c{client.session} #{op.id}: {response.error}")
            # Back off a little, then try another node.
            backoff = self.ticks(client.rng.randint(1, 4))
            self.later(backoff, lambda: self._retry(client, op))
            return
        self.history.complete(
            client, op, self.stamp(), observed=response.observed, succeeded=response.succeeded
        )
        self.trace(
            f"return c{client.session} #{op.id} {op.kind.value} "
            f"observed={response.observed} ok={response.succeeded}"
        )
        self._push(self.ticks(client.rng.randint(0, 3)), Ev.CLIENT_NEXT, (client.slot,))

    def _retry(self, client: Client, op: OutstandingOp) -> None:
        if client.current is op:
            self._attempt(client, op)

    def _on_client_timeout(self, slot: int, session: int, op_id: int, attempt: int) -> None:
        client = self.clients[slot]
        op = client.current
        if client.session != session or op is None or op.id != op_id or op.attempt != attempt:
            return
        if self.phase is Phase.FAULTS and client.rng.random() < self.config.client_crash_rate:
            self.trace(f"client crash c{client.session} abandons #{op.id}")
            self.history.abandon(client, op)
            client.session = self._new_session()
            client.seq = 0
            client.known.clear()
            self._push(self.ticks(client.rng.randint(0, 3)), Ev.CLIENT_NEXT, (client.slot,))
            return
        self.trace(f"timeout c{client.session} #{op.id} attempt {attempt}")
        self._attempt(client, op)

    # --- the end: liveness, then the final checks -------------------------------------

    def _begin_liveness(self) -> None:
        self.phase = Phase.LIVENESS
        self.liveness_started = self.now
        self.trace("faults stop: heal, resume, restart")
        self.network.heal()
        self.network.quality = CALM
        for process in self.sorted_processes():
            if process.retired:
                continue
            self.resume(process)
            self.restart(process)
        self.later(self.config.tick_units, self._check_liveness)

    def leader(self) -> NodeProcess | None:
        """The live process that leads the highest term, if any."""
        best: NodeProcess | None = None
        for process in self.sorted_processes():
            raft = process.raft
            if raft is None or process.paused or raft.role is not Role.LEADER:
                continue
            if best is None or raft.term > best.raft.term:  # type: ignore[union-attr]
                best = process
        return best

    def _established_leader(self) -> NodeProcess | None:
        """A leader every live voter of its configuration follows, in its term."""
        leader = self.leader()
        if leader is None:
            return None
        raft = leader.raft
        assert raft is not None
        for voter in sorted(raft.conf_state.voters):
            process = self.processes.get(voter)
            if process is None or process.raft is None:
                continue
            if process.raft.leader_id != leader.id or process.raft.term != raft.term:
                return None
        return leader

    def _check_liveness(self) -> None:
        elapsed_ticks = (self.now - self.liveness_started) // self.config.tick_units
        leader = self._established_leader()
        if leader is not None and self.leader_established_at is None:
            self.leader_established_at = self.now
            self.trace(f"leader established: n{leader.id}")
        if self.leader_established_at is None and elapsed_ticks > self.config.liveness_leader_ticks:
            raise Violation(
                "liveness",
                f"no leader established {self.config.liveness_leader_ticks} ticks after the "
                f"faults stopped",
            )
        pending = [c for c in self.clients if c.current is not None]
        if leader is not None and not pending and self._caught_up(leader):
            self._finish(leader)
            return
        if elapsed_ticks > self.config.liveness_settle_ticks:
            if pending:
                ops = ", ".join(
                    f"c{c.session}#{c.current.id}" for c in pending if c.current is not None
                )
                detail = f"client operations still undecided: {ops}"
            else:
                detail = "the members did not all catch up with the leader"
            raise Violation(
                "liveness",
                f"{detail} {self.config.liveness_settle_ticks} ticks after the faults stopped",
            )
        self.later(self.config.tick_units, self._check_liveness)

    def _caught_up(self, leader: NodeProcess) -> bool:
        raft = leader.raft
        assert raft is not None
        if raft.commit_index != raft.last_index:
            return False
        conf = raft.conf_state
        for member in sorted(conf.voters | conf.learners):
            process = self.processes.get(member)
            if process is None or process.retired:
                continue
            if process.raft is None or process.applied != raft.commit_index:
                return False
        return True

    def _finish(self, leader: NodeProcess) -> None:
        raft = leader.raft
        assert raft is not None
        self.monitor.check_acknowledged_kept(leader.id, leader.log, raft.commit_index)
        self.trace(f"done: leader n{leader.id} term {raft.term} commit {raft.commit_index}")
        self.phase = Phase.DONE


def _changed(conf: ConfState, change: ConfChange) -> ConfState:
    node = change.node_id
    if change.type is ConfChangeType.ADD_NODE:
        return ConfState(conf.voters | {node}, conf.learners - {node})
    if change.type is ConfChangeType.ADD_LEARNER:
        if node in conf.voters:
            return conf
        return ConfState(conf.voters, conf.learners | {node})
    return ConfState(conf.voters - {node}, conf.learners - {node})


def _hs(hard_state: Any) -> str:
    if hard_state is None:
        return "-"
    return f"{hard_state.term}/{hard_state.vote}/{hard_state.commit}"


def _span(entries: tuple[Entry, ...]) -> str:
    if not entries:
        return "-"
    return f"{entries[0].index}..{entries[-1].index}@{entries[-1].term}"
