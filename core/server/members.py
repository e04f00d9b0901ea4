"""The member table: who is in the cluster, under which name, at which addresses.

``MemberTable`` is replicated state: it changes only when a committed configuration
change or a member's published client URL is applied, and it is part of every snapshot,
so all members agree on it. The context of a configuration change (opaque to Raft)
carries the new member's name and URLs (``MemberContext``).

Server commands: a Raft entry whose data starts with the byte ``0xC1`` (a byte msgpack
never produces first) is a command for the server itself rather than for the key-value
state machine; ``PublishMember`` (a member announcing its client URL) is the only one.
The same prefix marks the one peer message that is not a Raft message: the notice that
tells a removed member it was removed (``encode_removed_notice``). A removed member
may never learn that its removal committed (the leader stops replicating to it), so
members tell it, when they apply the removal and whenever it contacts them after.

Node ids of removed members are remembered (``MemberTable.removed``) so that such a node
is recognised; adding a member of the same name again makes the id current again.

This module is pure data and encoding: it must never touch sockets, files or clocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information

from pnyx.core.raft.types import ConfChange, ConfChangeType, ConfState
from pnyx.core.wire.messages import Member

__all__ = [
    "SERVER_COMMAND_PREFIX",
    "MemberContext",
    "MemberRecord",
    "MemberTable",
    "PublishMember",
    "decode_removed_notice",
    "decode_server_command",
    "encode_removed_notice",
    "encode_server_command",
    "is_server_command",
]

SERVER_COMMAND_PREFIX = b"\xc1"
"""First byte of a server command in a Raft entry. 0xC1 is the one byte the msgpack spec
never uses, and key-value commands are msgpack, so the two can never be confused."""

_PUBLISH = 0
_REMOVED = "removed"


@attrs.frozen
class MemberContext:
    """What a configuration change tells members about the member it adds."""

    name: str
    peer_url: str
    client_url: str = ""

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb([self.name, self.peer_url, self.client_url])
        return packed

    @classmethod
    def decode(cls, data: bytes) -> MemberContext | None:
        """None for an empty or malformed context (bootstrap entries carry none)."""
        if not data:
            return None
        try:
            value = msgpack.unpackb(data, raw=False)
        except Exception:
            return None
        if (
            type(value) is not list
            or len(value) != 3
            or not all(type(item) is str for item in value)
        ):
            return None
        return cls(value[0], value[1], value[2])


@attrs.frozen
class PublishMember:
    """A member announces the client URL it serves on."""

    node_id: int
    name: str
    client_url: str


def is_server_command(data: bytes) -> bool:
    return data[:1] == SERVER_COMMAND_PREFIX


def encode_server_command(command: PublishMember) -> bytes:
    packed: bytes = msgpack.packb([_PUBLISH, command.node_id, command.name, command.client_url])
    return SERVER_COMMAND_PREFIX + packed


def decode_server_command(data: bytes) -> PublishMember | None:
    """None for anything malformed (it is then ignored, identically on every member)."""
    try:
        value = msgpack.unpackb(data[1:], raw=False)
    except Exception:
        return None
    if (
        type(value) is list
        and len(value) == 4
        and value[0] == _PUBLISH
        and type(value[1]) is int
        and type(value[2]) is str
        and type(value[3]) is str
    ):
        return PublishMember(value[1], value[2], value[3])
    return None


def encode_removed_notice(node_id: int) -> bytes:
    """The peer message telling ``node_id`` it is no longer a member."""
    packed: bytes = msgpack.packb([_REMOVED, node_id])
    return SERVER_COMMAND_PREFIX + packed


def decode_removed_notice(data: bytes) -> int | None:
    """The node id a removal notice is for, None if ``data`` is not one."""
    try:
        value = msgpack.unpackb(data[1:], raw=False)
    except Exception:
        return None
    if type(value) is list and len(value) == 2 and value[0] == _REMOVED:
        node_id = value[1]
        return node_id if type(node_id) is int else None
    return None


@attrs.frozen
class MemberRecord:
    node_id: int
    name: str = ""
    peer_url: str = ""
    client_url: str = ""
    is_learner: bool = False

    def to_wire(self) -> Member:
        return Member(
            id=self.node_id,
            name=self.name,
            peer_urls=(self.peer_url,) if self.peer_url else (),
            client_urls=(self.client_url,) if self.client_url else (),
            is_learner=self.is_learner,
        )


@attrs.define
class MemberTable:
    """Members by node id. Iteration is in ascending id order (never hash order)."""

    _members: dict[int, MemberRecord] = attrs.Factory(dict)
    _removed: set[int] = attrs.Factory(set)

    @property
    def removed(self) -> frozenset[int]:
        """Ids of members removed by a committed change (and not added again)."""
        return frozenset(self._removed)

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[MemberRecord]:
        return iter([self._members[node_id] for node_id in sorted(self._members)])

    def get(self, node_id: int) -> MemberRecord | None:
        return self._members.get(node_id)

    def by_name(self, name: str) -> MemberRecord | None:
        for record in self:
            if record.name == name:
                return record
        return None

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=frozenset(r.node_id for r in self._members.values() if not r.is_learner),
            learners=frozenset(r.node_id for r in self._members.values() if r.is_learner),
        )

    def to_wire(self) -> tuple[Member, ...]:
        return tuple(record.to_wire() for record in self)

    def apply_conf_change(
        self, change: ConfChange, known: MemberRecord | None = None
    ) -> MemberRecord | None:
        """Apply one committed change. The name and URLs come from the change's context,
        else from ``known`` (what this node knew of that id, e.g. from its initial cluster
        flags: bootstrap entries carry no context), else from the current record.
        Returns the member's record after the change (None once removed)."""
        node_id = change.node_id
        if change.type is ConfChangeType.REMOVE_NODE:
            if self._members.pop(node_id, None) is not None:
                self._removed.add(node_id)
            return None
        self._removed.discard(node_id)
        current = self._members.get(node_id) or known or MemberRecord(node_id)
        context = MemberContext.decode(change.context)
        if context is not None:
            current = attrs.evolve(
                current,
                name=context.name or current.name,
                peer_url=context.peer_url or current.peer_url,
                client_url=context.client_url or current.client_url,
            )
        record = attrs.evolve(
            current,
            node_id=node_id,
            is_learner=change.type is ConfChangeType.ADD_LEARNER,
        )
        self._members[node_id] = record
        return record

    def publish(self, command: PublishMember) -> MemberRecord | None:
        """Apply a published client URL (ignored for an id that is not a member)."""
        current = self._members.get(command.node_id)
        if current is None:
            return None
        record = attrs.evolve(
            current, name=command.name or current.name, client_url=command.client_url
        )
        self._members[command.node_id] = record
        return record

    def dump(self) -> list[Any]:
        """``[members, removed ids]``, sorted: identical tables give identical bytes."""
        return [
            [[r.node_id, r.name, r.peer_url, r.client_url, r.is_learner] for r in self],
            sorted(self._removed),
        ]

    @classmethod
    def load(cls, dumped: Any) -> MemberTable:
        """The inverse of ``dump``; raises ``ValueError`` if malformed."""
        table = cls()
        if type(dumped) is not list or len(dumped) != 2:
            raise ValueError("member table: expected [members, removed]")
        members, removed = dumped
        if type(members) is not list or type(removed) is not list:
            raise ValueError("member table: expected [members, removed]")
        if not all(type(node_id) is int for node_id in removed):
            raise ValueError("member table: malformed removed id")
        table._removed = set(removed)
        for item in members:
            if (
                type(item) is not list
                or len(item) != 5
                or type(item[0]) is not int
                or not all(type(value) is str for value in item[1:4])
                or type(item[4]) is not bool
            ):
                raise ValueError("member table: malformed member")
            table._members[item[0]] = MemberRecord(*item)
        return table
