"""The state machine against a simple reference model, by hypothesis' stateful testing.

The model keeps the whole key map of every revision (revision -> {key: version}) and
answers every read, compare and watch from it with the most direct code possible. The
system under test is a ``KVStateMachine`` fed through ``apply`` with exactly-once client
commands; beside it runs a twin that is periodically replaced by a copy restored from its
own snapshot, and which must stay byte-identical to the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import attrs
import hypothesis.strategies as st
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pnyx.core.errors import CompactedError, FutureRevisionError
from pnyx.core.kv import ClientCommand, Command, ExpireLeases, KVStateMachine, WatchLimits
from pnyx.core.kv.watch import SLOW_WATCHER_REASON
from pnyx.core.wire.codec import decode_message, encode_message
from pnyx.core.wire.messages import (
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    ErrorResponse,
    Event,
    EventType,
    KeyValue,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    Response,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    WatchCreateRequest,
    WatchFilterType,
    WatchResponse,
)

KEYS = [b"a", b"ab", b"abc", b"b", b"ba", b"c", b"d"]
RANGE_ENDS = [b"", b"", b"\0", b"ab", b"b", b"c", b"e", b"a"]  # b"a" may give empty ranges
VALUES = [b"", b"x", b"y", b"zz", b"value"]

keys = st.sampled_from(KEYS)
ranges = st.tuples(keys, st.sampled_from(RANGE_ENDS))
values = st.sampled_from(VALUES)

# A key's state in the model: (create_revision, mod_revision, version, value, lease).
MKV = tuple[int, int, int, bytes, int]


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def to_kv(key: bytes, m: MKV) -> KeyValue:
    create, mod, version, value, lease = m
    return KeyValue(key, create, mod, version, value, lease)


@attrs.define
class Model:
    """Revision -> full key map, and the leases."""

    states: dict[int, dict[bytes, MKV]] = attrs.Factory(lambda: {1: {}})
    revision: int = 1
    compacted: int = 0
    leases: dict[int, int] = attrs.Factory(dict)

    @property
    def current(self) -> dict[bytes, MKV]:
        return self.states[self.revision]

    def live(self, state: dict[bytes, MKV], start: bytes, end: bytes) -> list[KeyValue]:
        return [to_kv(k, state[k]) for k in sorted(state) if in_range(k, start, end)]

    def range(self, state: dict[bytes, MKV], r: RangeRequest) -> tuple[Any, ...]:
        kvs = self.live(state, r.key, r.range_end)
        count = len(kvs)
        if r.count_only:
            return ((), False, count)
        kvs = [
            kv
            for kv in kvs
            if (not r.min_mod_revision or kv.mod_revision >= r.min_mod_revision)
            and (not r.max_mod_revision or kv.mod_revision <= r.max_mod_revision)
            and (not r.min_create_revision or kv.create_revision >= r.min_create_revision)
            and (not r.max_create_revision or kv.create_revision <= r.max_create_revision)
        ]
        field = {
            SortTarget.KEY: lambda kv: kv.key,
            SortTarget.VERSION: lambda kv: kv.version,
            SortTarget.CREATE: lambda kv: kv.create_revision,
            SortTarget.MOD: lambda kv: kv.mod_revision,
            SortTarget.VALUE: lambda kv: kv.value,
        }[r.sort_target]
        # Ties keep ascending key order, in both directions.
        if r.sort_order == SortOrder.DESCEND:
            kvs = sorted(kvs, key=field, reverse=True)
        elif r.sort_order == SortOrder.ASCEND or r.sort_target != SortTarget.KEY:
            kvs = sorted(kvs, key=field)
        more = 0 < r.limit < len(kvs)
        if r.limit:
            kvs = kvs[: r.limit]
        if r.keys_only:
            kvs = [attrs.evolve(kv, value=b"") for kv in kvs]
        return (tuple(kvs), more, count)

    def compare(self, state: dict[bytes, MKV], c: Compare) -> bool:
        kvs = self.live(state, c.key, c.range_end)
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(c.key)]
        for kv in kvs:
            actual = {
                CompareTarget.VALUE: kv.value,
                CompareTarget.VERSION: kv.version,
                CompareTarget.CREATE: kv.create_revision,
                CompareTarget.MOD: kv.mod_revision,
                CompareTarget.LEASE: kv.lease,
            }[c.target]
            ok = {
                CompareResult.EQUAL: lambda a, b: a == b,
                CompareResult.NOT_EQUAL: lambda a, b: a != b,
                CompareResult.LESS: lambda a, b: a < b,
                CompareResult.GREATER: lambda a, b: a > b,
            }[c.result](actual, c.value)
            if not ok:
                return False
        return True

    def events(self, revision: int) -> list[Event]:
        """The diff between a revision and the one before, in key order."""
        old, new = self.states[revision - 1], self.states[revision]
        out = []
        for key in sorted(set(old) | set(new)):
            if old.get(key) == new.get(key):
                continue
            prev = to_kv(key, old[key]) if key in old else None
            if key in new:
                out.append(Event(EventType.PUT, to_kv(key, new[key]), prev))
            else:
                out.append(Event(EventType.DELETE, KeyValue(key, 0, revision), prev))
        return out


def model_txn(model: Model, ops: tuple[RequestOp, ...], work: dict[bytes, MKV], rev: int) -> list:
    """Run ops on the working map ``work`` at pending revision ``rev``; returns partial
    results (to compare with the responses)."""
    results: list[Any] = []
    for op in ops:
        if isinstance(op, PutRequest):
            assert not op.lease or op.lease in model.leases
            prev = work.get(op.key)
            if prev is None:
                work[op.key] = (rev, rev, 1, op.value, op.lease)
            else:
                work[op.key] = (prev[0], rev, prev[2] + 1, op.value, op.lease)
            results.append(("put", to_kv(op.key, prev) if prev and op.prev_kv else None))
        elif isinstance(op, DeleteRangeRequest):
            gone = [k for k in sorted(work) if in_range(k, op.key, op.range_end)]
            prevs = tuple(to_kv(k, work.pop(k)) for k in gone)
            results.append(("delete", len(gone), prevs if op.prev_kv else ()))
        elif isinstance(op, RangeRequest):
            results.append(("range", model.range(work, op)))
        else:
            raise AssertionError(op)
    return results


def check_partial(result: Any, response: Response) -> None:
    kind = result[0]
    if kind == "put":
        assert isinstance(response, PutResponse)
        assert response.prev_kv == result[1]
    elif kind == "delete":
        assert isinstance(response, DeleteRangeResponse)
        assert (response.deleted, response.prev_kvs) == result[1:]
    else:
        assert isinstance(response, RangeResponse)
        assert (response.kvs, response.more, response.count) == result[1]


@attrs.define
class Watch:
    """A client's view of one watch stream."""

    watch_id: int
    key: bytes
    range_end: bytes
    start: int
    prev_kv: bool
    no_put: bool
    no_delete: bool
    received: list[WatchResponse] = attrs.Factory(list)
    # (position in `received`, revision promised complete) of progress notifications
    progress: list[tuple[int, int]] = attrs.Factory(list)
    canceled: WatchResponse | None = None


ops_strategy = st.lists(
    st.one_of(
        st.builds(PutRequest, keys, values, st.just(0), prev_kv=st.booleans()),
        st.builds(
            DeleteRangeRequest,
            keys,
            st.sampled_from(RANGE_ENDS),
            prev_kv=st.booleans(),
        ),
        st.builds(
            RangeRequest,
            keys,
            st.sampled_from(RANGE_ENDS),
            limit=st.integers(0, 3),
            sort_order=st.sampled_from(SortOrder),
            sort_target=st.sampled_from(SortTarget),
        ),
    ),
    max_size=4,
)


def writes_overlap(ops: list[RequestOp]) -> bool:
    """etcd refuses a branch that writes a key twice; the generator avoids it."""
    put_keys = [op.key for op in ops if isinstance(op, PutRequest)]
    if len(put_keys) != len(set(put_keys)):
        return True
    deletes = [op for op in ops if isinstance(op, DeleteRangeRequest)]
    return any(in_range(k, d.key, d.range_end) for k in put_keys for d in deletes)


class KVMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.sm = KVStateMachine(watch_limits=WatchLimits(catchup_events=3, catchup_revisions=4))
        self.twin = KVStateMachine()
        self.model = Model()
        self.index = 0
        self.seq = 0
        self.history: list[tuple[ClientCommand, Response]] = []
        self.watches: dict[int, Watch] = {}

    # ------------------------------------------------------------------ helpers

    def apply(self, command: Command) -> Response:
        self.index += 1
        response = self.sm.apply(self.index, command)
        twin_response = self.twin.apply(self.index, command)
        assert response is not None
        assert response == twin_response
        # Responses survive the wire codec (they go to clients and into snapshots).
        assert decode_message(encode_message(response)) == response
        if isinstance(command, ClientCommand):
            self.history.append((command, response))
        return response

    def client(self, request: Any) -> Response:
        self.seq += 1
        return self.apply(ClientCommand(b"client-1", self.seq, request))

    def commit(self, work: dict[bytes, MKV], changed: bool) -> None:
        if changed:
            self.model.revision += 1
            self.model.states[self.model.revision] = work

    def check_header(self, response: Response) -> None:
        assert response.header is not None
        assert response.header.revision == self.model.revision

    # ------------------------------------------------------------------ writes

    @rule(key=keys, value=values, lease_pick=st.integers(0, 3), prev_kv=st.booleans())
    def put(self, key: bytes, value: bytes, lease_pick: int, prev_kv: bool) -> None:
        leases = sorted(self.model.leases)
        lease = 0
        if lease_pick == 3:
            lease = 12345  # never granted
        elif lease_pick and leases:
            lease = leases[lease_pick % len(leases)]
        response = self.client(PutRequest(key, value, lease, prev_kv=prev_kv))
        if lease and lease not in self.model.leases:
            assert isinstance(response, ErrorResponse)
            assert response.code == 105  # LeaseNotFoundError
            self.check_header(response)
            return
        work = dict(self.model.current)
        results = model_txn(
            self.model, (PutRequest(key, value, lease, prev_kv),), work, self.model.revision + 1
        )
        self.commit(work, True)
        check_partial(results[0], response)
        self.check_header(response)

    @rule(batch=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
    def put_several(self, batch: list[tuple[bytes, bytes]]) -> None:
        """Puts are most of a real workload; without this rule most states are empty."""
        for key, value in batch:
            self.put(key, value, 0, False)

    @rule(r=ranges, prev_kv=st.booleans())
    def delete(self, r: tuple[bytes, bytes], prev_kv: bool) -> None:
        response = self.client(DeleteRangeRequest(r[0], r[1], prev_kv))
        work = dict(self.model.current)
        results = model_txn(
            self.model, (DeleteRangeRequest(r[0], r[1], prev_kv),), work, self.model.revision + 1
        )
        self.commit(work, results[0][1] > 0)
        check_partial(results[0], response)
        self.check_header(response)

    @rule(
        compare=st.lists(
            st.one_of(
                st.builds(
                    Compare,
                    st.sampled_from(
                        [
                            CompareTarget.VERSION,
                            CompareTarget.CREATE,
                            CompareTarget.MOD,
                            CompareTarget.LEASE,
                        ]
                    ),
                    st.sampled_from(CompareResult),
                    keys,
                    st.integers(0, 6),
                    st.sampled_from(RANGE_ENDS),
                ),
                st.builds(
                    Compare,
                    st.just(CompareTarget.VALUE),
                    st.sampled_from(CompareResult),
                    keys,
                    values,
                    st.sampled_from(RANGE_ENDS),
                ),
            ),
            max_size=2,
        ),
        success=ops_strategy,
        failure=ops_strategy,
    )
    def txn(
        self, compare: list[Compare], success: list[RequestOp], failure: list[RequestOp]
    ) -> None:
        if writes_overlap(success) or writes_overlap(failure):
            return
        request = TxnRequest(tuple(compare), tuple(success), tuple(failure))
        state = self.model.current
        succeeded = all(self.model.compare(state, c) for c in compare)
        work = dict(state)
        results = model_txn(
            self.model,
            request.success if succeeded else request.failure,
            work,
            self.model.revision + 1,
        )
        response = self.client(request)
        self.commit(work, work != state)
        assert isinstance(response, TxnResponse)
        event(f"txn succeeded={succeeded} wrote={work != state}")
        assert response.succeeded == succeeded
        assert len(response.responses) == len(results)
        for result, inner in zip(results, response.responses, strict=True):
            check_partial(result, inner)
            self.check_header(inner)
        self.check_header(response)

    @rule(data=st.data())
    def nested_txn(self, data: st.DataObject) -> None:
        """A txn inside a txn: its compare sees the state before the outer txn."""
        key = data.draw(keys)
        inner_key = data.draw(keys.filter(lambda k: k != key))
        state = self.model.current
        version = state[key][2] if key in state else 0
        inner = TxnRequest(
            (Compare(CompareTarget.VERSION, CompareResult.EQUAL, key, version),),
            (PutRequest(inner_key, b"inner"),),
            (PutRequest(inner_key, b"never"),),
        )
        response = self.client(TxnRequest((), (PutRequest(key, b"outer"), inner), ()))
        work = dict(state)
        model_txn(
            self.model,
            (PutRequest(key, b"outer"), PutRequest(inner_key, b"inner")),
            work,
            self.model.revision + 1,
        )
        self.commit(work, True)
        assert isinstance(response, TxnResponse) and response.succeeded
        nested = response.responses[1]
        assert isinstance(nested, TxnResponse) and nested.succeeded
        self.check_header(nested)

    @rule(revision_offset=st.integers(-3, 3))
    def compact(self, revision_offset: int) -> None:
        revision = self.model.revision + revision_offset
        response = self.client(CompactionRequest(revision))
        if revision <= self.model.compacted:
            assert isinstance(response, ErrorResponse) and response.code == 103
            assert response.compact_revision == self.model.compacted
        elif revision > self.model.revision:
            assert isinstance(response, ErrorResponse) and response.code == 104
        else:
            assert not isinstance(response, ErrorResponse), response
            self.model.compacted = revision

    # ------------------------------------------------------------------ leases

    @rule(ttl=st.integers(1, 100), wanted=st.sampled_from([0, 0, 7, 8]))
    def lease_grant(self, ttl: int, wanted: int) -> None:
        response = self.client(LeaseGrantRequest(ttl, wanted))
        if wanted and wanted in self.model.leases:
            assert isinstance(response, ErrorResponse) and response.code == 101
            return
        assert isinstance(response, LeaseGrantResponse), response
        assert response.ttl == max(ttl, 5)
        assert response.id not in self.model.leases
        if wanted:
            assert response.id == wanted
        self.model.leases[response.id] = response.ttl

    @rule(pick=st.integers(0, 5), expire=st.booleans())
    def lease_revoke(self, pick: int, expire: bool) -> None:
        leases = sorted(self.model.leases)
        lease = leases[pick % len(leases)] if leases and pick else 999
        if expire:
            response = self.apply(ExpireLeases((lease,)))
        else:
            response = self.client(LeaseRevokeRequest(lease))
        if lease not in self.model.leases:
            if not expire:
                assert isinstance(response, ErrorResponse) and response.code == 105
            return
        assert not isinstance(response, ErrorResponse), response
        del self.model.leases[lease]
        state = self.model.current
        work = {k: v for k, v in state.items() if v[4] != lease}
        self.commit(work, work != state)
        self.check_header(response)
        assert self.sm.mvcc.lease_keys(lease) == []

    # ------------------------------------------------------------------ reads

    @rule(
        r=ranges,
        back=st.integers(0, 12),
        options=st.fixed_dictionaries(
            {
                "limit": st.integers(0, 4),
                "sort_order": st.sampled_from(SortOrder),
                "sort_target": st.sampled_from(SortTarget),
                "keys_only": st.sampled_from([False, False, True]),
                "count_only": st.sampled_from([False, False, False, True]),
            }
        ),
        filters=st.one_of(
            st.just((0, 0, 0, 0)), st.tuples(*[st.sampled_from([0, 0, 2, 3, 5, 8])] * 4)
        ),
    )
    def range(
        self,
        r: tuple[bytes, bytes],
        back: int,
        options: dict[str, Any],
        filters: tuple[int, int, int, int],
    ) -> None:
        revision = max(0, self.model.revision - back) if back < 12 else self.model.revision + 1
        request = RangeRequest(
            r[0],
            r[1],
            revision=revision,
            min_mod_revision=filters[0],
            max_mod_revision=filters[1],
            min_create_revision=filters[2],
            max_create_revision=filters[3],
            **options,
        )
        for sm in (self.sm, self.twin):
            if revision > self.model.revision:
                try:
                    sm.range(request)
                except FutureRevisionError:
                    continue
                raise AssertionError("future revision served")
            if 0 < revision < self.model.compacted:
                try:
                    sm.range(request)
                except CompactedError as exc:
                    assert exc.compact_revision == self.model.compacted
                    continue
                raise AssertionError("compacted revision served")
            response = sm.range(request)
            event(f"range served, {min(len(response.kvs), 3)}+ kvs")
            state = self.model.states[revision or self.model.revision]
            assert (response.kvs, response.more, response.count) == self.model.range(state, request)
            self.check_header(response)

    # ------------------------------------------------------------------ exactly-once

    @precondition(lambda self: self.history)
    @rule(pick=st.integers(0, 1000))
    def retry(self, pick: int) -> None:
        command, first = self.history[-1 - pick % min(len(self.history), 100)]
        self.index += 1
        assert self.sm.apply(self.index, command) == first
        assert self.twin.apply(self.index, command) == first

    # ------------------------------------------------------------------ snapshots

    @rule()
    def restore_twin(self) -> None:
        """Continue the twin from a copy restored from its snapshot."""
        data = self.twin.snapshot()
        restored = KVStateMachine()
        restored.restore(data)
        assert restored.snapshot() == data
        assert restored.applied_index == self.index
        self.twin = restored

    @rule()
    def restore_in_place(self) -> None:
        """Restoring the member's own state must not disturb its watchers."""
        self.sm.restore(self.sm.snapshot())

    # ------------------------------------------------------------------ watches

    @rule(
        r=ranges,
        back=st.integers(-1, 10),
        prev_kv=st.booleans(),
        filters=st.sampled_from([(), (WatchFilterType.NOPUT,), (WatchFilterType.NODELETE,)]),
    )
    def watch(self, r: tuple[bytes, bytes], back: int, prev_kv: bool, filters: Any) -> None:
        start = 0 if back < 0 else max(1, self.model.revision - back)
        created = self.sm.watches.create(
            WatchCreateRequest(r[0], r[1], start, False, filters, prev_kv), tag="conn"
        )
        assert created.created
        self.watches[created.watch_id] = Watch(
            created.watch_id,
            r[0],
            r[1],
            start or self.model.revision + 1,
            prev_kv,
            WatchFilterType.NOPUT in filters,
            WatchFilterType.NODELETE in filters,
        )

    @rule(pick=st.integers(0, 100))
    def progress(self, pick: int) -> None:
        if self.watches:
            ids = sorted(self.watches)
            self.sm.watches.request_progress([ids[pick % len(ids)]])

    @rule(max_responses=st.integers(1, 5))
    def drain(self, max_responses: int) -> None:
        self.deliver(self.sm.watches.drain(max_responses))

    def deliver(self, deliveries: list) -> None:
        for delivery in deliveries:
            watch = self.watches[delivery.watch_id]
            assert delivery.tag == "conn"
            assert watch.canceled is None, "response after cancel"
            response = delivery.response
            if response.canceled:
                event("watch canceled: " + ("compacted" if response.compact_revision else "other"))
                watch.canceled = response
            elif response.progress_notify:
                watch.progress.append((len(watch.received), response.header.revision))
            else:
                watch.received.append(response)

    def expected_events(self, watch: Watch, upto: int) -> list[tuple[int, list[Event]]]:
        out = []
        for revision in range(max(watch.start, 2), upto + 1):
            events = [
                e
                for e in self.model.events(revision)
                if in_range(e.kv.key, watch.key, watch.range_end)
                and not (watch.no_put and e.type == EventType.PUT)
                and not (watch.no_delete and e.type == EventType.DELETE)
            ]
            if not watch.prev_kv:
                events = [Event(e.type, e.kv) for e in events]
            if events:
                out.append((revision, events))
        return out

    @invariant()
    def watches_match_model(self) -> None:
        if not hasattr(self, "watches"):
            return
        for watch in self.watches.values():
            got = [
                (r.header.revision, sorted(r.events, key=lambda e: e.kv.key))
                for r in watch.received
            ]
            for revision, events in got:
                assert all(e.kv.mod_revision == revision for e in events)
            revisions = [revision for revision, _ in got]
            assert revisions == sorted(set(revisions)), "out of order or duplicate revision"
            upto = revisions[-1] if revisions else watch.start - 1
            if watch.canceled is None or not watch.canceled.compact_revision:
                # What was delivered is exactly the model's history up to there.
                assert got == self.expected_events(watch, upto)
            for position, promised in watch.progress:
                before = got[:position]
                assert before == self.expected_events(watch, promised), "progress over-promised"
            if watch.canceled is not None:
                canceled = watch.canceled
                assert canceled.compact_revision or canceled.cancel_reason.startswith(
                    SLOW_WATCHER_REASON
                )
                if canceled.compact_revision:
                    # Canceled only because what it still needed was compacted away.
                    assert upto + 1 < canceled.compact_revision
                    assert got == self.expected_events(watch, upto)

    def teardown(self) -> None:
        if not hasattr(self, "sm"):
            return
        # Everything still queued or catching up arrives, and is exactly the model's.
        for _ in range(10_000):
            deliveries = self.sm.watches.drain(1000)
            if not deliveries and not self.sm.watches.pending:
                break
            self.deliver(deliveries)
        for watch in self.watches.values():
            if watch.canceled is None:
                got = [
                    (r.header.revision, sorted(r.events, key=lambda e: e.kv.key))
                    for r in watch.received
                ]
                assert got == self.expected_events(watch, self.model.revision)
        assert self.twin.snapshot() == self.sm.snapshot()


KVMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestKVModel = KVMachine.TestCase
