"""Real pnyx clusters for tests: ``LocalCluster`` and the ``local_cluster`` pytest fixture.

``LocalCluster`` starts N real node processes (``python -m pnyx.core.server``) on
loopback, on free ports (bind-probed; the whole start is retried with new ports if a
node finds its port taken), waits with a deadline until the cluster has a leader (never
a fixed sleep), and offers fault injection by pid: ``kill`` (SIGKILL), ``stop``
(SIGTERM), ``pause``/``resume`` (SIGSTOP/SIGCONT), ``restart``, ``partition``/``heal``
(through each node's test-only admin socket, which drops peer traffic to named members),
``expire_lease`` (a session's lease ends on the servers, as if its TTL ran out) and
``add_member`` (a new node joining at runtime). It always kills every process it
started, by pid, on exit - even when the test failed - and then keeps the node logs
(and prints their tails) if the test failed.

    from pnyx.clients.testing import LocalCluster

    with LocalCluster(3) as cluster:
        cluster.endpoints            # client URLs, e.g. for pnyx.clients.Client
        cluster.leader()             # name of the current leader
        cluster.kill("n1"); cluster.restart("n1")

In pytest: ``pytest_plugins = ["pnyx.clients.testing"]`` (or import ``local_cluster``
into a conftest) gives a fresh 3-node cluster per test.

This module must never import the server (it starts processes), and it talks to nodes
only through the client protocol (``pnyx.core.wire``) and the admin socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information
import zmq

from pnyx.core.errors import LeaseNotFoundError, PnyxError
from pnyx.core.wire.codec import DecodeError, decode_batch, encode_batch
from pnyx.core.wire.messages import (
    MUTATING_REQUESTS,
    Envelope,
    ErrorResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    MemberAddRequest,
    MemberAddResponse,
    Message,
    Request,
    StatusRequest,
    StatusResponse,
    error_from_response,
)

__all__ = ["ClusterError", "LocalCluster", "NodeProcess", "RawConnection", "free_port"]

EXIT_ADDRESS_IN_USE = 3
"""What a node exits with when a listen address is taken (``pnyx.core.server``)."""

T = TypeVar("T")


class ClusterError(Exception):
    """The test cluster could not do what was asked (start, elect, stop in time)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picked it for a probe bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """Poll ``condition`` until it returns something truthy; ``ClusterError`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RawConnection:
    """A minimal blocking client of one node: a DEALER, request ids, one batch per call.
    Enough for the harness (status, membership) and for protocol-level tests."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], url: str) -> None:
        self.url = url
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(url)
        self._next_id = 1
        self._client_id = os.urandom(8)
        self._seq = 0

    def send_raw(self, payload: bytes) -> None:
        self._socket.send(payload)

    def receive_raw(self, timeout: float) -> list[Envelope | DecodeError] | None:
        if not self._socket.poll(int(timeout * 1000)):
            return None
        return decode_batch(self._socket.recv(), validate=False)

    def call_many(self, requests: Sequence[Request], timeout: float = 5.0) -> list[Message]:
        """Send ``requests`` in one batch; their responses in order. Mutating requests get
        a fresh (client_id, seq). ``TimeoutError`` if any answer is missing."""
        ids: list[int] = []
        envelopes: list[Envelope] = []
        for request in requests:
            request_id = self._next_id
            self._next_id += 1
            ids.append(request_id)
            if type(request) in MUTATING_REQUESTS:
                self._seq += 1
                envelopes.append(Envelope(request_id, request, self._client_id, self._seq))
            else:
                envelopes.append(Envelope(request_id, request))
        self._socket.send(encode_batch(envelopes))
        answers: dict[int, Message] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(ids):
            left = deadline - time.monotonic()
            received = self.receive_raw(max(0.0, left)) if left > 0 else None
            if received is None:
                raise TimeoutError(f"no answer from {self.url} within {timeout}s")
            for item in received:
                if isinstance(item, Envelope) and item.request_id in ids:
                    answers[item.request_id] = item.message
        return [answers[request_id] for request_id in ids]

    def call(self, request: Request, timeout: float = 5.0) -> Message:
        """One request; raises the pnyx error an ``ErrorResponse`` stands for."""
        (response,) = self.call_many([request], timeout)
        if isinstance(response, ErrorResponse):
            raise error_from_response(response)
        return response

    def close(self) -> None:
        self._socket.close(0)


@attrs.define
class NodeProcess:
    """One node of a ``LocalCluster``: its addresses, directories and process."""

    name: str
    client_url: str
    peer_url: str
    admin_url: str
    data_dir: str
    log_path: str
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    members: list[str] | None = None
    """The ``--initial-cluster`` members it is started with (None: the initial ones)."""
    command: list[str] = attrs.Factory(list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """N real pnyx nodes on loopback. See the module docstring."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        directory: str | None = None,
        base_port: int | None = None,
        names: Sequence[str] | None = None,
        snapshot_count: int | None = None,
        tick_ms: float = 10.0,
        heartbeat_ticks: int = 5,
        election_ticks: int = 30,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        keep_data: bool = False,
        test_admin: bool = True,
        python: str = sys.executable,
        die_with_parent: bool = True,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self._names = list(names) if names is not None else [f"n{i}" for i in range(1, nodes + 1)]
        if len(self._names) != nodes:
            raise ValueError("names must have one entry per node")
        self._owns_directory = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="pnyx-cluster-")
        self._base_port = base_port
        self._snapshot_count = snapshot_count
        self._tick_ms = tick_ms
        self._heartbeat_ticks = heartbeat_ticks
        self._election_ticks = election_ticks
        self._extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self._keep_data = keep_data
        self._test_admin = test_admin
        self._python = python
        self._die_with_parent = die_with_parent
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._connections: dict[str, RawConnection] = {}
        self._admin_sockets: dict[str, zmq.Socket[bytes]] = {}
        self.nodes: dict[str, NodeProcess] = {}
        self._initial: list[str] = []
        self._failed = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self._failed = True
            self.close()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._failed = True
        self.close()

    def start(self, attempts: int = 3) -> LocalCluster:
        """Start every node and wait for a leader. Retries with fresh ports when a port
        was taken between the probe and the node's bind."""
        existed = {
            name for name in self._names if os.path.exists(os.path.join(self.directory, name))
        }
        for attempt in range(1, attempts + 1):
            self._plan()
            for name in self._names:
                self._spawn(self.nodes[name], initial_state="new")
            try:
                self.wait_ready()
                return self
            except ClusterError:
                in_use = [
                    node.name
                    for node in self.nodes.values()
                    if node.process is not None and node.process.poll() == EXIT_ADDRESS_IN_USE
                ]
                if not in_use or attempt == attempts or self._base_port is not None:
                    raise
                self._kill_all()
                # Data created by this failed attempt knows the old ports: start clean.
                for node in self.nodes.values():
                    if node.name not in existed:
                        shutil.rmtree(node.data_dir, ignore_errors=True)
        raise ClusterError("could not start the cluster")  # pragma: no cover

    def close(self) -> None:
        """Kill every node process (by pid), close sockets; keep the logs if anything
        failed, else remove the directory this cluster created."""
        if self._closed:
            return
        self._closed = True
        self._kill_all()
        for connection in self._connections.values():
            connection.close()
        for admin in self._admin_sockets.values():
            admin.close(0)
        self._context.destroy(linger=0)
        if self._failed:
            self.dump_logs()
        elif self._owns_directory and not self._keep_data:
            shutil.rmtree(self.directory, ignore_errors=True)

    def mark_failed(self) -> None:
        """Keep the logs at close (the fixture calls this when a test failed)."""
        self._failed = True

    # ------------------------------------------------------------------ layout

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every node, in name order."""
        return [node.client_url for node in self.nodes.values()]

    def endpoint(self, name: str) -> str:
        return self.nodes[name].client_url

    def _url(self, port: int) -> str:
        return f"tcp://127.0.0.1:{port}"

    def _plan(self) -> None:
        self.nodes = {}
        for position, name in enumerate(self._names, start=1):
            if self._base_port is not None:
                client_port = self._base_port + position
                peer_port = self._base_port + 100 + position
            else:
                client_port, peer_port = free_port(), free_port()
            self.nodes[name] = self._make_node(name, client_port, peer_port)
        self._initial = list(self._names)

    def _make_node(self, name: str, client_port: int, peer_port: int) -> NodeProcess:
        return NodeProcess(
            name=name,
            client_url=self._url(client_port),
            peer_url=self._url(peer_port),
            admin_url=self._url(free_port()) if self._test_admin else "",
            data_dir=os.path.join(self.directory, name),
            log_path=os.path.join(self.directory, f"{name}.log"),
        )

    def _command(self, node: NodeProcess, members: Sequence[str], initial_state: str) -> list[str]:
        initial_cluster = ",".join(f"{n}={self.nodes[n].peer_url}" for n in members)
        initial_client = ",".join(f"{n}={self.nodes[n].client_url}" for n in members)
        command = [
            self._python,
            "-m",
            "pnyx.core.server",
            "--name",
            node.name,
            "--data-dir",
            node.data_dir,
            "--listen-client",
            node.client_url,
            "--listen-peer",
            node.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-client",
            initial_client,
            "--initial-cluster-state",
            initial_state,
            "--tick-ms",
            str(self._tick_ms),
            "--heartbeat-ticks",
            str(self._heartbeat_ticks),
            "--election-ticks",
            str(self._election_ticks),
        ]
        if self._snapshot_count is not None:
            command += ["--snapshot-count", str(self._snapshot_count)]
        if node.admin_url:
            command += ["--test-admin", node.admin_url]
        return command + self._extra_args

    def _spawn(
        self, node: NodeProcess, initial_state: str, members: Sequence[str] | None = None
    ) -> None:
        os.makedirs(self.directory, exist_ok=True)
        node.command = self._command(
            node, members if members is not None else self._initial, initial_state
        )
        env = dict(os.environ)
        if self._die_with_parent:
            # The node asks the kernel to SIGKILL it when this process dies (Linux), so a
            # crashed test run cannot leave nodes behind holding ports.
            env["PNYX_EXIT_WITH_PARENT"] = str(os.getpid())
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                node.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        node.paused = False

    # ------------------------------------------------------------------ observation

    def connection(self, name: str) -> RawConnection:
        """A (cached) raw protocol connection to ``name``'s client port."""
        connection = self._connections.get(name)
        if connection is None:
            connection = RawConnection(self._context, self.nodes[name].client_url)
            self._connections[name] = connection
        return connection

    def reconnect(self, name: str) -> RawConnection:
        """A fresh connection (drops replies still in flight on the old one)."""
        old = self._connections.pop(name, None)
        if old is not None:
            old.close()
        return self.connection(name)

    def status(self, name: str, timeout: float = 0.5) -> StatusResponse | None:
        """The node's status, or None if it does not answer in time."""
        node = self.nodes[name]
        if not node.running or node.paused:
            return None
        try:
            response = self.connection(name).call(StatusRequest(), timeout)
        except (TimeoutError, PnyxError):
            self.reconnect(name)
            return None
        return response if isinstance(response, StatusResponse) else None

    def _leader_view(self, among: Sequence[str]) -> str | None:
        """The name of a node that reports itself leader and that every other answering
        node (of ``among``) agrees on."""
        statuses = {name: self.status(name) for name in among}
        answering = {name: s for name, s in statuses.items() if s is not None}
        leaders = [
            name for name, s in answering.items() if s.leader and s.leader == s.header.member_id
        ]
        if len(leaders) != 1:
            return None
        leader_id = answering[leaders[0]].leader
        if all(s.leader == leader_id for s in answering.values()):
            return leaders[0]
        return None

    def leader(self, timeout: float = 10.0, among: Sequence[str] | None = None) -> str:
        """Name of the leader (waiting up to ``timeout`` for one that the running nodes
        agree on). ``among`` restricts the nodes asked (e.g. one side of a partition)."""
        names = list(among) if among is not None else self.running_names()
        return wait_for(lambda: self._leader_view(names), timeout, "a leader")

    def running_names(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.running and not node.paused]

    def wait_ready(self, timeout: float | None = None) -> str:
        """Wait until every running node answers and they agree on a leader."""
        timeout = self.startup_timeout if timeout is None else timeout

        def ready() -> str | None:
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    code = node.process.returncode
                    why = " (a listen address is in use)" if code == EXIT_ADDRESS_IN_USE else ""
                    raise ClusterError(
                        f"node {node.name} exited with {code}{why} (log: {node.log_path})"
                    )
            names = self.running_names()
            if not all(self.status(name) is not None for name in names):
                return None
            return self._leader_view(names)

        return wait_for(ready, timeout, "the cluster to be ready")

    def wait_caught_up(self, name: str, timeout: float = 20.0) -> None:
        """Wait until ``name`` has applied everything the leader had applied when asked."""
        leader = self.leader()
        target = self.status(leader)
        if target is None:
            raise ClusterError("the leader does not answer")

        def caught_up() -> bool:
            status = self.status(name)
            return status is not None and status.raft_applied_index >= target.raft_applied_index

        wait_for(caught_up, timeout, f"{name} to catch up")

    def log_text(self, name: str) -> str:
        try:
            with open(self.nodes[name].log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def dump_logs(self, lines: int = 40, stream: Any = None) -> None:
        """Print where the logs are and the last lines of each (for a failed test)."""
        out = stream if stream is not None else sys.stderr
        print(f"\n=== pnyx LocalCluster logs kept in {self.directory}", file=out)
        for name in self.nodes:
            tail = self.log_text(name).splitlines()[-lines:]
            print(f"--- {name} ({self.nodes[name].log_path}):", file=out)
            for line in tail:
                print(f"    {line}", file=out)

    # ------------------------------------------------------------------ faults

    def _signal(self, name: str, signum: int) -> None:
        node = self.nodes[name]
        if node.process is None or node.process.poll() is not None:
            raise ClusterError(f"node {name} is not running")
        os.kill(node.process.pid, signum)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and reap it."""
        node = self.nodes[name]
        if node.running:
            assert node.process is not None
            os.kill(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=10)
        node.paused = False
        self._drop_connection(name)

    def stop(self, name: str, timeout: float = 15.0) -> int:
        """SIGTERM ``name`` (graceful: a leader hands over first) and wait for it to
        exit; returns its exit code. SIGKILLs it and raises ``ClusterError`` if it does
        not exit in time."""
        node = self.nodes[name]
        assert node.process is not None
        if node.paused:
            self.resume(name)
        self._signal(name, signal.SIGTERM)
        try:
            code = node.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)
            raise ClusterError(f"node {name} did not stop within {timeout}s") from None
        self._drop_connection(name)
        return code

    def stop_all(self, timeout: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every running node at once, wait up to ``timeout`` for all of them,
        SIGKILL the rest. Returns each node's exit code (None if it had to be killed)."""
        running = [node for node in self.nodes.values() if node.running]
        for node in running:
            assert node.process is not None
            if node.paused:
                os.kill(node.process.pid, signal.SIGCONT)
                node.paused = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for node in running:
            assert node.process is not None
            try:
                codes[node.name] = node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(node.name)
                codes[node.name] = None
            self._drop_connection(node.name)
        return codes

    def pause(self, name: str) -> None:
        """SIGSTOP ``name`` (it keeps its sockets but does nothing)."""
        self._signal(name, signal.SIGSTOP)
        self.nodes[name].paused = True

    def resume(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)
        self.nodes[name].paused = False

    def restart(self, name: str, wait: bool = True) -> None:
        """Start ``name`` again on its data directory (killing it first if it runs)."""
        node = self.nodes[name]
        if node.running:
            self.kill(name)
        self._spawn(node, initial_state="existing", members=self._members_for(node))
        if wait:
            wait_for(lambda: self.status(name) is not None, self.startup_timeout, f"{name}")

    def start_node(self, name: str, wait: bool = True) -> None:
        """Start a stopped or killed node again (same as ``restart``)."""
        self.restart(name, wait)

    def _members_for(self, node: NodeProcess) -> list[str]:
        return list(node.members or self._initial)

    def add_member(self, name: str, learner: bool = False, timeout: float = 20.0) -> NodeProcess:
        """Add a member at runtime: ask the leader (``MemberAddRequest``), then start the
        new node with ``--initial-cluster-state existing``. Returns it (running)."""
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        node = self._make_node(name, free_port(), free_port())

        def add() -> MemberAddResponse | None:
            leader = self.leader(timeout)
            try:
                response = self.connection(leader).call(
                    MemberAddRequest(peer_urls=(node.peer_url,), name=name, is_learner=learner),
                    timeout=5.0,
                )
            except (TimeoutError, PnyxError):
                return None
            return response if isinstance(response, MemberAddResponse) else None

        wait_for(add, timeout, f"the leader to add {name}", interval=0.2)
        self.nodes[name] = node
        members = [*self.running_names(), name]
        node.members = [n for n in self.nodes if n in members]
        self._spawn(node, initial_state="existing", members=node.members)
        wait_for(lambda: self.status(name) is not None, self.startup_timeout, f"{name} to start")
        return node

    def _admin(self, name: str, command: list[Any], timeout: float = 5.0) -> None:
        node = self.nodes[name]
        if not node.admin_url:
            raise ClusterError("this cluster was started without test_admin")
        admin = self._admin_sockets.get(name)
        if admin is None:
            admin = self._context.socket(zmq.DEALER)
            admin.setsockopt(zmq.LINGER, 0)
            admin.connect(node.admin_url)
            self._admin_sockets[name] = admin
        admin.send(msgpack.packb(command))
        if not admin.poll(int(timeout * 1000)):
            admin.close(0)
            del self._admin_sockets[name]
            raise ClusterError(f"node {name} did not answer the admin command {command}")
        reply = msgpack.unpackb(admin.recv(), raw=False)
        if reply != ["ok"]:
            raise ClusterError(f"admin command {command} on {name} failed: {reply}")

    def expire_lease(self, lease_id: int, timeout: float = 10.0) -> None:
        """End the lease ``lease_id`` on the servers now, as its TTL running out would:
        the leader revokes it through the log and every key attached to it is deleted in
        one revision. Use it to test how code reacts to a lost session
        (``cluster.expire_lease(session.lease_id)``)."""

        def revoke() -> bool | None:
            try:
                reply = self.connection(self.leader()).call(
                    LeaseRevokeRequest(lease_id), timeout=1.0
                )
            except LeaseNotFoundError:
                raise
            except PnyxError:
                return None  # no leader yet, or it moved: ask again
            return True if isinstance(reply, LeaseRevokeResponse) else None

        wait_for(revoke, timeout, f"the leader to revoke lease {lease_id:x}", interval=0.1)

    def partition(self, *groups: Sequence[str]) -> None:
        """Cut peer traffic between the groups (nodes not listed form one more group).
        Clients still reach every node. Undo with ``heal``."""
        listed = [name for group in groups for name in group]
        rest = [name for name in self.nodes if name not in listed]
        all_groups = [list(group) for group in groups] + ([rest] if rest else [])
        for group in all_groups:
            others = [name for name in self.nodes if name not in group]
            for name in group:
                if self.nodes[name].running and not self.nodes[name].paused:
                    self._admin(name, ["block", others])

    def heal(self) -> None:
        for name, node in self.nodes.items():
            if node.running and not node.paused:
                self._admin(name, ["heal"])

    # ------------------------------------------------------------------ internals

    def _drop_connection(self, name: str) -> None:
        connection = self._connections.pop(name, None)
        if connection is not None:
            connection.close()
        admin = self._admin_sockets.pop(name, None)
        if admin is not None:
            admin.close(0)

    def _kill_all(self) -> None:
        for node in self.nodes.values():
            process = node.process
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


try:  # the fixture is only defined where pytest is installed
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def local_cluster(request: Any, tmp_path: Any) -> Iterator[LocalCluster]:
        """A fresh 3-node cluster for one test; logs kept (and their tails printed) if
        the test failed."""
        failed_before = request.session.testsfailed
        cluster = LocalCluster(3, directory=str(tmp_path / "pnyx-cluster"))
        with cluster:
            yield cluster
            if request.session.testsfailed > failed_before:
                cluster.mark_failed()
