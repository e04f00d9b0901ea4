"""``Election``: leader election with fenced leadership, and observation of who leads.

::

    election = Election(session, "scheduler")
    with election.campaign("host-a:8080", timeout=30) as leadership:   # blocks until leader
        leadership.token                       # the term: strictly increasing per election
        leadership.proclaim("host-a:8081")     # refused once leadership is lost
        leadership.fenced_put("scheduler/plan", b"...")
    # leaving `with` resigns

    election.leader()                          # Contender or None
    for leader in election.observe():          # the current leader first, then every change,
        ...                                    # None when nobody leads

    async with await election.campaign_async("host-a") as leadership: ...
    async for leader in election.observe_async(): ...

Candidates are keys ``<name>/<lease-hex>`` (value: the proposal) attached to their
session's lease; the leader is the candidate with the lowest create revision, and that
revision is its term / fencing token. A campaign waits like a ``Lock`` waiter (it
watches only its predecessor, FIFO among candidates; ``LockTimeoutError`` after
``timeout``; its key deleted on timeout or cancellation). ``proclaim`` and ``resign``
are guarded by the token (a txn comparing the key's create revision), so a deposed
leader can neither overwrite the new leader's value nor delete its key.

``observe()`` yields the leader (a ``Contender``: key, lease, token, value, and
``since``, here the revision of the leader key's last write - its campaign or its last
proclaim; winning writes nothing, so a handoff costs no extra round trip) at once and
then at every change - a new leader, a proclaimed value, and **None when no candidate is
left** - from one consistent watch of the election's keys, resumed without gap after
failover (and re-listed if its start revision was compacted).

What happens on:

- **Session loss**: a campaigning candidate stops at once (``SessionExpiredError``); a
  leader's ``leadership.lost`` is raised with ``NotLeaderAnymoreError`` and ``on_lost``
  runs, before the lease can have expired on the servers (see ``Session``); the next
  ``proclaim`` / fenced write raises ``NotLeaderAnymoreError`` without writing, and so
  does leaving the ``with`` block. Deleting the leader's key behind its back does the same.
- **Client crash**: the lease expires after its TTL, the key goes, the next candidate
  (in campaign order) becomes leader, observers see it.
- **Leader failover of the cluster / reconnects**: keys and places survive; requests are
  retried exactly-once and watches resume from their last revision.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType

from pnyx.clients import EventType, KeyValue, PutResult, TxnResult, op
from pnyx.core import errors
from pnyx.recipes._base import Runtime, deadline_after, remaining
from pnyx.recipes.lock import (
    RETRY_PAUSE,
    Cmp,
    Contender,
    Op,
    Queued,
    _as_bytes,
    name_prefix,
    prefix_end,
)
from pnyx.recipes.session import Session

__all__ = ["Election", "Leadership", "Observation"]


class _Candidate(Queued):
    lost_error = errors.NotLeaderAnymoreError
    what = "leadership"


def _contender(item: KeyValue) -> Contender:
    return Contender(
        key=item.key,
        lease=item.lease,
        token=item.create_revision,
        since=item.mod_revision,
        value=item.value,
    )


class Leadership:
    """Being the leader of an election: ``token`` (the term), ``key``, ``value``,
    ``lost`` (a ``Signal``), ``proclaim``, ``resign``, fenced writes; ``with`` / ``async
    with`` resign on exit (raising ``NotLeaderAnymoreError`` if it had been lost)."""

    def __init__(self, election: Election, candidate: _Candidate) -> None:
        self.election = election
        self._candidate = candidate
        self.token = candidate.token
        """The term / fencing token: the candidate key's create revision."""
        self.key = candidate.key
        self.lost = candidate.lost
        """Raised (``NotLeaderAnymoreError``) when leadership is lost."""

    @property
    def value(self) -> bytes:
        """The proclaimed value."""
        return self._candidate._value

    @property
    def term(self) -> int:
        return self.token

    @property
    def is_leader(self) -> bool:
        """Not resigned, not known lost."""
        return self._candidate.is_held and self._candidate.token == self.token

    def __repr__(self) -> str:
        state = "leader" if self.is_leader else "lost" if self.lost else "resigned"
        return f"<Leadership {self.election.name!r} term={self.token} {state}>"

    def _runtime(self) -> Runtime:
        return self._candidate.session.runtime

    # ------------------------------------------------------------------ blocking face

    def proclaim(self, value: str | bytes) -> None:
        """Publish a new value as leader; ``NotLeaderAnymoreError`` if not leader."""
        self._runtime().call(self._proclaim(_as_bytes(value)))

    def resign(self) -> None:
        """Stop leading (guarded: never deletes a newer leader's key); the next
        candidate takes over. ``NotLeaderAnymoreError`` if it had been lost."""
        self._runtime().call(self._candidate._release())

    def fenced_txn(
        self, compare: Iterable[Cmp] = (), success: Iterable[Op] = (), failure: Iterable[Op] = ()
    ) -> TxnResult:
        """``kv.txn`` applied only while this leadership lasts."""
        return self._runtime().call(self._candidate._fenced_txn(compare, success, failure))

    def fenced_put(self, key: str | bytes, value: str | bytes, *, lease: int = 0) -> PutResult:
        return self._runtime().call(self._candidate._fenced_put(key, value, lease))

    def __enter__(self) -> Leadership:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._candidate._held:
            return
        if exc is None:
            self.resign()
            return
        with contextlib.suppress(errors.PnyxError):  # the body's exception wins
            self.resign()

    # ------------------------------------------------------------------ asyncio face

    async def proclaim_async(self, value: str | bytes) -> None:
        await self._runtime().call_async(self._proclaim(_as_bytes(value)))

    async def resign_async(self) -> None:
        await self._runtime().call_async(self._candidate._release())

    async def fenced_txn_async(
        self, compare: Iterable[Cmp] = (), success: Iterable[Op] = (), failure: Iterable[Op] = ()
    ) -> TxnResult:
        return await self._runtime().call_async(
            self._candidate._fenced_txn(compare, success, failure)
        )

    async def fenced_put_async(
        self, key: str | bytes, value: str | bytes, *, lease: int = 0
    ) -> PutResult:
        return await self._runtime().call_async(self._candidate._fenced_put(key, value, lease))

    async def __aenter__(self) -> Leadership:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._candidate._held:
            return
        if exc is None:
            await self.resign_async()
            return
        with contextlib.suppress(errors.PnyxError):  # the body's exception wins
            await self.resign_async()

    # ------------------------------------------------------------------ logic

    async def _proclaim(self, value: bytes) -> None:
        candidate = self._candidate
        key = candidate.key
        await candidate._fenced_txn((), [op.put(key, value, lease=candidate.session.lease_id)], ())
        candidate._value = value


class Election:
    """An election named ``name`` on ``session``; see the module docstring. ``on_lost``:
    called with the ``NotLeaderAnymoreError`` when a leadership won here is lost.
    ``with`` / ``async with`` resign any leadership won through this object on exit."""

    def __init__(
        self,
        session: Session,
        name: str | bytes,
        *,
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        self._session = session
        self._prefix = name_prefix(name)
        self.name = self._prefix[:-1].decode("utf-8", errors="replace")
        self._candidate = _Candidate(session, self._prefix, self._prefix, on_lost=on_lost)
        self.leadership: Leadership | None = None
        """The leadership won by the last campaign (None before)."""

    def __repr__(self) -> str:
        return f"<Election {self.name!r} {self.leadership!r}>"

    # ------------------------------------------------------------------ blocking face

    def campaign(self, proposal: str | bytes, timeout: float | None = None) -> Leadership:
        """Become a candidate and wait until leader (up to ``timeout``: then
        ``LockTimeoutError`` and the candidacy is withdrawn). ``SessionExpiredError`` if
        the session ends first."""
        return self._session.runtime.call(self._campaign(_as_bytes(proposal), timeout))

    def resign(self) -> None:
        """Resign the leadership won here, if still held."""
        if self.leadership is not None and self._candidate._held:
            self.leadership.resign()

    def leader(self) -> Contender | None:
        """The current leader (None: no candidate at all)."""
        return self._session.runtime.call(self._leader())

    def candidates(self) -> list[Contender]:
        """Every candidate, in campaign order (the first leads), with TTLs left."""
        return self._session.runtime.call(self._candidate._contenders(*self._range()))

    def observe(self, timeout: float | None = None) -> Observation:
        """Leader changes: iterate for ``Contender | None`` (the current one first).
        ``timeout``: how long one ``next()`` may wait (``TimeoutError``); ``get(timeout)``
        waits at most that and returns the change, or raises ``TimeoutError``."""
        return Observation(self, timeout)

    def __enter__(self) -> Election:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.leadership is not None:
            self.leadership.__exit__(exc_type, exc, traceback)

    # ------------------------------------------------------------------ asyncio face

    async def campaign_async(
        self, proposal: str | bytes, timeout: float | None = None
    ) -> Leadership:
        return await self._session.runtime.call_async(self._campaign(_as_bytes(proposal), timeout))

    async def resign_async(self) -> None:
        if self.leadership is not None and self._candidate._held:
            await self.leadership.resign_async()

    async def leader_async(self) -> Contender | None:
        return await self._session.runtime.call_async(self._leader())

    async def candidates_async(self) -> list[Contender]:
        return await self._session.runtime.call_async(self._candidate._contenders(*self._range()))

    def observe_async(self, timeout: float | None = None) -> Observation:
        """As ``observe``; iterate with ``async for``."""
        return Observation(self, timeout)

    async def __aenter__(self) -> Election:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.leadership is not None:
            await self.leadership.__aexit__(exc_type, exc, traceback)

    # ------------------------------------------------------------------ logic

    def _range(self) -> tuple[bytes, bytes]:
        return self._prefix, prefix_end(self._prefix)

    async def _campaign(self, proposal: bytes, timeout: float | None) -> Leadership:
        candidate = self._candidate
        if candidate._held and not candidate.lost.is_set():
            raise errors.RecipeError(f"already leader of {self.name!r}: proclaim instead")
        if candidate._held:
            # A lost leadership never resigned: settle it before campaigning again.
            with contextlib.suppress(errors.PnyxError):
                await candidate._release()
        candidate._value = proposal
        await candidate._acquire(timeout)
        self.leadership = Leadership(self, candidate)
        return self.leadership

    async def _leader(self) -> Contender | None:
        start, end = self._range()
        result = await self._session.client.get(
            start, range_end=end, sort_target="create", sort_order="ascend", limit=1
        )
        return _contender(result.kvs[0]) if result.kvs else None

    async def _changes(
        self, last: Contender | None = None, first: bool = True
    ) -> AsyncGenerator[Contender | None, None]:
        """The leader now (unless ``first`` is False and it is still ``last``), then
        each change (None: nobody)."""
        kv = self._session.client
        start, end = self._range()
        candidates: dict[bytes, KeyValue] = {}
        next_revision = 0
        while True:
            if next_revision == 0:
                listing = await kv.get(start, range_end=end)
                candidates = {item.key: item for item in listing.kvs}
                next_revision = listing.revision + 1
                current = _leader_of(candidates)
                if first or _changed(last, current):
                    first = False
                    last = current
                    yield current
            try:
                async with kv.watch(start, range_end=end, start_revision=next_revision) as watch:
                    async for batch in watch:
                        for event in batch.events:
                            if event.type == EventType.DELETE:
                                candidates.pop(event.kv.key, None)
                            else:
                                candidates[event.kv.key] = event.kv
                        next_revision = batch.revision + 1
                        current = _leader_of(candidates)
                        if _changed(last, current):
                            last = current
                            yield current
            except errors.CompactedError:
                next_revision = 0  # history is gone: list again
            except errors.PnyxError:
                await asyncio.sleep(RETRY_PAUSE)  # the watch gave up: resume after a pause


def _changed(before: Contender | None, after: Contender | None) -> bool:
    """A new leader, a new value, or nobody / somebody: what observers are told. (A
    write that keeps key, term and value - a proclaim of the same value - is not one.)"""
    if before is None or after is None:
        return before is not after
    return (before.key, before.token, before.value) != (after.key, after.token, after.value)


def _leader_of(candidates: dict[bytes, KeyValue]) -> Contender | None:
    if not candidates:
        return None
    return _contender(min(candidates.values(), key=lambda item: item.create_revision))


class Observation:
    """Leader changes of an election: an iterator and an async iterator of
    ``Contender | None``. ``close()`` / ``aclose()`` (or leaving ``with``) stop it."""

    def __init__(self, election: Election, timeout: float | None) -> None:
        self._election = election
        self._timeout = timeout
        self._changes: AsyncGenerator[Contender | None, None] | None = None
        self._closed = False
        self._last: Contender | None = None
        self._reported = False

    def _runtime(self) -> Runtime:
        return self._election._session.runtime

    async def _next(self, timeout: float | None) -> Contender | None:
        if self._closed:
            raise StopAsyncIteration
        if self._changes is None:
            self._changes = self._election._changes(self._last, not self._reported)
        deadline = deadline_after(timeout)
        try:
            change = await asyncio.wait_for(
                self._changes.__anext__(), None if timeout is None else remaining(deadline)
            )
        except TimeoutError:
            # wait_for cancelled the generator mid-step: start afresh next time.
            self._changes = None
            raise errors.TimeoutError(f"no leader change within {timeout}s") from None
        self._last, self._reported = change, True
        return change

    async def _close(self) -> None:
        self._closed = True
        changes, self._changes = self._changes, None
        if changes is not None:
            await changes.aclose()

    def get(self, timeout: float | None = None) -> Contender | None:
        """The next leader (or None), waiting at most ``timeout`` (``TimeoutError``)."""
        return self._runtime().call(self._next(timeout))

    async def get_async(self, timeout: float | None = None) -> Contender | None:
        return await self._runtime().call_async(self._next(timeout))

    def __iter__(self) -> Iterator[Contender | None]:
        return self

    def __next__(self) -> Contender | None:
        try:
            return self._runtime().call(self._next(self._timeout))
        except StopAsyncIteration:
            raise StopIteration from None

    def __aiter__(self) -> AsyncIterator[Contender | None]:
        return self

    async def __anext__(self) -> Contender | None:
        return await self._runtime().call_async(self._next(self._timeout))

    def close(self) -> None:
        self._runtime().call(self._close())

    async def aclose(self) -> None:
        await self._runtime().call_async(self._close())

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Observation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
