"""The multi-version key-value store: every version of every key since the last compaction,
indexed for reads at any retained revision and for replaying the events of any retained
revision range (what watches catch up from).

Semantics follow etcd v3's mvcc package:

- A global ``revision`` starts at 1 (the empty store) and grows by one per write
  transaction that changes something. A transaction with several writes is ONE revision;
  its events are ordered by a sub-index.
- Every version of a key carries ``create_revision`` (revision of the put that created this
  generation of the key), ``mod_revision`` (the revision that wrote this version),
  ``version`` (puts since creation, starting at 1) and ``lease``. A delete ends the
  generation: it is recorded as a tombstone (``version == 0``), and the next put starts a
  new generation with ``version == 1``.
- ``compact(C)`` drops what is only needed for reads below ``C``: reads at ``C`` and later
  and the events of revisions ``>= C`` (with their ``prev_kv``) stay exact; reads below
  raise ``CompactedError(compact_revision=C)``, reads above the current revision
  ``FutureRevisionError``.
- Transactions evaluate every compare of the chosen path (nested transactions included)
  against the state before the transaction, then run the ops in order, each seeing the
  writes of the ops before it. An op that fails (unknown lease, compacted range, ...) undoes
  the whole transaction: the revision does not move and nothing is observable.

Lease bookkeeping kept here is only the derived index lease id -> attached keys; which
leases exist is decided by the caller (``lease_exists``), see ``pnyx.core.kv.lease``.

This module is pure and deterministic: no clocks, files, sockets, threads or randomness,
and nothing here iterates a hash-ordered container where the order could leak into a
result. It must never depend on the server, transport or clients.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information
from sortedcontainers import SortedList  # type: ignore[import-untyped]  # ships no type information

from pnyx.core.errors import (
    CompactedError,
    FutureRevisionError,
    InvalidRequestError,
    LeaseNotFoundError,
)
from pnyx.core.wire.keys import OPEN_END
from pnyx.core.wire.messages import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

__all__ = ["FIRST_REVISION", "MVCCStore"]

FIRST_REVISION = 1
"""The revision of the empty store, as in etcd: the first write is revision 2."""

_PUT = EventType.PUT
_DELETE = EventType.DELETE


@attrs.define(slots=True)
class _History:
    """The retained versions of one key, oldest first. Never empty while in the index.

    ``revisions[i]`` is the main revision of ``kvs[i]`` (== its ``mod_revision``) and
    ``subs[i]`` its position among the events of that revision. A tombstone is a
    ``KeyValue`` with ``version == 0`` (exactly what a DELETE event carries).
    """

    revisions: list[int]
    subs: list[int]
    kvs: list[KeyValue]

    def at(self, revision: int) -> KeyValue | None:
        """The live version at ``revision``, or None if the key did not exist then."""
        revisions = self.revisions
        if revisions[-1] <= revision:
            kv = self.kvs[-1]
        else:
            i = bisect_right(revisions, revision) - 1
            if i < 0:
                return None
            kv = self.kvs[i]
        return kv if kv.version else None

    def latest(self) -> KeyValue | None:
        kv = self.kvs[-1]
        return kv if kv.version else None


# What an op produced, before the revision of its response header is known (a transaction
# learns whether it wrote only at its end). Built into a response by ``_build``.
_Partial: TypeAlias = tuple[Any, ...]


@attrs.frozen
class _Plan:
    """The branch a transaction takes and, for each nested transaction in it, its plan."""

    succeeded: bool
    nested: tuple[_Plan | None, ...]


def _versions(history: _History) -> list[list[Any]]:
    return [
        [revision, sub, kv.create_revision, kv.version, kv.value, kv.lease]
        for revision, sub, kv in zip(history.revisions, history.subs, history.kvs, strict=True)
    ]


class _KeyOrder:
    """A sorted set of keys in which adding is cheap: a new key waits, in insertion order,
    until something needs the order (a range read, a dump) and then joins the sorted
    list with the others that waited (one merge instead of one insertion each)."""

    __slots__ = ("_new", "_sorted")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        self._sorted = SortedList(keys)
        self._new: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._sorted) + len(self._new)

    def add(self, key: bytes) -> None:
        """Add ``key``, which must not be in the set."""
        self._new[key] = None

    def discard(self, key: bytes) -> None:
        """Remove ``key``, which must be in the set."""
        if key in self._new:
            del self._new[key]
        else:
            self._sorted.remove(key)

    def ordered(self) -> SortedList:
        new = self._new
        if new:
            self._sorted.update(new)
            new.clear()
        return self._sorted

    def take(self, key: bytes, range_end: bytes) -> list[bytes]:
        """Remove the keys of ``[key, range_end)`` and return them, in order (one slice
        deletion, not one removal per key)."""
        keys, start, stop = self.bounds(key, range_end)
        if start == stop:
            return []
        taken: list[bytes] = keys[start:stop]
        del keys[start:stop]
        return taken

    def bounds(self, key: bytes, range_end: bytes) -> tuple[SortedList, int, int]:
        """The ordered keys and the positions of ``[key, range_end)`` in them."""
        keys = self.ordered()
        start = keys.bisect_left(key)
        if range_end == OPEN_END:
            return keys, start, len(keys)
        if range_end <= key:
            return keys, start, start
        return keys, start, keys.bisect_left(range_end)


class _WriteTxn:
    """One write transaction: at most one new revision. Writes go straight into the key
    histories at ``revision`` (invisible to reads at older revisions), so later ops of the
    same transaction see them; ``rollback`` removes them again.

    A plain slotted class, not attrs: one is made per write, and it is never compared,
    printed or stored."""

    __slots__ = ("created", "kvs", "prevs", "revision", "store")

    def __init__(self, store: MVCCStore, revision: int) -> None:
        self.store = store
        self.revision = revision
        # The versions written, in order (the revision's events), and what each replaced.
        self.kvs: list[KeyValue] = []
        self.prevs: list[KeyValue | None] = []
        self.created: list[bytes] = []
        """Keys this transaction added to the index (a rollback removes them)."""

    def put(self, key: bytes, value: bytes, lease: int) -> KeyValue | None:
        """Write a new version of ``key``; returns the version it replaced (if live)."""
        revision = self.revision
        store = self.store
        kv, prev, created = store._append_version(key, revision, len(self.kvs), value, lease)
        if created:
            self.created.append(key)
        self.kvs.append(kv)
        self.prevs.append(prev)
        return prev

    def delete(self, key: bytes, history: _History, prev: KeyValue) -> None:
        """Write a tombstone for ``key``, whose live version is ``prev``."""
        revision = self.revision
        history.revisions.append(revision)
        history.subs.append(len(self.kvs))
        tombstone = KeyValue(key, 0, revision, 0, b"", 0)
        history.kvs.append(tombstone)
        self.store._live_keys.discard(key)
        self.kvs.append(tombstone)
        self.prevs.append(prev)

    def delete_all(
        self, keys: list[bytes], histories: list[_History], prevs: list[KeyValue]
    ) -> None:
        """``delete`` for many keys at once, whose live versions are ``prevs``; the caller
        already took them out of the live keys."""
        revision = self.revision
        sub = len(self.kvs)
        tombstones = [KeyValue(key, 0, revision, 0, b"", 0) for key in keys]
        for history, tombstone in zip(histories, tombstones, strict=True):
            history.revisions.append(revision)
            history.subs.append(sub)
            history.kvs.append(tombstone)
            sub += 1
        self.kvs.extend(tombstones)
        self.prevs.extend(prevs)

    def rollback(self) -> None:
        store = self.store
        index = store._index
        live_keys = store._live_keys
        for kv, prev in zip(reversed(self.kvs), reversed(self.prevs), strict=True):
            history = index[kv.key]
            history.revisions.pop()
            history.subs.pop()
            history.kvs.pop()
            if not kv.version:
                live_keys.add(kv.key)  # the delete is undone
            elif prev is None:
                live_keys.discard(kv.key)  # the key was not live before this put
        for key in self.created:
            del index[key]
            store._keys.discard(key)
        self.kvs.clear()
        self.prevs.clear()
        self.created.clear()

    def commit(self) -> int:
        """Make the writes the new revision (if there were any); returns the store's
        revision afterwards."""
        store = self.store
        if not self.kvs:
            return store._revision
        return store._commit(self.revision, tuple(self.kvs), self.prevs)


@attrs.define
class MVCCStore:
    """The versioned key space. Writes are ``put``, ``delete_range``, ``txn`` (each one
    write transaction) and ``delete_keys`` (lease revocation); reads are ``range`` and the
    event accessors. Requests and responses are the ``pnyx.core.wire`` messages; response
    headers carry only the revision (the server fills term and member).

    ``lease_exists`` tells whether a lease id may be attached by a put; ``on_commit`` is
    called with ``(revision, kvs)`` after every new revision (the watch hub's feed):
    ``kvs`` are the versions that revision wrote, in event order (a DELETE's is the
    tombstone); ``events(revision)`` gives the full events.

    Costs on the write path are kept to what every write needs, because every member
    applies every write: the key index is a dict (a new key joins the sorted key list
    only when a range read or a dump needs it), and watch ``Event`` objects are built
    only when something reads them (a watcher, a catch-up), from the key's history.
    """

    lease_exists: Callable[[int], bool] = attrs.field(default=lambda _lease: True)
    on_commit: Callable[[int, tuple[KeyValue, ...]], None] | None = None
    _index: dict[bytes, _History] = attrs.field(init=False, factory=dict)
    _keys: _KeyOrder = attrs.field(init=False, factory=_KeyOrder)
    """The keys of ``_index``, for range reads at past revisions and dumps."""
    _live_keys: _KeyOrder = attrs.field(init=False, factory=_KeyOrder)
    """The keys whose latest version is live: a range read at the current revision
    costs the live keys it returns or counts, not the tombstones of every key that
    ever was in the range (nothing removes those until a compaction)."""
    _revision: int = attrs.field(init=False, default=FIRST_REVISION)
    _compact_revision: int = attrs.field(init=False, default=0)
    # revision -> the versions it wrote, in event order; every revision after
    # FIRST_REVISION has some. The same objects as in the key histories.
    _events: dict[int, tuple[KeyValue, ...]] = attrs.field(init=False, factory=dict)
    # lease id -> keys whose live version carries it (derived from the index).
    _lease_keys: dict[int, set[bytes]] = attrs.field(init=False, factory=dict)
    _header: ResponseHeader = attrs.field(init=False, factory=ResponseHeader)

    # ------------------------------------------------------------------ properties

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compact_revision(self) -> int:
        """Reads below this revision are refused; 0 if nothing was ever compacted."""
        return self._compact_revision

    def header(self) -> ResponseHeader:
        """A response header at the current revision (shared: headers are immutable)."""
        header = self._header
        if header.revision != self._revision:
            header = self._header = ResponseHeader(revision=self._revision)
        return header

    # ------------------------------------------------------------------ reads

    def range(self, request: RangeRequest) -> RangeResponse:
        """Serve a range read at the current or a retained past revision."""
        partial = self._range(request, self._revision, self._revision)
        return RangeResponse(self.header(), *partial)

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The live version of one key at ``revision`` (0: current), or None."""
        revision = self._read_revision(revision, self._revision, self._revision)
        history = self._index.get(key)
        return None if history is None else history.at(revision)

    def events(self, revision: int) -> tuple[Event, ...]:
        """The events of one retained revision (empty for a revision without writes).
        Raises CompactedError / FutureRevisionError outside the retained range."""
        self._check_event_revision(revision)
        kvs = self._events.get(revision)
        if kvs is None:
            return ()
        return tuple([self._event_of(kv) for kv in kvs])

    def written(self, revision: int) -> tuple[KeyValue, ...]:
        """The versions one retained revision wrote, in event order (a DELETE's is its
        tombstone): ``events`` without building them. Empty for an unknown revision."""
        return self._events.get(revision, ())

    def events_between(
        self, start_revision: int, end_revision: int
    ) -> Iterator[tuple[int, tuple[Event, ...]]]:
        """``(revision, events)`` for every revision in ``[start_revision, end_revision]``
        that has events, in order. The caller checks the start against the compaction."""
        self._check_event_revision(start_revision)
        events = self._events
        event_of = self._event_of
        for revision in range(max(start_revision, FIRST_REVISION + 1), end_revision + 1):
            kvs = events.get(revision)
            if kvs is not None:
                yield revision, tuple([event_of(kv) for kv in kvs])

    def key_events_between(
        self, key: bytes, start_revision: int, end_revision: int
    ) -> Iterator[tuple[int, tuple[Event, ...]]]:
        """Like ``events_between`` restricted to one key, served from the key's own history
        (no scan of unrelated revisions)."""
        self._check_event_revision(start_revision)
        history = self._index.get(key)
        if history is None:
            return
        revisions = history.revisions
        kvs = history.kvs
        i = bisect_left(revisions, start_revision)
        j = bisect_right(revisions, end_revision)
        current_revision = -1
        batch: list[Event] = []
        for position in range(i, j):
            kv = kvs[position]
            prev = kvs[position - 1] if position > 0 else None
            if prev is not None and not prev.version:
                prev = None
            event = Event(_PUT if kv.version else _DELETE, kv, prev)
            if revisions[position] != current_revision:
                if batch:
                    yield current_revision, tuple(batch)
                current_revision = revisions[position]
                batch = []
            batch.append(event)
        if batch:
            yield current_revision, tuple(batch)

    def lease_keys(self, lease: int) -> list[bytes]:
        """The keys whose current version is attached to ``lease``, sorted."""
        return sorted(self._lease_keys.get(lease, ()))

    def key_count(self) -> int:
        """Keys with a retained history (live or not); a cheap size measure."""
        return len(self._index)

    def live_key_count(self) -> int:
        """Keys that exist at the current revision."""
        return len(self._live_keys)

    # ------------------------------------------------------------------ writes

    def put(self, request: PutRequest) -> PutResponse:
        prev = self.put_only(request)
        return PutResponse(self.header(), prev if request.prev_kv else None)

    def _append_version(
        self, key: bytes, revision: int, sub: int, value: bytes, lease: int
    ) -> tuple[KeyValue, KeyValue | None, bool]:
        """Write the next version of ``key`` at ``(revision, sub)`` into its history and
        the live keys: the new version, the live one it replaced (None if the key was
        absent or deleted), and whether the key was new to the index."""
        history = self._index.get(key)
        created = history is None
        if history is None:
            prev = None
            kv = KeyValue(key, revision, revision, 1, value, lease)
            self._index[key] = _History([revision], [sub], [kv])
            self._keys.add(key)
        else:
            prev = history.latest()
            if prev is None:
                kv = KeyValue(key, revision, revision, 1, value, lease)
            else:
                kv = KeyValue(key, prev.create_revision, revision, prev.version + 1, value, lease)
            history.revisions.append(revision)
            history.subs.append(sub)
            history.kvs.append(kv)
        if prev is None:
            self._live_keys.add(key)
        return kv, prev, created

    def put_only(self, request: PutRequest) -> KeyValue | None:
        """``put`` without building its response: the new revision is ``revision``;
        returns the version the put replaced (if live). The hot path of every member."""
        value, lease = self._put_arguments(request)  # raises before anything is written
        key = request.key
        revision = self._revision + 1
        kv, prev, _ = self._append_version(key, revision, 0, value, lease)
        self._commit(revision, (kv,), (prev,))
        return prev

    def delete_range(self, request: DeleteRangeRequest) -> DeleteRangeResponse:
        txn = _WriteTxn(self, self._revision + 1)
        deleted = self._delete_range(txn, request.key, request.range_end)
        txn.commit()
        return DeleteRangeResponse(
            self.header(), len(deleted), tuple(deleted) if request.prev_kv else ()
        )

    def delete_keys(self, keys: Iterable[bytes]) -> int:
        """Delete the given keys (those live) in one revision, in the order given; returns
        the store's revision afterwards. Used to revoke a lease."""
        txn = _WriteTxn(self, self._revision + 1)
        index = self._index
        for key in keys:
            history = index.get(key)
            prev = None if history is None else history.latest()
            if history is not None and prev is not None:
                txn.delete(key, history, prev)
        return txn.commit()

    def txn(self, request: TxnRequest) -> TxnResponse:
        plan = self._plan(request, self._revision)
        txn = _WriteTxn(self, self._revision + 1)
        try:
            partial = self._run_txn(txn, request, plan)
        except BaseException:
            txn.rollback()
            raise
        txn.commit()
        return self._build(request, partial, self.header())  # type: ignore[return-value]

    def compact(self, revision: int) -> None:
        """Drop the history needed only for reads below ``revision`` (see module doc)."""
        if revision <= self._compact_revision:
            raise CompactedError(compact_revision=self._compact_revision)
        if revision > self._revision:
            raise FutureRevisionError(
                f"compaction revision {revision} is after the current revision {self._revision}"
            )
        index = self._index
        emptied: list[bytes] = []
        for key, history in index.items():
            revisions = history.revisions
            # The last version below the compaction is kept if live: it is the key's value
            # at `revision` or the prev_kv of the key's first retained event.
            last_below = bisect_left(revisions, revision) - 1
            if last_below < 0:
                continue
            keep_from = last_below if history.kvs[last_below].version else last_below + 1
            if keep_from:
                del revisions[:keep_from]
                del history.subs[:keep_from]
                del history.kvs[:keep_from]
                if not revisions:
                    emptied.append(key)
        for key in emptied:
            del index[key]
            self._keys.discard(key)
        events = self._events
        for old in range(max(self._compact_revision, FIRST_REVISION), revision):
            events.pop(old, None)
        self._compact_revision = revision

    # ------------------------------------------------------------------ snapshot

    def dump(self) -> list[Any]:
        """Everything needed to rebuild an identical store, as msgpack-ready lists."""
        index = self._index
        keys: list[Any] = [[key, _versions(index[key])] for key in self._keys.ordered()]
        return [self._revision, self._compact_revision, keys]

    def dump_packed(self, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """``dump()`` encoded as msgpack, in chunks of about ``chunk_bytes`` whose
        concatenation is exactly ``msgpack.packb(dump(), use_bin_type=True)``: one key at
        a time, without building the whole nested list first (for a big store that list
        costs more than the encoding, in time and in freshly touched memory)."""
        packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        keys = self._keys.ordered()
        packer.pack_array_header(3)
        packer.pack(self._revision)
        packer.pack(self._compact_revision)
        packer.pack_array_header(len(keys))
        index = self._index
        pack = packer.pack
        for count, key in enumerate(keys, 1):
            pack([key, _versions(index[key])])
            if not count % 64:
                with packer.getbuffer() as view:
                    full = view.nbytes >= chunk_bytes
                if full:
                    yield packer.bytes()
                    packer.reset()
        yield packer.bytes()

    @classmethod
    def load(
        cls,
        dumped: Sequence[Any],
        lease_exists: Callable[[int], bool] = lambda _lease: True,
        on_commit: Callable[[int, tuple[KeyValue, ...]], None] | None = None,
    ) -> MVCCStore:
        """The store ``dump`` described; the event log and lease index are rebuilt."""
        revision, compact_revision, keys = dumped
        store = cls(lease_exists=lease_exists, on_commit=on_commit)
        store._revision = revision
        store._compact_revision = compact_revision
        by_revision: dict[int, list[tuple[int, KeyValue]]] = {}
        index = store._index
        for key, versions in keys:
            revisions: list[int] = []
            subs: list[int] = []
            kvs: list[KeyValue] = []
            prev: KeyValue | None = None
            for main, sub, create_revision, version, value, lease in versions:
                kv = KeyValue(key, create_revision, main, version, value, lease)
                revisions.append(main)
                subs.append(sub)
                kvs.append(kv)
                if main >= compact_revision:
                    by_revision.setdefault(main, []).append((sub, kv))
                prev = kv if version else None
            index[key] = _History(revisions, subs, kvs)
            if prev is not None and prev.lease:
                store._lease_keys.setdefault(prev.lease, set()).add(key)
        store._keys = _KeyOrder(index)
        store._live_keys = _KeyOrder(
            key for key, history in index.items() if history.kvs[-1].version
        )
        for main in sorted(by_revision):
            written = by_revision[main]
            written.sort(key=_first)
            store._events[main] = tuple([kv for _sub, kv in written])
        return store

    # ------------------------------------------------------------------ internals

    def _read_revision(self, revision: int, view: int, newest: int) -> int:
        """The revision a read asking for ``revision`` is served at; ``view`` is what 0
        means, ``newest`` the latest revision that may be asked for explicitly."""
        if revision <= 0:
            return view
        if revision > newest:
            raise FutureRevisionError(f"revision {revision} is after the current revision {newest}")
        if revision < self._compact_revision:
            raise CompactedError(compact_revision=self._compact_revision)
        return revision

    def _check_event_revision(self, revision: int) -> None:
        if revision < self._compact_revision:
            raise CompactedError(compact_revision=self._compact_revision)
        if revision > self._revision + 1:
            raise FutureRevisionError(
                f"revision {revision} is after the current revision {self._revision}"
            )

    def _live(self, key: bytes, range_end: bytes, revision: int) -> list[KeyValue]:
        """The live versions at ``revision`` of the keys in the range, in key order."""
        index = self._index
        if not range_end:
            history = index.get(key)
            if history is None:
                return []
            kv = history.at(revision)
            return [] if kv is None else [kv]
        if revision >= self._revision:
            # Current (or within a write transaction, whose writes keep the live keys
            # up to date as they go): every live key's latest version.
            keys, start, stop = self._live_keys.bounds(key, range_end)
            return [index[one_key].kvs[-1] for one_key in keys.islice(start, stop)]
        keys, start, stop = self._keys.bounds(key, range_end)
        out: list[KeyValue] = []
        for one_key in keys.islice(start, stop):
            kv = index[one_key].at(revision)
            if kv is not None:
                out.append(kv)
        return out

    def _commit(
        self,
        revision: int,
        kvs: tuple[KeyValue, ...],
        prevs: Sequence[KeyValue | None],
    ) -> int:
        """Make the versions ``kvs`` (already in their histories; ``prevs`` are the live
        versions they replaced) the new revision ``revision``."""
        self._revision = revision
        self._events[revision] = kvs
        for kv, prev in zip(kvs, prevs, strict=True):
            if kv.lease or (prev is not None and prev.lease):
                self._index_lease(kv, prev)
        if self.on_commit is not None:
            self.on_commit(revision, kvs)
        return revision

    def _event_of(self, kv: KeyValue) -> Event:
        """The watch event that wrote ``kv`` (a retained version), with the live version
        it replaced as ``prev_kv``."""
        history = self._index[kv.key]
        kvs = history.kvs
        position = bisect_left(history.revisions, kv.mod_revision)
        while kvs[position] is not kv:
            position += 1
        prev = kvs[position - 1] if position > 0 else None
        if prev is not None and not prev.version:
            prev = None
        return Event(_PUT if kv.version else _DELETE, kv, prev)

    def _range(self, request: RangeRequest, view: int, newest: int) -> _Partial:
        """``(kvs, more, count)`` of a range read."""
        revision = self._read_revision(request.revision, view, newest)
        if (
            request.range_end
            and revision >= self._revision
            and request.sort_target == SortTarget.KEY
            and not (
                request.min_mod_revision
                or request.max_mod_revision
                or request.min_create_revision
                or request.max_create_revision
            )
        ):
            return self._range_live_by_key(request)
        kvs = self._live(request.key, request.range_end, revision)
        count = len(kvs)
        if request.count_only:
            return ((), False, count)
        if request.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= request.min_mod_revision]
        if request.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= request.max_mod_revision]
        if request.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= request.min_create_revision]
        if request.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= request.max_create_revision]
        kvs = _sorted(kvs, request.sort_order, request.sort_target)
        more = False
        if 0 < request.limit < len(kvs):
            kvs = kvs[: request.limit]
            more = True
        if request.keys_only:
            kvs = [attrs.evolve(kv, value=b"") for kv in kvs]
        return (tuple(kvs), more, count)

    def _range_live_by_key(self, request: RangeRequest) -> _Partial:
        """``_range`` at the current revision in key order without filters: only the
        keys returned are visited (the count comes from positions), so a small ``limit``
        on a big range stays cheap."""
        keys, start, stop = self._live_keys.bounds(request.key, request.range_end)
        count = stop - start
        if request.count_only:
            return ((), False, count)
        take = count
        more = False
        if 0 < request.limit < count:
            take = request.limit
            more = True
        if request.sort_order == SortOrder.DESCEND:
            chosen = keys.islice(stop - take, stop, reverse=True)
        else:
            chosen = keys.islice(start, start + take)
        index = self._index
        kvs = [index[key].kvs[-1] for key in chosen]
        if request.keys_only:
            kvs = [attrs.evolve(kv, value=b"") for kv in kvs]
        return (tuple(kvs), more, count)

    def _put(self, txn: _WriteTxn, request: PutRequest) -> KeyValue | None:
        value, lease = self._put_arguments(request)
        return txn.put(request.key, value, lease)

    def _put_arguments(self, request: PutRequest) -> tuple[bytes, int]:
        """The value and lease a put writes; raises (before anything is written) if the
        put is refused."""
        value = request.value
        lease = request.lease
        if request.ignore_value or request.ignore_lease:
            history = self._index.get(request.key)
            current = None if history is None else history.latest()
            if current is None:
                raise InvalidRequestError("key not found (ignore_value/ignore_lease)")
            if request.ignore_value:
                if value:
                    raise InvalidRequestError("value given with ignore_value")
                value = current.value
            if request.ignore_lease:
                if lease:
                    raise InvalidRequestError("lease given with ignore_lease")
                lease = current.lease
        if lease and not request.ignore_lease and not self.lease_exists(lease):
            raise LeaseNotFoundError(f"lease {lease} not found")
        return value, lease

    def _delete_range(self, txn: _WriteTxn, key: bytes, range_end: bytes) -> list[KeyValue]:
        index = self._index
        if not range_end:
            deleted = self._live(key, range_end, txn.revision)
            for prev in deleted:
                txn.delete(prev.key, index[prev.key], prev)
            return deleted
        # A range: its live keys now (the transaction's own writes keep them up to date),
        # taken out in one slice. Deleting a big prefix is one apply that every member
        # runs on its loop thread: per-key work here is a stall of the whole node.
        keys = self._live_keys.take(key, range_end)
        histories = [index[one_key] for one_key in keys]
        deleted = [history.kvs[-1] for history in histories]
        txn.delete_all(keys, histories, deleted)
        return deleted

    def _compare(self, compare: Compare, revision: int) -> bool:
        target = compare.target
        expected = compare.value
        if (target == CompareTarget.VALUE) != isinstance(expected, bytes):
            raise InvalidRequestError(f"compare on {target.name} with a {type(expected)}")
        kvs = self._live(compare.key, compare.range_end, revision)
        if not kvs:
            # As etcd: a missing key fails every VALUE compare and otherwise compares as
            # version / revisions / lease 0.
            if target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(compare.key)]
        result = compare.result
        for kv in kvs:
            actual: bytes | int
            if target == CompareTarget.VALUE:
                actual = kv.value
            elif target == CompareTarget.VERSION:
                actual = kv.version
            elif target == CompareTarget.CREATE:
                actual = kv.create_revision
            elif target == CompareTarget.MOD:
                actual = kv.mod_revision
            elif target == CompareTarget.LEASE:
                actual = kv.lease
            else:
                raise InvalidRequestError(f"unknown compare target {target}")
            if result == CompareResult.EQUAL:
                holds = actual == expected
            elif result == CompareResult.NOT_EQUAL:
                holds = actual != expected
            elif result == CompareResult.LESS:
                holds = actual < expected  # type: ignore[operator]
            elif result == CompareResult.GREATER:
                holds = actual > expected  # type: ignore[operator]
            else:
                raise InvalidRequestError(f"unknown compare result {result}")
            if not holds:
                return False
        return True

    def _plan(self, request: TxnRequest, revision: int) -> _Plan:
        """Decide every branch of the transaction against the state at ``revision``
        (before any op runs), as etcd does."""
        succeeded = all(self._compare(compare, revision) for compare in request.compare)
        ops = request.success if succeeded else request.failure
        nested = tuple(
            self._plan(op, revision) if isinstance(op, TxnRequest) else None for op in ops
        )
        return _Plan(succeeded, nested)

    def _run_txn(self, txn: _WriteTxn, request: TxnRequest, plan: _Plan) -> _Partial:
        ops = request.success if plan.succeeded else request.failure
        partials: list[_Partial] = []
        for op, nested in zip(ops, plan.nested, strict=True):
            if isinstance(op, PutRequest):
                prev = self._put(txn, op)
                partials.append((prev if op.prev_kv else None,))
            elif isinstance(op, RangeRequest):
                partials.append(self._range(op, txn.revision, self._revision))
            elif isinstance(op, DeleteRangeRequest):
                deleted = self._delete_range(txn, op.key, op.range_end)
                partials.append((len(deleted), tuple(deleted) if op.prev_kv else ()))
            elif isinstance(op, TxnRequest):
                assert nested is not None
                partials.append(self._run_txn(txn, op, nested))
            else:
                raise InvalidRequestError(f"{type(op).__name__} is not a transaction op")
        return (plan.succeeded, partials)

    def _build(self, op: RequestOp, partial: _Partial, header: ResponseHeader) -> ResponseOp:
        if isinstance(op, RangeRequest):
            return RangeResponse(header, *partial)
        if isinstance(op, PutRequest):
            return PutResponse(header, *partial)
        if isinstance(op, DeleteRangeRequest):
            return DeleteRangeResponse(header, *partial)
        succeeded, partials = partial
        ops = op.success if succeeded else op.failure
        return TxnResponse(
            header,
            succeeded,
            tuple(
                self._build(inner, inner_partial, header)
                for inner, inner_partial in zip(ops, partials, strict=True)
            ),
        )

    def _index_lease(self, kv: KeyValue, prev: KeyValue | None) -> None:
        lease_keys = self._lease_keys
        if prev is not None and prev.lease:
            keys = lease_keys.get(prev.lease)
            if keys is not None:
                keys.discard(prev.key)
                if not keys:
                    del lease_keys[prev.lease]
        if kv.lease:
            lease_keys.setdefault(kv.lease, set()).add(kv.key)


def _first(item: tuple[int, KeyValue]) -> int:
    return item[0]


def _sorted(kvs: list[KeyValue], order: SortOrder, target: SortTarget) -> list[KeyValue]:
    """Sort as etcd: results come in ascending key order already, so KEY/ASCEND and NONE
    are free; a target other than KEY with order NONE means ascending. The sort is stable:
    ties stay in key order."""
    if target == SortTarget.KEY:
        if order == SortOrder.DESCEND:
            return kvs[::-1]
        return kvs
    if order == SortOrder.NONE:
        order = SortOrder.ASCEND
    key: Callable[[KeyValue], Any]
    if target == SortTarget.VERSION:
        key = _by_version
    elif target == SortTarget.CREATE:
        key = _by_create
    elif target == SortTarget.MOD:
        key = _by_mod
    elif target == SortTarget.VALUE:
        key = _by_value
    else:
        raise InvalidRequestError(f"unknown sort target {target}")
    return sorted(kvs, key=key, reverse=order == SortOrder.DESCEND)


def _by_version(kv: KeyValue) -> int:
    return kv.version


def _by_create(kv: KeyValue) -> int:
    return kv.create_revision


def _by_mod(kv: KeyValue) -> int:
    return kv.mod_revision


def _by_value(kv: KeyValue) -> bytes:
    return kv.value
