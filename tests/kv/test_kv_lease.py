"""Leases: the replicated table, the leader-only Lessor, and revocation through the log."""

from __future__ import annotations

import pytest

from pnyx.core.errors import InvalidRequestError, LeaseNotFoundError, NotLeaderError
from pnyx.core.kv import (
    ClientCommand,
    ExpireLeases,
    KVStateMachine,
    LeaseTable,
    Lessor,
    lease_id_from_index,
)
from pnyx.core.wire.limits import Limits
from pnyx.core.wire.messages import (
    ErrorResponse,
    EventType,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    PutRequest,
    RangeRequest,
)

# --------------------------------------------------------------------------- Lessor


def test_a_follower_tracks_no_deadlines() -> None:
    lessor = Lessor()
    lessor.granted(1, 10)
    assert lessor.expired(1e9) == []
    with pytest.raises(NotLeaderError):
        lessor.keep_alive(1, 0.0)
    with pytest.raises(NotLeaderError):
        lessor.remaining(1, 0.0)


def test_promote_gives_every_lease_its_full_ttl() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.granted(1, 10)
    lessor.granted(2, 30)
    assert lessor.expired(5.0) == []  # deadlines start at the first `now` after the grant
    lessor.demote()
    # A long failover: the old deadlines (15, 35) passed, yet nothing expires at once.
    lessor.promote(100.0)
    assert lessor.remaining(1, 100.0) == 10
    assert lessor.remaining(2, 100.0) == 30
    assert lessor.expired(109.9) == []
    assert lessor.expired(110.0) == [1]
    lessor.revoked(1)  # the revoke was applied
    assert lessor.expired(130.0) == [2]


def test_keep_alive_restarts_the_ttl() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.granted(1, 10)
    assert lessor.keep_alive(1, 0.0) == 10
    assert lessor.keep_alive(1, 8.0) == 10
    assert lessor.expired(17.0) == []
    assert lessor.remaining(1, 17.5) == 1  # rounded up
    assert lessor.expired(18.0) == [1]
    with pytest.raises(LeaseNotFoundError):
        lessor.keep_alive(1, 18.5)  # its revoke is on its way: no reviving
    with pytest.raises(LeaseNotFoundError):
        lessor.keep_alive(99, 0.0)


def test_expired_is_retried_after_the_interval_until_revoked() -> None:
    lessor = Lessor(retry_interval=3.0)
    lessor.promote(0.0)
    lessor.granted(1, 5)
    lessor.expired(0.0)
    assert lessor.expired(5.0) == [1]
    assert lessor.expired(7.0) == []  # the revoke is in flight
    assert lessor.expired(8.0) == [1]  # it got lost: propose again
    lessor.revoked(1)
    assert lessor.expired(100.0) == []
    assert lessor.remaining(1, 100.0) == -1


def test_expired_limit_and_order() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    for lease, ttl in ((5, 7), (3, 5), (4, 6)):
        lessor.granted(lease, ttl)
    lessor.expired(0.0)
    assert lessor.expired(10.0, limit=2) == [3, 4]
    assert lessor.expired(10.0) == [5]


def test_keep_alives_do_not_grow_memory() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    for lease in range(1, 11):
        lessor.granted(lease, 10)
    for step in range(10_000):
        lessor.keep_alive(1 + step % 10, step / 1000)
    assert len(lessor._heap) <= 2 * 10 + 64 + 1


def test_reset_after_restore_restarts_ttls_on_a_leader() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.granted(1, 10)
    lessor.expired(0.0)
    lessor.reset([(2, 20)])
    assert lessor.expired(15.0) == []
    assert lessor.remaining(1, 15.0) == -1
    assert lessor.remaining(2, 15.0) == 20


# --------------------------------------------------------------------------- LeaseTable


def test_lease_ids_from_the_log_index_are_deterministic_positive_int64() -> None:
    ids = {lease_id_from_index(index) for index in range(1, 10_001)}
    assert len(ids) == 10_000
    assert all(0 < lease < 2**63 for lease in ids)
    assert lease_id_from_index(42) == lease_id_from_index(42)


def test_grant_picks_a_free_id_even_on_collision() -> None:
    table = LeaseTable()
    taken = lease_id_from_index(7)
    assert table.grant(taken, 10, index=1) == (taken, 10)
    lease, _ttl = table.grant(0, 10, index=7)
    assert lease != taken and lease in table


def test_grant_refusals_and_min_ttl() -> None:
    table = LeaseTable(Limits(min_lease_ttl=3, max_lease_ttl=100))
    assert table.grant(1, 1, index=1) == (1, 3)
    with pytest.raises(InvalidRequestError):
        table.grant(1, 10, index=2)
    with pytest.raises(InvalidRequestError):
        table.grant(2, 101, index=3)
    with pytest.raises(InvalidRequestError):
        table.grant(-5, 10, index=4)
    with pytest.raises(LeaseNotFoundError):
        table.revoke(9)


# --------------------------------------------------------------------------- through the log


def grant(sm: KVStateMachine, index: int, ttl: int = 10, lease: int = 0) -> int:
    response = sm.apply(index, ClientCommand(b"c", index, LeaseGrantRequest(ttl, lease)))
    assert isinstance(response, LeaseGrantResponse)
    return response.id


def test_revoke_deletes_every_attached_key_in_one_revision() -> None:
    sm = KVStateMachine()
    lease = grant(sm, 1)
    for index, key in enumerate((b"b", b"a", b"c"), start=2):
        sm.apply(index, ClientCommand(b"c", index, PutRequest(key, b"v", lease)))
    sm.apply(5, ClientCommand(b"c", 5, PutRequest(b"other", b"v")))
    before = sm.revision
    response = sm.apply(6, ClientCommand(b"c", 6, LeaseRevokeRequest(lease)))
    assert response is not None and response.header is not None
    assert response.header.revision == sm.revision == before + 1
    events = sm.mvcc.events(sm.revision)
    assert [(e.type, e.kv.key) for e in events] == [
        (EventType.DELETE, b"a"),
        (EventType.DELETE, b"b"),
        (EventType.DELETE, b"c"),
    ]
    assert sm.range(RangeRequest(b"\0", b"\0")).count == 1
    again = sm.apply(7, ClientCommand(b"c", 7, LeaseRevokeRequest(lease)))
    assert isinstance(again, ErrorResponse) and again.code == LeaseNotFoundError.code


def test_detached_key_survives_the_revoke() -> None:
    sm = KVStateMachine()
    lease = grant(sm, 1)
    sm.apply(2, ClientCommand(b"c", 2, PutRequest(b"k", b"v", lease)))
    sm.apply(3, ClientCommand(b"c", 3, PutRequest(b"k", b"v2")))  # re-put without lease
    sm.apply(4, ClientCommand(b"c", 4, LeaseRevokeRequest(lease)))
    assert sm.range(RangeRequest(b"k")).kvs[0].value == b"v2"


def test_expiry_flow_leader_lessor_proposes_and_every_member_applies() -> None:
    leader, follower = KVStateMachine(), KVStateMachine()
    leader.lessor.promote(0.0)
    command = ClientCommand(b"c", 1, LeaseGrantRequest(10))
    for sm in (leader, follower):
        sm.apply(1, command)
    lease = leader.lease_leases().leases[0]
    put = ClientCommand(b"c", 2, PutRequest(b"session", b"v", lease))
    for sm in (leader, follower):
        sm.apply(2, put)
    assert leader.expired_leases(1.0) is None  # deadline starts now: 11.0
    assert follower.expired_leases(100.0) is None  # followers never decide expiry
    ttl = leader.lease_time_to_live(LeaseTimeToLiveRequest(lease, keys=True), 5.0)
    assert (ttl.ttl, ttl.granted_ttl, ttl.keys) == (6, 10, (b"session",))
    with pytest.raises(NotLeaderError):
        follower.lease_time_to_live(LeaseTimeToLiveRequest(lease), 5.0)
    expire = leader.expired_leases(11.0)
    assert expire == ExpireLeases((lease,))
    for sm in (leader, follower):
        sm.apply(3, expire)
        assert sm.range(RangeRequest(b"session")).kvs == ()
        assert sm.lease_leases().leases == ()
    assert leader.lease_keep_alive(LeaseKeepAliveRequest(lease), 12.0).ttl == 0
    gone = leader.lease_time_to_live(LeaseTimeToLiveRequest(lease), 12.0)
    assert gone.ttl == -1
    assert leader.snapshot() == follower.snapshot()


def test_put_with_unknown_lease_is_refused_without_a_revision() -> None:
    sm = KVStateMachine()
    response = sm.apply(1, ClientCommand(b"c", 1, PutRequest(b"k", b"v", 77)))
    assert isinstance(response, ErrorResponse) and response.code == LeaseNotFoundError.code
    assert sm.revision == 1
