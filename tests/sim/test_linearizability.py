"""The WGL checker agrees with a brute-force oracle on many small random histories."""

from __future__ import annotations

import itertools
import random

from pnyx.core.sim.history import Operation, OpKind, Value
from pnyx.core.sim.linearizability import Verdict, check_history

KEYS = ("a", "b")
VALUES = (None, "x", "y", "z")


def _precedes(a: Operation, b: Operation) -> bool:
    return a.ret is not None and a.ret < b.call


def _sequentially_valid(order: tuple[Operation, ...]) -> bool:
    """Run the operations one after the other against a dict of registers."""
    registers: dict[str, Value] = {}
    for op in order:
        current = registers.get(op.key)
        if op.kind is OpKind.READ:
            if current != op.observed:
                return False
        elif op.kind is OpKind.WRITE:
            registers[op.key] = op.value
        elif op.ret is None:
            if current == op.expected:
                registers[op.key] = op.value
        elif op.succeeded:
            if current != op.expected:
                return False
            registers[op.key] = op.value
        elif current == op.expected:
            return False
    return True


def brute_force_linearizable(ops: list[Operation]) -> bool:
    """Every subset of the pending operations, every permutation that respects real-time
    order: is one of them a valid sequential execution? No partitioning, no memo."""
    completed = [op for op in ops if op.ret is not None]
    pending = [op for op in ops if op.ret is None and op.kind is not OpKind.READ]
    for size in range(len(pending) + 1):
        for chosen in itertools.combinations(pending, size):
            included = completed + list(chosen)
            for order in itertools.permutations(included):
                if any(
                    _precedes(order[j], order[i])
                    for i in range(len(order))
                    for j in range(i + 1, len(order))
                ):
                    continue
                if _sequentially_valid(order):
                    return True
    return False


def _intervals(rng: random.Random, count: int, horizon: int) -> list[tuple[int, int]]:
    spans = []
    for _ in range(count):
        call = rng.randrange(0, horizon)
        spans.append((call, call + rng.randrange(0, 8)))  # ties and zero-length included
    return spans


def linearizable_history(rng: random.Random, count: int, horizon: int = 20) -> list[Operation]:
    """Ops given random linearization points inside their intervals, outputs computed by
    running them in that order; some are then made pending (those may or may not have
    taken effect)."""
    spans = _intervals(rng, count, horizon)
    points = [rng.uniform(call, ret) for call, ret in spans]
    registers: dict[str, Value] = {}
    by_point = sorted(range(count), key=lambda i: points[i])
    ops: dict[int, Operation] = {}
    for i in by_point:
        call, ret = spans[i]
        key = rng.choice(KEYS)
        kind = rng.choice(list(OpKind))
        current = registers.get(key)
        pending = rng.random() < 0.2
        ret_or_none = None if pending else ret
        if kind is OpKind.READ:
            ops[i] = Operation(i, i, kind, key, call, ret_or_none, observed=current)
        elif kind is OpKind.WRITE:
            value = rng.choice(VALUES[1:])
            if not pending or rng.random() < 0.5:
                registers[key] = value
            ops[i] = Operation(i, i, kind, key, call, ret_or_none, value=value)
        else:
            expected = current if rng.random() < 0.6 else rng.choice(VALUES)
            value = rng.choice(VALUES[1:])
            succeeded = current == expected
            if succeeded and (not pending or rng.random() < 0.5):
                registers[key] = value
            ops[i] = Operation(
                i, i, kind, key, call, ret_or_none, value, expected, succeeded=succeeded
            )
    return [ops[i] for i in range(count)]


def mutate(rng: random.Random, ops: list[Operation]) -> list[Operation]:
    """Change one observed outcome: the result is often (not always) not linearizable."""
    out = list(ops)
    candidates = [i for i, op in enumerate(out) if op.ret is not None and op.kind != OpKind.WRITE]
    if not candidates:
        return out
    i = rng.choice(candidates)
    op = out[i]
    if op.kind is OpKind.READ:
        others = [v for v in VALUES if v != op.observed]
        out[i] = Operation(
            op.id, op.client, op.kind, op.key, op.call, op.ret, observed=rng.choice(others)
        )
    else:
        out[i] = Operation(
            op.id,
            op.client,
            op.kind,
            op.key,
            op.call,
            op.ret,
            op.value,
            op.expected,
            succeeded=not op.succeeded,
        )
    return out


def test_checker_agrees_with_brute_force_on_random_histories() -> None:
    rng = random.Random(20240601)
    outcomes = {True: 0, False: 0}
    for _ in range(2000):
        count = rng.randrange(1, 8)
        ops = linearizable_history(rng, count)
        if rng.random() < 0.6:
            ops = mutate(rng, ops)
        expected = brute_force_linearizable(ops)
        result = check_history(ops)
        assert result.verdict is not Verdict.UNKNOWN
        assert result.ok == expected, [op.describe() for op in ops]
        outcomes[expected] += 1
    # Both kinds must be well represented, or the agreement proves little.
    assert outcomes[True] > 300
    assert outcomes[False] > 300


def test_histories_built_linearizable_are_accepted_even_when_long() -> None:
    rng = random.Random(7)
    for _ in range(20):
        # About eight operations overlap at any time, like the simulator's clients.
        ops = linearizable_history(rng, 300, horizon=300)
        assert check_history(ops).ok


def test_stale_read_after_acknowledged_write_is_rejected_with_explanation() -> None:
    ops = [
        Operation(0, 1, OpKind.WRITE, "k", 0, 5, value="x"),
        Operation(1, 2, OpKind.WRITE, "k", 6, 9, value="y"),
        Operation(2, 3, OpKind.READ, "k", 10, 12, observed="x"),
        Operation(3, 4, OpKind.READ, "other", 0, 100, observed=None),
    ]
    result = check_history(ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.key == "k"
    assert result.culprit is not None and result.culprit.id == 2
    assert [op.id for op in result.ops] == [0, 1, 2]
    assert "#2" in result.explain()


def test_pending_write_may_take_effect_late_or_never() -> None:
    never = [
        Operation(0, 1, OpKind.WRITE, "k", 0, None, value="x"),
        Operation(1, 2, OpKind.READ, "k", 5, 6, observed=None),
    ]
    late = [*never, Operation(2, 3, OpKind.READ, "k", 10, 11, observed="x")]
    assert check_history(never).ok
    assert check_history(late).ok
    flip_back = [*late, Operation(3, 4, OpKind.READ, "k", 12, 13, observed=None)]
    assert not check_history(flip_back).ok


def test_pending_write_cannot_take_effect_before_its_call() -> None:
    ops = [
        Operation(0, 1, OpKind.READ, "k", 0, 2, observed="x"),
        Operation(1, 2, OpKind.WRITE, "k", 3, None, value="x"),
    ]
    assert not check_history(ops).ok


def test_failed_cas_must_see_a_different_value() -> None:
    ops = [
        Operation(0, 1, OpKind.WRITE, "k", 0, 1, value="x"),
        Operation(1, 2, OpKind.CAS, "k", 2, 3, value="y", expected="x", succeeded=False),
    ]
    assert not check_history(ops).ok
    concurrent_writer = [*ops, Operation(2, 3, OpKind.WRITE, "k", 2, 4, value="z")]
    assert check_history(concurrent_writer).ok


def test_budget_exhaustion_is_reported_as_unknown() -> None:
    rng = random.Random(3)
    ops = linearizable_history(rng, 60)
    assert check_history(ops, state_budget=3).verdict is Verdict.UNKNOWN
