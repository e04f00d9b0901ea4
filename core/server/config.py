"""A node's configuration (``NodeConfig``), its command-line parser, and the mapping from
member names to Raft node ids.

Node ids are a stable 63-bit hash of the member name (``member_id``), so every member,
tool and test derives the same id from the same name without coordination.

How members learn each other's addresses:

- peer URLs: ``--initial-cluster name=peer_url,...`` for the members known at start;
  a member added later carries its peer URL in its configuration change;
- client URLs (for leader hints and ``Hello``): ``--initial-cluster-client
  name=client_url,...`` if given; in any case every member *publishes* its own
  ``--advertise-client`` URL through the Raft log once it has joined (as etcd members
  publish their attributes), so a member added at runtime becomes known to all.

This module must never open sockets or files; it only describes and parses.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Mapping, Sequence

import attrs

from pnyx.core.transport.options import SocketOptions
from pnyx.core.wire.limits import Limits

__all__ = [
    "ClusterState",
    "NodeConfig",
    "build_parser",
    "config_from_args",
    "member_id",
    "parse_cluster",
]

_ID_MASK = (1 << 63) - 1


def member_id(name: str) -> int:
    """The Raft node id of the member called ``name``: the first 8 bytes of its SHA-256
    as a positive 63-bit integer (never 0, which Raft reserves for "no node")."""
    digest = hashlib.sha256(name.encode()).digest()
    return (int.from_bytes(digest[:8], "big") & _ID_MASK) or 1


def parse_cluster(text: str) -> dict[str, str]:
    """``"n1=tcp://h:1,n2=tcp://h:2"`` -> ``{"n1": "tcp://h:1", "n2": "tcp://h:2"}``.
    Raises ``ValueError`` for a malformed item or a repeated name."""
    cluster: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not name or not url:
            raise ValueError(f"expected name=url, got {item!r}")
        if name in cluster:
            raise ValueError(f"member {name!r} is listed twice")
        cluster[name] = url
    return cluster


class ClusterState:
    NEW = "new"
    """Bootstrap a new cluster whose voters are the members of ``initial_cluster``."""
    EXISTING = "existing"
    """Join a running cluster (the member must have been added first)."""


@attrs.frozen
class NodeConfig:
    """Everything a node needs to start. Times are seconds unless named ``*_ticks``."""

    name: str
    data_dir: str
    listen_client: str
    listen_peer: str
    initial_cluster: Mapping[str, str] = attrs.field(factory=dict)
    """Member name -> peer URL of the members known at start (including this one)."""
    initial_cluster_client: Mapping[str, str] = attrs.field(factory=dict)
    """Member name -> client URL, optional (members also publish their own)."""
    initial_cluster_state: str = ClusterState.NEW
    advertise_client: str = ""
    """Client URL other members and clients should use ("" = ``listen_client``)."""
    advertise_peer: str = ""
    """Peer URL announced when this member is added ("" = ``listen_peer``)."""
    tick_interval: float = 0.01
    heartbeat_ticks: int = 5
    """Leader heartbeats every ``heartbeat_ticks`` ticks (50 ms by default)."""
    election_ticks: int = 30
    """Election timeout: a random number of ticks in ``[election_ticks, 2*election_ticks)``
    (300-600 ms by default)."""
    lease_reads: bool = True
    """Serve linearizable reads on the leader's lease (Raft thesis 6.4.1) while it holds
    one, rather than with a heartbeat round each: see ``node.lease_duration``. Relies on
    clocks that run at about the same rate on every member (not on synchronised
    clocks); turn off to have every read confirmed by a quorum round trip."""
    quorum_first: bool = True
    """At low load the leader sends a new entry at once only to the followers a quorum
    needs; the others get it at its next tick (``RaftConfig.quorum_first``)."""
    snapshot_count: int = 10_000
    """Take a snapshot (and compact the Raft log) every this many applied entries (and
    not before the log grew by as many bytes as the previous snapshot had)."""
    snapshot_in_child: bool = True
    """Encode snapshots in a forked child (copy-on-write), not on the loop thread."""
    auto_compaction_retention: int = 0
    """If positive, the leader compacts the history to keep this many revisions."""
    request_timeout: float = 3.0
    """A client request not answered within this long gets a TimeoutError reply (the
    client retries with the same (client_id, seq), so a write still applies once)."""
    shutdown_timeout: float = 5.0
    """On SIGTERM: bound on leadership transfer plus answering requests in flight."""
    progress_interval: float = 10.0
    """Watch progress notifications for watches that asked for them."""
    limits: Limits = attrs.field(factory=Limits)
    socket_options: SocketOptions = attrs.field(factory=SocketOptions)
    test_admin_url: str = ""
    """If set, bind a test-only admin socket there (partition injection). Off by default."""
    seed: int | None = None
    """Seed of the Raft core's random generator (election jitter); None = from the OS."""

    @property
    def node_id(self) -> int:
        return member_id(self.name)

    @property
    def client_url(self) -> str:
        return self.advertise_client or self.listen_client

    @property
    def peer_url(self) -> str:
        return self.advertise_peer or self.listen_peer

    @property
    def election_timeout_max(self) -> float:
        """Longest election timeout, in seconds."""
        return 2 * self.election_ticks * self.tick_interval

    def validate(self) -> None:
        """Raise ``ValueError`` for a configuration that cannot work."""
        if not self.name:
            raise ValueError("--name is required")
        if self.initial_cluster_state not in (ClusterState.NEW, ClusterState.EXISTING):
            raise ValueError("--initial-cluster-state must be 'new' or 'existing'")
        if self.initial_cluster and self.name not in self.initial_cluster:
            raise ValueError(f"--initial-cluster does not list this member ({self.name})")
        ids: dict[int, str] = {}
        for name in self.initial_cluster:
            other = ids.setdefault(member_id(name), name)
            if other != name:
                raise ValueError(f"members {other!r} and {name!r} hash to the same id")
        if self.tick_interval <= 0:
            raise ValueError("--tick-ms must be positive")
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < --heartbeat-ticks < --election-ticks")
        if self.snapshot_count < 1:
            raise ValueError("--snapshot-count must be positive")
        if self.auto_compaction_retention < 0:
            raise ValueError("--auto-compaction-retention must not be negative")


def min_lease_ttl(election_timeout_max: float) -> int:
    """Shortest lease TTL (seconds): a lease must outlive one leader election (etcd uses
    1.5 election timeouts), so a failover alone never expires it."""
    return max(1, math.ceil(1.5 * election_timeout_max))


def build_parser(prog: str = "pnyx node") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run one pnyx node (a member of a Raft-replicated key-value cluster).",
    )
    add = parser.add_argument
    add("--name", required=True, help="member name (its node id is a hash of it)")
    add("--data-dir", required=True, help="directory for the WAL and snapshots")
    add("--listen-client", default="tcp://127.0.0.1:7101", help="client ROUTER address")
    add("--listen-peer", default="tcp://127.0.0.1:7201", help="peer ROUTER address")
    add("--advertise-client", default="", help="client URL to announce (default: listen)")
    add("--advertise-peer", default="", help="peer URL to announce (default: listen)")
    add(
        "--initial-cluster",
        default="",
        help="name=peer_url,... of the members known at start (default: this one alone)",
    )
    add(
        "--initial-cluster-client",
        default="",
        help="name=client_url,... (optional; members also publish their client URL)",
    )
    add("--initial-cluster-state", choices=("new", "existing"), default="new")
    add("--tick-ms", type=float, default=10.0, help="Raft tick interval (ms)")
    add("--heartbeat-ticks", type=int, default=5)
    add("--election-ticks", type=int, default=30)
    add(
        "--no-lease-reads",
        dest="lease_reads",
        action="store_false",
        help="confirm every linearizable read with a quorum round trip (no leader lease)",
    )
    add(
        "--no-quorum-first",
        dest="quorum_first",
        action="store_false",
        help="send every new entry to every follower at once, even at low load",
    )
    add("--snapshot-count", type=int, default=10_000, help="applied entries per snapshot")
    add(
        "--snapshot-inline",
        action="store_true",
        help="encode snapshots on the loop thread instead of in a forked child",
    )
    add(
        "--auto-compaction-retention",
        type=int,
        default=0,
        help="keep this many revisions of history, compacting older ones (0: never)",
    )
    add("--request-timeout", type=float, default=3.0, help="seconds")
    add("--shutdown-timeout", type=float, default=5.0, help="seconds")
    add("--max-message-bytes", type=int, default=Limits().max_message_bytes)
    add("--min-lease-ttl", type=int, default=0, help="seconds (default: from election timeout)")
    add("--seed", type=int, default=None, help=argparse.SUPPRESS)
    add("--test-admin", default="", help=argparse.SUPPRESS)
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Build and validate a ``NodeConfig`` from parsed arguments (``ValueError`` if bad)."""
    initial_cluster = parse_cluster(args.initial_cluster)
    if not initial_cluster:
        initial_cluster = {args.name: args.advertise_peer or args.listen_peer}
    tick = args.tick_ms / 1000.0
    election_timeout_max = 2 * args.election_ticks * tick
    limits = Limits(
        max_message_bytes=args.max_message_bytes,
        min_lease_ttl=args.min_lease_ttl or min_lease_ttl(election_timeout_max),
    )
    socket_options = SocketOptions(
        max_client_message_bytes=2 * limits.max_message_bytes + (64 << 10)
    )
    config = NodeConfig(
        name=args.name,
        data_dir=args.data_dir,
        listen_client=args.listen_client,
        listen_peer=args.listen_peer,
        advertise_client=args.advertise_client,
        advertise_peer=args.advertise_peer,
        initial_cluster=initial_cluster,
        initial_cluster_client=parse_cluster(args.initial_cluster_client),
        initial_cluster_state=args.initial_cluster_state,
        tick_interval=tick,
        heartbeat_ticks=args.heartbeat_ticks,
        election_ticks=args.election_ticks,
        lease_reads=args.lease_reads,
        quorum_first=args.quorum_first,
        snapshot_count=args.snapshot_count,
        snapshot_in_child=not args.snapshot_inline,
        auto_compaction_retention=args.auto_compaction_retention,
        request_timeout=args.request_timeout,
        shutdown_timeout=args.shutdown_timeout,
        limits=limits,
        socket_options=socket_options,
        test_admin_url=args.test_admin,
        seed=args.seed,
    )
    config.validate()
    return config


def parse_node_args(argv: Sequence[str] | None = None) -> tuple[NodeConfig, str]:
    """Parse a ``pnyx node`` command line: the config and the log level. Exits with a
    usage message on bad arguments (argparse's convention)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return config_from_args(args), str(args.log_level)
    except ValueError as error:
        parser.error(str(error))
