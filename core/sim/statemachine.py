"""The replicated state machine the simulation runs on every node, behind a small interface
so that the real ``pnyx.core.kv`` store can be plugged in later.

``SimKV`` is a dict of registers with write and compare-and-set commands carried in Raft
entries, and client sessions (client id + sequence number) so that a retried command is
applied once and its duplicates get the first result. Reads do not go through the log:
they are served from ``read`` after a ReadIndex round. ``pnyx.core.sim.kvadapter`` puts
the real ``pnyx.core.kv`` store behind the same interface.

A state machine must be deterministic: the same entries in the same order give the same
results and the same snapshot bytes, on every node. It must never look at time, randomness
or anything outside the entries it is given.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import msgpack  # type: ignore[import-untyped]

from pnyx.core.sim.history import Value


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> object:
        """Apply one committed NORMAL entry (``data`` may be empty: a leader's no-op)."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class KVStateMachine(StateMachine, Protocol):
    """What the simulation's clients need: commands encoded for the log, outcomes as
    ``Applied`` from ``apply``, and local reads (served once a ReadIndex is applied)."""

    def encode(self, command: Command) -> bytes: ...

    def read(self, key: str) -> Value: ...


@attrs.frozen
class Command:
    """A write or compare-and-set from a client session."""

    client: int
    seq: int
    key: str
    value: str
    cas: bool = False
    expected: Value = None

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(
            [self.client, self.seq, self.key, self.value, self.cas, self.expected]
        )
        return data

    @staticmethod
    def decode(data: bytes) -> Command:
        client, seq, key, value, cas, expected = msgpack.unpackb(data)
        return Command(client, seq, key, value, cas, expected)


@attrs.frozen
class Applied:
    """The outcome of one applied command. ``stale`` marks a command older than the last
    one its session applied: it was not applied and its outcome is unknown here."""

    client: int
    seq: int
    succeeded: bool
    duplicate: bool = False
    stale: bool = False


@attrs.define
class SimKV:
    registers: dict[str, str] = attrs.field(factory=dict)
    sessions: dict[int, tuple[int, bool]] = attrs.field(factory=dict)
    """client id -> (last applied seq, its outcome). Clients issue one command at a time,
    so the last one is all a session needs to remember."""
    applied_index: int = 0

    def encode(self, command: Command) -> bytes:
        return command.encode()

    def apply(self, index: int, data: bytes) -> Applied | None:
        self.applied_index = index
        if not data:
            return None
        command = Command.decode(data)
        last = self.sessions.get(command.client)
        if last is not None and command.seq <= last[0]:
            if command.seq == last[0]:
                return Applied(command.client, command.seq, last[1], duplicate=True)
            return Applied(command.client, command.seq, False, stale=True)
        current = self.registers.get(command.key)
        succeeded = not command.cas or current == command.expected
        if succeeded:
            self.registers[command.key] = command.value
        self.sessions[command.client] = (command.seq, succeeded)
        return Applied(command.client, command.seq, succeeded)

    def read(self, key: str) -> Value:
        return self.registers.get(key)

    def snapshot(self) -> bytes:
        # Sorted so that equal states give equal bytes on every node.
        data: bytes = msgpack.packb(
            [
                self.applied_index,
                sorted(self.registers.items()),
                sorted([client, seq, ok] for client, (seq, ok) in self.sessions.items()),
            ]
        )
        return data

    def restore(self, data: bytes) -> None:
        applied_index, registers, sessions = msgpack.unpackb(data)
        self.applied_index = applied_index
        self.registers = {key: value for key, value in registers}
        self.sessions = {client: (seq, ok) for client, seq, ok in sessions}
