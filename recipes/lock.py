"""``Lock``: a distributed mutex with fencing tokens, FIFO-fair and free of thundering
herds; and ``Queued``, the waiting-line machinery that ``RWLock``, ``Semaphore`` and
``Election`` share with it.

::

    with Client() as kv, Session(kv, ttl=10) as session:
        with Lock(session, "jobs/42", timeout=5) as lock:   # LockTimeoutError after 5 s
            lock.token                                      # fencing token
            lock.fenced_put("results/42", b"...")           # refused once the lock is lost

    async with Session(akv) as session, Lock(session, "jobs/42") as lock:
        await lock.fenced_put_async("results/42", b"...")

How it works (etcd's algorithm): the contender puts ``<name>/<lease-hex>`` (attached to
its session's lease) if absent; the key's create revision orders the line (FIFO) and is
the **fencing token** (strictly increasing per lock name, as revisions are). A contender
holds the lock when no key under ``<name>/`` has a lower create revision. Otherwise it
waits for the keys ahead of it to go, in one of two ways:

- **A short line** (at most ``TRACK_LIMIT`` keys ahead, all seen by the read that found
  them): the waiter watches the line's deletions from the next revision on and strikes
  off each key ahead as it goes. Keys created later are behind it, so that set only
  shrinks; when its last key goes at revision ``R``, nobody is ahead at ``R`` and the
  waiter's own key is still there (its deletion would have come on the same watch, in
  revision order - and ends the wait with ``SessionExpiredError``): it holds since
  ``R``, having read nothing. Every departure from the line notifies these waiters
  (at most ``TRACK_LIMIT``); none of them sends anything for it.
- **A longer line**: it watches only its predecessor - the key with the next-lower
  create revision - for deletion, then reads the line again: one release wakes one
  such waiter. That read shows the line ahead at the deletion's revision, and from
  there the waiter follows the line as above once it is short.

Round trips (what a lock handoff costs): joining the line is ONE transaction, which
puts the key and reads, in the same revision, the line's newest ``TRACK_LIMIT + 1``
keys (ours and those ahead): nobody ahead, and the lock is held. In a short line the
handoff is then the holder's guarded delete and the watch event: no read, no write
(the new holder's key-deletion monitor watches its key from ``R + 1``, so a loss after
``R`` is reported). In a longer line, after the predecessor's deletion at
revision ``R``, ONE read of the line *at* ``R`` re-checks that our own key still exists
with our token (the session may have expired while waiting) and looks for keys still
ahead of us: none, and the lock is held since ``R`` exactly. That read is serializable:
the line at a committed revision is the same on every node that has applied it (one
that has not says so, and then the read is made linearizable), so it needs no
consensus round.
``RWLock``'s read side and ``Semaphore`` decide differently who blocks them; they read
their line separately and record their promotion with a guarded write of their key
(which ``Semaphore``'s later waiters watch for).

- ``acquire(timeout)`` raises ``LockTimeoutError`` and ``try_acquire()`` returns False;
  either way, and when an asyncio wait is cancelled or a blocking one interrupted, the
  waiter's key is deleted (guarded by its create revision). ``with`` never enters the
  body without the lock.
- ``fenced_put`` / ``fenced_txn`` add the compare ``create_revision(lock key) == token``
  to the write: the cluster applies it only while this holder still holds the lock; a
  refusal raises ``LockLostError``. Other resources can check ``token`` themselves
  (accept only tokens >= the highest seen).
- ``release()`` deletes the key under the same compare, so a late or retried unlock can
  never delete a newer holder's key (the retried request is also exactly-once).
- ``holder()`` / ``waiters()``: who holds and who waits (key, lease, token, since which
  revision, TTL left).

What happens on:

- **Session loss** while holding: ``lock.lost`` is raised with a ``LockLostError`` and the
  ``on_lost`` callback runs (before the lease can expire, see ``Session``); the next
  fenced operation raises ``LockLostError`` without writing; leaving the ``with`` body
  raises ``LockLostError``. The same happens if the lock key is deleted by someone else.
  While *waiting*, session loss ends the wait at once with ``SessionExpiredError``.
- **Client crash**: the session's lease expires after its TTL, the key goes with it, and
  the next waiter takes the lock. A writer that was merely paused is stopped by the
  fencing compare.
- **Leader failover / reconnects**: the key lives on (the session's keep-alive is
  retried on other members); writes are retried exactly-once and the waiter's watch
  resumes from its last revision, so neither holder nor waiter loses its place.

A ``Lock`` object is one contender (one key per session and name): use one object per
thread or task, and one session per concurrent holder of the same name.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias

import attrs

from pnyx.clients import (
    AsyncClient,
    EventType,
    GetResult,
    KeyValue,
    PutResult,
    TxnResult,
    cmp,
    op,
)
from pnyx.core import errors
from pnyx.recipes._base import Signal, deadline_after, lease_hex, library_logger, remaining
from pnyx.recipes.session import Session

__all__ = ["Contender", "HeldFaces", "Lock", "Queued", "inspect_line"]

_log = library_logger("pnyx.recipes")

Op: TypeAlias = Any
"""An operation built with ``kv.op`` (``op.put``, ``op.get``, ``op.delete``, ``op.txn``)."""

Cmp: TypeAlias = Any
"""A compare built with ``kv.cmp`` (``cmp.version(key) == 0``, ...)."""

RETRY_PAUSE = 0.1
"""Pause before looking again after a watch failed (a compacted start, a give-up)."""

TRACK_LIMIT = 16
"""A waiter with at most this many keys ahead of it follows every deletion in its line
itself (and takes the lock with the last one, without a read); one further back watches
only its predecessor and reads the line when that goes. It bounds how many waiters one
release notifies (a notification, not a request: they read nothing)."""


def name_prefix(name: str | bytes) -> bytes:
    """``name`` as the key prefix of a recipe: always ending in one ``/``."""
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    raw = raw.rstrip(b"/")
    if not raw:
        raise errors.InvalidRequestError("a recipe name must not be empty")
    return raw + b"/"


def prefix_end(prefix: bytes) -> bytes:
    """The end of the range of keys starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@attrs.frozen
class Contender:
    """One key in a recipe's line: a lock holder or waiter, an election candidate."""

    key: bytes
    lease: int
    token: int
    """The key's create revision: its place in line, and its fencing token."""
    since: int
    """Waiters: the revision since which they wait (their token). Holders: the revision
    of their key's last write - when they joined the line, or an election leader's last
    proclaim; a holder's own ``since`` property says when it took the lock (a lock taken
    after a wait writes nothing then: that would cost a round trip per handoff)."""
    value: bytes
    ttl: int | None = None
    """Seconds its lease has left (-1: gone) when asked; None: not asked."""


@attrs.frozen
class _Wait:
    """What a waiter watches until it looks at the line again - or, with ``ahead``,
    until its turn has come."""

    key: bytes
    range_end: bytes
    """b"": just ``key``."""
    revision: int
    """The revision the line was read at: watch from the next one."""
    skip_puts: bool = True
    ahead: frozenset[bytes] = frozenset()
    """Non-empty: EVERY key ahead of us at ``revision`` (the read saw the whole line
    ahead), and ``key``/``range_end`` the whole line: the turn comes with the deletion
    of the last of them, and needs no read. Empty: look at the line again after a
    change of ``key``."""


@attrs.frozen
class _Woken:
    """How a wait for a change ended."""

    revision: int
    """The revision of the change (0: the watch failed; look at the line now)."""
    turn: bool = False
    """Every key ahead of us is gone at ``revision``, and ours is not: we hold."""
    vanished: bool = False
    """Our own key was deleted (the session expired, or someone deleted it)."""


class Queued:
    """One contender in a line ordered by create revision: the machinery shared by
    ``Lock``, ``RWLock``, ``Semaphore`` and ``Election``. Subclasses say who blocks
    them (``_blocker``). Not public API beyond what the subclasses expose."""

    lost_error: ClassVar[type[errors.RecipeError]] = errors.LockLostError
    what: ClassVar[str] = "lock"

    def __init__(
        self,
        session: Session,
        prefix: bytes,
        key_prefix: bytes,
        *,
        value: bytes = b"",
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        self._session = session
        self._prefix = prefix
        self._key_prefix = key_prefix
        self._value = value
        self._on_lost = on_lost
        self._key = b""
        self._token = 0
        self._since = 0
        self._held = False
        self._releasing = False
        self._monitor: asyncio.Task[None] | None = None
        self._session_hook: Callable[[errors.PnyxError], object] | None = None
        self.lost = Signal()
        """Raised (with ``lost_error``) when a held acquisition is lost; a fresh one per
        acquisition."""
        self.wakeups = 0
        """How many watch notifications woke this contender while waiting: in a short
        line (``TRACK_LIMIT``) one per departure from the line, else one per change of
        its predecessor (a release wakes one waiter further back, not all)."""
        self.looks = 0
        """How many times this contender read its line again after a wake-up or a failed
        watch (0 when its turn came with the last departure ahead of it)."""

    # ------------------------------------------------------------------ state

    @property
    def session(self) -> Session:
        return self._session

    @property
    def key(self) -> bytes:
        """This contender's key (b"" before the first acquire)."""
        return self._key

    @property
    def token(self) -> int:
        """The fencing token (the key's create revision) of the current acquisition; 0
        when not held."""
        return self._token if self._held else 0

    @property
    def since(self) -> int:
        """The revision since which this contender holds (0 when not held)."""
        return self._since if self._held else 0

    @property
    def is_held(self) -> bool:
        """Acquired, not released, and not known lost."""
        return self._held and not self.lost.is_set()

    def _kv(self) -> AsyncClient:
        return self._session.client

    def _own_key(self) -> bytes:
        return self._key_prefix + lease_hex(self._session.lease_id).encode()

    def _lost_error(self, why: str) -> errors.RecipeError:
        return self.lost_error(f"{self.what} {self._key.decode(errors='replace')}: {why}")

    # ------------------------------------------------------------------ subclass hook

    async def _blocker(self) -> _Wait | None:
        """None if this contender's turn has come, else what to watch before looking
        again. Default: the predecessor (any key of the line created before ours)."""
        return await self._predecessor(self._prefix, prefix_end(self._prefix))

    def _line_is_default(self) -> bool:
        """Whether this contender is blocked by anyone ahead of it in its whole line
        (``Lock``, ``Election``, ``RWLock``'s write side): then joining and looking again
        are one request each, and taking the lock after a wait writes nothing."""
        return type(self)._blocker is Queued._blocker

    async def _predecessor(self, start: bytes, end: bytes) -> _Wait | None:
        """Watch the key of ``[start, end)`` with the next-lower create revision."""
        result = await self._kv().get(
            start,
            range_end=end,
            max_create_revision=self._token - 1,
            sort_target="create",
            sort_order="descend",
            limit=1,
            keys_only=True,
        )
        if not result.kvs:
            return None
        return _Wait(result.kvs[0].key, b"", result.revision)

    # ------------------------------------------------------------------ acquire

    async def _acquire(self, timeout: float | None, wait: bool = True) -> bool:
        if self._held:
            raise errors.RecipeError(f"this {self.what} object already holds; release first")
        deadline = deadline_after(timeout)
        session = self._session
        session.check()
        self._key = self._own_key()
        session.claim(self._key, self)
        self._token = 0
        self.lost = Signal()
        if self._on_lost is not None:
            self.lost.add_callback(self._on_lost)
        try:
            blocker = await self._enqueue()
            waited = False
            while blocker is not None:
                if not wait:
                    await self._dequeue()
                    session.unclaim(self._key, self)
                    return False
                waited = True
                woken = await self._wait_change(blocker, deadline)
                session.check()
                if woken.vanished:
                    raise self._vanished()
                if woken.turn:
                    # Nobody is left ahead at that revision and our key is still there:
                    # what a read of the line at it would say, without the read.
                    self._since = woken.revision
                    blocker = None
                else:
                    blocker = await self._look_again(woken.revision)
            if waited and not self._line_is_default():
                await self._confirm(waited)
        except BaseException:
            await self._cleanup()
            raise
        self._held = True
        self._releasing = False
        self._start_monitor()
        return True

    def _line_query(self) -> dict[str, Any]:
        """The read of a default line, newest first, keys only: our key (the newest up to
        our token) and up to ``TRACK_LIMIT`` keys ahead of it - one more tells whether
        that is all of them (``more``)."""
        return {
            "range_end": prefix_end(self._prefix),
            "sort_target": "create",
            "sort_order": "descend",
            "limit": TRACK_LIMIT + 1,
            "keys_only": True,
        }

    async def _enqueue(self) -> _Wait | None:
        """Put our key if absent and learn its create revision (the token); what blocks
        us then (None: our turn). For a default line, one transaction does it all."""
        key = self._key
        session = self._session
        default = self._line_is_default()
        success: list[Op] = [op.put(key, self._value, lease=session.lease_id)]
        if default:
            # Read in the same revision, after the put: ours is the newest key of the
            # line, so every other key read is ahead of us.
            success.append(op.get(self._prefix, **self._line_query()))
        result = await self._kv().txn(
            compare=[cmp.create(key) == 0], success=success, failure=[op.get(key)]
        )
        if result.succeeded:
            self._token = self._since = result.revision
            if default:
                return self._ahead(result.responses[1], result.revision)
            return await self._blocker()
        # Our key exists already: left by an attempt of ours whose answer was lost.
        existing = _first_kv(result.responses[0])
        if existing is None or existing.lease != session.lease_id:
            raise errors.RecipeError(f"{key!r} exists with another lease")
        self._token = self._since = existing.create_revision
        if default:
            return await self._look_again(0)
        return await self._blocker()

    def _vanished(self) -> errors.SessionExpiredError:
        return errors.SessionExpiredError(
            f"{self.what} {self._key!r}: our key vanished while waiting (session expired)"
        )

    def _ahead(self, line: object, revision: int) -> _Wait | None:
        """From a ``_line_query`` answer read at ``revision`` (our key and keys created
        before it, newest first): None if nothing is ahead (then we hold, since
        ``revision``); else what to wait for - every key ahead if the read saw all of
        them, else just the one right ahead of ours. Raises ``SessionExpiredError`` if
        our key is not there with our token."""
        kvs = line.kvs if isinstance(line, GetResult) else ()
        if not kvs or kvs[0].key != self._key or kvs[0].create_revision != self._token:
            raise self._vanished()
        if len(kvs) == 1:
            self._since = revision
            return None
        assert isinstance(line, GetResult)
        if line.more:
            return _Wait(kvs[1].key, b"", revision)
        # The whole line ahead is known. Keys created later are behind us, so the set
        # only shrinks: follow the line's deletions until it is empty.
        ahead = frozenset(item.key for item in kvs[1:])
        return _Wait(self._prefix, prefix_end(self._prefix), revision, ahead=ahead)

    async def _look_again(self, revision: int) -> _Wait | None:
        """After a change (at ``revision``; 0: unknown, look now): what blocks us now.
        A default line reads itself at that very revision, checking our key too."""
        self.looks += 1
        if not self._line_is_default():
            return await self._blocker()
        kv = self._kv()
        line = self._line_query()
        line["max_create_revision"] = self._token
        if revision:
            # The line at ``revision`` is history: every node that has applied it gives
            # the same answer, so a serializable read (no ReadIndex round) is exact. A
            # node that has not applied it yet says so: then ask linearizably.
            try:
                result = await kv.get(self._prefix, revision=revision, serializable=True, **line)
                return self._ahead(result, revision)
            except errors.FutureRevisionError:
                pass
            except errors.CompactedError:
                revision = 0  # already compacted away: look at the line now
        result = await kv.get(self._prefix, revision=revision, **line)
        return self._ahead(result, revision or result.revision)

    async def _wait_change(self, blocker: _Wait, deadline: float) -> _Woken:
        """Wait until the watched key(s) change, or with ``blocker.ahead`` until our
        turn. ``LockTimeoutError`` at the deadline, ``SessionExpiredError`` when the
        session ends."""
        ended = self._session.ended
        woken = None if ended.is_set() else await self._next_event(blocker, deadline)
        if ended.is_set():
            error = ended.error
            raise errors.SessionExpiredError(
                f"{self.what} {self._key!r}: session ended while waiting"
                + (f" ({error.message})" if error else "")
            )
        if woken is None:
            raise errors.LockTimeoutError(f"{self.what} {self._key!r}: timed out waiting")
        return woken

    async def _next_event(self, blocker: _Wait, deadline: float) -> _Woken | None:
        """Follow the watch in this very task (None at the deadline): the turn then
        comes in the event loop's turn that delivers the event, not two turns later
        behind whatever else that turn woke (a task racing a deadline would take
        them). The session's end closes the watch, which ends the wait."""
        kv = self._kv()
        ahead = set(blocker.ahead)
        own = self._key
        ended = self._session.ended
        loop = asyncio.get_running_loop()
        try:
            async with kv.watch(
                blocker.key,
                range_end=blocker.range_end or None,
                start_revision=blocker.revision + 1,
                filters=("noput",) if blocker.skip_puts else (),
            ) as watch:

                def on_end(_error: errors.PnyxError) -> None:
                    # Any thread may end a session: close the watch on its own loop.
                    loop.call_soon_threadsafe(watch.close)

                ended.add_callback(on_end)
                try:
                    while True:
                        left = remaining(deadline)
                        if left <= 0:
                            return None
                        batch = await watch.get(None if math.isinf(left) else left)
                        if batch is None:
                            return None
                        if not batch.events:
                            continue
                        self.wakeups += 1
                        if not ahead:
                            return _Woken(batch.revision)
                        # Every event of a revision comes in one batch, in revision
                        # order: after this batch, ``ahead`` is what is left ahead.
                        for event in batch.events:
                            if event.type == EventType.DELETE:
                                if event.kv.key == own:
                                    return _Woken(batch.revision, vanished=True)
                                ahead.discard(event.kv.key)
                        if not ahead:
                            return _Woken(batch.revision, turn=True)
                finally:
                    ended.remove_callback(on_end)
        except StopAsyncIteration:
            return _Woken(0)  # closed: the session ended (the caller checks)
        except errors.PnyxError as exc:
            # Compacted start or a watch that gave up: look at the line again.
            _log.info("waiter's watch failed", key=self._key, error=str(exc))
            await asyncio.sleep(RETRY_PAUSE)
        return _Woken(0)

    async def _confirm(self, waited: bool) -> None:
        """Our turn after waiting, on a line with its own blocker rule: check our key is
        still there with our token (the session may have expired meanwhile) and record,
        with a guarded write of it, since when we hold (``Semaphore``'s later waiters
        watch for that write)."""
        key = self._key
        success: list[Op] = (
            [op.put(key, self._value, lease=self._session.lease_id)] if waited else []
        )
        result = await self._kv().txn(
            compare=[cmp.create(key) == self._token], success=success, failure=[]
        )
        if not result.succeeded:
            raise errors.SessionExpiredError(
                f"{self.what} {key!r}: our key vanished while waiting (session expired)"
            )
        self._since = result.revision if waited else self._token

    async def _dequeue(self) -> None:
        """Delete our key if it is still the one we made."""
        key = self._key
        if self._token:
            guard = cmp.create(key) == self._token
        else:
            guard = cmp.lease(key) == self._session.lease_id
        await self._kv().txn(compare=[guard], success=[op.delete(key)], failure=[])

    async def _cleanup(self) -> None:
        """After a failed or cancelled wait: remove our key, even if cancelled again."""
        self._session.unclaim(self._key, self)
        if self._session.ended.is_set():
            return  # the lease is revoked or going: it takes the key with it
        task = asyncio.ensure_future(self._dequeue())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the delete goes on in the background
        except errors.PnyxError as exc:
            _log.warning("could not delete waiting key", key=self._key, error=str(exc))

    # ------------------------------------------------------------------ holding

    def _start_monitor(self) -> None:
        def on_session_end(error: errors.PnyxError) -> None:
            self._lose(f"session ended ({error.message})")

        self._session_hook = on_session_end
        self._session.ended.add_callback(on_session_end)
        self._monitor = self._session.runtime.create_task(
            self._watch_own_key(), name=f"pnyx-{self.what}-monitor"
        )

    def _stop_monitor(self) -> None:
        if self._session_hook is not None:
            self._session.ended.remove_callback(self._session_hook)
            self._session_hook = None
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None

    def _lose(self, why: str) -> None:
        if self._held and not self._releasing:
            self.lost.set(self._lost_error(why))
            # Nothing left to watch for; release() will not find a monitor to stop.
            monitor = self._monitor
            if monitor is not None and monitor is not asyncio.current_task():
                monitor.cancel()

    async def _watch_own_key(self) -> None:
        """Report loss if our key is deleted behind our back (not by release)."""
        kv = self._kv()
        revision = self._since
        while self._held and not self.lost.is_set():
            try:
                async with kv.watch(
                    self._key, start_revision=revision + 1, filters=("noput",)
                ) as watch:
                    async for batch in watch:
                        if any(e.type == EventType.DELETE for e in batch.events):
                            self._lose("its key was deleted")
                            return
                        revision = batch.revision
            except errors.PnyxError:
                # Look again directly: the watch may have missed nothing, or everything.
                with contextlib.suppress(errors.PnyxError):
                    result = await kv.get(self._key)
                    current = _first_kv(result)
                    if current is None or current.create_revision != self._token:
                        self._lose("its key was deleted")
                        return
                    revision = result.revision
                await asyncio.sleep(RETRY_PAUSE)

    def _check_held(self) -> None:
        if not self._held:
            raise self._lost_error("not held")
        if self.lost.is_set():
            error = self.lost.error
            assert error is not None
            raise self.lost_error(error.message)
        if not self._session.is_valid():
            raise self._lost_error("its session may have expired")

    async def _fenced_txn(
        self,
        compare: Iterable[Cmp],
        success: Iterable[Op],
        failure: Iterable[Op],
    ) -> TxnResult:
        self._check_held()
        key = self._key
        user_failure = list(failure)
        result = await self._kv().txn(
            compare=[*compare, cmp.create(key) == self._token],
            success=list(success),
            failure=[*user_failure, op.get(key)],
        )
        if result.succeeded:
            return result
        guard = _first_kv(result.responses[-1])
        if guard is None or guard.create_revision != self._token:
            self._lose("fenced write refused: the key is gone")
            raise self._lost_error("fenced write refused: no longer held")
        return attrs.evolve(result, responses=result.responses[:-1])

    async def _fenced_put(self, key: str | bytes, value: str | bytes, lease: int) -> PutResult:
        result = await self._fenced_txn((), [op.put(key, value, lease=lease)], ())
        response = result.responses[0]
        assert isinstance(response, PutResult)
        return response

    async def _release(self) -> None:
        if not self._held:
            raise errors.RecipeError(f"this {self.what} object does not hold")
        self._releasing = True
        self._stop_monitor()
        lost = self.lost.error
        try:
            if lost is None and not self._session.ended.is_set():
                result = await self._kv().txn(
                    compare=[cmp.create(self._key) == self._token],
                    success=[op.delete(self._key)],
                    failure=[],
                )
                if not result.succeeded:
                    lost = self._lost_error("it was lost before release")
            elif lost is None:
                lost = self._lost_error("its session ended")
        except errors.PnyxError:
            # Unknown whether the key is gone: keep holding so release can be retried.
            self._releasing = False
            self._start_monitor()
            raise
        self._held = False
        self._session.unclaim(self._key, self)
        if lost is not None:
            raise self.lost_error(lost.message)

    async def _contenders(self, start: bytes, end: bytes) -> list[Contender]:
        """Every key of ``[start, end)`` in line order, with its lease's TTL."""
        kv = self._kv()
        result = await kv.get(start, range_end=end, sort_target="create", sort_order="ascend")
        ttls = await asyncio.gather(
            *(kv.lease_time_to_live(item.lease) for item in result.kvs if item.lease),
            return_exceptions=True,
        )
        ttl_of: dict[int, int] = {}
        for item, answer in zip([item for item in result.kvs if item.lease], ttls, strict=True):
            ttl_of[item.lease] = answer.ttl if not isinstance(answer, BaseException) else -1
        return [
            Contender(
                key=item.key,
                lease=item.lease,
                token=item.create_revision,
                since=item.mod_revision,
                value=item.value,
                ttl=ttl_of.get(item.lease, -1),
            )
            for item in result.kvs
        ]


def _first_kv(result: object) -> KeyValue | None:
    if isinstance(result, GetResult) and result.kvs:
        return result.kvs[0]
    return None


class HeldFaces(Queued):
    """The blocking and asyncio faces of something held like a lock (``Lock``, each
    side of an ``RWLock``, ``Semaphore``): acquire / try_acquire / release, fenced
    writes, and ``with`` / ``async with``. ``timeout`` is the default wait."""

    timeout: float | None = None

    def __repr__(self) -> str:
        state = "lost" if self.lost else "held" if self._held else "free"
        name = self._prefix[:-1].decode("utf-8", errors="replace")
        return f"<{type(self).__name__} {name!r} {state} token={self._token}>"

    # ------------------------------------------------------------------ blocking face

    def acquire(self, timeout: float | None = None) -> Self:
        """Wait for it (up to ``timeout``, default the object's); ``LockTimeoutError``
        then, ``SessionExpiredError`` if the session ends first."""
        wait = self.timeout if timeout is None else timeout
        self._session.runtime.call(self._acquire(wait))
        return self

    def try_acquire(self) -> bool:
        """Take it if that needs no waiting; never waits."""
        return self._session.runtime.call(self._acquire(None, wait=False))

    def release(self) -> None:
        """Give it up (guarded: never deletes a newer holder's key). Raises
        ``LockLostError`` if it had been lost meanwhile."""
        self._session.runtime.call(self._release())

    def fenced_txn(
        self,
        compare: Iterable[Cmp] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
    ) -> TxnResult:
        """``kv.txn`` that the cluster applies only while this is held; the result as
        for ``kv.txn``. ``LockLostError`` if it is (found) lost."""
        return self._session.runtime.call(self._fenced_txn(compare, success, failure))

    def fenced_put(self, key: str | bytes, value: str | bytes, *, lease: int = 0) -> PutResult:
        """Put ``key`` only while this is held; ``LockLostError`` otherwise."""
        return self._session.runtime.call(self._fenced_put(key, value, lease))

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._held:
            return  # released inside the body already
        if exc is None:
            self.release()
            return
        # The body's exception wins; a release failure is only logged.
        try:
            self.release()
        except errors.PnyxError as release_error:
            _log.info("release after an exception failed", error=str(release_error))

    # ------------------------------------------------------------------ asyncio face

    async def acquire_async(self, timeout: float | None = None) -> Self:
        wait = self.timeout if timeout is None else timeout
        await self._session.runtime.call_async(self._acquire(wait))
        return self

    async def try_acquire_async(self) -> bool:
        return await self._session.runtime.call_async(self._acquire(None, wait=False))

    async def release_async(self) -> None:
        await self._session.runtime.call_async(self._release())

    async def fenced_txn_async(
        self,
        compare: Iterable[Cmp] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
    ) -> TxnResult:
        return await self._session.runtime.call_async(self._fenced_txn(compare, success, failure))

    async def fenced_put_async(
        self, key: str | bytes, value: str | bytes, *, lease: int = 0
    ) -> PutResult:
        return await self._session.runtime.call_async(self._fenced_put(key, value, lease))

    async def __aenter__(self) -> Self:
        return await self.acquire_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._held:
            return  # released inside the body already
        if exc is None:
            await self.release_async()
            return
        try:
            await self.release_async()
        except errors.PnyxError as release_error:
            _log.info("release after an exception failed", error=str(release_error))


class Lock(HeldFaces):
    """A distributed mutex on keys ``<name>/<lease-hex>``; see the module docstring.

    ``timeout``: default for ``acquire`` and ``with`` (None: wait until acquired or the
    session ends). ``value``: stored in the lock key (who holds it, for ``holder()``).
    ``on_lost``: called with the ``LockLostError`` whenever a held lock is lost.
    """

    def __init__(
        self,
        session: Session,
        name: str | bytes,
        *,
        timeout: float | None = None,
        value: str | bytes = b"",
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        prefix = name_prefix(name)
        super().__init__(session, prefix, prefix, value=_as_bytes(value), on_lost=on_lost)
        self.name = prefix[:-1].decode("utf-8", errors="replace")
        self.timeout = timeout

    def holder(self) -> Contender | None:
        """Who holds the lock now (None: nobody)."""
        return self._session.runtime.call(self._holder())

    def waiters(self) -> list[Contender]:
        """Who waits, in the order they will get it."""
        return self._session.runtime.call(self._waiters())

    async def holder_async(self) -> Contender | None:
        return await self._session.runtime.call_async(self._holder())

    async def waiters_async(self) -> list[Contender]:
        return await self._session.runtime.call_async(self._waiters())

    async def _holder(self) -> Contender | None:
        line = await self._contenders(self._prefix, prefix_end(self._prefix))
        return line[0] if line else None

    async def _waiters(self) -> list[Contender]:
        line = await self._contenders(self._prefix, prefix_end(self._prefix))
        return [attrs.evolve(c, since=c.token) for c in line[1:]]


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def inspect_line(contenders: Sequence[Contender]) -> list[dict[str, object]]:
    """Contenders as plain dicts (for ``-w json`` output)."""
    return [
        {
            "key": c.key.decode("utf-8", errors="replace"),
            "lease": lease_hex(c.lease),
            "token": c.token,
            "since": c.since,
            "value": c.value.decode("utf-8", errors="replace"),
            "ttl": c.ttl,
        }
        for c in contenders
    ]
