"""Simulated clients: each issues one operation at a time (read, write or compare-and-set
on a few shared keys) to a random node, retries on errors and timeouts at another node
with the same session sequence number (so a retried write applies once), and records the
operation in the history with its virtual call and return stamps.

A client may also crash while an operation is outstanding: the operation stays pending
forever (it may or may not have taken effect) and the client comes back with a new
session. Clients decide only from their own seeded generator; they must never peek at the
cluster's internal state to decide what happened.
"""

from __future__ import annotations

import random

import attrs

from pnyx.core.sim.history import Operation, OpKind, Value


@attrs.define
class OutstandingOp:
    id: int
    kind: OpKind
    key: str
    call: int
    seq: int
    value: Value = None
    expected: Value = None
    attempt: int = 0
    node: int = 0


@attrs.define
class Client:
    slot: int
    session: int
    """The client id the state machine's session table knows; new after a crash."""
    rng: random.Random
    seq: int = 0
    current: OutstandingOp | None = None
    known: dict[str, Value] = attrs.field(factory=dict)
    """The last value this client saw or wrote per key (to make CAS often succeed)."""

    def next_op(self, op_id: int, keys: list[str], now_stamp: int) -> OutstandingOp:
        key = self.rng.choice(keys)
        roll = self.rng.random()
        if roll < 0.4:
            op = OutstandingOp(op_id, OpKind.READ, key, now_stamp, seq=0)
        else:
            self.seq += 1
            value = f"{self.session}.{self.seq}"
            if roll < 0.75:
                op = OutstandingOp(op_id, OpKind.WRITE, key, now_stamp, self.seq, value)
            else:
                expected = self.known.get(key) if self.rng.random() < 0.8 else None
                op = OutstandingOp(op_id, OpKind.CAS, key, now_stamp, self.seq, value, expected)
        self.current = op
        return op


@attrs.define
class HistoryRecorder:
    operations: list[Operation] = attrs.field(factory=list)
    next_id: int = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def complete(
        self,
        client: Client,
        op: OutstandingOp,
        ret: int,
        *,
        observed: Value = None,
        succeeded: bool | None = None,
    ) -> None:
        self.operations.append(
            Operation(
                op.id,
                client.session,
                op.kind,
                op.key,
                op.call,
                ret,
                value=op.value,
                expected=op.expected,
                observed=observed,
                succeeded=succeeded,
            )
        )
        if op.kind is OpKind.READ:
            client.known[op.key] = observed
        elif op.kind is OpKind.WRITE or succeeded:
            client.known[op.key] = op.value
        client.current = None

    def abandon(self, client: Client, op: OutstandingOp) -> None:
        """The client gave up without knowing the outcome: a write may still take effect
        (any attempt may be in the log), a read is simply forgotten."""
        if op.kind is not OpKind.READ:
            self.operations.append(
                Operation(
                    op.id,
                    client.session,
                    op.kind,
                    op.key,
                    op.call,
                    None,
                    value=op.value,
                    expected=op.expected,
                )
            )
        client.current = None
