"""The transaction builders ``cmp`` and ``op``."""

from __future__ import annotations

import pytest

from pnyx.clients import Client, cmp, op
from pnyx.core import errors
from pnyx.core.wire import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
    validate_request,
)


def test_each_operator_builds_the_matching_compare() -> None:
    assert (cmp.version("k") == 0) == Compare(CompareTarget.VERSION, CompareResult.EQUAL, b"k", 0)
    assert (cmp.value("k") != "x") == Compare(
        CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"k", b"x"
    )
    assert (cmp.create("k") < 5) == Compare(CompareTarget.CREATE, CompareResult.LESS, b"k", 5)
    assert (cmp.mod("k") > 5) == Compare(CompareTarget.MOD, CompareResult.GREATER, b"k", 5)
    assert (cmp.lease("k") == 7) == Compare(CompareTarget.LEASE, CompareResult.EQUAL, b"k", 7)


def test_compares_over_a_prefix_or_a_range() -> None:
    assert (cmp.version("p/", prefix=True) > 0).range_end == b"p0"
    assert (cmp.mod("a", range_end="c") < 9).range_end == b"c"


def test_wrong_value_types_and_operators_are_refused() -> None:
    with pytest.raises(errors.InvalidRequestError, match="compares an int"):
        _ = cmp.version("k") == "0"
    with pytest.raises(errors.InvalidRequestError, match="compares an int"):
        _ = cmp.mod("k") == True  # noqa: E712 - a bool is not a revision
    with pytest.raises(errors.InvalidRequestError, match="bytes or str"):
        _ = cmp.value("k") == 3
    with pytest.raises(errors.InvalidRequestError, match="only"):
        _ = cmp.version("k") <= 3
    with pytest.raises(errors.InvalidRequestError, match="not a bool"):
        bool(cmp.version("k"))


def test_ops_build_requests_that_pass_the_wire_validation() -> None:
    txn = op.txn(
        [cmp.version("a") == 0],
        [op.put("a", "1", lease=3, prev_kv=True), op.get("b", prefix=True, limit=2)],
        [op.delete("c", range_end="d"), op.txn([], [op.get("a")])],
    )
    assert txn.success[0] == PutRequest(b"a", b"1", 3, True)
    assert isinstance(txn.success[1], RangeRequest) and txn.success[1].limit == 2
    assert txn.failure[0] == DeleteRangeRequest(b"c", b"d")
    assert isinstance(txn.failure[1], TxnRequest)
    validate_request(txn)


def test_clients_expose_the_same_builders() -> None:
    assert Client.cmp is cmp
    assert Client.op is op
