"""The MVCC store's etcd semantics, one rule per test."""

from __future__ import annotations

import random

import attrs
import pytest

from pnyx.core.errors import (
    CompactedError,
    FutureRevisionError,
    InvalidRequestError,
    LeaseNotFoundError,
)
from pnyx.core.kv import FIRST_REVISION, MVCCStore
from pnyx.core.wire.keys import OPEN_END
from pnyx.core.wire.messages import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)


def put(store: MVCCStore, key: bytes, value: bytes = b"v", lease: int = 0) -> int:
    return store.put(PutRequest(key, value, lease)).header.revision


def keys_of(response: RangeResponse) -> list[bytes]:
    return [kv.key for kv in response.kvs]


def test_revisions_start_at_one_and_grow_by_one_per_write() -> None:
    store = MVCCStore()
    assert store.revision == FIRST_REVISION == 1
    assert put(store, b"a") == 2
    assert put(store, b"a") == 3
    kv = store.get(b"a")
    assert kv == KeyValue(b"a", 2, 3, 2, b"v", 0)


def test_delete_ends_a_generation_and_a_new_put_starts_one() -> None:
    store = MVCCStore()
    put(store, b"k")
    put(store, b"k")
    store.delete_range(DeleteRangeRequest(b"k"))
    assert store.get(b"k") is None
    put(store, b"k", b"again")
    assert store.get(b"k") == KeyValue(b"k", 5, 5, 1, b"again", 0)
    # The old generation is still readable at its revisions.
    assert store.get(b"k", revision=3) == KeyValue(b"k", 2, 3, 2, b"v", 0)
    assert store.get(b"k", revision=4) is None


def test_delete_of_nothing_does_not_make_a_revision() -> None:
    store = MVCCStore()
    put(store, b"a")
    response = store.delete_range(DeleteRangeRequest(b"b", b"c"))
    assert response.deleted == 0
    assert store.revision == 2


def test_txn_with_several_writes_is_one_revision_with_ordered_events() -> None:
    store = MVCCStore()
    put(store, b"gone")
    response = store.txn(
        TxnRequest(
            (),
            (
                PutRequest(b"x", b"1"),
                PutRequest(b"y", b"2"),
                DeleteRangeRequest(b"gone"),
                RangeRequest(b"x", b"z"),
            ),
        )
    )
    assert response.header.revision == 3
    events = store.events(3)
    assert [(e.type, e.kv.key) for e in events] == [
        (EventType.PUT, b"x"),
        (EventType.PUT, b"y"),
        (EventType.DELETE, b"gone"),
    ]
    # The range inside the transaction sees the transaction's own earlier writes.
    inner = response.responses[3]
    assert isinstance(inner, RangeResponse)
    assert keys_of(inner) == [b"x", b"y"]
    assert all(kv.mod_revision == 3 for kv in inner.kvs)


def test_read_only_txn_does_not_make_a_revision() -> None:
    store = MVCCStore()
    put(store, b"a")
    response = store.txn(TxnRequest((), (RangeRequest(b"a"),)))
    assert response.header.revision == 2 == store.revision


@pytest.mark.parametrize(
    ("target", "result", "value", "expected"),
    [
        (CompareTarget.VERSION, CompareResult.EQUAL, 0, True),
        (CompareTarget.CREATE, CompareResult.EQUAL, 0, True),
        (CompareTarget.MOD, CompareResult.LESS, 1, True),
        (CompareTarget.LEASE, CompareResult.EQUAL, 0, True),
        (CompareTarget.VERSION, CompareResult.GREATER, 0, False),
        # etcd: a VALUE compare on a missing key is false whatever the operator.
        (CompareTarget.VALUE, CompareResult.EQUAL, b"", False),
        (CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"x", False),
    ],
)
def test_compare_on_a_missing_key_behaves_as_etcd(
    target: CompareTarget, result: CompareResult, value: bytes | int, expected: bool
) -> None:
    store = MVCCStore()
    response = store.txn(TxnRequest((Compare(target, result, b"missing", value),)))
    assert response.succeeded is expected


def test_compare_over_a_range_needs_every_key() -> None:
    store = MVCCStore()
    put(store, b"p/1")
    put(store, b"p/2")
    put(store, b"p/2")
    every_v1 = Compare(CompareTarget.VERSION, CompareResult.EQUAL, b"p/", 1, b"p0")
    every_pos = Compare(CompareTarget.VERSION, CompareResult.GREATER, b"p/", 0, b"p0")
    assert not store.txn(TxnRequest((every_v1,))).succeeded
    assert store.txn(TxnRequest((every_pos,))).succeeded


def test_compare_type_mismatch_is_refused() -> None:
    store = MVCCStore()
    with pytest.raises(InvalidRequestError):
        store.txn(TxnRequest((Compare(CompareTarget.VERSION, CompareResult.EQUAL, b"k", b"1"),)))


def test_failed_op_undoes_the_whole_txn() -> None:
    store = MVCCStore(lease_exists=lambda lease: lease == 7)
    put(store, b"a", b"old")
    request = TxnRequest(
        (),
        (
            PutRequest(b"a", b"new"),
            DeleteRangeRequest(b"a"),
            PutRequest(b"b", b"x", lease=8),  # unknown lease: the txn fails here
        ),
    )
    with pytest.raises(LeaseNotFoundError):
        store.txn(request)
    assert store.revision == 2
    assert store.get(b"a") == KeyValue(b"a", 2, 2, 1, b"old", 0)
    assert store.get(b"b") is None
    assert store.events(2)[0].kv.key == b"a"
    assert store.lease_keys(8) == []


def test_nested_txn_compares_see_the_state_before_the_outer_txn() -> None:
    store = MVCCStore()
    inner = TxnRequest(
        (Compare(CompareTarget.VERSION, CompareResult.EQUAL, b"k", 0),),
        (PutRequest(b"saw", b"absent"),),
        (PutRequest(b"saw", b"present"),),
    )
    response = store.txn(TxnRequest((), (PutRequest(b"k"), inner)))
    assert store.get(b"saw") is not None and store.get(b"saw").value == b"absent"  # type: ignore[union-attr]
    nested = response.responses[1]
    assert isinstance(nested, TxnResponse) and nested.succeeded
    assert nested.header.revision == response.header.revision == 2


def test_put_ignore_value_and_ignore_lease() -> None:
    store = MVCCStore()
    put(store, b"k", b"keep", lease=5)
    store.put(PutRequest(b"k", b"", 0, ignore_value=True, ignore_lease=True))
    assert store.get(b"k") == KeyValue(b"k", 2, 3, 2, b"keep", 5)
    with pytest.raises(InvalidRequestError):
        store.put(PutRequest(b"missing", ignore_value=True))
    with pytest.raises(InvalidRequestError):
        store.put(PutRequest(b"k", b"given", ignore_value=True))
    assert store.revision == 3


def test_put_prev_kv() -> None:
    store = MVCCStore()
    assert store.put(PutRequest(b"k", b"1", prev_kv=True)).prev_kv is None
    response = store.put(PutRequest(b"k", b"2", prev_kv=True))
    assert isinstance(response, PutResponse)
    assert response.prev_kv == KeyValue(b"k", 2, 2, 1, b"1", 0)


def test_range_forms_one_key_half_open_and_open_end() -> None:
    store = MVCCStore()
    for key in (b"a", b"b", b"c", b"d"):
        put(store, key)
    assert keys_of(store.range(RangeRequest(b"b"))) == [b"b"]
    assert keys_of(store.range(RangeRequest(b"b", b"d"))) == [b"b", b"c"]
    assert keys_of(store.range(RangeRequest(b"b", b"\0"))) == [b"b", b"c", b"d"]
    assert keys_of(store.range(RangeRequest(b"\0", b"\0"))) == [b"a", b"b", b"c", b"d"]
    assert keys_of(store.range(RangeRequest(b"c", b"b"))) == []


def test_range_limit_more_and_count() -> None:
    store = MVCCStore()
    for key in (b"a", b"b", b"c"):
        put(store, key)
    response = store.range(RangeRequest(b"a", b"\0", limit=2))
    assert keys_of(response) == [b"a", b"b"]
    assert response.more and response.count == 3
    response = store.range(RangeRequest(b"a", b"\0", limit=3))
    assert not response.more
    response = store.range(RangeRequest(b"a", b"\0", count_only=True))
    assert response.kvs == () and response.count == 3


def test_range_sort_keys_only_and_filters() -> None:
    store = MVCCStore()
    put(store, b"a", b"3")  # rev 2
    put(store, b"b", b"1")  # rev 3
    put(store, b"c", b"2")  # rev 4
    put(store, b"a", b"3")  # rev 5: a has version 2
    every = (b"a", b"\0")

    def sorted_keys(order: SortOrder, target: SortTarget) -> list[bytes]:
        return keys_of(store.range(RangeRequest(*every, sort_order=order, sort_target=target)))

    assert sorted_keys(SortOrder.DESCEND, SortTarget.KEY) == [b"c", b"b", b"a"]
    assert sorted_keys(SortOrder.ASCEND, SortTarget.VALUE) == [b"b", b"c", b"a"]
    # NONE with a target other than KEY means ascending (as etcd).
    assert sorted_keys(SortOrder.NONE, SortTarget.MOD) == [b"b", b"c", b"a"]
    assert sorted_keys(SortOrder.DESCEND, SortTarget.CREATE) == [b"c", b"b", b"a"]
    # Ties keep key order.
    assert sorted_keys(SortOrder.DESCEND, SortTarget.VERSION) == [b"a", b"b", b"c"]
    response = store.range(RangeRequest(*every, keys_only=True))
    assert [kv.value for kv in response.kvs] == [b"", b"", b""]
    response = store.range(RangeRequest(*every, min_mod_revision=3, max_mod_revision=4))
    assert keys_of(response) == [b"b", b"c"]
    assert response.count == 3  # count ignores the filters, as etcd
    response = store.range(RangeRequest(*every, min_create_revision=3))
    assert keys_of(response) == [b"b", b"c"]


def test_range_at_past_future_and_compacted_revisions() -> None:
    store = MVCCStore()
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    put(store, b"a", b"3")  # 4
    assert store.range(RangeRequest(b"a", revision=2)).kvs[0].value == b"1"
    assert store.range(RangeRequest(b"a", revision=2)).header.revision == 4
    with pytest.raises(FutureRevisionError):
        store.range(RangeRequest(b"a", revision=5))
    store.compact(3)
    with pytest.raises(CompactedError) as caught:
        store.range(RangeRequest(b"a", revision=2))
    assert caught.value.compact_revision == 3
    assert store.range(RangeRequest(b"a", revision=3)).kvs[0].value == b"2"


def test_compaction_keeps_the_latest_version_of_live_keys_and_drops_the_rest() -> None:
    store = MVCCStore()
    put(store, b"live", b"1")  # 2
    put(store, b"live", b"2")  # 3
    put(store, b"dead")  # 4
    store.delete_range(DeleteRangeRequest(b"dead"))  # 5
    put(store, b"later")  # 6
    store.compact(6)
    assert store.get(b"live", revision=6) == KeyValue(b"live", 2, 3, 2, b"2", 0)
    assert store.key_count() == 2  # "dead" is gone entirely
    assert store.range(RangeRequest(b"\0", b"\0", revision=6)).count == 2


def test_compaction_errors() -> None:
    store = MVCCStore()
    put(store, b"a")
    put(store, b"a")
    with pytest.raises(FutureRevisionError):
        store.compact(4)
    store.compact(2)
    with pytest.raises(CompactedError) as caught:
        store.compact(2)
    assert caught.value.compact_revision == 2


def test_events_survive_compaction_from_the_compact_revision_on() -> None:
    store = MVCCStore()
    put(store, b"k", b"1")  # 2
    put(store, b"k", b"2")  # 3
    store.delete_range(DeleteRangeRequest(b"k"))  # 4
    put(store, b"k", b"3")  # 5
    store.compact(4)
    with pytest.raises(CompactedError):
        store.events(3)
    delete = store.events(4)
    assert delete == (
        Event(EventType.DELETE, KeyValue(b"k", 0, 4), KeyValue(b"k", 2, 3, 2, b"2", 0)),
    )
    assert list(store.events_between(4, 5)) == list(store.key_events_between(b"k", 4, 5))
    assert [revision for revision, _ in store.events_between(4, 5)] == [4, 5]
    with pytest.raises(FutureRevisionError):
        store.events(7)


def test_key_events_between_matches_the_revision_log() -> None:
    store = MVCCStore()
    put(store, b"a")
    store.txn(TxnRequest((), (PutRequest(b"a", b"x"), PutRequest(b"b"))))
    store.delete_range(DeleteRangeRequest(b"a", b"c"))
    for key in (b"a", b"b"):
        from_log = [
            (revision, tuple(e for e in events if e.kv.key == key))
            for revision, events in store.events_between(2, store.revision)
        ]
        from_log = [(revision, events) for revision, events in from_log if events]
        assert list(store.key_events_between(key, 2, store.revision)) == from_log


def test_lease_keys_follow_puts_and_deletes() -> None:
    store = MVCCStore()
    put(store, b"a", lease=1)
    put(store, b"b", lease=1)
    put(store, b"a", lease=2)
    assert store.lease_keys(1) == [b"b"]
    assert store.lease_keys(2) == [b"a"]
    store.delete_range(DeleteRangeRequest(b"b"))
    assert store.lease_keys(1) == []
    revision = store.delete_keys([b"a", b"missing"])
    assert revision == store.revision == 6
    assert store.lease_keys(2) == []


def test_dump_and_load_rebuild_an_identical_store() -> None:
    store = MVCCStore()
    put(store, b"a", lease=3)
    store.txn(TxnRequest((), (PutRequest(b"b"), PutRequest(b"c"))))
    store.delete_range(DeleteRangeRequest(b"b"))
    put(store, b"a")
    store.compact(3)
    loaded = MVCCStore.load(store.dump())
    assert loaded.dump() == store.dump()
    assert (loaded.revision, loaded.compact_revision) == (store.revision, store.compact_revision)
    for revision in range(3, store.revision + 1):
        assert loaded.events(revision) == store.events(revision)
    assert loaded.lease_keys(3) == store.lease_keys(3) == []


def test_a_rolled_back_txn_leaves_no_new_key_in_range_reads() -> None:
    store = MVCCStore(lease_exists=lambda lease: lease == 7)
    put(store, b"k/a")
    request = TxnRequest(
        (),
        (
            PutRequest(b"k/new"),
            RangeRequest(b"k/", b"k0"),  # merges k/new into the key order mid-txn
            PutRequest(b"k/other", lease=8),  # unknown lease: the txn fails here
        ),
    )
    with pytest.raises(LeaseNotFoundError):
        store.txn(request)
    assert keys_of(store.range(RangeRequest(b"k/", b"k0"))) == [b"k/a"]
    put(store, b"k/b")
    assert keys_of(store.range(RangeRequest(b"k/", b"k0"))) == [b"k/a", b"k/b"]
    assert store.key_count() == 2


def test_keys_added_between_range_reads_come_back_in_order() -> None:
    store = MVCCStore()
    for key in (b"m", b"c", b"x", b"a"):
        put(store, key)
    assert keys_of(store.range(RangeRequest(b"\0", b"\xff"))) == [b"a", b"c", b"m", b"x"]
    for key in (b"b", b"z", b"n"):
        put(store, key)
    store.delete_range(DeleteRangeRequest(b"c"))
    assert keys_of(store.range(RangeRequest(b"a", b"o"))) == [b"a", b"b", b"m", b"n"]
    put(store, b"a")
    store.compact(store.revision)  # c's history ends in a tombstone: it leaves the index
    assert store.key_count() == 6
    assert keys_of(store.range(RangeRequest(b"\0", b"\xff"))) == [
        b"a",
        b"b",
        b"m",
        b"n",
        b"x",
        b"z",
    ]


def test_written_is_the_revision_s_versions_in_event_order() -> None:
    store = MVCCStore()
    put(store, b"gone")
    store.txn(TxnRequest((), (PutRequest(b"x", b"1"), DeleteRangeRequest(b"gone"))))
    written = store.written(3)
    assert [(kv.key, kv.version) for kv in written] == [(b"x", 1), (b"gone", 0)]
    assert tuple(event.kv for event in store.events(3)) == written
    assert store.written(99) == ()


def test_events_of_a_key_written_twice_in_one_txn_chain_their_prev_kv() -> None:
    store = MVCCStore()
    put(store, b"k", b"0")
    store.txn(TxnRequest((), (PutRequest(b"k", b"1"), PutRequest(b"k", b"2"))))
    first, second = store.events(3)
    assert first.prev_kv is not None and first.prev_kv.value == b"0"
    assert second.prev_kv == first.kv and second.kv.version == 3
    assert list(store.key_events_between(b"k", 3, 3)) == [(3, (first, second))]


def test_range_reads_over_the_live_keys_match_a_full_scan() -> None:
    """The live-key index (current revision, key order, no filters) answers exactly as the
    scan of every key's history does (forced here by a filter that removes nothing)."""
    rng = random.Random(3)
    store = MVCCStore(lease_exists=lambda lease: lease == 1)
    keys = [b"k%02d" % i for i in range(30)]
    for step in range(600):
        roll = rng.random()
        key = rng.choice(keys)
        if roll < 0.5:
            put(store, key)
        elif roll < 0.7:
            store.delete_range(DeleteRangeRequest(key, rng.choice([b"", key + b"\xff"])))
        elif roll < 0.8:
            ops = (PutRequest(key), DeleteRangeRequest(rng.choice(keys)), PutRequest(key, lease=2))
            with pytest.raises(LeaseNotFoundError):
                store.txn(TxnRequest((), ops))  # fails at the end: everything is undone
        elif roll < 0.85 and store.revision > 2:
            store.compact(rng.randrange(max(store.compact_revision + 1, 2), store.revision + 1))
        start, end = sorted(rng.sample([b"k", b"k05", b"k15", b"k25", b"l", b"\0"], 2))
        for limit in (0, 1, 3):
            for order in (SortOrder.NONE, SortOrder.ASCEND, SortOrder.DESCEND):
                fast = RangeRequest(start, end, limit=limit, sort_order=order)
                scan = attrs.evolve(fast, min_mod_revision=1)
                assert store.range(fast) == store.range(scan), (step, fast)
        live = sum(1 for k in keys if store.get(k) is not None)
        assert store.live_key_count() == live
        assert store.range(RangeRequest(b"\0", OPEN_END, count_only=True)).count == live
