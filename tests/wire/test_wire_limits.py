"""validate_request: etcd's rules and the configured limits."""

from __future__ import annotations

import pytest

from pnyx.core.errors import InvalidRequestError, PnyxError, RequestTooLargeError
from pnyx.core.wire import messages as m
from pnyx.core.wire.limits import DEFAULT_LIMITS, Limits, effective_lease_ttl, validate_request

SMALL = Limits(
    max_key_bytes=8,
    max_value_bytes=16,
    max_txn_ops=3,
    max_txn_bytes=40,
    max_txn_depth=2,
    max_lease_ttl=100,
    min_lease_ttl=5,
)

INVALID = InvalidRequestError
TOO_LARGE = RequestTooLargeError


def put(key: bytes, value: bytes = b"") -> m.PutRequest:
    return m.PutRequest(key, value)


def delete(key: bytes, range_end: bytes = b"") -> m.DeleteRangeRequest:
    return m.DeleteRangeRequest(key, range_end)


def txn(*success: m.RequestOp, failure: tuple[m.RequestOp, ...] = ()) -> m.TxnRequest:
    return m.TxnRequest(success=success, failure=failure)


def compare(target: m.CompareTarget, value: bytes | int, key: bytes = b"k") -> m.Compare:
    return m.Compare(target, m.CompareResult.EQUAL, key, value)


CASES: list[tuple[str, m.Request, type[PnyxError] | None]] = [
    # ranges
    ("one key", m.RangeRequest(b"k"), None),
    ("interval", m.RangeRequest(b"a", b"b"), None),
    ("from key on", m.RangeRequest(b"k", b"\0"), None),
    ("all keys", m.RangeRequest(b"\0", b"\0"), None),
    ("empty interval is allowed", m.RangeRequest(b"a", b"a"), None),
    ("end before key", m.RangeRequest(b"b", b"a"), INVALID),
    ("empty key", m.RangeRequest(b""), INVALID),
    ("key too long", m.RangeRequest(b"123456789"), TOO_LARGE),
    ("key at the limit", m.RangeRequest(b"12345678"), None),
    ("range_end too long", m.RangeRequest(b"a", b"b23456789"), TOO_LARGE),
    ("negative limit", m.RangeRequest(b"k", limit=-1), INVALID),
    ("negative revision", m.RangeRequest(b"k", revision=-1), INVALID),
    ("negative filter", m.RangeRequest(b"k", min_mod_revision=-1), INVALID),
    ("inverted mod filter", m.RangeRequest(b"k", min_mod_revision=5, max_mod_revision=4), INVALID),
    (
        "inverted create filter",
        m.RangeRequest(b"k", min_create_revision=5, max_create_revision=4),
        INVALID,
    ),
    ("one-sided filter", m.RangeRequest(b"k", min_mod_revision=5), None),
    # puts
    ("put", put(b"k", b"v"), None),
    ("put empty key", put(b""), INVALID),
    ("put key too long", put(b"123456789"), TOO_LARGE),
    ("put value too long", put(b"k", b"x" * 17), TOO_LARGE),
    ("put value at the limit", put(b"k", b"x" * 16), None),
    ("put negative lease", m.PutRequest(b"k", lease=-1), INVALID),
    ("ignore_value with a value", m.PutRequest(b"k", b"v", ignore_value=True), INVALID),
    ("ignore_value", m.PutRequest(b"k", ignore_value=True), None),
    ("ignore_lease with a lease", m.PutRequest(b"k", lease=3, ignore_lease=True), INVALID),
    ("ignore_lease", m.PutRequest(b"k", ignore_lease=True), None),
    # deletes
    ("delete", delete(b"a", b"c"), None),
    ("delete bad range", delete(b"c", b"a"), INVALID),
    ("delete empty key", delete(b""), INVALID),
    # compares
    ("compare version", m.TxnRequest(compare=(compare(m.CompareTarget.VERSION, 0),)), None),
    ("compare value", m.TxnRequest(compare=(compare(m.CompareTarget.VALUE, b"v"),)), None),
    (
        "compare value with an int",
        m.TxnRequest(compare=(compare(m.CompareTarget.VALUE, 1),)),
        INVALID,
    ),
    (
        "compare mod with bytes",
        m.TxnRequest(compare=(compare(m.CompareTarget.MOD, b"1"),)),
        INVALID,
    ),
    (
        "compare negative create",
        m.TxnRequest(compare=(compare(m.CompareTarget.CREATE, -1),)),
        INVALID,
    ),
    (
        "compare empty key",
        m.TxnRequest(compare=(compare(m.CompareTarget.LEASE, 0, key=b""),)),
        INVALID,
    ),
    (
        "compare value too long",
        m.TxnRequest(compare=(compare(m.CompareTarget.VALUE, b"x" * 17),)),
        TOO_LARGE,
    ),
    # transactions
    ("txn", txn(put(b"a"), delete(b"b"), m.RangeRequest(b"c")), None),
    ("too many ops", txn(put(b"a"), put(b"b"), put(b"c"), put(b"d")), TOO_LARGE),
    (
        "too many compares",
        m.TxnRequest(compare=(compare(m.CompareTarget.VERSION, 0),) * 4),
        TOO_LARGE,
    ),
    ("too many failure ops", txn(failure=(m.RangeRequest(b"a"),) * 4), TOO_LARGE),
    ("txn puts too large together", txn(put(b"a", b"x" * 16), put(b"b", b"x" * 16)), None),
    (
        "txn puts over max_txn_bytes",
        txn(put(b"a", b"x" * 16), put(b"b", b"x" * 16), failure=(put(b"c", b"x" * 16),)),
        TOO_LARGE,
    ),
    ("bad op inside txn", txn(put(b"")), INVALID),
    ("bad nested op", txn(txn(delete(b"b", b"a"))), INVALID),
    ("nested within depth", txn(txn(put(b"a"))), None),
    ("nested too deep", txn(txn(txn(put(b"a")))), TOO_LARGE),
    ("same key put twice", txn(put(b"a"), put(b"a")), INVALID),
    ("same key in both branches", txn(put(b"a"), failure=(put(b"a"),)), None),
    ("put and delete same key", txn(put(b"a"), delete(b"a")), INVALID),
    ("put inside a deleted range", txn(delete(b"a", b"c"), put(b"b")), INVALID),
    ("put beside a deleted range", txn(delete(b"a", b"c"), put(b"c")), None),
    ("put and open-ended delete", txn(put(b"z"), delete(b"a", b"\0")), INVALID),
    ("two deletes of one key", txn(delete(b"a"), delete(b"a")), None),
    ("reads of a put key", txn(put(b"a"), m.RangeRequest(b"a")), None),
    ("nested put twice", txn(put(b"a"), txn(put(b"a"))), INVALID),
    ("nested branches may share a key", txn(txn(put(b"a"), failure=(put(b"a"),))), None),
    ("two nested txns put one key", txn(txn(put(b"a")), txn(put(b"a"))), INVALID),
    ("nested failure vs outer put", txn(txn(failure=(put(b"a"),)), put(b"a")), INVALID),
    ("nested delete vs outer put", txn(txn(delete(b"a")), put(b"a")), INVALID),
    ("outer delete vs nested put", txn(delete(b"a", b"b"), txn(put(b"a"))), INVALID),
    # compaction and leases
    ("compact", m.CompactionRequest(10), None),
    ("compact negative", m.CompactionRequest(-1), INVALID),
    ("grant", m.LeaseGrantRequest(10), None),
    ("grant with id", m.LeaseGrantRequest(10, id=7), None),
    ("grant zero ttl", m.LeaseGrantRequest(0), INVALID),
    ("grant over max ttl", m.LeaseGrantRequest(101), INVALID),
    ("grant negative id", m.LeaseGrantRequest(10, id=-7), INVALID),
    ("revoke", m.LeaseRevokeRequest(7), None),
    ("revoke id 0", m.LeaseRevokeRequest(0), INVALID),
    ("keep-alive negative id", m.LeaseKeepAliveRequest(-1), INVALID),
    ("time-to-live", m.LeaseTimeToLiveRequest(3, keys=True), None),
    ("leases", m.LeaseLeasesRequest(), None),
    # watches
    ("watch", m.WatchCreateRequest(b"a", b"\0", start_revision=5), None),
    ("watch bad range", m.WatchCreateRequest(b"b", b"a"), INVALID),
    ("watch negative start", m.WatchCreateRequest(b"a", start_revision=-1), INVALID),
    ("watch negative id", m.WatchCreateRequest(b"a", watch_id=-1), INVALID),
    (
        "watch too many filters",
        m.WatchCreateRequest(b"a", filters=(m.WatchFilterType.NOPUT,) * 3),
        TOO_LARGE,
    ),
    ("watch cancel", m.WatchCancelRequest(0), None),
    ("watch cancel negative", m.WatchCancelRequest(-1), INVALID),
    ("progress", m.WatchProgressRequest(), None),
    # cluster
    ("member add", m.MemberAddRequest(("tcp://h:1",), "n1"), None),
    ("member add without urls", m.MemberAddRequest(()), INVALID),
    ("member add empty url", m.MemberAddRequest(("",)), INVALID),
    ("member remove", m.MemberRemoveRequest(3), None),
    ("member remove id 0", m.MemberRemoveRequest(0), INVALID),
    ("member promote id 0", m.MemberPromoteRequest(0), INVALID),
    ("member list", m.MemberListRequest(), None),
    ("status", m.StatusRequest(), None),
    ("hello", m.Hello(1, b"client"), None),
    ("hello version 0", m.Hello(0), INVALID),
    ("hello long client id", m.Hello(1, b"c" * 65), TOO_LARGE),
]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [(request, expected) for _, request, expected in CASES],
    ids=[name for name, _, _ in CASES],
)
def test_validate_request(request_: m.Request, expected: type[PnyxError] | None) -> None:
    if expected is None:
        validate_request(request_, SMALL)
    else:
        with pytest.raises(expected) as raised:
            validate_request(request_, SMALL)
        # Exactly the class expected: a RequestTooLargeError is not an InvalidRequestError.
        assert type(raised.value) is expected


def test_every_request_type_has_a_validator() -> None:
    assert {type(request) for _, request, _ in CASES} == set(m.REQUEST_TYPES)


def test_a_response_is_not_a_request() -> None:
    with pytest.raises(InvalidRequestError):
        validate_request(m.PutResponse(m.ResponseHeader()))  # type: ignore[arg-type]


def test_default_limits_match_the_documented_values() -> None:
    assert DEFAULT_LIMITS.max_value_bytes == 1536 * 1024
    assert DEFAULT_LIMITS.max_txn_ops == 128
    assert DEFAULT_LIMITS.max_message_bytes > DEFAULT_LIMITS.max_value_bytes
    assert DEFAULT_LIMITS.max_message_bytes > DEFAULT_LIMITS.max_txn_bytes


def test_largest_single_put_passes_default_limits() -> None:
    request = m.PutRequest(b"k" * DEFAULT_LIMITS.max_key_bytes, b"v" * 1536 * 1024)
    validate_request(request)


def test_short_leases_are_raised_to_the_minimum_ttl() -> None:
    assert effective_lease_ttl(1, SMALL) == 5
    assert effective_lease_ttl(60, SMALL) == 60
