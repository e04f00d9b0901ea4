"""The watch hub: slow watchers, bounded catch-up, compaction, filters, indexing."""

from __future__ import annotations

import pytest

from pnyx.core.errors import InvalidRequestError
from pnyx.core.kv import SLOW_WATCHER_REASON, MVCCStore, WatchHub, WatchLimits
from pnyx.core.kv import watch as watch_module
from pnyx.core.wire.messages import (
    DeleteRangeRequest,
    EventType,
    PutRequest,
    TxnRequest,
    WatchCreateRequest,
    WatchFilterType,
    WatchResponse,
)


def make(limits: WatchLimits | None = None) -> tuple[MVCCStore, WatchHub]:
    store = MVCCStore()
    hub = WatchHub(store, limits or WatchLimits())
    store.on_commit = hub.notify
    return store, hub


def drain_all(hub: WatchHub, watch_id: int | None = None) -> list[WatchResponse]:
    out: list[WatchResponse] = []
    for _ in range(100_000):
        deliveries = hub.drain(100)
        if not deliveries and not hub.pending:
            return out
        out.extend(d.response for d in deliveries if watch_id is None or d.watch_id == watch_id)
    raise AssertionError("drain never finished")


def revisions(responses: list[WatchResponse]) -> list[int]:
    return [r.header.revision for r in responses if r.events]


def test_live_events_arrive_per_revision_with_all_events_of_a_revision_together() -> None:
    store, hub = make()
    created = hub.create(WatchCreateRequest(b"p/", b"p0"))
    assert created.created and created.header.revision == 1
    store.put(PutRequest(b"p/a", b"1"))
    store.txn(TxnRequest((), (PutRequest(b"p/b"), PutRequest(b"q"), PutRequest(b"p/c"))))
    responses = drain_all(hub)
    assert revisions(responses) == [2, 3]
    assert [e.kv.key for e in responses[1].events] == [b"p/b", b"p/c"]
    assert all(r.watch_id == created.watch_id for r in responses)


def test_filters_and_prev_kv() -> None:
    store, hub = make()
    no_put = hub.create(WatchCreateRequest(b"k", filters=(WatchFilterType.NOPUT,), prev_kv=True))
    no_delete = hub.create(WatchCreateRequest(b"k", filters=(WatchFilterType.NODELETE,)))
    store.put(PutRequest(b"k", b"1"))
    store.put(PutRequest(b"k", b"2"))
    store.delete_range(DeleteRangeRequest(b"k"))
    by_id: dict[int, list[WatchResponse]] = {no_put.watch_id: [], no_delete.watch_id: []}
    for delivery in hub.drain(100):
        by_id[delivery.watch_id].append(delivery.response)
    deletes = [e for r in by_id[no_put.watch_id] for e in r.events]
    assert [e.type for e in deletes] == [EventType.DELETE]
    assert deletes[0].prev_kv is not None and deletes[0].prev_kv.value == b"2"
    puts = [e for r in by_id[no_delete.watch_id] for e in r.events]
    assert [e.type for e in puts] == [EventType.PUT, EventType.PUT]
    assert all(e.prev_kv is None for e in puts)


def test_catch_up_from_history_is_chunked_and_then_goes_live() -> None:
    limits = WatchLimits(catchup_events=5, catchup_revisions=7)
    store, hub = make(limits)
    for i in range(40):
        store.put(PutRequest(b"k%d" % (i % 3), b"v"))
    watcher = hub.create(WatchCreateRequest(b"k0", start_revision=2))
    ranged = hub.create(WatchCreateRequest(b"k", b"l", start_revision=10))
    seen: dict[int, list[int]] = {watcher.watch_id: [], ranged.watch_id: []}
    rounds = 0
    while True:
        deliveries = hub.drain(3)
        if not deliveries and not hub.pending:
            break
        rounds += 1
        for delivery in deliveries:
            seen[delivery.watch_id].append(delivery.response.header.revision)
        # Bounded: catch-up never queues much more than one chunk per watcher.
        for state in hub._watchers.values():
            assert len(state.outbox) <= limits.catchup_events + 1
        if rounds == 5:
            store.put(PutRequest(b"k0", b"live"))  # arrives during catch-up
    assert rounds > 5
    assert seen[watcher.watch_id] == [r for r in range(2, 42) if (r - 2) % 3 == 0] + [42]
    assert seen[ranged.watch_id] == list(range(10, 43))
    store.put(PutRequest(b"k0", b"after"))
    assert revisions(drain_all(hub)) == [43, 43]


def test_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() -> None:
    store, hub = make()
    for _ in range(5):
        store.put(PutRequest(b"k"))
    store.compact(4)
    created = hub.create(WatchCreateRequest(b"k", start_revision=3))
    assert created.created
    (canceled,) = drain_all(hub)
    assert canceled.canceled and canceled.compact_revision == 4
    assert len(hub) == 0
    # From the compact revision itself it works.
    hub.create(WatchCreateRequest(b"k", start_revision=4))
    assert revisions(drain_all(hub)) == [4, 5, 6]


def test_compaction_during_catch_up_cancels_the_watcher() -> None:
    store, hub = make(WatchLimits(catchup_events=2))
    for _ in range(10):
        store.put(PutRequest(b"k"))
    hub.create(WatchCreateRequest(b"k", start_revision=2))
    first = hub.drain(2)
    assert revisions([d.response for d in first]) == [2, 3]
    store.compact(8)
    hub.compacted()
    rest = drain_all(hub)
    assert rest[-1].canceled and rest[-1].compact_revision == 8
    assert all(r.header.revision < 8 for r in rest[:-1])


def test_slow_watcher_is_cut_off_resumably_and_memory_stays_bounded() -> None:
    limits = WatchLimits(max_outbox_events=50, max_outbox_bytes=1 << 30)
    store, hub = make(limits)
    slow = hub.create(WatchCreateRequest(b"k"), tag="slow-conn")
    fast = hub.create(WatchCreateRequest(b"k"), tag="fast-conn")
    fast_seen: list[int] = []
    slow_seen: list[WatchResponse] = []
    for i in range(200):
        store.put(PutRequest(b"k", b"%d" % i))
        if i == 20:
            hub.pause("slow-conn")  # its socket is full: the server stops sending to it
        for delivery in hub.drain(1000):
            if delivery.watch_id == fast.watch_id:
                fast_seen.append(delivery.response.header.revision)
            else:
                slow_seen.append(delivery.response)
        state = hub._watchers.get(slow.watch_id)
        if state is not None:
            assert state.outbox_events <= limits.max_outbox_events
            assert len(state.outbox) <= limits.max_outbox_events
    assert fast_seen == list(range(2, 202))  # the others are not held back
    assert revisions(slow_seen) == list(range(2, 22))
    hub.resume("slow-conn")
    # The slow one gets a cancel naming where to resume, and nothing of what it missed.
    got = [d.response for d in hub.drain(1000)]
    assert len(got) == 1
    cancel = got[-1]
    assert cancel.canceled and cancel.cancel_reason.startswith(SLOW_WATCHER_REASON)
    assert slow.watch_id not in hub._watchers
    resume = int(cancel.cancel_reason.rsplit(" ", 1)[1])
    assert resume == 22
    # Resuming from there delivers exactly what the slow watcher missed.
    resumed = hub.create(WatchCreateRequest(b"k", start_revision=resume))
    again = drain_all(hub, resumed.watch_id)
    assert revisions(again) == list(range(resume, 202))


def test_slow_cutoff_by_bytes() -> None:
    store, hub = make(WatchLimits(max_outbox_events=10**6, max_outbox_bytes=10_000))
    hub.create(WatchCreateRequest(b"k"))
    for _ in range(20):
        store.put(PutRequest(b"k", b"x" * 1000))
    responses = drain_all(hub)
    assert responses[-1].cancel_reason.startswith(SLOW_WATCHER_REASON)
    assert sum(len(r.events) for r in responses) == 0  # dropped, not buffered


def test_progress_notification_never_promises_more_than_was_delivered() -> None:
    store, hub = make(WatchLimits(catchup_events=1))
    for _ in range(6):
        store.put(PutRequest(b"k"))
    catching_up = hub.create(WatchCreateRequest(b"k", start_revision=2))
    synced = hub.create(WatchCreateRequest(b"other"))
    hub.drain(1)  # revision 2 for the catching-up watcher
    hub.request_progress()
    responses = drain_all(hub)
    progress = {r.watch_id: r.header.revision for r in responses if r.progress_notify}
    assert progress[synced.watch_id] == 7
    # The catching-up watcher was given revision 2 and, at most, the next chunk (3).
    assert progress[catching_up.watch_id] <= 3
    mine = [r for r in responses if r.watch_id == catching_up.watch_id]
    position = next(i for i, r in enumerate(mine) if r.progress_notify)
    delivered_before = [2] + [r.header.revision for r in mine[:position]]
    assert progress[catching_up.watch_id] == max(delivered_before)


def test_progress_request_of_one_connection() -> None:
    _store, hub = make()
    mine = hub.create(WatchCreateRequest(b"a"), tag="mine")
    hub.create(WatchCreateRequest(b"b"), tag="theirs")
    hub.request_progress(tag="mine")
    (response,) = drain_all(hub)
    assert response.watch_id == mine.watch_id and response.progress_notify


def test_progress_notify_only_for_watchers_that_asked() -> None:
    _store, hub = make()
    asked = hub.create(WatchCreateRequest(b"a", progress_notify=True))
    hub.create(WatchCreateRequest(b"b"))
    hub.progress_notify()
    (response,) = drain_all(hub)
    assert response.watch_id == asked.watch_id and response.progress_notify


def test_fragmented_revision() -> None:
    store, hub = make(WatchLimits(fragment_events=2))
    hub.create(WatchCreateRequest(b"a", b"z", fragment=True))
    store.txn(TxnRequest((), tuple(PutRequest(bytes([97 + i])) for i in range(5))))
    responses = drain_all(hub)
    assert [len(r.events) for r in responses] == [2, 2, 1]
    assert [r.fragment for r in responses] == [True, True, False]


def test_cancel_and_cancel_tag() -> None:
    store, hub = make()
    one = hub.create(WatchCreateRequest(b"k"), tag="conn-1")
    hub.create(WatchCreateRequest(b"k"), tag="conn-2")
    hub.create(WatchCreateRequest(b"k", b"l"), tag="conn-2")
    with pytest.raises(InvalidRequestError):
        hub.cancel(one.watch_id, tag="conn-2")  # not that connection's watch
    canceled = hub.cancel(one.watch_id, tag="conn-1")
    assert canceled.canceled and canceled.watch_id == one.watch_id
    with pytest.raises(InvalidRequestError):
        hub.cancel(one.watch_id)
    assert len(hub.cancel_tag("conn-2")) == 2
    store.put(PutRequest(b"k"))
    assert drain_all(hub) == []
    assert len(hub) == 0


def test_watch_ids_chosen_or_requested() -> None:
    _store, hub = make()
    assert hub.create(WatchCreateRequest(b"k", watch_id=7)).watch_id == 7
    with pytest.raises(InvalidRequestError):
        hub.create(WatchCreateRequest(b"k", watch_id=7))
    chosen = {hub.create(WatchCreateRequest(b"k")).watch_id for _ in range(10)}
    assert len(chosen) == 10 and 7 not in chosen


def test_a_write_only_touches_the_watchers_of_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    store, hub = make()
    for i in range(2000):
        hub.create(WatchCreateRequest(b"key/%04d" % i))
    for i in range(500):
        hub.create(WatchCreateRequest(b"range/%04d/" % i, b"range/%04d0" % i))
    hub.create(WatchCreateRequest(b"\0", b"\0"))  # one watcher of everything
    touched: list[int] = []
    original = WatchHub._enqueue

    def counting(self, watcher, *args):  # type: ignore[no-untyped-def]
        touched.append(watcher.watch_id)
        return original(self, watcher, *args)

    monkeypatch.setattr(WatchHub, "_enqueue", counting)
    monkeypatch.setattr(
        watch_module._Watcher, "matches", lambda *_: pytest.fail("linear scan on the live path")
    )
    store.put(PutRequest(b"key/0042"))
    store.put(PutRequest(b"range/0007/x"))
    assert len(touched) == 4  # the exact watcher, the range watcher, "everything" twice
    responses = drain_all(hub)
    assert len(responses) == 4


def test_future_start_revision_waits_for_it() -> None:
    store, hub = make()
    hub.create(WatchCreateRequest(b"k", start_revision=4))
    for _ in range(4):
        store.put(PutRequest(b"k"))
    assert revisions(drain_all(hub)) == [4, 5]


def test_watchers_wanting_the_same_events_share_them_and_the_others_get_their_own() -> None:
    store, hub = make()
    plain = [hub.create(WatchCreateRequest(b"p/", b"p0")).watch_id for _ in range(3)]
    with_prev = hub.create(WatchCreateRequest(b"p/", b"p0", prev_kv=True)).watch_id
    no_put = hub.create(WatchCreateRequest(b"p/", b"p0", filters=(WatchFilterType.NOPUT,)))
    store.put(PutRequest(b"p/a", b"1"))
    store.put(PutRequest(b"p/a", b"2"))
    by_watch: dict[int, list[WatchResponse]] = {}
    for _ in range(100):
        for delivery in hub.drain(100):
            by_watch.setdefault(delivery.watch_id, []).append(delivery.response)
        if not hub.pending:
            break
    assert no_put.watch_id not in by_watch  # nothing but puts happened
    second = [by_watch[watch_id][1] for watch_id in plain]
    assert second[0].events is second[1].events is second[2].events
    assert second[0].events[0].prev_kv is None
    prev = by_watch[with_prev][1].events[0].prev_kv
    assert prev is not None and prev.value == b"1"
    assert [r.header.revision for r in by_watch[with_prev]] == [2, 3]


def test_watchers_wanting_the_same_events_the_same_way_share_one_queued_response() -> None:
    store, hub = make()
    same = [hub.create(WatchCreateRequest(b"p/", b"p0")).watch_id for _ in range(3)]
    with_prev = hub.create(WatchCreateRequest(b"p/", b"p0", prev_kv=True)).watch_id
    hub.drain(100)
    store.put(PutRequest(b"p/a", b"1"))
    by_id = {delivery.watch_id: delivery for delivery in hub.drain(100)}
    assert sorted(by_id) == sorted([*same, with_prev])
    queued = by_id[same[0]].queued
    assert all(by_id[watch_id].queued is queued for watch_id in same)
    assert queued.watch_id == 0  # no watch has id 0: a shared response
    assert by_id[with_prev].queued is not queued
    assert [by_id[watch_id].response.watch_id for watch_id in same] == same
    assert all(by_id[watch_id].response.events == queued.events for watch_id in same)
