"""What the client methods return: small frozen values shaped like etcd's responses, with
the store revision lifted to ``.revision`` so callers need not reach into the header.

``KeyValue``, ``Event``, ``EventType`` and ``Member`` are the wire classes themselves
(re-exported by ``pnyx.clients``): keys and values are always ``bytes`` here, whatever the
caller passed in.

This module holds plain data only; it must never do I/O or import anything of pnyx but
``core.wire``.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from pnyx.core.wire import Event, KeyValue, Member, ResponseHeader

__all__ = [
    "CompactResult",
    "DeleteResult",
    "GetResult",
    "LeaseGrantResult",
    "LeaseKeepAliveResult",
    "LeaseListResult",
    "LeaseTimeToLiveResult",
    "MemberAddResult",
    "MemberListResult",
    "MemberPromoteResult",
    "MemberRemoveResult",
    "OpResult",
    "PutResult",
    "StatusResult",
    "TxnResult",
    "WatchBatch",
]

_NO_HEADER = ResponseHeader()


@attrs.frozen
class GetResult:
    """A range read. ``revision`` is the store revision the read was served at."""

    revision: int
    kvs: tuple[KeyValue, ...] = ()
    count: int = 0
    """Keys in the range, ignoring ``limit``."""
    more: bool = False
    """More keys matched than ``limit`` let through."""
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class PutResult:
    revision: int
    """The revision of this write."""
    prev_kv: KeyValue | None = None
    """The key before the write, if asked for with ``prev_kv=True`` and it existed."""
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class DeleteResult:
    revision: int
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class TxnResult:
    revision: int
    succeeded: bool = False
    """Whether every compare held (the success branch ran)."""
    responses: tuple[OpResult, ...] = ()
    """One result per op of the branch that ran, in order."""
    header: ResponseHeader = _NO_HEADER


OpResult: TypeAlias = GetResult | PutResult | DeleteResult | TxnResult
"""The result of one op inside a transaction."""


@attrs.frozen
class CompactResult:
    revision: int
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class LeaseGrantResult:
    id: int
    ttl: int
    """Seconds granted (the leader may raise a short TTL to its minimum)."""
    revision: int = 0
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class LeaseKeepAliveResult:
    id: int
    ttl: int
    """Seconds left after the refresh."""
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class LeaseTimeToLiveResult:
    id: int
    ttl: int
    """Seconds left; -1 if the lease has expired or never existed."""
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class LeaseListResult:
    leases: tuple[int, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class MemberListResult:
    members: tuple[Member, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class MemberAddResult:
    member: Member
    members: tuple[Member, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class MemberRemoveResult:
    members: tuple[Member, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class MemberPromoteResult:
    members: tuple[Member, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class StatusResult:
    """One member's view of itself and of the cluster."""

    endpoint: str
    """The client endpoint that answered."""
    member_id: int
    leader: int
    """Member id of the leader as this member knows it, 0 if none."""
    revision: int = 0
    raft_term: int = 0
    raft_index: int = 0
    raft_applied_index: int = 0
    version: str = ""
    db_size: int = 0
    is_learner: bool = False
    errors: tuple[str, ...] = ()
    header: ResponseHeader = _NO_HEADER


@attrs.frozen
class WatchBatch:
    """Everything a watch delivers for one revision: all of that revision's events that
    match the watch, together. A progress notification is a batch without events and with
    ``progress_notify`` set: every change up to ``revision`` has been delivered."""

    revision: int
    events: tuple[Event, ...] = ()
    progress_notify: bool = False
