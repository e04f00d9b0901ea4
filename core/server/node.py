"""``Node``: one pnyx member - Raft core, storage, state machine and sockets on one loop.

One thread (the caller of ``run``) owns the ``RaftNode``, the ``KVStateMachine`` (with its
``WatchHub`` and ``Lessor``) and the ZeroMQ sockets, and runs a plain ``zmq.Poller`` loop
(not asyncio: a future per message costs 3-5x here). Each iteration:

1. poll, with a timeout of the time left to the next tick;
2. drain EVERY ready socket in non-blocking batches: peer messages are stepped into Raft;
   client requests become proposals (writes), join this iteration's ONE ReadIndex
   context (linearizable reads), or are answered at once (serializable reads, status);
3. tick on schedule (monotonic clock) and run the timers (request deadlines, lease
   expiry on the leader, watch progress, publishing this member's client URL);
4. handle Ready, in the order ``types.Ready`` documents. Entries, hard state and a
   received snapshot go to the ``WalWriter`` thread; the loop does not wait: it keeps
   receiving and proposing (the next Ready batches all of it: group commit) until the
   writer signals completion on an inproc PAIR socket in the poller. Only then are the
   Ready's messages sent, its committed entries applied, waiting clients answered,
   read states served and ``advance`` called. A Ready with nothing to persist is handled
   at once;
5. drain watch outboxes and flush replies, one ZeroMQ message per client connection.

A Ready whose only durable change is the commit index is not sent through the writer:
the commit index is never needed before a message leaves (a node that forgets it after
a crash learns it again from the leader) and it is written with the next batch. This
keeps the leader's hot path (commit moves -> apply -> answer) free of a disk round trip.

Durability: a write is acknowledged only after it is applied, which is after it is
committed, which is after a quorum (this node included, for its own proposals) made it
durable. An fsync failure ends the process with ``EXIT_STORAGE`` (never retried).

Clients: writes are answered by the member that received them, when it applies the entry
(followers forward proposals through Raft). Waiters are keyed by ``(client_id, seq)``; a
write without ``seq`` gets a unique key of this process. Requests only the leader can
serve (lease keep-alive and time-to-live, membership changes) get ``NotLeaderError``
with the leader's client URL elsewhere. Every malformed input gets a typed error reply;
whole-message errors, which have no request id to answer, are answered with request id 0.

SIGTERM: a leader hands leadership to its most caught-up voter and waits (bounded) for
it; every member then answers what it has in flight (bounded) and exits 0.

This module must never block the loop on disk or network, retry a failed fsync, or
answer a write before it is applied.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import math
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information
import structlog
import zmq

from pnyx.core.errors import (
    InvalidRequestError,
    MemberError,
    NoLeaderError,
    NotLeaderError,
    PnyxError,
    ProposalDroppedError,
    StorageError,
    TimeoutError,
    UnavailableError,
)
from pnyx.core.kv.store import (
    ClientBatch,
    ClientCommand,
    Command,
    CompactHistory,
    KVStateMachine,
    decode_command,
    encode_command,
    has_unbounded_cost,
)
from pnyx.core.kv.watch import WatchDelivery
from pnyx.core.raft import RaftNode, decode_conf_change, decode_message, encode_message
from pnyx.core.raft.node import NO_LEADER
from pnyx.core.raft.types import (
    AppendRequest,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    HeartbeatRequest,
    Message,
    PersistedState,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotRequest,
    SoftState,
)
from pnyx.core.server.config import ClusterState, NodeConfig, member_id
from pnyx.core.server.members import (
    MemberContext,
    MemberRecord,
    MemberTable,
    PublishMember,
    decode_removed_notice,
    decode_server_command,
    encode_removed_notice,
    encode_server_command,
    is_server_command,
)
from pnyx.core.server.snapshotter import SnapshotJob, start_snapshot
from pnyx.core.storage import FileSystem, OsFileSystem, Storage, WalWriter
from pnyx.core.transport import ClientRouter, Malformed, PeerTransport, SendResult, has_input
from pnyx.core.wire.codec import (
    PROTOCOL_VERSION,
    DecodeError,
    decode_batch,
    encode_wire_batch,
    header_to_wire,
    message_to_wire,
    response_to_wire,
)
from pnyx.core.wire.messages import (
    MUTATING_REQUESTS,
    Envelope,
    Hello,
    HelloResponse,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseTimeToLiveRequest,
    MemberAddRequest,
    MemberAddResponse,
    MemberListRequest,
    MemberListResponse,
    MemberPromoteRequest,
    MemberPromoteResponse,
    MemberRemoveRequest,
    MemberRemoveResponse,
    RangeRequest,
    Request,
    Response,
    ResponseHeader,
    SharedWatchResponse,
    StatusRequest,
    StatusResponse,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchProgressRequest,
    WatchResponse,
    error_response_from_exception,
)

__all__ = [
    "EXIT_ADDRESS_IN_USE",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_STORAGE",
    "SERVER_VERSION",
    "Node",
]

SERVER_VERSION = "0.1.0"

EXIT_OK = 0
EXIT_CONFIG = 1
"""Bad configuration or an unexpected error at start-up."""
EXIT_STORAGE = 2
"""The disk failed (fsync error, corruption): the node must not continue."""
EXIT_ADDRESS_IN_USE = 3
"""A listen address was taken (a test harness retries with other ports)."""

_SNAPSHOT_FORMAT = 2
"""``[2, state machine snapshot (inline msgpack), members]``, written in chunks as it is
encoded."""
_SNAPSHOT_FORMAT_BIN = 1
"""Still read: ``[1, state machine snapshot as one bin, members]`` (a bin needs its length
before its first byte, so it cannot be written as it is encoded)."""
_SWEEP_INTERVAL = 0.05
_PUBLISH_RETRY = 2.0
_MAX_TICKS_PER_ITERATION = 3
_COMMIT_NOTICE_DELAY = 0.001
"""A leader tells followers of a commit with its next append; if none has gone out this
long after the commit, it sends them the commit index alone (rather than wait for its
next tick), so that their watchers and clients do not wait up to a tick. Long enough
for a sequential client's next write to carry it (about half a millisecond here)."""
_LEASE_SAFETY = 0.8
"""The leader lease is this fraction of the least real time a follower refuses votes
after hearing from its leader; the rest covers clock drift and a heartbeat that arrives
while the loop is still handling the batch it was woken for."""
_WATCH_DRAIN_ROUNDS = 4
_LEASE_EXPIRY_BATCH = 1000
_EARLY_LEADER_MESSAGES = frozenset({AppendRequest, HeartbeatRequest, SnapshotRequest})
"""What a leader may send before its own write of the same Ready is durable."""
_SNAPSHOT_BYTES_RATIO = 3.0
"""Snapshot only once the entries applied since the last one add up to at least this
multiple of its size. With a state that grows by what is written (history is kept
until compacted), the snapshots encoded add up to (1 + r) / r times what was written:
twice at r = 1, 1.5 times at r = 2, 1.33 times at r = 3. A snapshot pass is the most
expensive thing a node does (every object visited, every page copied on write), so
fewer, larger ones are cheaper on a busy machine: a 60 s ``check perf --load l``
encodes 13 + 53 + 209 MB at r = 3 against 13 + 40 + 118 + 352 MB at r = 2, and its
throughput rose from about 7,000 to 7,250 writes/s. The price: the WAL kept between
snapshots grows to r times the last one (disk, and replay time at restart)."""
_SNAPSHOT_STAGGER = 0.5
"""Members apply the same entries, and with one rule they would all snapshot at the same
index, at the same moment: on one machine (``pnyx up``, a laptop cluster) three
snapshot passes at once, each with its copy-on-write memory, and under ``check perf``
the leader's requests waited up to a second. So each voter waits longer by its rank:
followers in id order get ``_SNAPSHOT_BYTES_RATIO`` times 1, 1.25, ... up to 1 +
``_SNAPSHOT_STAGGER``, which the leader always gets (it snapshots last: its pauses are
the ones every request waits for). With three members: 3, 3.75 and 4.5 times the last
snapshot, a quarter of a snapshot's worth of writes apart, more than a pass takes."""
_SNAPSHOT_JITTER = 0.1
"""And a random 0-10 % more, drawn anew after each snapshot (members that rank alike,
as after a membership change, still drift apart)."""
_SNAPSHOT_RETRY = 10.0
_AUTO_COMPACTION_INTERVAL = 5.0
_REMOVAL_NOTICE_INTERVAL = 1.0
_SAVE_NOW_BYTES = 64 << 10
"""A Ready up to this many entry bytes may be persisted on the loop thread."""
_LEADER_SAVE_NOW_SECONDS = 0.002
"""A leader persists on its loop thread only while its last WAL commit took less than
this (and no snapshot of its own is being taken or written): a leader blocked in a
slow fsync sends no heartbeats, and a disk busy with snapshot files has made single
fsyncs take 100-165 ms here. Through the writer thread it keeps sending them
(``RaftNode.take_heartbeats``)."""
_BULK_ALLOCATIONS = 1000
"""Objects an apply may leave to the young collections; beyond, they are frozen."""
_HEAP_FREEZE_INTERVAL = 1.0
"""How often the objects that survived the young collections are moved out of the cyclic
garbage collector's reach (``gc.freeze``), see ``_freeze_heap``."""
_CLIENT_MESSAGES_PER_ITERATION = 64
_MAX_BATCH_COMMANDS = 512
_MAX_BATCH_BYTES = 1 << 20
"""Bounds of one Raft entry of batched client writes (``ClientBatch``): its commands,
and the bytes of the client messages they came in."""
"""Client messages (each a batch of requests) taken per loop iteration: the rest wait
for the next one, so a flood of requests cannot delay ticks and peer messages."""
_MAX_STALLED_MESSAGES = 1024
"""Replies (ZeroMQ messages) kept for a connection that is not reading before it is
given up on."""
_STALL_RETRY = 0.005
_UNANSWERABLE = 0
"""Request id of replies to input that carried no readable request id."""


def lease_duration(config: NodeConfig) -> float:
    """The Raft leader lease in seconds (``RaftConfig.lease_duration``), 0 if disabled.

    A follower resets its election clock when it handles a leader's message and refuses
    votes until ``election_ticks`` ticks later. The loop runs up to
    ``_MAX_TICKS_PER_ITERATION`` late ticks in a burst, possibly right after that
    message, and the tick grid is not aligned with it: so at least
    ``election_ticks - _MAX_TICKS_PER_ITERATION - 1`` tick intervals of real time pass.
    One more interval and ``_LEASE_SAFETY`` keep a margin."""
    if not config.lease_reads:
        return 0.0
    ticks = config.election_ticks - _MAX_TICKS_PER_ITERATION - 2
    return max(0.0, ticks * config.tick_interval * _LEASE_SAFETY)


class _FatalError(Exception):
    """Stop the loop now with ``code`` (never caught on the way out)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.define(eq=False)
class _Waiter:
    """A client waiting for an answer."""

    routing_id: bytes
    request_id: int
    deadline: float
    command: ClientCommand
    data: bytes = b""
    """The data of the entry the command was last proposed in (to forget its cached
    command if it never applies); empty until the batch holding it is proposed."""


@attrs.define
class _PendingRead:
    routing_id: bytes
    request_id: int
    request: Request
    deadline: float


@attrs.define
class _ConfWaiter:
    routing_id: bytes
    request_id: int
    deadline: float
    request: MemberAddRequest | MemberRemoveRequest | MemberPromoteRequest


class Node:
    """One member. Create with ``Node(config)``, then ``open()`` (disk and sockets) and
    ``run()`` (the loop, until stopped). ``request_stop()`` may be called from a signal
    handler. A plain class: its state is derived from the config and the recovered disk
    in ``open``, which an attrs constructor would only obscure."""

    def __init__(self, config: NodeConfig, fs: FileSystem | None = None) -> None:
        config.validate()
        self.config = config
        self._fs: FileSystem = fs if fs is not None else OsFileSystem()
        self.id = config.node_id
        self._log = structlog.get_logger("pnyx.node").bind(node=config.name)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._token = os.urandom(8)
        """Distinguishes this process's read contexts and anonymous writes from those of
        an earlier incarnation of the same member."""
        self._kv = KVStateMachine(limits=config.limits)
        self._members = MemberTable()
        # Everything this node knows about where members are, from any source (flags,
        # configuration changes, snapshots, publications); the member table is the
        # replicated truth, this only feeds the transport and leader hints.
        self._addresses: dict[int, MemberRecord] = {}
        self._raft: RaftNode | None = None
        self._writer: WalWriter | None = None
        self._peer: PeerTransport | None = None
        self._client: ClientRouter | None = None
        self._admin: ClientRouter | None = None
        # A pipe that threads (the WAL writer, the snapshot reader) write a byte to when
        # they completed something, to wake the loop's poll: a plain file descriptor in
        # the poller costs less per iteration than a ZeroMQ socket pair.
        self._wake_read = -1
        self._wake_write = -1
        self._wake_lock = threading.Lock()

        self._applied = 0
        self._snapshot_index = 0
        self._snapshot_future: Future[None] | None = None
        self._snapshot_job: SnapshotJob | None = None
        self._snapshot_not_before = 0.0
        self._bytes_since_snapshot = 0
        self._snapshot_rng = random.Random(None if config.seed is None else config.seed + 1)
        self._snapshot_jitter = 1.0
        """This member's random factor until its next snapshot (``_SNAPSHOT_JITTER``)."""
        self._applied_since_snapshot = 0
        """Entries applied since the last snapshot, each batched client command counted
        (so that ``snapshot_count`` keeps meaning requests, as etcd's does)."""
        self._last_snapshot_bytes = 0
        self._inflight: tuple[Ready, Future[None], Sequence[Message]] | None = None
        # Term and vote as last made durable (or deferred: same term and vote).
        self._durable_term = 0
        self._durable_vote = 0
        self._deferred_hard_state: HardState | None = None
        self._role = Role.FOLLOWER
        self._leader_id = 0

        self._pending: dict[tuple[bytes, int], list[_Waiter]] = {}
        self._pending_deadlines: deque[tuple[float, tuple[bytes, int]]] = deque()
        self._anonymous_seq = 0
        self._batch: list[_Waiter] = []
        """Client writes received in this iteration, proposed together as one entry."""
        self._batch_bytes = 0
        self._proposed: dict[bytes, Command] = {}
        self._read_batch: list[_PendingRead] = []
        self._reads_by_context: dict[bytes, list[_PendingRead]] = {}
        self._reads_waiting: list[tuple[int, int, list[_PendingRead]]] = []
        self._read_counter = 0
        self._conf_waiters: dict[tuple[ConfChangeType, int], list[_ConfWaiter]] = {}
        self._watch_streams: dict[int, tuple[bytes, int]] = {}
        self._watches_by_connection: dict[bytes, set[int]] = {}
        self._out: dict[bytes, list[list[Any]]] = {}
        """Replies per connection, as wire-form envelopes (``_reply_wire``)."""
        self._stalled: dict[bytes, deque[bytes]] = {}
        """Replies a congested connection could not take yet, in order."""
        self._watching = False
        """Whether this member had watchers at the end of the last iteration."""

        self._now = time.monotonic()
        self._next_tick = self._now
        self._commit_notice_at: float | None = None
        self._next_sweep = self._now
        self._next_progress = self._now + config.progress_interval
        self._next_compaction = self._now + _AUTO_COMPACTION_INTERVAL
        self._next_heap_freeze = self._now + _HEAP_FREEZE_INTERVAL
        self._publish_after = self._now
        self._stop_requested = False
        self._stopping_since: float | None = None
        self._removed = False
        self._removal_notices: dict[int, float] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def raft(self) -> RaftNode:
        if self._raft is None:
            raise RuntimeError("Node.open() was not called")
        return self._raft

    def open(self) -> Node:
        """Recover from the data directory, start the WAL writer, bind the sockets.
        Raises ``StorageError`` and ``zmq.ZMQError`` (e.g. EADDRINUSE)."""
        config = self.config
        for name, url in config.initial_cluster.items():
            node_id = member_id(name)
            self._addresses[node_id] = MemberRecord(
                node_id, name, url, config.initial_cluster_client.get(name, "")
            )
        storage = Storage.open(self._fs, config.data_dir)
        persisted = storage.recover()
        bootstrap: ConfState | None = None
        fresh = persisted == PersistedState()
        if fresh and config.initial_cluster_state == ClusterState.NEW:
            bootstrap = ConfState(voters=frozenset(self._addresses))
        seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "big")
        self._raft = RaftNode(
            RaftConfig(
                id=self.id,
                election_tick=config.election_ticks,
                heartbeat_tick=config.heartbeat_ticks,
                lease_duration=lease_duration(config),
                quorum_first=config.quorum_first,
            ),
            random.Random(seed),
            persisted,
            bootstrap,
            clock=time.monotonic,
        )
        self._durable_term = persisted.hard_state.term
        self._durable_vote = persisted.hard_state.vote
        if persisted.snapshot is not None:
            try:
                self._restore_snapshot(persisted.snapshot)
            except _FatalError as error:
                storage.close()
                raise StorageError(str(error)) from None
        self._learn_addresses(persisted.entries)
        self._log.info(
            "node.recovered",
            fresh=fresh,
            bootstrap=bootstrap is not None,
            term=persisted.hard_state.term,
            commit=persisted.hard_state.commit,
            snapshot_index=self._snapshot_index,
            entries=len(persisted.entries),
        )
        self._writer = WalWriter(storage).start()
        try:
            self._bind()
        except BaseException:
            self._writer.close()
            self._context.destroy(linger=0)
            raise
        # The recovered state is long-lived: one full collection now (start-up may
        # pause), then it is never scanned again.
        gc.collect()
        gc.freeze()
        return self

    def _bind(self) -> None:
        config = self.config
        self._peer = PeerTransport(
            self._context, self.id, config.listen_peer, config.socket_options
        ).bind()
        self._client = ClientRouter(
            self._context, config.listen_client, config.socket_options
        ).bind()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._poller.register(self._peer.socket, zmq.POLLIN)
        self._poller.register(self._client.socket, zmq.POLLIN)
        self._poller.register(self._wake_read, zmq.POLLIN)
        if config.test_admin_url:
            self._admin = ClientRouter(self._context, config.test_admin_url).bind()
            self._poller.register(self._admin.socket, zmq.POLLIN)
            self._log.warning("node.test_admin_enabled", url=config.test_admin_url)
        for record in self._addresses.values():
            self._peer.set_peer(record.node_id, record.peer_url)
        self._log.info(
            "node.listening", client=config.listen_client, peer=config.listen_peer, id=self.id
        )

    @property
    def client_endpoint(self) -> str:
        """The address the client ROUTER is bound to (resolves a ``:*`` port)."""
        if self._client is None:
            raise RuntimeError("Node.open() was not called")
        endpoint = self._client.socket.getsockopt(zmq.LAST_ENDPOINT)
        return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)

    def request_stop(self) -> None:
        """Ask the loop to shut down gracefully (safe from a signal handler)."""
        self._stop_requested = True

    def run(self) -> int:
        """Run the loop until stopped; returns the process exit code."""
        raft = self.raft
        self._log.info("node.started", term=raft.term, voters=len(raft.conf_state.voters))
        try:
            while True:
                self._iterate()
                if self._stop_requested and self._stopping_since is None:
                    self._begin_stop()
                if self._stopping_since is not None and self._stop_complete():
                    break
        except _FatalError as fatal:
            self._log.critical("node.fatal", error=str(fatal), term=raft.term)
            self._close(clean=False)
            return fatal.code
        self._close(clean=True)
        self._log.info("node.stopped", term=raft.term, removed=self._removed)
        return EXIT_OK

    def _close(self, clean: bool) -> None:
        if self._snapshot_job is not None:
            self._snapshot_job.cancel()
        writer = self._writer
        if writer is not None and clean and writer.failed is None:
            try:
                if self._inflight is not None:
                    self._inflight[1].result(timeout=self.config.shutdown_timeout)
                if self._deferred_hard_state is not None:
                    writer.submit(self._deferred_hard_state, ()).result(
                        timeout=self.config.shutdown_timeout
                    )
                writer.close(timeout=self.config.shutdown_timeout)
            except Exception as error:
                self._log.error("node.close_failed", error=str(error))
        for transport in (self._peer, self._client, self._admin):
            if transport is not None:
                transport.close()
        with self._wake_lock:
            for fd in (self._wake_read, self._wake_write):
                if fd >= 0:
                    os.close(fd)
            self._wake_read = self._wake_write = -1
        self._context.destroy(linger=0)

    # ------------------------------------------------------------------ the loop

    def _iterate(self) -> None:
        now = time.monotonic()
        timeout = max(0.0, self._next_tick - now)
        if self._commit_notice_at is not None:
            timeout = min(timeout, max(0.0, self._commit_notice_at - now))
        if self._kv.watches.pending or self._out:
            timeout = 0.0
        elif self._stalled:
            timeout = min(timeout, _STALL_RETRY)
        events = dict(self._poller.poll(int(timeout * 1000) + (1 if timeout > 0 else 0)))
        self._now = time.monotonic()
        if self._wake_read in events:
            self._on_writer_wake()
        if self._peer is not None and self._peer.socket in events:
            self._receive_peer_messages()
        if self._client is not None and self._client.socket in events:
            self._receive_client_requests()
        if self._admin is not None and self._admin.socket in events:
            self._receive_admin_requests()
        self._flush_reads()
        self._maybe_tick()
        self._maybe_notify_commit()
        self._process_ready()
        self._arm_commit_notice()
        self._drain_watches()
        self._flush_replies()
        watching = len(self._kv.watches) > 0
        if watching is not self._watching:
            # A follower's watchers wait for every commit: the leader then sends it new
            # entries and commits at once, never at its next tick (RaftNode.set_eager).
            self._watching = watching
            self.raft.set_eager(watching)

    def _maybe_notify_commit(self) -> None:
        due = self._commit_notice_at
        if due is not None and self._now >= due:
            self._commit_notice_at = None
            self.raft.send_commit_updates(include_later=False)

    def _arm_commit_notice(self) -> None:
        if not self.raft.has_unsent_commit():
            self._commit_notice_at = None  # an append carried it: no wake-up for nothing
        elif self._commit_notice_at is None:
            self._commit_notice_at = self._now + _COMMIT_NOTICE_DELAY

    def _maybe_tick(self) -> None:
        now = self._now
        if now < self._next_tick:
            return
        interval = self.config.tick_interval
        ticks = 0
        while now >= self._next_tick and ticks < _MAX_TICKS_PER_ITERATION:
            self.raft.tick()
            self._next_tick += interval
            ticks += 1
        if now >= self._next_tick:
            # Far behind (the process was paused, or the loop stalled): do not replay the
            # lost time as a burst of ticks; real time moved on, Raft's clock just skips.
            self._next_tick = now + interval
        self._on_timers(now)

    def _on_timers(self, now: float) -> None:
        # Ask the core, not the cached role: a leader that was paused may have stepped
        # down in this very iteration, and a follower would FORWARD the revoke to the new
        # leader, expiring leases the new leader just restarted.
        if self.raft.role is Role.LEADER and self._stopping_since is None:
            expired = self._kv.expired_leases(now, _LEASE_EXPIRY_BATCH)
            if expired is not None:
                self._propose_internal(encode_command(expired))
        retention = self.config.auto_compaction_retention
        if retention and now >= self._next_compaction:
            self._next_compaction = now + _AUTO_COMPACTION_INTERVAL
            self._maybe_auto_compact(retention)
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL
            self._expire_waiters(now)
            self._maybe_publish(now)
        if now >= self._next_progress:
            self._next_progress = now + self.config.progress_interval
            self._kv.watches.progress_notify()
        if now >= self._next_heap_freeze:
            self._next_heap_freeze = now + _HEAP_FREEZE_INTERVAL
            _freeze_heap()

    def _maybe_auto_compact(self, retention: int) -> None:
        """On the leader: compact the history to the last ``retention`` revisions (decided
        by the cluster, through the log, so every member compacts at the same point)."""
        if self.raft.role is not Role.LEADER or self._stopping_since is not None:
            return
        target = self._kv.revision - retention
        if target > self._kv.mvcc.compact_revision:
            self._propose_internal(encode_command(CompactHistory(target)))

    # ------------------------------------------------------------------ peers

    def _receive_peer_messages(self) -> None:
        assert self._peer is not None
        raft = self.raft
        removed = self._members.removed
        for sender, payloads in self._peer.receive(ready=True):
            if sender in removed:
                # A removed member still talking: it may never have learned it was
                # removed. Tell it (again); its messages are not for this cluster.
                self._notify_removed(sender)
                continue
            for payload in payloads:
                if is_server_command(payload):
                    self._on_peer_notice(sender, payload)
                    continue
                try:
                    message = decode_message(payload)
                except PnyxError as error:
                    self._log.warning("peer.bad_message", error=str(error))
                    continue
                if message.to != self.id:
                    continue
                try:
                    raft.step(message)
                except Exception as error:
                    # Peer input is untrusted: a message the core cannot take must not
                    # take the node down.
                    self._log.error(
                        "peer.step_failed",
                        message=type(message).__name__,
                        error=repr(error),
                        exc_info=True,
                    )

    def _notify_removed(self, node_id: int) -> None:
        last = self._removal_notices.get(node_id, -_REMOVAL_NOTICE_INTERVAL)
        if self._now - last < _REMOVAL_NOTICE_INTERVAL:
            return
        self._removal_notices[node_id] = self._now
        assert self._peer is not None
        self._peer.send(node_id, [encode_removed_notice(node_id)])

    def _on_peer_notice(self, sender: int, payload: bytes) -> None:
        target = decode_removed_notice(payload)
        # Only a member this node knows may tell it so (peers are trusted, strangers not).
        known = sender in self._members or sender in self._addresses
        if target != self.id or not known or self._removed:
            return
        self._log.warning("member.told_removed", by=sender, term=self.raft.term)
        self._removed = True
        self._stop_requested = True

    def _send_messages(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        assert self._peer is not None
        by_peer: dict[int, list[bytes]] = {}
        shared: dict[Any, Any] = {}  # each follower gets the same tail: encode it once
        for message in messages:
            batch = by_peer.get(message.to)
            if batch is None:
                batch = by_peer[message.to] = []
            batch.append(encode_message(message, shared))
        raft = self.raft
        for node_id, batch in by_peer.items():
            if not self._peer.send(node_id, batch):
                raft.report_unreachable(node_id)

    # ------------------------------------------------------------------ Ready

    def _process_ready(self) -> None:
        raft = self.raft
        # The disk is slow (or busy with a snapshot file): a leader's heartbeats need not
        # wait for it, and an fsync of a few hundred ms must not look like a dead leader.
        if (
            self._inflight is not None
            and self._role is Role.LEADER
            and raft.term == self._durable_term
            and raft.vote == self._durable_vote
        ):
            self._send_messages(raft.take_heartbeats())
        while self._inflight is None and raft.has_ready():
            if self._role is Role.LEADER and self._unbounded_commit_ahead():
                raft.send_commit_updates()
            ready = raft.ready()
            if ready.soft_state is not None:
                self._on_soft_state(ready.soft_state)
            if ready.entries or ready.snapshot is not None or ready.must_sync:
                assert self._writer is not None
                hard_state = ready.hard_state or self._deferred_hard_state
                self._deferred_hard_state = None
                self._learn_addresses(ready.entries)
                later = self._send_leader_messages_early(ready)
                # Asked after the appends left: it looks at the sockets (system calls).
                if self._may_save_now(ready) and self._save_now(ready, hard_state):
                    self._complete_ready(ready, later)
                    continue
                future = self._writer.submit(hard_state, ready.entries, ready.snapshot)
                self._inflight = (ready, future, later)
                future.add_done_callback(self._wake_from_writer)
                return
            if ready.hard_state is not None:
                self._deferred_hard_state = ready.hard_state
            self._complete_ready(ready)

    def _unbounded_commit_ahead(self) -> bool:
        """Whether an entry about to be applied may take long (``has_unbounded_cost``).
        Followers hear of a commit with the next append or the leader's next tick; if
        the leader applied a delete of a million keys first, they would hear of it only
        seconds later, time out the silent leader meanwhile, and start an election."""
        for entry in self.raft.committed_unapplied():
            data = entry.data
            if not data or entry.type is not EntryType.NORMAL or is_server_command(data):
                continue
            command = self._proposed.get(data)
            if command is None:
                try:
                    command = decode_command(data, self.config.limits)
                except PnyxError:
                    continue
                # A follower's forwarded writes: decoded once, here and for the apply
                # (which takes it out again).
                self._proposed[data] = command
            if has_unbounded_cost(command):
                return True
        return False

    def _may_save_now(self, ready: Ready) -> bool:
        """Whether to persist this Ready on the loop thread: a small write when no more
        input waits, where this member's fsync is what the write waits for - on a
        follower (its acknowledgement makes the quorum) and on a leader (which sent its
        appends first: its own fsync, ~0.1 ms into a preallocated WAL, is done before
        the followers' answers can come). A lone write (a sequential client, a vote)
        then costs its fsync and no thread hand-offs, there and back, which cost more
        than the fsync on a busy 2-core machine: every ZeroMQ send and receive of the
        loop releases the GIL, and a writer thread waiting for it takes it then, so
        the loop's sends wait behind the writer's Python (measured on a leader: a send
        took 19 us p50 with the writer thread, 7-9 us without; sequential put A/B 1.29
        -> 1.10 ms). Not on a leader whose disk was slow last time or is busy with its
        snapshot (``_LEADER_SAVE_NOW_SECONDS``). Under load the writer thread keeps
        batching fsyncs while the loop receives."""
        if ready.snapshot is not None:
            return False
        size = 0
        for entry in ready.entries:
            size += len(entry.data)
        if size > _SAVE_NOW_BYTES:
            return False
        assert self._peer is not None
        sockets = [self._peer.socket]
        if self._role is Role.LEADER:
            entries = ready.entries
            if len(entries) > 1 or (
                entries and type(self._proposed.get(entries[0].data)) is ClientBatch
            ):
                return False
            assert self._writer is not None
            if (
                self._writer.stats.last_sync_seconds > _LEADER_SAVE_NOW_SECONDS
                or self._snapshot_job is not None
                or self._snapshot_future is not None
            ):
                return False
            if self._client is not None:
                sockets.append(self._client.socket)
        # More is coming: let the writer batch it.
        return not any(has_input(socket) for socket in sockets)

    def _save_now(self, ready: Ready, hard_state: HardState | None) -> bool:
        assert self._writer is not None
        try:
            return self._writer.save_now(hard_state, ready.entries)
        except StorageError as error:
            raise _FatalError(EXIT_STORAGE, f"WAL write failed: {error}") from None

    def _wake_from_writer(self, _future: Future[Any]) -> None:
        # Runs on the writer or snapshot reader thread (or on the loop's, if already
        # done). The lock keeps a late wake-up from writing to a descriptor number that
        # ``_close`` released (and something else may have reused).
        with self._wake_lock:
            if self._wake_write >= 0:
                # A full pipe already holds a wake-up: nothing is lost by skipping.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_write, b"\0")

    def _on_writer_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        job = self._snapshot_job
        if job is not None and job.future.done():
            self._snapshot_job = None
            self._finish_snapshot(job)
        snapshot_future = self._snapshot_future
        if snapshot_future is not None and snapshot_future.done():
            self._snapshot_future = None
            error = snapshot_future.exception()
            if error is not None:
                raise _FatalError(EXIT_STORAGE, f"snapshot save failed: {error}")
        if self._inflight is not None and self._inflight[1].done():
            ready, future, later = self._inflight
            self._inflight = None
            error = future.exception()
            if error is not None:
                raise _FatalError(EXIT_STORAGE, f"WAL write failed: {error}")
            self._complete_ready(ready, later)
            self._process_ready()

    def _send_leader_messages_early(self, ready: Ready) -> Sequence[Message]:
        """Send a leader's replication messages while its own disk write runs, and return
        the messages that must wait for it.

        A deliberate, measured deviation from the letter of ``Ready``'s contract (which
        sends everything after the persist), as etcd and the Raft thesis (10.2.1) do: a
        leader may replicate entries in parallel with writing them itself, because the
        core counts the leader's own copy toward commit only after ``advance``. It cuts
        one disk write out of every write's latency. Not when this Ready changed the term
        or vote (those must be durable before anything that carries them leaves), and
        never for a follower's or candidate's messages (votes and acknowledgements)."""
        messages = ready.messages
        if not messages or self.raft.role is not Role.LEADER:
            return messages
        hard_state = ready.hard_state
        if hard_state is not None and (
            hard_state.term != self._durable_term or hard_state.vote != self._durable_vote
        ):
            return messages
        early = [m for m in messages if type(m) in _EARLY_LEADER_MESSAGES]
        if not early:
            return messages
        self._send_messages(early)
        return [m for m in messages if type(m) not in _EARLY_LEADER_MESSAGES]

    def _complete_ready(self, ready: Ready, messages: Sequence[Message] | None = None) -> None:
        if ready.hard_state is not None:
            self._durable_term = ready.hard_state.term
            self._durable_vote = ready.hard_state.vote
        self._send_messages(ready.messages if messages is None else messages)
        if ready.snapshot is not None or ready.committed_entries:
            started = time.monotonic()
            if ready.snapshot is not None:
                self._apply_snapshot(ready.snapshot)
            if ready.committed_entries:
                self._apply_entries(ready.committed_entries)
            self._after_apply(time.monotonic() - started)
        for read_state in ready.read_states:
            self._on_read_state(read_state)
        self.raft.advance(ready)
        self._serve_applied_reads()
        self._maybe_snapshot()

    def _after_apply(self, busy: float) -> None:
        """An apply that kept the loop from ticking for a good part of an election
        timeout (a range delete of a million keys, a big snapshot) was, or will be, the
        same work on every member: the others are likely still at it. Give them twice
        as long again before suspecting them (``RaftNode.defer_timeouts``), or members
        that finish first take the silence of those still busy for a failure and
        elect. Twice: members sharing a machine get unequal shares of it (three members
        on two cores applying a 430k-key delete finished seconds apart)."""
        interval = self.config.tick_interval
        if busy * 3 >= self.config.election_ticks * interval:
            ticks = math.ceil(2 * busy / interval)
            self.raft.defer_timeouts(ticks)
            self._log.info(
                "apply.long", seconds=round(busy, 3), deferred_ticks=ticks, term=self.raft.term
            )

    def _on_soft_state(self, soft: SoftState) -> None:
        was_leader = self._role is Role.LEADER
        self._role = soft.role
        if soft.leader_id != self._leader_id:
            self._leader_id = soft.leader_id
            self._log.info(
                "raft.leader", leader=soft.leader_id, role=soft.role.value, term=self.raft.term
            )
            self._on_leader_change()
        if soft.role is Role.LEADER and not was_leader:
            # A new leader gives every lease its full TTL: keep-alives may have gone to
            # the old leader, so expiring by old deadlines would be unfair and unsafe.
            self._kv.lessor.promote(self._now)
        elif was_leader and soft.role is not Role.LEADER:
            self._kv.lessor.demote()

    def _on_leader_change(self) -> None:
        """Work in flight through the old leader may be lost: reads awaiting its
        confirmation are failed at once (reads are safe to retry), and writes carrying an
        exactly-once seq are proposed again through the new leader (a duplicate entry
        gets the first result, so this can only make an answer come sooner)."""
        if self._reads_by_context:
            error = UnavailableError("the leader changed before the read was confirmed; retry")
            for batch in self._reads_by_context.values():
                for read in batch:
                    self._reply_error(read.routing_id, read.request_id, error)
            self._reads_by_context.clear()
        if self._leader_id == 0 or self._stopping_since is not None:
            return
        # Only exactly-once commands: an anonymous write (seq 0) that did commit after
        # all would be applied twice. They go in new batches: a batch they were proposed
        # in may hold anonymous writes too.
        again = [
            waiters
            for (_client_id, seq), waiters in self._pending.items()
            if seq > 0 and waiters and waiters[0].data
        ]
        reproposed = 0
        for start in range(0, len(again), _MAX_BATCH_COMMANDS):
            chunk = again[start : start + _MAX_BATCH_COMMANDS]
            commands = tuple(waiters[0].command for waiters in chunk)
            data = encode_command(commands[0] if len(commands) == 1 else ClientBatch(commands))
            try:
                self.raft.propose(data)
            except ProposalDroppedError:
                break
            for waiters in chunk:
                for waiter in waiters:
                    waiter.data = data
            reproposed += len(chunk)
        if reproposed:
            self._log.info("proposals.reproposed", count=reproposed, term=self.raft.term)

    # ------------------------------------------------------------------ apply

    def _apply_entries(self, entries: Sequence[Entry]) -> None:
        """Apply committed entries with the cyclic garbage collector paused, then exempt
        what they built from it (``gc.freeze``) if that is a lot.

        Why: what applying builds is state (key versions, exactly-once answers) that
        lives on, and the short-lived rest is freed by reference counting; a collector
        that runs meanwhile only walks the new state again and again (gen 0, gen 1, and
        gen 2 once it grew by a quarter): measured, a third of the apply CPU, and for
        one big entry (a prefix delete of 300k keys) most of a second-long stall. See
        ``_freeze_heap`` for why freezing leaks nothing that matters."""
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            for entry in entries:
                self._apply_entry(entry)
        finally:
            if collecting:
                gc.enable()
                if gc.get_count()[0] > _BULK_ALLOCATIONS:
                    gc.freeze()

    def _apply_entry(self, entry: Entry) -> None:
        index = entry.index
        if index <= self._applied:
            return
        self._applied = index
        self._bytes_since_snapshot += len(entry.data)
        self._applied_since_snapshot += 1
        if entry.type is EntryType.CONF_CHANGE:
            self._apply_conf_change(entry)
            return
        data = entry.data
        if not data:
            self._kv.apply_entry(index, data)
            return
        if is_server_command(data):
            command = decode_server_command(data)
            if command is not None:
                self._apply_publish(command)
            return
        kv_command = self._proposed.pop(data, None)
        if kv_command is None:
            try:
                kv_command = decode_command(data, self.config.limits)
            except PnyxError:
                self._kv.apply_entry(index, data)  # records the index; nobody to answer
                return
        if type(kv_command) is ClientBatch:
            self._applied_since_snapshot += len(kv_command.commands) - 1
            # Only the writes someone waits for here need their responses built.
            responses = self._kv.apply_batch(index, kv_command, self._pending)
            if responses is not None:
                for one, one_response in zip(kv_command.commands, responses, strict=True):
                    if one_response is not None:
                        self._answer(one, one_response)
            return
        response = self._kv.apply(index, kv_command)
        if response is not None and isinstance(kv_command, ClientCommand):
            self._answer(kv_command, response)

    def _answer(self, command: ClientCommand, response: Response) -> None:
        """Answer whoever waits for ``command`` (applied by this member)."""
        waiters = self._pending.pop((command.client_id, command.seq), None)
        if waiters:
            wire = self._wire(response)
            for waiter in waiters:
                self._reply_wire(waiter.routing_id, waiter.request_id, wire)

    def _apply_conf_change(self, entry: Entry) -> None:
        try:
            change = decode_conf_change(entry.data)
        except PnyxError:
            return
        record = self._members.apply_conf_change(change, self._addresses.get(change.node_id))
        assert self._peer is not None
        if record is not None:
            self._addresses[record.node_id] = record
            self._peer.set_peer(record.node_id, record.peer_url)
        elif change.node_id != self.id:
            # Keep the connection: the removed member is told, now and whenever it
            # contacts this node again, since the leader no longer replicates to it.
            self._notify_removed(change.node_id)
        self._log.info(
            "member.changed",
            change=change.type.name,
            member=change.node_id,
            name=record.name if record else None,
            index=entry.index,
            term=self.raft.term,
        )
        waiters = self._conf_waiters.pop((change.type, change.node_id), [])
        members = self._members.to_wire()
        header = self._header(self._kv.revision)
        for waiter in waiters:
            response: Response
            if isinstance(waiter.request, MemberAddRequest):
                added = record.to_wire() if record is not None else members[0]
                response = MemberAddResponse(header, added, members)
            elif isinstance(waiter.request, MemberRemoveRequest):
                response = MemberRemoveResponse(header, members)
            else:
                response = MemberPromoteResponse(header, members)
            self._reply(waiter.routing_id, waiter.request_id, response)
        if change.type is ConfChangeType.REMOVE_NODE and change.node_id == self.id:
            self._log.warning("member.removed_self", index=entry.index)
            self._removed = True
            self._stop_requested = True

    def _apply_publish(self, command: PublishMember) -> None:
        record = self._members.publish(command)
        if record is not None:
            self._addresses[record.node_id] = record

    def _learn_addresses(self, entries: Iterable[Entry]) -> None:
        """Peer URLs of members being added, as soon as their change is in the log: the
        leader replicates to a new member before the change commits."""
        for entry in entries:
            if entry.type is not EntryType.CONF_CHANGE:
                continue
            try:
                change = decode_conf_change(entry.data)
            except PnyxError:
                continue
            context = MemberContext.decode(change.context)
            if context is None or change.type is ConfChangeType.REMOVE_NODE:
                continue
            known = self._addresses.get(change.node_id) or MemberRecord(change.node_id)
            self._addresses[change.node_id] = attrs.evolve(
                known,
                name=context.name or known.name,
                peer_url=context.peer_url or known.peer_url,
                client_url=context.client_url or known.client_url,
            )
            if self._peer is not None:
                self._peer.set_peer(change.node_id, context.peer_url)

    # ------------------------------------------------------------------ snapshots

    def _snapshot_data(self) -> Iterator[bytes]:
        """The snapshot, msgpack ``[_SNAPSHOT_FORMAT, state machine, members]``, in chunks
        whose concatenation it is, encoded as they are written (the state machine's part
        can be hundreds of megabytes: it is never one object until the reader joins it)."""
        yield b"\x93"  # an array of 3
        yield msgpack.packb(_SNAPSHOT_FORMAT)
        yield from self._kv.snapshot_chunks()
        yield msgpack.packb(self._members.dump(), use_bin_type=True)

    def _restore_snapshot(self, snapshot: Snapshot) -> None:
        try:
            value = msgpack.unpackb(snapshot.data, raw=False)
            if type(value) is not list or len(value) != 3:
                raise ValueError("unknown snapshot format")
            members = MemberTable.load(value[2])
            if value[0] == _SNAPSHOT_FORMAT:
                self._kv.restore_value(value[1])
            elif value[0] == _SNAPSHOT_FORMAT_BIN and type(value[1]) is bytes:
                self._kv.restore(value[1])
            else:
                raise ValueError("unknown snapshot format")
        except (ValueError, PnyxError, TypeError) as error:
            # A snapshot that passed its checksum but cannot be read is not something
            # to limp on with: this member's state would silently diverge.
            raise _FatalError(EXIT_STORAGE, f"unreadable snapshot: {error}") from None
        self._members = members
        for record in members:
            self._addresses[record.node_id] = record
            if self._peer is not None:
                self._peer.set_peer(record.node_id, record.peer_url)
        self._applied = max(self._applied, snapshot.metadata.index)
        self._snapshot_index = snapshot.metadata.index
        self._last_snapshot_bytes = len(snapshot.data)
        self._bytes_since_snapshot = 0
        self._applied_since_snapshot = 0

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        self._log.info(
            "snapshot.installed",
            index=snapshot.metadata.index,
            term=snapshot.metadata.term,
            bytes=len(snapshot.data),
        )
        self._restore_snapshot(snapshot)
        self._applied = snapshot.metadata.index

    def _maybe_snapshot(self) -> None:
        """Snapshot every ``snapshot_count`` applied requests (entries, each command of a
        batch counted), but no more often than the log grows by as many bytes as the last
        snapshot had: the cost of snapshotting stays a bounded fraction of the cost of
        taking the writes, however big the state."""
        if self._snapshot_job is not None or self._snapshot_future is not None:
            return  # the previous one is still being encoded or written
        if self._applied_since_snapshot < self.config.snapshot_count:
            return
        if self._bytes_since_snapshot < self._last_snapshot_bytes * self._snapshot_ratio():
            return
        if self._now < self._snapshot_not_before:
            return
        raft = self.raft
        # The state is captured now: it must be exactly the state at `index`.
        index = self._applied
        if raft.applied_index != index or index <= self._snapshot_index:
            return
        self._bytes_since_snapshot = 0
        self._applied_since_snapshot = 0
        self._snapshot_jitter = self._snapshot_rng.uniform(1.0, 1.0 + _SNAPSHOT_JITTER)
        self._snapshot_job = start_snapshot(
            self._snapshot_data,
            index,
            self._wake_from_writer,
            fork=self.config.snapshot_in_child,
        )

    def _snapshot_ratio(self) -> float:
        """``_SNAPSHOT_BYTES_RATIO``, staggered by rank (``_SNAPSHOT_STAGGER``) and
        jittered (``_SNAPSHOT_JITTER``)."""
        raft = self.raft
        voters = raft.conf_state.voters
        followers = sorted(v for v in voters if v != raft.leader_id)
        if self.id in followers and len(voters) > 1:
            rank = followers.index(self.id) / (len(voters) - 1)
        else:
            rank = 1.0  # the leader, or not a voter
        return _SNAPSHOT_BYTES_RATIO * (1.0 + _SNAPSHOT_STAGGER * rank) * self._snapshot_jitter

    def _finish_snapshot(self, job: SnapshotJob) -> None:
        raft = self.raft
        try:
            data = job.future.result()
        except Exception as error:
            # Not a durability problem (the WAL has everything): try again later.
            self._log.error("snapshot.failed", index=job.index, error=str(error))
            self._snapshot_not_before = self._now + _SNAPSHOT_RETRY
            return
        if job.index <= self._snapshot_index:
            return  # a snapshot received from the leader overtook this one
        raft.compact(job.index, data)
        snapshot = raft.snapshot
        assert snapshot is not None and self._writer is not None
        assert snapshot.metadata.index == job.index
        self._snapshot_index = job.index
        self._last_snapshot_bytes = len(data)
        self._snapshot_future = self._writer.submit_snapshot(snapshot)
        self._snapshot_future.add_done_callback(self._wake_from_writer)
        self._log.info(
            "snapshot.taken",
            index=job.index,
            bytes=len(data),
            seconds=round(time.perf_counter() - job.started, 4),
            child=job.pid != 0,
            loop_blocked_seconds=round(job.fork_seconds, 4),
            term=raft.term,
        )

    # ------------------------------------------------------------------ clients

    def _receive_client_requests(self) -> None:
        assert self._client is not None
        limits = self.config.limits
        for event in self._client.receive(_CLIENT_MESSAGES_PER_ITERATION, ready=True):
            if isinstance(event, Malformed):
                self._reply_error(
                    event.routing_id,
                    _UNANSWERABLE,
                    InvalidRequestError(f"expected one frame per message, got {event.frames}"),
                )
                continue
            routing_id = event.routing_id
            if self._batch_bytes >= _MAX_BATCH_BYTES:
                self._flush_proposals()
            self._batch_bytes += len(event.payload)
            try:
                items = decode_batch(event.payload, limits)
            except PnyxError as error:
                self._reply_error(routing_id, _UNANSWERABLE, error)
                continue
            for item in items:
                if isinstance(item, DecodeError):
                    self._reply_error(
                        routing_id,
                        item.request_id if item.request_id is not None else _UNANSWERABLE,
                        item.error,
                    )
                    continue
                try:
                    self._handle_request(routing_id, item)
                except PnyxError as error:
                    self._reply_error(routing_id, item.request_id, error)
                except Exception as error:
                    # A bug: answer (the client must not hang) and keep serving.
                    self._log.error(
                        "client.request_failed",
                        request=type(item.message).__name__,
                        error=repr(error),
                        exc_info=True,
                    )
                    self._reply(routing_id, item.request_id, error_response_from_exception(error))
        self._flush_proposals()

    def _handle_request(self, routing_id: bytes, envelope: Envelope) -> None:
        request = envelope.message
        request_id = envelope.request_id
        if self._stopping_since is not None and not isinstance(request, StatusRequest | Hello):
            # Shutting down: send the client elsewhere at once (with the leader's address
            # if this node knows it) instead of starting work it may not finish.
            raise self._not_leader()
        if type(request) in MUTATING_REQUESTS:
            self._propose_client_request(routing_id, envelope)
        elif isinstance(request, RangeRequest):
            if request.serializable:
                self._reply(routing_id, request_id, self._serve_read(request))
            else:
                self._queue_read(routing_id, request_id, request)
        elif isinstance(request, LeaseLeasesRequest):
            self._queue_read(routing_id, request_id, request)
        elif isinstance(request, MemberListRequest):
            if request.linearizable:
                self._queue_read(routing_id, request_id, request)
            else:
                self._reply(routing_id, request_id, self._serve_read(request))
        elif isinstance(request, StatusRequest):
            self._reply(routing_id, request_id, self._status())
        elif isinstance(request, Hello):
            self._reply(routing_id, request_id, self._hello())
        elif isinstance(request, LeaseKeepAliveRequest):
            self._require_leader()
            keep_alive = self._kv.lease_keep_alive(request, self._now)
            self._reply(routing_id, request_id, keep_alive)
        elif isinstance(request, LeaseTimeToLiveRequest):
            self._require_leader()
            time_to_live = self._kv.lease_time_to_live(request, self._now)
            self._reply(routing_id, request_id, time_to_live)
        elif isinstance(request, WatchCreateRequest):
            self._create_watch(routing_id, request_id, request)
        elif isinstance(request, WatchCancelRequest):
            self._cancel_watch(routing_id, request_id, request)
        elif isinstance(request, WatchProgressRequest):
            ids = self._watches_by_connection.get(routing_id, set())
            self._kv.watches.request_progress(sorted(ids))
            self._reply(
                routing_id,
                request_id,
                WatchResponse(self._header(self._kv.revision), progress_notify=True),
            )
        elif isinstance(request, MemberAddRequest | MemberRemoveRequest | MemberPromoteRequest):
            self._change_membership(routing_id, request_id, request)
        else:
            raise InvalidRequestError(f"{type(request).__name__} is not a request")

    def _require_leader(self) -> None:
        # The core's role, not the cached one (see _on_timers): a keep-alive accepted by
        # a leader that already stepped down would be lost on the new leader.
        if self._stopping_since is not None or self.raft.role is not Role.LEADER:
            raise self._not_leader()

    def _not_leader(self) -> NotLeaderError:
        leader_id = self.raft.leader_id
        leader = leader_id if leader_id != self.id else 0
        hint = None
        if leader:
            record = self._members.get(leader) or self._addresses.get(leader)
            if record is not None and record.client_url:
                hint = record.client_url
        return NotLeaderError(leader_hint=hint)

    # --- writes

    def _propose_client_request(self, routing_id: bytes, envelope: Envelope) -> None:
        """Queue a client write for this iteration's batch (``_flush_proposals``)."""
        if self._stopping_since is not None:
            raise self._not_leader()
        if self.raft.leader_id == 0:
            raise NoLeaderError("no leader: an election is in progress")
        client_id, seq = envelope.client_id, envelope.seq
        if seq == 0:
            # No exactly-once asked for: still a unique key to find the waiter by. The
            # state machine does not deduplicate seq 0, so this id never enters its table.
            self._anonymous_seq += 1
            client_id = b"\x00anon" + self._token + self._anonymous_seq.to_bytes(8, "big")
        command = ClientCommand(client_id, seq, envelope.message)  # type: ignore[arg-type]
        key = (client_id, seq)
        deadline = self._now + self.config.request_timeout
        waiter = _Waiter(routing_id, envelope.request_id, deadline, command)
        waiters = self._pending.get(key)
        if waiters is None:
            self._pending[key] = [waiter]
        else:
            waiters.append(waiter)
        self._pending_deadlines.append((deadline, key))
        self._batch.append(waiter)
        if len(self._batch) >= _MAX_BATCH_COMMANDS:
            self._flush_proposals()

    def _flush_proposals(self) -> None:
        """Propose the client writes queued in this iteration as ONE entry: replicating,
        persisting and applying an entry has costs per entry that would otherwise be
        paid per write. Nothing waits for more writes to come: a batch is what arrived
        together."""
        batch = self._batch
        self._batch_bytes = 0
        if not batch:
            return
        self._batch = []
        commands = tuple(waiter.command for waiter in batch)
        command: Command = commands[0] if len(commands) == 1 else ClientBatch(commands)
        data = encode_command(command)
        try:
            self._propose(data)
        except PnyxError as error:
            for waiter in batch:
                key = (waiter.command.client_id, waiter.command.seq)
                waiters = self._pending.get(key)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._pending[key]
                self._reply_error(waiter.routing_id, waiter.request_id, error)
            return
        # When this member applies the entry it proposed, it need not decode it again.
        self._proposed[data] = command
        for waiter in batch:
            waiter.data = data

    def _propose(self, data: bytes) -> None:
        try:
            self.raft.propose(data)
        except ProposalDroppedError as error:
            if error.reason == NO_LEADER:
                raise NoLeaderError("no leader: an election is in progress") from None
            raise

    def _propose_internal(self, data: bytes) -> None:
        try:
            self.raft.propose(data)
        except ProposalDroppedError as error:
            self._log.info("proposal.dropped", reason=error.reason, term=self.raft.term)

    # --- reads

    def _queue_read(self, routing_id: bytes, request_id: int, request: Request) -> None:
        self._read_batch.append(
            _PendingRead(routing_id, request_id, request, self._now + self.config.request_timeout)
        )

    def _flush_reads(self) -> None:
        """ONE ReadIndex context for every linearizable read received this iteration."""
        batch = self._read_batch
        if not batch:
            return
        self._read_batch = []
        self._read_counter += 1
        context = self._token + self._read_counter.to_bytes(8, "big")
        try:
            self.raft.read_index(context)
        except ProposalDroppedError:
            error = NoLeaderError("no leader: an election is in progress")
            for read in batch:
                self._reply_error(read.routing_id, read.request_id, error)
            return
        self._reads_by_context[context] = batch

    def _on_read_state(self, read_state: ReadState) -> None:
        batch = self._reads_by_context.pop(read_state.context, None)
        if batch is None:
            return
        if read_state.index <= self._applied:
            self._serve_reads(batch)
        else:
            self._read_counter += 1
            heapq.heappush(self._reads_waiting, (read_state.index, self._read_counter, batch))

    def _serve_applied_reads(self) -> None:
        waiting = self._reads_waiting
        while waiting and waiting[0][0] <= self._applied:
            _, _, batch = heapq.heappop(waiting)
            self._serve_reads(batch)

    def _serve_reads(self, batch: list[_PendingRead]) -> None:
        for read in batch:
            try:
                response = self._serve_read(read.request)
            except PnyxError as error:
                self._reply_error(read.routing_id, read.request_id, error)
                continue
            self._reply(read.routing_id, read.request_id, response)

    def _serve_read(self, request: Request) -> Response:
        if isinstance(request, RangeRequest):
            return self._kv.range(request)
        if isinstance(request, LeaseLeasesRequest):
            return self._kv.lease_leases(request)
        if isinstance(request, MemberListRequest):
            return MemberListResponse(self._header(self._kv.revision), self._members.to_wire())
        raise InvalidRequestError(f"{type(request).__name__} is not a read")

    # --- cluster

    def _status(self) -> StatusResponse:
        raft = self.raft
        return StatusResponse(
            header=self._header(self._kv.revision),
            version=SERVER_VERSION,
            db_size=0,
            leader=raft.leader_id,
            raft_index=raft.last_index,
            raft_term=raft.term,
            raft_applied_index=self._applied,
            errors=(),
            is_learner=self.id in raft.conf_state.learners,
        )

    def _hello(self) -> HelloResponse:
        urls = tuple(record.client_url for record in self._members if record.client_url)
        if not urls:
            urls = (self.config.client_url,)
        return HelloResponse(
            self._header(self._kv.revision), PROTOCOL_VERSION, SERVER_VERSION, urls
        )

    def _change_membership(
        self,
        routing_id: bytes,
        request_id: int,
        request: MemberAddRequest | MemberRemoveRequest | MemberPromoteRequest,
    ) -> None:
        self._require_leader()
        if isinstance(request, MemberAddRequest):
            if not request.name:
                raise MemberError("a new member needs a name (its id is derived from it)")
            node_id = member_id(request.name)
            if node_id in self._members:
                raise MemberError(f"member {request.name!r} already exists")
            if not request.peer_urls:
                raise MemberError("a new member needs a peer URL")
            change_type = (
                ConfChangeType.ADD_LEARNER if request.is_learner else ConfChangeType.ADD_NODE
            )
            context = MemberContext(request.name, request.peer_urls[0]).encode()
        elif isinstance(request, MemberRemoveRequest):
            node_id = request.id
            if node_id not in self._members:
                raise MemberError(f"member {node_id} does not exist")
            change_type, context = ConfChangeType.REMOVE_NODE, b""
        else:
            node_id = request.id
            record = self._members.get(node_id)
            if record is None:
                raise MemberError(f"member {node_id} does not exist")
            if not record.is_learner:
                raise MemberError(f"member {node_id} is not a learner")
            progress = self.raft.status().progress.get(node_id)
            # As etcd: promote only a learner that holds (nearly) the whole log, so the
            # new voter does not stall commits while it catches up.
            if progress is None or progress.match < 0.9 * self.raft.commit_index:
                raise MemberError(f"learner {node_id} has not caught up with the leader yet")
            change_type, context = ConfChangeType.ADD_NODE, b""
        self._flush_proposals()  # the writes received before it go first
        self.raft.propose_conf_change(ConfChange(change_type, node_id, context))
        key = (change_type, node_id)
        self._conf_waiters.setdefault(key, []).append(
            _ConfWaiter(routing_id, request_id, self._now + self.config.request_timeout, request)
        )

    def _maybe_publish(self, now: float) -> None:
        """Announce this member's client URL through the log until the table has it."""
        if now < self._publish_after or self._leader_id == 0 or self._stopping_since:
            return
        record = self._members.get(self.id)
        if record is None or record.client_url == self.config.client_url:
            return
        self._publish_after = now + _PUBLISH_RETRY
        self._propose_internal(
            encode_server_command(PublishMember(self.id, self.config.name, self.config.client_url))
        )

    # --- watches

    def _create_watch(
        self, routing_id: bytes, request_id: int, request: WatchCreateRequest
    ) -> None:
        # The hub's tag is the connection: pause/resume and cleanup go per connection.
        response = self._kv.watches.create(request, routing_id)
        self._watch_streams[response.watch_id] = (routing_id, request_id)
        self._watches_by_connection.setdefault(routing_id, set()).add(response.watch_id)
        self._reply(routing_id, request_id, response)

    def _cancel_watch(
        self, routing_id: bytes, request_id: int, request: WatchCancelRequest
    ) -> None:
        stream = self._watch_streams.get(request.watch_id)
        if stream is None or stream[0] != routing_id:
            # Another connection's watches are not this one's to cancel.
            raise InvalidRequestError(f"no watch with id {request.watch_id}")
        response = self._kv.watches.cancel(request.watch_id)
        self._forget_watch(request.watch_id)
        # The cancel call gets its answer, and the stream learns it ended.
        self._reply(routing_id, request_id, response)
        if stream[1] != request_id:
            self._reply(routing_id, stream[1], response)

    def _forget_watch(self, watch_id: int) -> None:
        stream = self._watch_streams.pop(watch_id, None)
        if stream is not None:
            ids = self._watches_by_connection.get(stream[0])
            if ids is not None:
                ids.discard(watch_id)
                if not ids:
                    del self._watches_by_connection[stream[0]]

    def _connection_gone(self, routing_id: bytes) -> None:
        self._stalled.pop(routing_id, None)
        ids = self._kv.watches.cancel_tag(routing_id)
        self._watches_by_connection.pop(routing_id, None)
        for watch_id in ids:
            self._watch_streams.pop(watch_id, None)
        if ids:
            self._log.info("client.gone", watches=len(ids))

    def _drain_watches(self) -> None:
        hub = self._kv.watches
        for _ in range(_WATCH_DRAIN_ROUNDS):
            if not hub.pending:
                return
            deliveries = hub.drain(1024)
            if not deliveries:
                return
            # Many watchers get the same events (the hub shares the tuple): encode once.
            memo: dict[int, Any] = {}
            for routing_id, response, streams in share_deliveries(deliveries, self._watch_streams):
                if len(streams) > 2:
                    shared = SharedWatchResponse(response.header, tuple(streams), response.events)
                    self._reply_wire(routing_id, streams[0], self._wire(shared, memo))
                    continue
                self._reply_wire(routing_id, streams[0], self._wire(response, memo))
                if response.canceled:
                    self._forget_watch(streams[1])

    # --- deadlines

    def _expire_waiters(self, now: float) -> None:
        deadlines = self._pending_deadlines
        error = TimeoutError("the request was not committed in time; retry it")
        while deadlines and deadlines[0][0] <= now:
            _, key = deadlines.popleft()
            waiters = self._pending.get(key)
            if not waiters:
                continue
            keep = [w for w in waiters if w.deadline > now]
            for waiter in waiters:
                if waiter.deadline <= now:
                    self._proposed.pop(waiter.data, None)
                    self._reply_error(waiter.routing_id, waiter.request_id, error)
            if keep:
                self._pending[key] = keep
            else:
                del self._pending[key]
        read_error = TimeoutError("the read could not be confirmed in time; retry it")
        for context, batch in list(self._reads_by_context.items()):
            if batch[0].deadline <= now:
                del self._reads_by_context[context]
                for read in batch:
                    self._reply_error(read.routing_id, read.request_id, read_error)
        if self._reads_waiting and self._reads_waiting[0][2][0].deadline <= now:
            remaining = []
            for item in self._reads_waiting:
                if item[2][0].deadline <= now:
                    for read in item[2]:
                        self._reply_error(read.routing_id, read.request_id, read_error)
                else:
                    remaining.append(item)
            heapq.heapify(remaining)
            self._reads_waiting = remaining
        for conf_key, conf_waiters in list(self._conf_waiters.items()):
            alive = [w for w in conf_waiters if w.deadline > now]
            for conf_waiter in conf_waiters:
                if conf_waiter.deadline <= now:
                    self._reply_error(conf_waiter.routing_id, conf_waiter.request_id, error)
            if alive:
                self._conf_waiters[conf_key] = alive
            else:
                del self._conf_waiters[conf_key]

    # --- replies

    def _header(self, revision: int) -> ResponseHeader:
        return ResponseHeader(
            member_id=self.id,
            revision=revision,
            raft_term=self.raft.term,
            leader_id=self._leader_id,
        )

    def _wire(self, response: Response, memo: dict[int, Any] | None = None) -> list[Any]:
        """``[tag, body]`` of ``response`` stamped with this member's header (its id, the
        term, the leader; the revision stays the response's own, or the current one).
        Encoded straight to wire form: no new response or header object per reply."""
        header: ResponseHeader | None = getattr(response, "header", None)
        revision = header.revision if header is not None else self._kv.revision
        raft = self.raft
        stamp = header_to_wire(self.id, revision, raft.term, self._leader_id)
        try:
            return response_to_wire(response, stamp, memo)
        except PnyxError as error:
            # Not encodable (a bug): the client still gets an answer.
            return response_to_wire(error_response_from_exception(error), stamp)

    def _reply(self, routing_id: bytes, request_id: int, response: Response) -> None:
        self._reply_wire(routing_id, request_id, self._wire(response))

    def _reply_wire(self, routing_id: bytes, request_id: int, wire: list[Any]) -> None:
        out = self._out.get(routing_id)
        if out is None:
            out = self._out[routing_id] = []
        out.append([request_id, wire[0], wire[1], b"", 0])

    def _reply_error(self, routing_id: bytes, request_id: int, error: PnyxError) -> None:
        self._reply(routing_id, request_id, error_response_from_exception(error))

    def _flush_replies(self) -> None:
        if self._stalled:
            self._retry_stalled()
        if not self._out:
            return
        out, self._out = self._out, {}
        limit = self.config.limits.max_batch
        for routing_id, items in out.items():
            payloads = [
                _encode_replies(items[start : start + limit])
                for start in range(0, len(items), limit)
            ]
            stalled = self._stalled.get(routing_id)
            if stalled is not None:
                stalled.extend(payloads)  # keep the order behind what is already waiting
                self._check_stall_bound(routing_id, stalled)
                continue
            self._send_payloads(routing_id, deque(payloads))

    def _send_payloads(self, routing_id: bytes, payloads: deque[bytes]) -> None:
        """Send in order; what the connection cannot take now waits (in order) rather than
        being lost: dropping a watch response would leave a gap in the stream."""
        assert self._client is not None
        while payloads:
            result = self._client.send(routing_id, payloads[0])
            if result is SendResult.SENT:
                payloads.popleft()
            elif result is SendResult.GONE:
                self._connection_gone(routing_id)
                return
            else:
                self._stalled[routing_id] = payloads
                self._kv.watches.pause(routing_id)
                self._check_stall_bound(routing_id, payloads)
                return
        if routing_id in self._stalled:
            del self._stalled[routing_id]
            self._kv.watches.resume(routing_id)

    def _retry_stalled(self) -> None:
        for routing_id, payloads in list(self._stalled.items()):
            del self._stalled[routing_id]
            self._send_payloads(routing_id, payloads)
            if routing_id not in self._stalled:
                self._kv.watches.resume(routing_id)

    def _check_stall_bound(self, routing_id: bytes, payloads: deque[bytes]) -> None:
        if len(payloads) <= _MAX_STALLED_MESSAGES:
            return
        # The client stopped reading: give up on it rather than buffer without limit.
        # Its calls time out and its watches resume elsewhere from their last revision.
        self._log.warning("client.stalled_dropped", messages=len(payloads))
        self._connection_gone(routing_id)

    # ------------------------------------------------------------------ admin (tests)

    def _receive_admin_requests(self) -> None:
        assert self._admin is not None
        for event in self._admin.receive():
            if isinstance(event, Malformed):
                continue
            reply: list[Any]
            try:
                command = msgpack.unpackb(event.payload, raw=False)
                reply = self._admin_command(command)
            except Exception as error:
                reply = ["error", repr(error)]
            self._admin.send(event.routing_id, msgpack.packb(reply))

    def _admin_command(self, command: Any) -> list[Any]:
        """Test-only controls: ``["block", [member names]]`` drops all peer traffic to and
        from those members (a partition on loopback), ``["heal"]`` undoes it."""
        assert self._peer is not None
        if command == ["heal"]:
            self._peer.block(())
            return ["ok"]
        if type(command) is list and len(command) == 2 and command[0] == "block":
            names = command[1]
            if type(names) is not list or not all(type(n) is str for n in names):
                return ["error", "expected a list of member names"]
            self._peer.block(member_id(name) for name in names)
            return ["ok"]
        return ["error", f"unknown admin command {command!r}"]

    # ------------------------------------------------------------------ shutdown

    def _begin_stop(self) -> None:
        self._stopping_since = self._now
        raft = self.raft
        self._log.info("node.stopping", role=self._role.value, term=raft.term)
        self._transfer_leadership()
        self._cancel_all_watches("node shutting down")

    def _cancel_all_watches(self, reason: str) -> None:
        """End every watch stream with a reason the client did not ask for, so that it
        resumes the watch on another member from its last delivered revision."""
        for watch_id, (routing_id, request_id) in sorted(self._watch_streams.items()):
            try:
                response = self._kv.watches.cancel(watch_id)
            except PnyxError:
                continue
            self._reply(
                routing_id,
                request_id,
                attrs.evolve(response, cancel_reason=reason),
            )
        self._watch_streams.clear()
        self._watches_by_connection.clear()

    def _transfer_leadership(self) -> None:
        raft = self.raft
        if self._role is not Role.LEADER:
            return
        status = raft.status()
        if status.lead_transferee:
            return
        voters = raft.conf_state.voters - {self.id}
        candidates = [
            (progress.match, node_id)
            for node_id, progress in status.progress.items()
            if node_id in voters
        ]
        if not candidates:
            return
        _match, target = max(candidates)
        try:
            raft.transfer_leadership(target)
        except ProposalDroppedError as error:
            self._log.warning("node.transfer_refused", reason=error.reason)
            return
        self._log.info("node.transferring_leadership", target=target, term=raft.term)

    def _stop_complete(self) -> bool:
        assert self._stopping_since is not None
        if self._now - self._stopping_since > self.config.shutdown_timeout:
            self._log.warning(
                "node.stop_timeout", pending=len(self._pending), role=self._role.value
            )
            return True
        if self._role is Role.LEADER and not self._removed:
            voters = self.raft.conf_state.voters - {self.id}
            if voters:
                # The transfer may have been abandoned (target did not win): try again.
                self._transfer_leadership()
                return False
        return not (self._pending or self._reads_by_context or self._reads_waiting)


def _freeze_heap() -> None:
    """Collect the young generations, then exempt every object alive now from future
    collections (``gc.freeze``).

    Why: the state machine is millions of small long-lived objects (key versions, log
    entries, exactly-once responses). CPython's full collection walks all of them, and
    it runs whenever the heap has grown by a quarter: measured here, pauses of 0.1-0.5 s
    once a node holds ~200k writes, and half of all apply time spent in the collector.
    A pause that long on a leader delays heartbeats past the election timeout. Frozen
    objects are still freed by reference counting as usual; only a reference *cycle*
    that becomes garbage after being frozen is never reclaimed. The node creates
    almost none (its data is acyclic), and the young collection just before the freeze
    reclaims the cycles of short-lived objects (exceptions, frames), so the cost is a
    bounded, negligible leak. Cheap: ``freeze`` moves list heads; ``collect(1)`` only
    walks what was allocated since the last call."""
    gc.collect(1)
    gc.freeze()


def share_deliveries(
    deliveries: Sequence[WatchDelivery], streams: dict[int, tuple[bytes, int]]
) -> list[tuple[bytes, WatchResponse, list[int]]]:
    """The watch responses to send, as ``(routing_id, response, [request_id, watch_id,
    ...])``: one item per response, except that the hub's shared responses (watch id 0:
    the same events of a revision for every watcher that wants them the same way) become
    one item per connection naming every watch of it that gets them, to go out as one
    ``SharedWatchResponse``; an item naming one watch carries that watch's own response.
    ``streams`` maps a watch id to its connection and request id; a delivery for a watch
    not in it (gone) is dropped.

    Each watch's responses keep their order: a response joins an earlier item only if
    that item comes after the watch's previous one (the hub's list is in order per watch
    but may put one watch's next revision before another's older one)."""
    items: list[tuple[bytes, WatchResponse, list[int]]] = []
    joinable: dict[tuple[bytes, int], int] = {}
    last_item: dict[int, int] = {}
    for delivery in deliveries:
        watch_id = delivery.watch_id
        stream = streams.get(watch_id)
        if stream is None:
            continue
        routing_id, request_id = stream
        response = delivery.queued
        if response.watch_id == 0:
            # Shared by the hub; the deliveries hold it, so its id names it meanwhile.
            key = (routing_id, id(response))
            index = joinable.get(key)
            if index is not None and index > last_item.get(watch_id, -1):
                items[index][2].extend((request_id, watch_id))
                last_item[watch_id] = index
                continue
            joinable[key] = len(items)
        last_item[watch_id] = len(items)
        items.append((routing_id, response, [request_id, watch_id]))
    for index, (routing_id, response, named) in enumerate(items):
        if len(named) == 2 and response.watch_id == 0:
            # Shared, but for one watch of this connection after all (the hub shares
            # only plain event responses: the header and events say it all).
            items[index] = (
                routing_id,
                WatchResponse(response.header, named[1], events=response.events),
                named,
            )
    return items


def _encode_replies(items: list[list[Any]]) -> bytes:
    """One ZeroMQ message of replies in wire form (``Node._reply_wire``)."""
    try:
        return encode_wire_batch(items)
    except PnyxError:
        # One reply msgpack refuses (an int beyond 64 bits, say) must not cost the others
        # their answers: find it and answer with the error instead.
        fixed: list[list[Any]] = []
        for item in items:
            try:
                encode_wire_batch([item])
                fixed.append(item)
            except PnyxError as error:
                wire = message_to_wire(error_response_from_exception(error))
                fixed.append([item[0], wire[0], wire[1], b"", 0])
        return encode_wire_batch(fixed)


def install_signal_handlers(node: Node, register: Callable[[int, Any], Any]) -> None:
    """Route SIGTERM and SIGINT to ``node.request_stop`` (``register`` is
    ``signal.signal``; passed in so this module does not touch process state itself)."""

    def _handler(_signum: int, _frame: object) -> None:
        node.request_stop()

    register(signal.SIGTERM, _handler)
    register(signal.SIGINT, _handler)
