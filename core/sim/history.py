"""Client histories: the operations a simulated client issued, with their virtual call and
return times and what they observed.

A history is what the linearizability checker judges. Values are plain data; nothing here
knows about Raft, the network or the state machine, and nothing here may mutate an
operation once it is recorded (an operation that has not returned is simply recorded with
``ret=None``).
"""

from __future__ import annotations

import enum

import attrs

Value = str | None
"""A register value; ``None`` means the key does not exist."""


class OpKind(enum.Enum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"


@attrs.frozen
class Operation:
    """One client operation on one key.

    ``call`` and ``ret`` are virtual timestamps; an operation ``a`` precedes ``b`` in real
    time exactly when ``a.ret < b.call`` (equal stamps count as concurrent). ``ret`` is None
    when the client never learned the outcome (timeout, client crash): such an operation
    may take effect at any time after its call, or never.
    """

    id: int
    client: int
    kind: OpKind
    key: str
    call: int
    ret: int | None
    value: Value = None
    """WRITE: the value written. CAS: the new value. READ: unused."""
    expected: Value = None
    """CAS: the value the key must hold for the swap to happen."""
    observed: Value = None
    """READ: the value returned (only meaningful when ``ret`` is not None)."""
    succeeded: bool | None = None
    """CAS: whether the swap happened (only meaningful when ``ret`` is not None)."""

    @property
    def pending(self) -> bool:
        return self.ret is None

    def describe(self) -> str:
        """A one-line human description, e.g. ``#7 c2 cas(k1, 'a'->'b')=ok [10, 15]``."""
        end = "…" if self.ret is None else str(self.ret)
        if self.kind is OpKind.READ:
            what = f"read({self.key})" + ("" if self.ret is None else f"={self.observed!r}")
        elif self.kind is OpKind.WRITE:
            what = f"write({self.key}, {self.value!r})"
        else:
            outcome = "" if self.ret is None else ("=ok" if self.succeeded else "=fail")
            what = f"cas({self.key}, {self.expected!r}->{self.value!r}){outcome}"
        return f"#{self.id} c{self.client} {what} [{self.call}, {end}]"
