"""Size limits of the client protocol and the semantic validation of requests.

``Limits`` holds every configurable bound with documented defaults. ``validate_request``
checks a decoded request against them and against the rules of etcd v3 (non-empty keys,
sane ranges, non-negative revisions, at most one put per key in a transaction branch,
...), raising ``InvalidRequestError`` for a malformed request and
``RequestTooLargeError`` for one over a limit. The codec checks field *types*; this
module checks *values*.

This module must never do I/O or import anything of pnyx but ``core.errors`` and its
sibling wire modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from pnyx.core.errors import InvalidRequestError, RequestTooLargeError
from pnyx.core.wire import keys
from pnyx.core.wire.messages import (
    CompactionRequest,
    Compare,
    CompareTarget,
    DeleteRangeRequest,
    Hello,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    MemberAddRequest,
    MemberListRequest,
    MemberPromoteRequest,
    MemberRemoveRequest,
    PutRequest,
    RangeRequest,
    Request,
    RequestOp,
    StatusRequest,
    TxnRequest,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchProgressRequest,
)

KIB = 1024
MIB = 1024 * KIB


@attrs.frozen
class Limits:
    """Bounds on what a node accepts from a client (and a client from a node).

    The defaults suit a small cluster on commodity machines; every one can be changed per
    node. Requests over a bound fail with ``RequestTooLargeError`` and never reach Raft.
    """

    max_message_bytes: int = 4 * MIB
    """One ZeroMQ message (a whole batch). Bounds the memory one read can take; the
    largest single request (one max-size value plus its key) fits with room to spare."""
    max_batch: int = 4096
    """Envelopes (logical requests or responses) in one message."""
    max_key_bytes: int = 8 * KIB
    """One key or range end. etcd has no separate key limit (only its 1.5 MiB request
    limit); 8 KiB is far above any sane key and keeps index memory predictable."""
    max_value_bytes: int = 1536 * KIB
    """One value: 1.5 MiB, etcd's default request limit."""
    max_txn_ops: int = 128
    """Compares, success ops and failure ops of one transaction (each list, at every
    nesting level), as etcd's ``--max-txn-ops``."""
    max_txn_bytes: int = 3 * MIB
    """Keys and values of all puts of one transaction together, so one transaction
    cannot turn into an oversized Raft entry."""
    max_txn_depth: int = 4
    """Transactions nested in transactions, counting the outermost one. Also bounds the
    decoder's recursion, so keep it well under 100."""
    max_client_id_bytes: int = 64
    """The exactly-once client id of an envelope."""
    max_lease_ttl: int = 9_000_000_000
    """Seconds; etcd's ``MaxLeaseTTL``. Longer grants are refused."""
    min_lease_ttl: int = 5
    """Seconds. Shorter grants are raised to this by the leader (as etcd does from its
    election timeout), so a lease cannot expire during one leader election."""
    max_watch_filters: int = 2
    """Filters of one watch (there are only two kinds)."""


DEFAULT_LIMITS = Limits()


def effective_lease_ttl(ttl: int, limits: Limits) -> int:
    """The TTL the leader grants for a requested ``ttl`` (already validated)."""
    return max(ttl, limits.min_lease_ttl)


def validate_request(request: Request, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise ``InvalidRequestError`` or ``RequestTooLargeError`` if ``request`` must be
    refused; return quietly otherwise. The request's field types are assumed correct
    (the codec checked them)."""
    validator = _VALIDATORS.get(type(request))
    if validator is None:
        raise InvalidRequestError(f"{type(request).__name__} is not a request")
    validator(request, limits)


# --------------------------------------------------------------------------- helpers


def _check_key(what: str, key: bytes, limits: Limits) -> None:
    if not key:
        raise InvalidRequestError(f"{what}: key is empty")
    if len(key) > limits.max_key_bytes:
        raise RequestTooLargeError(
            f"{what}: key of {len(key)} bytes exceeds the limit of {limits.max_key_bytes}"
        )


def _check_range(what: str, key: bytes, range_end: bytes, limits: Limits) -> None:
    _check_key(what, key, limits)
    if len(range_end) > limits.max_key_bytes:
        raise RequestTooLargeError(
            f"{what}: range_end of {len(range_end)} bytes exceeds the limit of "
            f"{limits.max_key_bytes}"
        )
    if range_end and range_end != keys.OPEN_END and range_end < key:
        raise InvalidRequestError(
            f"{what}: range_end {range_end!r} sorts before key {key!r} "
            '(use b"\\0" for "every key from key on")'
        )


def _check_non_negative(what: str, **values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise InvalidRequestError(f"{what}: {name} must not be negative, got {value}")


def _check_positive_id(what: str, name: str, value: int) -> None:
    if value <= 0:
        raise InvalidRequestError(f"{what}: {name} must be positive, got {value}")


def _check_revision_bounds(what: str, low: int, high: int, name: str) -> None:
    if low and high and low > high:
        raise InvalidRequestError(f"{what}: min_{name} {low} is above max_{name} {high}")


# --------------------------------------------------------------------------- per type


def _range(request: RangeRequest, limits: Limits) -> None:
    what = "RangeRequest"
    _check_range(what, request.key, request.range_end, limits)
    _check_non_negative(
        what,
        limit=request.limit,
        revision=request.revision,
        min_mod_revision=request.min_mod_revision,
        max_mod_revision=request.max_mod_revision,
        min_create_revision=request.min_create_revision,
        max_create_revision=request.max_create_revision,
    )
    _check_revision_bounds(what, request.min_mod_revision, request.max_mod_revision, "mod_revision")
    _check_revision_bounds(
        what, request.min_create_revision, request.max_create_revision, "create_revision"
    )


def _put(request: PutRequest, limits: Limits) -> None:
    what = "PutRequest"
    _check_key(what, request.key, limits)
    if len(request.value) > limits.max_value_bytes:
        raise RequestTooLargeError(
            f"{what}: value of {len(request.value)} bytes exceeds the limit of "
            f"{limits.max_value_bytes}"
        )
    _check_non_negative(what, lease=request.lease)
    if request.ignore_value and request.value:
        raise InvalidRequestError(f"{what}: ignore_value is set but a value is given")
    if request.ignore_lease and request.lease:
        raise InvalidRequestError(f"{what}: ignore_lease is set but a lease is given")


def _delete_range(request: DeleteRangeRequest, limits: Limits) -> None:
    _check_range("DeleteRangeRequest", request.key, request.range_end, limits)


def _compare(compare: Compare, limits: Limits) -> None:
    what = "Compare"
    _check_range(what, compare.key, compare.range_end, limits)
    if compare.target == CompareTarget.VALUE:
        if not isinstance(compare.value, bytes):
            raise InvalidRequestError(f"{what}: a VALUE compare needs a bytes value")
        if len(compare.value) > limits.max_value_bytes:
            raise RequestTooLargeError(
                f"{what}: value of {len(compare.value)} bytes exceeds the limit of "
                f"{limits.max_value_bytes}"
            )
    elif isinstance(compare.value, bytes | bool):
        raise InvalidRequestError(f"{what}: a {compare.target.name} compare needs an int value")
    elif compare.value < 0:
        raise InvalidRequestError(
            f"{what}: {compare.target.name} value must not be negative, got {compare.value}"
        )


def _txn(request: TxnRequest, limits: Limits) -> None:
    total_bytes = _txn_level(request, limits, depth=1)
    if total_bytes > limits.max_txn_bytes:
        raise RequestTooLargeError(
            f"TxnRequest: puts of {total_bytes} bytes exceed the limit of {limits.max_txn_bytes}"
        )
    _check_branch_writes(request.success)
    _check_branch_writes(request.failure)


def _txn_level(request: TxnRequest, limits: Limits, depth: int) -> int:
    """Validate one transaction and those nested in it; return the bytes of its puts."""
    what = "TxnRequest"
    if depth > limits.max_txn_depth:
        raise RequestTooLargeError(
            f"{what}: transactions nested deeper than {limits.max_txn_depth} levels"
        )
    for name, ops in (
        ("compare", request.compare),
        ("success", request.success),
        ("failure", request.failure),
    ):
        if len(ops) > limits.max_txn_ops:
            raise RequestTooLargeError(
                f"{what}: {len(ops)} {name} operations exceed the limit of {limits.max_txn_ops}"
            )
    for compare in request.compare:
        _compare(compare, limits)
    total = 0
    for op in request.success + request.failure:
        if isinstance(op, TxnRequest):
            total += _txn_level(op, limits, depth + 1)
        elif isinstance(op, PutRequest):
            _put(op, limits)
            total += len(op.key) + len(op.value)
        elif isinstance(op, RangeRequest):
            _range(op, limits)
        elif isinstance(op, DeleteRangeRequest):
            _delete_range(op, limits)
        else:
            raise InvalidRequestError(f"{what}: {type(op).__name__} is not a transaction op")
    return total


def _check_branch_writes(ops: tuple[RequestOp, ...]) -> None:
    """Refuse a branch that writes one key twice, as etcd does: two puts of the same key,
    or a put of a key that a delete in the same branch also covers. Mutually exclusive
    branches of a nested transaction may put the same key."""
    _branch_writes(ops)


def _branch_writes(
    ops: tuple[RequestOp, ...],
) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """The keys put and the ranges deleted by one branch (nested ones included)."""
    deleted = [(op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)]
    put: set[bytes] = set()

    def add_put(key: bytes, allowed_again: set[bytes]) -> None:
        if key in put and key not in allowed_again:
            raise InvalidRequestError(f"TxnRequest: key {key!r} is put twice in one branch")
        if any(keys.in_range(key, start, end) for start, end in deleted):
            raise InvalidRequestError(
                f"TxnRequest: key {key!r} is both put and deleted in one branch"
            )
        put.add(key)

    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        success_puts, success_deletes = _branch_writes(op.success)
        failure_puts, failure_deletes = _branch_writes(op.failure)
        for key in success_puts:
            add_put(key, allowed_again=set())
        # Only one of the nested branches runs, so it may put what the other one puts.
        for key in failure_puts:
            add_put(key, allowed_again=success_puts)
        deleted.extend(success_deletes)
        deleted.extend(failure_deletes)
    for op in ops:
        if isinstance(op, PutRequest):
            add_put(op.key, allowed_again=set())
    return put, deleted


def _compaction(request: CompactionRequest, limits: Limits) -> None:
    _check_non_negative("CompactionRequest", revision=request.revision)


def _lease_grant(request: LeaseGrantRequest, limits: Limits) -> None:
    what = "LeaseGrantRequest"
    _check_positive_id(what, "ttl", request.ttl)
    if request.ttl > limits.max_lease_ttl:
        raise InvalidRequestError(
            f"{what}: ttl {request.ttl} exceeds the maximum of {limits.max_lease_ttl}"
        )
    _check_non_negative(what, id=request.id)


def _lease_id(
    request: LeaseRevokeRequest | LeaseKeepAliveRequest | LeaseTimeToLiveRequest,
    limits: Limits,
) -> None:
    _check_positive_id(type(request).__name__, "id", request.id)


def _watch_create(request: WatchCreateRequest, limits: Limits) -> None:
    what = "WatchCreateRequest"
    _check_range(what, request.key, request.range_end, limits)
    _check_non_negative(what, start_revision=request.start_revision, watch_id=request.watch_id)
    if len(request.filters) > limits.max_watch_filters:
        raise RequestTooLargeError(
            f"{what}: {len(request.filters)} filters exceed the limit of {limits.max_watch_filters}"
        )


def _watch_cancel(request: WatchCancelRequest, limits: Limits) -> None:
    _check_non_negative("WatchCancelRequest", watch_id=request.watch_id)


def _member_add(request: MemberAddRequest, limits: Limits) -> None:
    what = "MemberAddRequest"
    if not request.peer_urls:
        raise InvalidRequestError(f"{what}: peer_urls is empty")
    if any(not url for url in request.peer_urls):
        raise InvalidRequestError(f"{what}: a peer url is empty")


def _member_id(request: MemberRemoveRequest | MemberPromoteRequest, limits: Limits) -> None:
    _check_positive_id(type(request).__name__, "id", request.id)


def _hello(request: Hello, limits: Limits) -> None:
    _check_positive_id("Hello", "protocol_version", request.protocol_version)
    if len(request.client_id) > limits.max_client_id_bytes:
        raise RequestTooLargeError(
            f"Hello: client_id of {len(request.client_id)} bytes exceeds the limit of "
            f"{limits.max_client_id_bytes}"
        )


def _nothing(request: object, limits: Limits) -> None:
    """Requests without values to check."""


_VALIDATORS: dict[type, Callable[[Any, Limits], None]] = {
    RangeRequest: _range,
    PutRequest: _put,
    DeleteRangeRequest: _delete_range,
    TxnRequest: _txn,
    CompactionRequest: _compaction,
    LeaseGrantRequest: _lease_grant,
    LeaseRevokeRequest: _lease_id,
    LeaseKeepAliveRequest: _lease_id,
    LeaseTimeToLiveRequest: _lease_id,
    LeaseLeasesRequest: _nothing,
    WatchCreateRequest: _watch_create,
    WatchCancelRequest: _watch_cancel,
    WatchProgressRequest: _nothing,
    MemberListRequest: _nothing,
    MemberAddRequest: _member_add,
    MemberRemoveRequest: _member_id,
    MemberPromoteRequest: _member_id,
    StatusRequest: _nothing,
    Hello: _hello,
}
