"""A linearizability checker for key-value register histories (read, write, compare-and-set).

The algorithm is Wing & Gong's search as improved by Lowe: walk a linked list of call and
return events, tentatively linearize any operation whose call comes before the first
pending return, back-track on failure, and memoize the pairs (set of linearized operations,
model state) already explored so that no configuration is searched twice. Keys are
independent registers, so the history is split per key and each part is checked alone
(P-compositionality): the whole history is linearizable iff every part is.

Operations that never returned may take effect at any point after their call, or never:
pending reads are dropped (they have no effect), pending writes and compare-and-sets are
kept but need not be linearized for the search to succeed.

This module is pure: it must never look at anything but the operations it is given.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import attrs

from pnyx.core.sim.history import Operation, OpKind, Value

DEFAULT_STATE_BUDGET = 2_000_000
"""Memoized configurations one key may explore before the checker gives up (``UNKNOWN``)."""


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown (search budget exhausted)"


@attrs.frozen
class CheckResult:
    verdict: Verdict
    key: str | None = None
    """The first key (in sorted order) whose history is not linearizable."""
    culprit: Operation | None = None
    """The operation whose completion first makes the history unexplainable."""
    ops: tuple[Operation, ...] = ()
    """The operations of ``key`` up to the culprit's return: the explanation."""
    explored: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    def explain(self, limit: int = 16) -> str:
        if self.ok:
            return "linearizable"
        if self.verdict is Verdict.UNKNOWN:
            return f"key {self.key!r}: search budget exhausted after {self.explored} states"
        assert self.culprit is not None
        lines = [
            f"key {self.key!r}: no linearization explains {self.culprit.describe()} "
            f"given the {len(self.ops)} operations called before it returned"
        ]
        shown = self.ops[-limit:]
        if len(shown) < len(self.ops):
            lines.append(f"  ... {len(self.ops) - len(shown)} earlier operations")
        lines.extend("  " + op.describe() for op in shown)
        return "\n".join(lines)


def step(state: Value, op: Operation) -> tuple[bool, Value]:
    """The sequential register model: can ``op`` happen in ``state``, and what follows."""
    if op.kind is OpKind.READ:
        return state == op.observed, state
    if op.kind is OpKind.WRITE:
        return True, op.value
    if op.ret is None:  # outcome unknown: whatever the state says happens
        return True, (op.value if state == op.expected else state)
    if op.succeeded:
        return state == op.expected, op.value
    return state != op.expected, state


def check_history(
    ops: Iterable[Operation], *, state_budget: int = DEFAULT_STATE_BUDGET
) -> CheckResult:
    """Check a whole multi-key history. Keys are checked in sorted order; the first key
    that is not linearizable (or exhausts the budget) decides the result."""
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    explored = 0
    for key in sorted(by_key):
        verdict, count = _search(by_key[key], state_budget)
        explored += count
        if verdict is Verdict.UNKNOWN:
            return CheckResult(Verdict.UNKNOWN, key=key, explored=explored)
        if verdict is Verdict.NOT_LINEARIZABLE:
            culprit, prefix = _minimal_failing_prefix(by_key[key], state_budget)
            return CheckResult(
                Verdict.NOT_LINEARIZABLE,
                key=key,
                culprit=culprit,
                ops=tuple(prefix),
                explored=explored,
            )
    return CheckResult(Verdict.LINEARIZABLE, explored=explored)


def _minimal_failing_prefix(
    ops: Sequence[Operation], state_budget: int
) -> tuple[Operation, list[Operation]]:
    """Find the earliest return after which the history can no longer be explained.

    Linearizability is prefix-closed (cut a history at time t, turn operations still
    running at t into pending ones: a linearizable history stays linearizable), so the
    failing cut points form a suffix of the return times and binary search finds the first.
    """
    completed = sorted((op for op in ops if op.ret is not None), key=_ret_key)
    low, high = 0, len(completed) - 1  # the cut at completed[high] is known to fail
    while low < high:
        mid = (low + high) // 2
        verdict, _ = _search(_cut(ops, completed[mid]), state_budget)
        if verdict is Verdict.NOT_LINEARIZABLE:
            high = mid
        else:
            low = mid + 1
    culprit = completed[high]
    prefix = sorted(_cut(ops, culprit), key=lambda op: (op.call, op.id))
    return culprit, prefix


def _ret_key(op: Operation) -> tuple[int, int]:
    assert op.ret is not None
    return op.ret, op.id


def _cut(ops: Sequence[Operation], last: Operation) -> list[Operation]:
    """The history as seen just after ``last`` returned."""
    assert last.ret is not None
    limit = (last.ret, last.id)
    out: list[Operation] = []
    for op in ops:
        if op.call > last.ret:
            continue
        if op.ret is not None and (op.ret, op.id) > limit:
            out.append(attrs.evolve(op, ret=None))
        else:
            out.append(op)
    return out


def _search(ops: Sequence[Operation], state_budget: int) -> tuple[Verdict, int]:
    """WGL/Lowe search over the history of one key."""
    # Pending reads have no effect and nothing to explain.
    history = [op for op in ops if not (op.ret is None and op.kind is OpKind.READ)]
    n = len(history)
    if n == 0:
        return Verdict.LINEARIZABLE, 0

    # Events: (time, 0 for call / 1 for return, op position). At equal times calls sort
    # before returns, so equal stamps are treated as overlapping.
    events: list[tuple[int, int, int]] = []
    for position, op in enumerate(history):
        events.append((op.call, 0, position))
        if op.ret is not None:
            events.append((op.ret, 1, position))
    events.sort()

    # Doubly linked list over event slots 1..E, with slot 0 as the head sentinel and
    # E + 1 as the tail sentinel.
    size = len(events)
    nxt = list(range(1, size + 3))
    prv = [-1, *range(0, size + 1)]
    is_call = [False] * (size + 2)
    op_of = [-1] * (size + 2)
    return_slot = [-1] * n
    call_slot = [-1] * n
    for slot, (_, kind, position) in enumerate(events, start=1):
        op_of[slot] = position
        if kind == 0:
            is_call[slot] = True
            call_slot[position] = slot
        else:
            return_slot[position] = slot
    tail = size + 1

    def unlink(slot: int) -> None:
        nxt[prv[slot]] = nxt[slot]
        prv[nxt[slot]] = prv[slot]

    def relink(slot: int) -> None:
        nxt[prv[slot]] = slot
        prv[nxt[slot]] = slot

    remaining = sum(1 for op in history if op.ret is not None)
    state: Value = None
    linearized = 0
    seen: set[tuple[int, Value]] = set()
    stack: list[tuple[int, Value]] = []
    slot = nxt[0]
    while remaining > 0:
        if slot != tail and is_call[slot]:
            position = op_of[slot]
            op = history[position]
            possible, new_state = step(state, op)
            if possible:
                new_linearized = linearized | (1 << position)
                configuration = (new_linearized, new_state)
                if configuration not in seen:
                    if len(seen) >= state_budget:
                        return Verdict.UNKNOWN, len(seen)
                    seen.add(configuration)
                    stack.append((slot, state))
                    state = new_state
                    linearized = new_linearized
                    unlink(slot)
                    if return_slot[position] >= 0:
                        unlink(return_slot[position])
                        remaining -= 1
                    slot = nxt[0]
                    continue
            slot = nxt[slot]
            continue
        # A return (or the end of the list) with completed operations left: the
        # operations tried so far cannot be linearized this way; undo the latest one.
        if not stack:
            return Verdict.NOT_LINEARIZABLE, len(seen)
        slot, state = stack.pop()
        position = op_of[slot]
        linearized &= ~(1 << position)
        if return_slot[position] >= 0:
            relink(return_slot[position])
            remaining += 1
        relink(slot)
        slot = nxt[slot]
    return Verdict.LINEARIZABLE, len(seen)
