"""A single ``Node`` run in a thread of the test process over an in-memory filesystem:
acknowledged writes survive a power loss, an fsync failure stops the node without
acknowledging anything, a graceful stop exits 0, and restart recovers the member table
and data from a snapshot plus the log."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import msgpack  # type: ignore[import-untyped]  # ships no type information
import pytest
import zmq

from pnyx.clients.testing import RawConnection, wait_for
from pnyx.core import errors
from pnyx.core.raft.types import Snapshot
from pnyx.core.server import EXIT_OK, EXIT_STORAGE, Node, NodeConfig
from pnyx.core.server.config import build_parser, config_from_args
from pnyx.core.storage import MemoryFileSystem
from pnyx.core.storage.snapshot import SnapshotStore
from pnyx.core.wire.codec import encode_batch
from pnyx.core.wire.messages import (
    Envelope,
    MemberListRequest,
    MemberListResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    StatusRequest,
    StatusResponse,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchResponse,
)

pytestmark = pytest.mark.timeout(60)


def _config(snapshot_count: int = 10_000) -> NodeConfig:
    args = build_parser().parse_args(
        [
            "--name",
            "solo",
            "--data-dir",
            "/data/solo",
            "--listen-client",
            "tcp://127.0.0.1:*",
            "--listen-peer",
            "tcp://127.0.0.1:*",
            # A single voter elects itself after one election timeout; keep it short.
            "--election-ticks",
            "10",
            "--heartbeat-ticks",
            "2",
            "--snapshot-count",
            str(snapshot_count),
        ]
    )
    return config_from_args(args)


class RunningNode:
    """A node's loop on a background thread, with a raw client connection to it."""

    def __init__(self, fs: MemoryFileSystem, config: NodeConfig) -> None:
        self.node = Node(config, fs=fs).open()
        self.code: list[int] = []
        self._thread = threading.Thread(target=lambda: self.code.append(self.node.run()))
        self._thread.start()
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.client = RawConnection(self._context, self.node.client_endpoint)
        wait_for(self._has_leader, 20.0, "the single voter to elect itself")

    def _has_leader(self) -> bool:
        status = self.client.call(StatusRequest())
        return isinstance(status, StatusResponse) and status.leader != 0

    def put(self, key: bytes, value: bytes, timeout: float = 10.0) -> PutResponse:
        response = self.client.call(PutRequest(key, value), timeout=timeout)
        assert isinstance(response, PutResponse)
        return response

    def wait(self, timeout: float = 20.0) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the node did not stop"
        self.client.close()
        self._context.destroy(linger=0)
        return self.code[0]

    def stop(self) -> int:
        self.node.request_stop()
        return self.wait()


@pytest.fixture
def fs() -> Iterator[MemoryFileSystem]:
    yield MemoryFileSystem()


def test_acknowledged_writes_survive_power_loss(fs: MemoryFileSystem) -> None:
    running = RunningNode(fs, _config())
    acked = [running.put(b"k%03d" % i, b"v%d" % i) for i in range(50)]
    assert [a.header.revision for a in acked] == list(range(2, 52))
    # Power loss while the node runs: only what was fsynced survives.
    fs.crash(random.Random(7))
    running.node.request_stop()
    running.wait()
    restarted = RunningNode(fs, _config())
    try:
        response = restarted.client.call(RangeRequest(b"k", b"l"), timeout=10.0)
        assert isinstance(response, RangeResponse)
        assert [kv.key for kv in response.kvs] == [b"k%03d" % i for i in range(50)]
    finally:
        assert restarted.stop() == EXIT_OK


def test_an_fsync_failure_stops_the_node_without_acknowledging(fs: MemoryFileSystem) -> None:
    running = RunningNode(fs, _config())
    running.put(b"before", b"ok")
    fs.fail_fsync(1000)
    with pytest.raises((TimeoutError, errors.PnyxError)):
        running.put(b"after", b"never acknowledged", timeout=1.0)
    assert running.wait() == EXIT_STORAGE


def _write_45_keys_and_a_snapshot(fs: MemoryFileSystem) -> None:
    """Keys s00..s44 on a node that snapshots every 20 entries; returns once a snapshot
    file exists and the node has stopped."""
    running = RunningNode(fs, _config(snapshot_count=20))
    for i in range(45):
        running.put(b"s%02d" % i, b"x")
    # Snapshots are encoded beside the loop (a forked child) and written by the WAL
    # writer, so the file appears a little after the 20th entry: wait for it.
    deadline = time.monotonic() + 30.0
    while not any(name.startswith("snap-") for name in fs.list_dir("/data/solo")):
        assert time.monotonic() < deadline, "no snapshot was written"
        running.put(b"pad", b"x")
    assert running.stop() == EXIT_OK


def test_restart_recovers_from_snapshot_and_log(fs: MemoryFileSystem) -> None:
    _write_45_keys_and_a_snapshot(fs)
    restarted = RunningNode(fs, _config(snapshot_count=20))
    try:
        response = restarted.client.call(RangeRequest(b"s", b"t"), timeout=10.0)
        assert isinstance(response, RangeResponse) and response.count == 45
        members = restarted.client.call(MemberListRequest())
        assert isinstance(members, MemberListResponse)
        assert [m.name for m in members.members] == ["solo"]
        revision_before_stop = response.header.revision
        assert restarted.put(b"s99", b"x").header.revision == revision_before_stop + 1
    finally:
        assert restarted.stop() == EXIT_OK


def test_writes_that_arrive_together_are_each_applied_once_and_answered(
    fs: MemoryFileSystem,
) -> None:
    """One client message with more writes than one batched entry holds, anonymous and
    exactly-once mixed, and a repeat of one of them: every write gets its own revision in
    arrival order, the repeat the first answer, and all of it survives a restart."""
    running = RunningNode(fs, _config())
    envelopes = [
        Envelope(i + 1, PutRequest(b"b%03d" % i, b"v"), *((b"", 0) if i % 3 == 0 else (b"me", i)))
        for i in range(600)
    ]
    envelopes.append(Envelope(1000, PutRequest(b"b001", b"again"), b"me", 1))
    running.client.send_raw(encode_batch(envelopes))
    answers: dict[int, object] = {}
    deadline = time.monotonic() + 30.0
    while len(answers) < len(envelopes):
        assert time.monotonic() < deadline, f"{len(envelopes) - len(answers)} writes unanswered"
        for item in running.client.receive_raw(1.0) or []:
            assert isinstance(item, Envelope)
            answers[item.request_id] = item.message
    responses = [answers[i + 1] for i in range(600)]
    assert all(isinstance(r, PutResponse) for r in responses)
    assert [r.header.revision for r in responses] == list(range(2, 602))  # type: ignore[attr-defined]
    assert answers[1000] == answers[2]
    assert running.stop() == EXIT_OK
    restarted = RunningNode(fs, _config())
    try:
        stored = restarted.client.call(RangeRequest(b"b", b"c"), timeout=10.0)
        assert isinstance(stored, RangeResponse) and stored.count == 600
        assert stored.kvs[1].value == b"v" and stored.header.revision == 601
    finally:
        assert restarted.stop() == EXIT_OK


def test_snapshot_count_counts_the_writes_of_a_batch(fs: MemoryFileSystem) -> None:
    """Batched writes share entries; the snapshot cadence still follows the writes."""
    running = RunningNode(fs, _config(snapshot_count=300))
    try:
        for round_ in range(3):
            running.client.call_many(
                [PutRequest(b"c%d-%03d" % (round_, i), b"x") for i in range(400)], timeout=30.0
            )
        # A few entries, 1200 writes: only counting the writes triggers a snapshot.
        wait_for(
            lambda: any(name.startswith("snap-") for name in fs.list_dir("/data/solo")),
            30.0,
            "a snapshot after 1200 batched writes",
        )
    finally:
        assert running.stop() == EXIT_OK


def test_an_apply_that_held_the_loop_up_defers_the_peers_timeouts(
    fs: MemoryFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members apply the same long entry at about the same time and finish apart: one
    that was kept from ticking gives the others twice as long before suspecting them."""
    slow = 0.06  # > a third of the 100 ms election timeout of _config()
    original = Node._apply_entry

    def apply_entry(node: Node, entry: object) -> None:
        if b"slow-apply" in getattr(entry, "data", b""):
            time.sleep(slow)
        original(node, entry)  # type: ignore[arg-type]

    monkeypatch.setattr(Node, "_apply_entry", apply_entry)
    running = RunningNode(fs, _config())
    deferred: list[int] = []
    raft = running.node.raft
    original_defer = raft.defer_timeouts

    def defer(ticks: int) -> None:
        deferred.append(ticks)
        original_defer(ticks)

    monkeypatch.setattr(raft, "defer_timeouts", defer)
    try:
        running.put(b"slow-apply", b"x")
        assert deferred and max(deferred) >= 2 * slow / 0.01
    finally:
        assert running.stop() == EXIT_OK


def test_a_snapshot_of_the_first_format_is_still_restored(fs: MemoryFileSystem) -> None:
    """Format 1 held the state machine's snapshot as one msgpack bin; a data directory
    written by that version starts and serves its data."""
    _write_45_keys_and_a_snapshot(fs)
    store = SnapshotStore.open(fs, "/data/solo")
    for file in store.files():
        snapshot = store.load(file)
        version, state, members = msgpack.unpackb(snapshot.data, raw=False)
        assert version == 2
        old = msgpack.packb(
            [1, msgpack.packb(state, use_bin_type=True), members], use_bin_type=True
        )
        store.save(Snapshot(snapshot.metadata, old))
    restarted = RunningNode(fs, _config(snapshot_count=20))
    try:
        response = restarted.client.call(RangeRequest(b"s", b"t"), timeout=10.0)
        assert isinstance(response, RangeResponse) and response.count == 45
    finally:
        assert restarted.stop() == EXIT_OK


def test_a_leader_persists_through_the_writer_thread_after_a_slow_fsync(
    fs: MemoryFileSystem,
) -> None:
    # A lone write is persisted on the loop thread; but a leader blocked in a slow fsync
    # sends no heartbeats, so after a commit that took long it uses the writer thread
    # (which lets the loop go on sending them), until a commit is fast again.
    syncs: list[str] = []
    slow = threading.Event()

    def on_fsync(path: str) -> None:
        if "/wal-" not in path:
            return
        if slow.is_set():
            time.sleep(0.02)  # the simulated disk's latency, not a wait for anything
        syncs.append(threading.current_thread().name)

    fs.on_fsync = on_fsync
    running = RunningNode(fs, _config())
    try:
        running.put(b"warm", b"up")  # past the election's own writes
        # The writer thread zero-fills the WAL ahead after the first writes (meanwhile
        # writes go through it): wait until it did.
        wal = running.node._writer.storage.wal  # type: ignore[union-attr]
        wait_for(lambda: wal.space_ahead > 0, 10.0, "the WAL to be zero-filled ahead")
        running.put(b"settle", b"0")
        loop = running._thread.name
        syncs.clear()
        running.put(b"a", b"1")
        assert syncs[0] == loop  # a lone write: inline, on the loop thread
        syncs.clear()
        slow.set()  # the disk turns slow: every fsync takes 20 ms
        running.put(b"b", b"2")  # inline still (the last commit was fast), and slow
        assert syncs[0] == loop
        syncs.clear()
        running.put(b"c", b"3")  # the last commit was slow: through the writer
        assert syncs[0] == "pnyx-wal-writer"
        slow.clear()
        # Once a commit is fast again, lone writes are persisted inline again.
        for number in range(5):
            syncs.clear()
            running.put(b"d", b"%d" % number)
            if loop in syncs:
                break
        else:
            raise AssertionError(f"never inline again: {syncs}")
    finally:
        assert running.stop() == EXIT_OK


def test_a_member_with_watchers_tells_raft_its_clients_wait_for_every_commit(
    fs: MemoryFileSystem,
) -> None:
    # The server's side of eager followers (RaftNode.set_eager): on while the member has
    # a watcher, off again when the last one goes.
    running = RunningNode(fs, _config())
    try:
        raft = running.node.raft
        assert not raft._eager
        created = running.client.call(WatchCreateRequest(b"flags/", b"flags0"))
        assert isinstance(created, WatchResponse) and created.created
        wait_for(lambda: raft._eager, 10.0, "the member to say it has watchers")
        running.client.call(WatchCancelRequest(created.watch_id))
        wait_for(lambda: not raft._eager, 10.0, "the member to say it has none")
    finally:
        assert running.stop() == EXIT_OK
