"""The watch hub: which watchers want which events, and the bounded queue of responses
waiting for each of them.

A watcher covers one key or a range ``[key, range_end)`` (``range_end == b"\\0"``: every
key ``>= key``) from a start revision, with optional ``prev_kv`` and NOPUT / NODELETE
filters. Guarantees, per watcher:

- events arrive in revision order, each at most once, and all events of one revision in
  one response (unless the watcher asked for ``fragment``);
- every response with events has ``header.revision`` equal to the revision of its events,
  and a progress notification has ``header.revision`` equal to the last revision the
  watcher has been given everything up to; so a client may always resume from
  ``header.revision + 1`` of the last response it received;
- a watcher whose start revision is in the past catches up from the MVCC history, in
  bounded chunks paced by the server draining its outbox, before it receives live events;
  if that history is compacted it is canceled with ``compact_revision`` set;
- a watcher whose outbox of live events grows over its bound (events or bytes) is canceled
  with a reason starting with ``SLOW_WATCHER_REASON`` and naming the revision to resume
  from: its queued responses are dropped, never buffered without limit.

Work per committed revision is proportional to the watchers that match its keys:
exact-key watchers are found in a dict, range watchers through an index of elementary
intervals (``_RangeIndex``); no step walks every watcher.

Delivery is pull-based: the server calls ``drain(max)`` and sends what it returns. A
connection that cannot take more (its socket is congested) is ``pause``d: its watchers
keep queueing, up to their bounds, and are skipped by ``drain`` until ``resume``.

The hub is driven by the apply loop (``notify`` after each committed revision) and reads
history from the ``MVCCStore``; it never performs I/O, reads clocks or spawns threads.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Hashable, Iterable, Sequence

import attrs

from pnyx.core.errors import CompactedError, FutureRevisionError, InvalidRequestError
from pnyx.core.kv.mvcc import MVCCStore
from pnyx.core.wire.keys import OPEN_END
from pnyx.core.wire.messages import (
    Event,
    EventType,
    KeyValue,
    ResponseHeader,
    WatchCreateRequest,
    WatchFilterType,
    WatchResponse,
)

__all__ = ["SLOW_WATCHER_REASON", "WatchDelivery", "WatchHub", "WatchLimits"]

SLOW_WATCHER_REASON = "slow watcher"
"""Prefix of ``cancel_reason`` when a watcher fell too far behind; resumable."""

_ANY_TAG: Hashable = object()
"""Default of ``WatchHub.cancel``: no ownership check."""

_EVENT_OVERHEAD = 64
"""Bytes counted per event on top of its keys and values (framing, revisions)."""


@attrs.frozen
class WatchLimits:
    max_outbox_events: int = 10_000
    """Queued events per watcher before a live watcher is cut off as slow."""
    max_outbox_bytes: int = 8 << 20
    """Queued bytes (keys + values + overhead) per watcher before it is cut off."""
    catchup_events: int = 1_000
    """A catching-up watcher is refilled from history up to this many queued events."""
    catchup_bytes: int = 1 << 20
    """... or this many queued bytes."""
    catchup_revisions: int = 2_000
    """At most this many revisions are scanned for one watcher per ``drain`` call."""
    catchup_watchers: int = 32
    """At most this many catching-up watchers are refilled per ``drain`` call (with the
    line above, bounds the history work of one ``drain``)."""
    fragment_events: int = 1_000
    """Events per response for a watcher that allows fragmenting a revision."""


class WatchDelivery:
    """One response to send: ``tag`` is what the server gave ``create`` for the watcher
    (for example its connection and request id).

    ``queued`` is the response as the hub queued it. Live events that several watchers
    get the same way are queued as ONE response for all of them, whose ``watch_id`` is
    0 (no watch has that id): a server that sends those events once for many watches
    (``SharedWatchResponse``) reads them from it without a response per watcher.
    ``response`` is the watcher's own response, built from it when asked."""

    __slots__ = ("queued", "tag", "watch_id")

    def __init__(self, watch_id: int, tag: Hashable, queued: WatchResponse) -> None:
        self.watch_id = watch_id
        self.tag = tag
        self.queued = queued

    @property
    def response(self) -> WatchResponse:
        queued = self.queued
        if queued.watch_id == self.watch_id:
            return queued
        return attrs.evolve(queued, watch_id=self.watch_id)

    def __repr__(self) -> str:
        return f"WatchDelivery({self.watch_id}, {self.tag!r}, {self.queued!r})"


@attrs.define(eq=False)
class _Watcher:
    watch_id: int
    tag: Hashable
    key: bytes
    range_end: bytes
    start_revision: int
    """Live events of earlier revisions are not for this watcher (a future start)."""
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify: bool
    fragment: bool
    next_revision: int
    """While catching up: the next revision to read from history."""
    synced: bool = False
    canceled: bool = False
    # Queued responses with the events and bytes each one counts for.
    outbox: deque[tuple[WatchResponse, int, int]] = attrs.Factory(deque)
    outbox_events: int = 0
    outbox_bytes: int = 0

    @property
    def range_key(self) -> tuple[bytes, bytes | None]:
        return (self.key, None if self.range_end == OPEN_END else self.range_end)

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if key < self.key:
            return False
        return self.range_end == OPEN_END or key < self.range_end


@attrs.define
class _RangeIndex:
    """Range watchers grouped by their range, and the key space cut into elementary
    intervals at every range bound, each listing the ranges that cover it: finding the
    ranges holding a key is one bisection. Rebuilt lazily when the set of distinct
    ranges changes (creates and cancels, never per write)."""

    groups: dict[tuple[bytes, bytes | None], dict[int, _Watcher]] = attrs.Factory(dict)
    _bounds: list[bytes] = attrs.Factory(list)
    _cover: list[list[dict[int, _Watcher]]] = attrs.Factory(list)
    _dirty: bool = False

    def add(self, watcher: _Watcher) -> None:
        range_key = watcher.range_key
        group = self.groups.get(range_key)
        if group is None:
            group = self.groups[range_key] = {}
            self._dirty = True
        group[watcher.watch_id] = watcher

    def remove(self, watcher: _Watcher) -> None:
        range_key = watcher.range_key
        group = self.groups.get(range_key)
        if group is None or group.pop(watcher.watch_id, None) is None:
            return
        if not group:
            del self.groups[range_key]
            self._dirty = True

    def match(self, key: bytes) -> list[dict[int, _Watcher]]:
        if self._dirty:
            self._rebuild()
        i = bisect_right(self._bounds, key) - 1
        return self._cover[i] if i >= 0 else []

    def _rebuild(self) -> None:
        bounds = sorted(
            {start for start, _end in self.groups}
            | {end for _start, end in self.groups if end is not None}
        )
        cover: list[list[dict[int, _Watcher]]] = [[] for _ in bounds]
        for (start, end), group in sorted(self.groups.items(), key=_range_order):
            i = bisect_left(bounds, start)
            j = len(bounds) if end is None else bisect_left(bounds, end)
            for position in range(i, j):
                cover[position].append(group)
        self._bounds = bounds
        self._cover = cover
        self._dirty = False


def _range_order(item: tuple[tuple[bytes, bytes | None], object]) -> tuple[bytes, bool, bytes]:
    (start, end), _group = item
    return (start, end is None, end or b"")


def _event_size(event: Event, with_prev: bool) -> int:
    kv = event.kv
    size = _EVENT_OVERHEAD + len(kv.key) + len(kv.value)
    prev = event.prev_kv
    if with_prev and prev is not None:
        size += len(prev.value)
    return size


@attrs.define
class WatchHub:
    """All watchers of one member. ``notify`` is the feed from the state machine (after
    each committed revision); ``drain`` hands out the responses to send."""

    store: MVCCStore
    limits: WatchLimits = attrs.Factory(WatchLimits)
    _watchers: dict[int, _Watcher] = attrs.field(init=False, factory=dict)
    _exact: dict[bytes, dict[int, _Watcher]] = attrs.field(init=False, factory=dict)
    _ranges: _RangeIndex = attrs.field(init=False, factory=_RangeIndex)
    # Watchers reading history, in the order they are served (ordered set).
    _unsynced: dict[int, _Watcher] = attrs.field(init=False, factory=dict)
    # Watchers with queued responses and an unpaused tag, in drain order (ordered set).
    _ready: dict[int, _Watcher] = attrs.field(init=False, factory=dict)
    _by_tag: dict[Hashable, dict[int, _Watcher]] = attrs.field(init=False, factory=dict)
    _paused: set[Hashable] = attrs.field(init=False, factory=set)
    _next_id: int = attrs.field(init=False, default=1)

    def __len__(self) -> int:
        return len(self._watchers)

    # ------------------------------------------------------------------ client requests

    def create(self, request: WatchCreateRequest, tag: Hashable = None) -> WatchResponse:
        """Open a watch; returns the ``created`` response to send before anything that
        ``drain`` returns for it. A compacted start revision is reported by a cancel
        response queued right after (as etcd)."""
        watch_id = request.watch_id
        if watch_id < 0:
            raise InvalidRequestError(f"watch id {watch_id} is negative")
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            raise InvalidRequestError(f"watch id {watch_id} is in use")
        current = self.store.revision
        start = request.start_revision if request.start_revision > 0 else current + 1
        filters = set(request.filters)
        watcher = _Watcher(
            watch_id=watch_id,
            tag=tag,
            key=request.key,
            range_end=request.range_end,
            start_revision=start,
            prev_kv=request.prev_kv,
            no_put=WatchFilterType.NOPUT in filters,
            no_delete=WatchFilterType.NODELETE in filters,
            progress_notify=request.progress_notify,
            fragment=request.fragment,
            next_revision=start,
        )
        self._watchers[watch_id] = watcher
        self._by_tag.setdefault(tag, {})[watch_id] = watcher
        created = WatchResponse(ResponseHeader(revision=current), watch_id, created=True)
        if start < self.store.compact_revision:
            self._cancel_compacted(watcher)
        elif start > current:
            self._make_synced(watcher)
        else:
            self._unsynced[watch_id] = watcher
        return created

    def cancel(self, watch_id: int, tag: Hashable = _ANY_TAG) -> WatchResponse:
        """Close a watch at the client's request; returns the ``canceled`` response. Its
        queued responses are dropped. With ``tag``, only a watch created with that tag
        (the asking connection's own) can be canceled."""
        watcher = self._watchers.get(watch_id)
        if watcher is None or (tag is not _ANY_TAG and watcher.tag != tag):
            raise InvalidRequestError(f"no watch with id {watch_id}")
        self._remove(watcher)
        return WatchResponse(self._header(), watch_id, canceled=True)

    def cancel_tag(self, tag: Hashable) -> list[int]:
        """Drop every watcher created with ``tag`` (a closed connection); returns their ids."""
        watchers = list(self._by_tag.get(tag, {}).values())
        for watcher in watchers:
            self._remove(watcher)
        self._paused.discard(tag)
        return [watcher.watch_id for watcher in watchers]

    def pause(self, tag: Hashable) -> None:
        """Stop handing out responses for ``tag``'s watchers (its connection is congested).
        They keep queueing; a live one over its bound is cut off as slow."""
        self._paused.add(tag)
        for watch_id in self._by_tag.get(tag, {}):
            self._ready.pop(watch_id, None)

    def resume(self, tag: Hashable) -> None:
        """Hand out ``tag``'s responses again."""
        self._paused.discard(tag)
        for watch_id, watcher in self._by_tag.get(tag, {}).items():
            if watcher.outbox:
                self._ready[watch_id] = watcher

    def request_progress(
        self, watch_ids: Iterable[int] | None = None, *, tag: Hashable = None
    ) -> None:
        """Queue a progress notification for the given watchers, or those of ``tag`` (a
        connection's ``WatchProgressRequest``), or all if neither is given. Its
        ``header.revision`` is the last revision the watcher has been given every event
        up to, never more."""
        if watch_ids is not None:
            targets = [self._watchers[i] for i in watch_ids if i in self._watchers]
        elif tag is not None:
            targets = list(self._by_tag.get(tag, {}).values())
        else:
            targets = list(self._watchers.values())
        current = self.store.revision
        for watcher in targets:
            if watcher.canceled:
                continue
            upto = current if watcher.synced else watcher.next_revision - 1
            upto = min(upto, current)
            response = WatchResponse(
                ResponseHeader(revision=upto), watcher.watch_id, progress_notify=True
            )
            self._enqueue(watcher, response, 0, 0)

    def progress_notify(self) -> None:
        """Queue a progress notification for every watcher that asked for them and has
        nothing queued (the server calls this on its own timer)."""
        self.request_progress(
            watch_ids=[
                watch_id
                for watch_id, watcher in self._watchers.items()
                if watcher.progress_notify and not watcher.outbox
            ]
        )

    # ------------------------------------------------------------------ state machine feed

    def notify(self, revision: int, kvs: tuple[KeyValue, ...]) -> None:
        """Route the events of a newly committed revision to the synced watchers. ``kvs``
        are the versions the revision wrote (``MVCCStore.on_commit``); the events are
        only built when some watcher wants them."""
        exact = self._exact
        ranges = self._ranges
        if not exact and not ranges.groups:
            return
        matched: Iterable[tuple[_Watcher, Sequence[int]]]
        if len(kvs) == 1:
            # One key (a put, a lone delete): every watcher that matches wants event 0,
            # and each watcher sits in one index group, so none is met twice.
            key = kvs[0].key
            found: list[_Watcher] = []
            group = exact.get(key)
            if group:
                found.extend(group.values())
            if ranges.groups:
                for group in ranges.match(key):
                    found.extend(group.values())
            if not found:
                return
            first = (0,)
            matched = [(watcher, first) for watcher in found]
        else:
            by_id: dict[int, tuple[_Watcher, list[int]]] = {}
            for position, kv in enumerate(kvs):
                key = kv.key
                group = exact.get(key)
                if group:
                    for watcher in group.values():
                        _add_match(by_id, watcher, position)
                if ranges.groups:
                    for group in ranges.match(key):
                        for watcher in group.values():
                            _add_match(by_id, watcher, position)
            if not by_id:
                return
            matched = by_id.values()
        events = self.store.events(revision)
        header = ResponseHeader(revision=revision)
        # Watchers that want the same events the same way share one prepared tuple and
        # one queued response (``WatchDelivery.queued``), and the server sends them once
        # for all of a connection's watchers: a hundred watchers of one prefix cost a
        # hundred queue entries, not a hundred responses or copies of the events.
        prepared: dict[
            tuple[tuple[int, ...], bool, bool, bool],
            tuple[tuple[Event, ...], int, WatchResponse],
        ] = {}
        for watcher, positions in matched:
            if revision < watcher.start_revision:
                continue
            way = (tuple(positions), watcher.prev_kv, watcher.no_put, watcher.no_delete)
            ready = prepared.get(way)
            if ready is None:
                chosen, size = self._prepare(watcher, [events[p] for p in positions])
                ready = prepared[way] = (chosen, size, WatchResponse(header, 0, events=chosen))
            if ready[0]:
                self._deliver_prepared(watcher, header, ready[0], ready[1], True, shared=ready[2])

    def compacted(self) -> None:
        """History was compacted: cancel catching-up watchers that now read below it."""
        compact_revision = self.store.compact_revision
        for watcher in list(self._unsynced.values()):
            if watcher.next_revision < compact_revision:
                self._cancel_compacted(watcher)

    def rebind(self, store: MVCCStore) -> None:
        """The state machine was replaced (a snapshot was installed): every watcher
        catches up from the new store's history from where it was, or is canceled as
        compacted if that history is gone."""
        old_revision = self.store.revision
        self.store = store
        for watcher in list(self._watchers.values()):
            if watcher.canceled:
                continue
            if watcher.synced:
                self._unsync(watcher, max(watcher.start_revision, old_revision + 1))
            if watcher.next_revision < store.compact_revision:
                self._cancel_compacted(watcher)
            elif watcher.next_revision > store.revision:
                self._make_synced(watcher)

    # ------------------------------------------------------------------ delivery

    def drain(self, max_responses: int = 1024) -> list[WatchDelivery]:
        """Up to ``max_responses`` responses to send, oldest first per watcher, taking
        turns between watchers; refills catching-up watchers from history first."""
        if self._unsynced:
            self._catch_up()
        out: list[WatchDelivery] = []
        ready = self._ready
        while ready and len(out) < max_responses:
            watch_id, watcher = next(iter(ready.items()))
            del ready[watch_id]
            outbox = watcher.outbox
            while outbox and len(out) < max_responses:
                response, events, size = outbox.popleft()
                watcher.outbox_events -= events
                watcher.outbox_bytes -= size
                out.append(WatchDelivery(watch_id, watcher.tag, response))
            if outbox:
                ready[watch_id] = watcher  # back of the line: the others get a turn
            elif watcher.canceled:
                self._forget(watcher)
        # Catching-up watchers whose outbox just emptied can be refilled next call; the
        # server calls drain again while ``pending`` says so.
        return out

    @property
    def pending(self) -> bool:
        """Whether ``drain`` has (or can produce) something to send."""
        if self._ready:
            return True
        unsynced = self._unsynced
        # Asked on every loop pass: most of the time nothing is catching up.
        return bool(unsynced) and any(
            not w.outbox and w.tag not in self._paused for w in unsynced.values()
        )

    # ------------------------------------------------------------------ internals

    def _header(self) -> ResponseHeader:
        return ResponseHeader(revision=self.store.revision)

    def _catch_up(self) -> None:
        limits = self.limits
        store = self.store
        current = store.revision
        served = 0
        for watcher in list(self._unsynced.values()):
            if served >= limits.catchup_watchers:
                break
            if watcher.outbox_events >= limits.catchup_events:
                continue  # still sending the last chunk
            served += 1
            # Rotate so the next call starts with someone else.
            del self._unsynced[watcher.watch_id]
            self._unsynced[watcher.watch_id] = watcher
            stop = min(current, watcher.next_revision + limits.catchup_revisions - 1)
            try:
                if watcher.range_end:
                    history = store.events_between(watcher.next_revision, stop)
                    for revision, events in history:
                        matching = [e for e in events if watcher.matches(e.kv.key)]
                        if matching:
                            self._deliver(watcher, revision, matching, live=False)
                        watcher.next_revision = revision + 1
                        if self._chunk_full(watcher):
                            break
                    else:
                        watcher.next_revision = stop + 1
                else:
                    key_history = store.key_events_between(watcher.key, watcher.next_revision, stop)
                    for revision, key_events in key_history:
                        self._deliver(watcher, revision, list(key_events), live=False)
                        watcher.next_revision = revision + 1
                        if self._chunk_full(watcher):
                            break
                    else:
                        watcher.next_revision = stop + 1
            except CompactedError:
                self._cancel_compacted(watcher)
                continue
            except FutureRevisionError:
                watcher.next_revision = current + 1
            if watcher.next_revision > current:
                self._make_synced(watcher)

    def _chunk_full(self, watcher: _Watcher) -> bool:
        limits = self.limits
        return (
            watcher.outbox_events >= limits.catchup_events
            or watcher.outbox_bytes >= limits.catchup_bytes
        )

    def _deliver(self, watcher: _Watcher, revision: int, events: list[Event], live: bool) -> None:
        prepared, size = self._prepare(watcher, events)
        if prepared:
            header = ResponseHeader(revision=revision)
            self._deliver_prepared(watcher, header, prepared, size, live)

    @staticmethod
    def _prepare(watcher: _Watcher, events: list[Event]) -> tuple[tuple[Event, ...], int]:
        """The events as ``watcher`` gets them (filters applied, ``prev_kv`` only if it
        asked) and their size; empty when the filters leave nothing."""
        if watcher.no_put or watcher.no_delete:
            events = [
                e
                for e in events
                if not (
                    (watcher.no_put and e.type == EventType.PUT)
                    or (watcher.no_delete and e.type == EventType.DELETE)
                )
            ]
            if not events:
                return (), 0
        with_prev = watcher.prev_kv
        size = 0
        for event in events:
            size += _event_size(event, with_prev)
        if not with_prev:
            events = [e if e.prev_kv is None else Event(e.type, e.kv) for e in events]
        return tuple(events), size

    def _deliver_prepared(
        self,
        watcher: _Watcher,
        header: ResponseHeader,
        events: tuple[Event, ...],
        size: int,
        live: bool,
        *,
        shared: WatchResponse | None = None,
    ) -> None:
        """Queue ``events`` for ``watcher``: as ``shared`` (the one response of every
        watcher that wants them the same way) if given, unless the watcher takes them in
        fragments."""
        chunk = self.limits.fragment_events
        if watcher.fragment and len(events) > chunk:
            for start in range(0, len(events), chunk):
                part = events[start : start + chunk]
                last = start + chunk >= len(events)
                response = WatchResponse(header, watcher.watch_id, events=part, fragment=not last)
                self._enqueue(watcher, response, len(part), size * len(part) // len(events))
        else:
            response = shared or WatchResponse(header, watcher.watch_id, events=events)
            self._enqueue(watcher, response, len(events), size)
        if live and (
            watcher.outbox_events > self.limits.max_outbox_events
            or watcher.outbox_bytes > self.limits.max_outbox_bytes
        ):
            self._cancel_slow(watcher)

    def _enqueue(self, watcher: _Watcher, response: WatchResponse, events: int, size: int) -> None:
        watcher.outbox.append((response, events, size))
        watcher.outbox_events += events
        watcher.outbox_bytes += size
        if watcher.watch_id not in self._ready and watcher.tag not in self._paused:
            self._ready[watcher.watch_id] = watcher

    def _make_synced(self, watcher: _Watcher) -> None:
        self._unsynced.pop(watcher.watch_id, None)
        watcher.synced = True
        if watcher.range_end:
            self._ranges.add(watcher)
        else:
            self._exact.setdefault(watcher.key, {})[watcher.watch_id] = watcher

    def _unsync(self, watcher: _Watcher, next_revision: int) -> None:
        self._detach(watcher)
        watcher.next_revision = next_revision
        self._unsynced[watcher.watch_id] = watcher

    def _detach(self, watcher: _Watcher) -> None:
        """Take the watcher out of the live indexes and the catch-up queue."""
        if watcher.synced:
            watcher.synced = False
            if watcher.range_end:
                self._ranges.remove(watcher)
            else:
                group = self._exact.get(watcher.key)
                if group is not None:
                    group.pop(watcher.watch_id, None)
                    if not group:
                        del self._exact[watcher.key]
        self._unsynced.pop(watcher.watch_id, None)

    def _remove(self, watcher: _Watcher) -> None:
        self._detach(watcher)
        watcher.canceled = True
        watcher.outbox.clear()
        self._ready.pop(watcher.watch_id, None)
        self._forget(watcher)

    def _forget(self, watcher: _Watcher) -> None:
        self._watchers.pop(watcher.watch_id, None)
        same_tag = self._by_tag.get(watcher.tag)
        if same_tag is not None:
            same_tag.pop(watcher.watch_id, None)
            if not same_tag:
                del self._by_tag[watcher.tag]

    def _cancel_with(self, watcher: _Watcher, response: WatchResponse) -> None:
        """Replace whatever is queued by one final response; the watcher disappears once
        it has been drained."""
        self._detach(watcher)
        watcher.canceled = True
        watcher.outbox.clear()
        watcher.outbox_events = 0
        watcher.outbox_bytes = 0
        self._ready.pop(watcher.watch_id, None)
        self._enqueue(watcher, response, 0, 0)

    def _cancel_compacted(self, watcher: _Watcher) -> None:
        compact_revision = self.store.compact_revision
        self._cancel_with(
            watcher,
            WatchResponse(
                self._header(),
                watcher.watch_id,
                canceled=True,
                compact_revision=compact_revision,
                cancel_reason=f"required revision has been compacted ({compact_revision})",
            ),
        )

    def _cancel_slow(self, watcher: _Watcher) -> None:
        # Everything queued is dropped, so the client must resume from the first revision
        # it has not received: that of the oldest queued response.
        resume = next(
            (r.header.revision for r, _events, _size in watcher.outbox if r.events),
            self.store.revision + 1,
        )
        self._cancel_with(
            watcher,
            WatchResponse(
                self._header(),
                watcher.watch_id,
                canceled=True,
                cancel_reason=f"{SLOW_WATCHER_REASON}: resume from revision {resume}",
            ),
        )


def _add_match(
    matched: dict[int, tuple[_Watcher, list[int]]], watcher: _Watcher, position: int
) -> None:
    entry = matched.get(watcher.watch_id)
    if entry is None:
        matched[watcher.watch_id] = (watcher, [position])
    else:
        entry[1].append(position)
