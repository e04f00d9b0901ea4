"""``Barrier`` (one gate: hold / release / wait) and ``DoubleBarrier`` (N participants
enter together and leave together).

::

    with Client() as kv, Barrier(kv, "deploy/gate") as gate:
        gate.hold()                    # raise the gate
        ...                            # others: gate.wait(timeout=60) blocks meanwhile
        gate.release()                 # everyone waiting goes on

    with Client() as kv, Session(kv, ttl=10) as session:
        with DoubleBarrier(session, "jobs/phase1", count=3, timeout=30):
            ...                        # entered when all 3 have; left when all 3 have

**Barrier** is one key. ``hold()`` creates it (True if this call raised the gate),
``release()`` deletes it (anyone may open the gate), ``wait()`` returns once it does not
exist: it reads the key and, if it is there, watches it from the read's revision + 1 for
its deletion (no poll, nothing missed). Made from a ``Session``, the key lives under the
session's lease, so a crashed holder cannot leave the gate shut forever (but its loss
opens the gate: ``lost`` tells the holder); made from a client, the key outlives the
holder, as etcd's barrier.

**DoubleBarrier(N)**: each participant puts ``<name>/waiters/<lease-hex>`` under its
session's lease, in one transaction that also counts the participants; the N-th (or any
waiter who later sees N) puts ``<name>/ready``, which everyone waits for with one watch
from its own key's revision. ``leave()`` follows etcd's algorithm: the participant with
the oldest key waits for the newest to go, every other one deletes its key and waits for
the oldest to go, and the last one deletes ``ready`` - so ``leave`` returns only once
every participant has left. Use one name for one round at a time (the next round
starts when everyone has left). A participant that would be the N+1-th is refused
(``RecipeError``) and its key removed.

Every wait takes a ``timeout`` (``errors.TimeoutError`` when it passes). A timed out,
cancelled (asyncio) or interrupted ``enter`` deletes the participant's key.

What happens on:

- **Session loss**: a waiting ``enter`` stops at once with ``SessionExpiredError`` (its
  key goes with the lease). Between ``enter`` and ``leave``, ``lost`` is raised (and
  ``on_lost`` called) as soon as the session is lost - before the lease can expire -
  and ``leave`` raises ``SessionExpiredError``: the others no longer wait for this
  participant. A ``Barrier`` held under a session reports its loss the same way.
- **Client crash**: the lease expires after its TTL and the key with it; the other
  participants then count one fewer (a crashed participant of a ``DoubleBarrier`` is
  treated as having left).
- **Leader failover / reconnects**: writes are retried exactly-once and watches resume
  from their last revision; a wait never misses the event it waits for.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

from pnyx.clients import AsyncClient, Client, EventType, GetResult, KeyValue, cmp, op
from pnyx.core import errors
from pnyx.recipes._base import Signal, deadline_after, lease_hex, library_logger, remaining
from pnyx.recipes._source import Source, key_prefix, prefix_end, wait_for_change
from pnyx.recipes.session import Session

__all__ = ["Barrier", "DoubleBarrier"]

_log = library_logger("pnyx.recipes.barrier")

_PUT = (EventType.PUT,)
_DELETE = (EventType.DELETE,)


def _first(result: object) -> KeyValue | None:
    if isinstance(result, GetResult) and result.kvs:
        return result.kvs[0]
    return None


def _as_key(name: str | bytes) -> bytes:
    key = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if not key:
        raise errors.InvalidRequestError("a barrier name must not be empty")
    return key


# --------------------------------------------------------------------------- Barrier


class Barrier:
    """One gate on the key ``name``; see the module docstring.

    ``source``: a ``Client``, ``AsyncClient`` or ``Session`` (then the gate lives under
    the session's lease). ``timeout``: default for ``wait``. ``on_lost``: called when a
    gate this object raised under a session is lost with the session.
    """

    def __init__(
        self,
        source: Client | AsyncClient | Session,
        name: str | bytes,
        *,
        timeout: float | None = None,
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        self.key = _as_key(name)
        self.timeout = timeout
        self._source = Source(source)
        self._on_lost = on_lost
        self._held_revision = 0
        self._hook: Callable[[errors.PnyxError], object] | None = None
        self.lost = Signal()
        """Raised when a gate held under a session is lost with it."""

    def __repr__(self) -> str:
        return f"<Barrier {self.key!r}>"

    # ------------------------------------------------------------------ blocking face

    def hold(self) -> bool:
        """Raise the gate; True if this call raised it (False: it was up already)."""
        return self._source.runtime.call(self._hold())

    def release(self) -> bool:
        """Open the gate; True if it was up."""
        return self._source.runtime.call(self._release())

    def wait(self, timeout: float | None = None) -> None:
        """Block while the gate is up; ``errors.TimeoutError`` after ``timeout``
        (default the barrier's; None: no limit)."""
        self._source.runtime.call(self._wait(timeout))

    def is_held(self) -> bool:
        """Whether the gate is up now."""
        return self._source.runtime.call(self._is_held())

    def close(self) -> None:
        """Stop using this object (the gate stays as it is)."""
        with contextlib.suppress(errors.RecipeError):
            self._source.runtime.call(self._forget())
        self._source.close()

    def __enter__(self) -> Barrier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ asyncio face

    async def hold_async(self) -> bool:
        return await self._source.runtime.call_async(self._hold())

    async def release_async(self) -> bool:
        return await self._source.runtime.call_async(self._release())

    async def wait_async(self, timeout: float | None = None) -> None:
        await self._source.runtime.call_async(self._wait(timeout))

    async def is_held_async(self) -> bool:
        return await self._source.runtime.call_async(self._is_held())

    async def close_async(self) -> None:
        with contextlib.suppress(errors.RecipeError):
            await self._source.runtime.call_async(self._forget())
        await self._source.close_async()

    async def __aenter__(self) -> Barrier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    # ------------------------------------------------------------------ logic

    async def _hold(self) -> bool:
        session = self._source.session
        lease = 0
        if session is not None:
            session.check()
            lease = session.lease_id
        result = await self._source.client.txn(
            compare=[cmp.create(self.key) == 0],
            success=[op.put(self.key, b"", lease=lease)],
            failure=[],
        )
        if result.succeeded and session is not None:
            self._held_revision = result.revision
            self.lost = Signal()
            if self._on_lost is not None:
                self.lost.add_callback(self._on_lost)
            self._watch_session(session)
        return result.succeeded

    def _watch_session(self, session: Session) -> None:
        def on_end(error: errors.PnyxError) -> None:
            if self._held_revision and not session.closed:
                self.lost.set(
                    errors.SessionExpiredError(
                        f"barrier {self.key!r}: the session holding it was lost ({error.message})"
                    )
                )

        self._hook = on_end
        session.ended.add_callback(on_end)

    async def _forget(self) -> None:
        session = self._source.session
        if self._hook is not None and session is not None:
            session.ended.remove_callback(self._hook)
        self._hook = None
        self._held_revision = 0

    async def _release(self) -> bool:
        await self._forget()
        result = await self._source.client.delete(self.key)
        return result.deleted > 0

    async def _is_held(self) -> bool:
        return bool((await self._source.client.get(self.key, count_only=True)).count)

    async def _wait(self, timeout: float | None) -> None:
        deadline = deadline_after(self.timeout if timeout is None else timeout)
        kv = self._source.client
        while True:
            result = await kv.get(self.key, timeout=_call_timeout(kv, deadline))
            if not result.kvs:
                return
            batch = await wait_for_change(
                kv,
                self.key,
                start_revision=result.revision + 1,
                deadline=deadline,
                types=_DELETE,
                what=f"barrier {self.key!r} to be released",
            )
            if batch is not None:
                return


def _call_timeout(kv: AsyncClient, deadline: float) -> float:
    """One request's bound: the client's timeout, but not (much) past ``deadline``."""
    left = remaining(deadline)
    if left <= 0:
        raise errors.TimeoutError("timed out")
    return max(0.01, min(kv.timeout, left))


# --------------------------------------------------------------------------- DoubleBarrier


class DoubleBarrier:
    """``count`` participants enter together and leave together; see the module
    docstring.

    ``session``: the participant's session (its key lives under the lease).
    ``timeout``: default for ``enter`` / ``leave`` and for ``with``. ``on_lost``: called
    with the ``SessionExpiredError`` if the session is lost between enter and leave.
    """

    def __init__(
        self,
        session: Session,
        name: str | bytes,
        count: int,
        *,
        timeout: float | None = None,
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        if count < 1:
            raise errors.InvalidRequestError(f"count must be at least 1, got {count}")
        self._source = Source(session)
        self._session = session
        self.prefix = key_prefix(name)
        self.count = count
        self.timeout = timeout
        self._on_lost = on_lost
        self._waiters = self.prefix + b"waiters/"
        self._ready = self.prefix + b"ready"
        self._key = b""
        self._token = 0
        self._entered = False
        self._hook: Callable[[errors.PnyxError], object] | None = None
        self.lost = Signal()
        """Raised (with a ``SessionExpiredError``) if the session is lost while this
        participant is inside; a fresh one per ``enter``."""
        self.wakeups = 0
        """Watch notifications that woke this participant (for tests and tuning)."""

    def __repr__(self) -> str:
        state = "inside" if self._entered else "outside"
        return f"<DoubleBarrier {self.prefix!r} count={self.count} {state}>"

    @property
    def key(self) -> bytes:
        """This participant's key (b"" before ``enter``)."""
        return self._key

    @property
    def entered(self) -> bool:
        return self._entered

    # ------------------------------------------------------------------ blocking face

    def enter(self, timeout: float | None = None) -> None:
        """Join and block until ``count`` participants have joined."""
        self._source.runtime.call(self._enter(self._pick(timeout)))

    def leave(self, timeout: float | None = None) -> None:
        """Leave and block until every participant has left."""
        self._source.runtime.call(self._leave(self._pick(timeout)))

    def participants(self) -> list[bytes]:
        """The keys of the participants inside now, oldest first."""
        return self._source.runtime.call(self._participants())

    def __enter__(self) -> DoubleBarrier:
        self.enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.leave()
            return
        # The body's exception wins; still leave, so the others do not wait for us.
        try:
            self.leave()
        except errors.PnyxError as leave_error:
            _log.info("leave after an exception failed", error=str(leave_error))

    # ------------------------------------------------------------------ asyncio face

    async def enter_async(self, timeout: float | None = None) -> None:
        await self._source.runtime.call_async(self._enter(self._pick(timeout)))

    async def leave_async(self, timeout: float | None = None) -> None:
        await self._source.runtime.call_async(self._leave(self._pick(timeout)))

    async def participants_async(self) -> list[bytes]:
        return await self._source.runtime.call_async(self._participants())

    async def __aenter__(self) -> DoubleBarrier:
        await self.enter_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.leave_async()
            return
        try:
            await self.leave_async()
        except errors.PnyxError as leave_error:
            _log.info("leave after an exception failed", error=str(leave_error))

    # ------------------------------------------------------------------ logic

    def _pick(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _kv(self) -> AsyncClient:
        return self._source.client

    async def _enter(self, timeout: float | None) -> None:
        if self._entered:
            raise errors.RecipeError("this participant has entered already; leave first")
        deadline = deadline_after(timeout)
        session = self._session
        session.check()
        self._key = self._waiters + lease_hex(session.lease_id).encode()
        session.claim(self._key, self)
        self.lost = Signal()
        if self._on_lost is not None:
            self.lost.add_callback(self._on_lost)
        try:
            count, ready, revision = await self._join()
            if count > self.count:
                raise errors.RecipeError(
                    f"double barrier {self.prefix!r} is full ({self.count} participants)"
                )
            while not ready:
                if count >= self.count:
                    await self._open_gate()
                    break
                await self._wait_for_others(revision, deadline)
                count, ready, revision = await self._look()
        except BaseException:
            await self._cleanup()
            raise
        self._entered = True
        self._watch_session()

    async def _join(self) -> tuple[int, bool, int]:
        """Put our key and, in the same transaction, count the participants and look
        for ``ready``: (participants, ready exists, revision)."""
        session = self._session
        result = await self._kv().txn(
            compare=[cmp.create(self._key) == 0],
            success=[
                op.put(self._key, b"", lease=session.lease_id),
                op.get(self._waiters, range_end=prefix_end(self._waiters), count_only=True),
                op.get(self._ready, count_only=True),
            ],
            failure=[op.get(self._key)],
        )
        if not result.succeeded:
            existing = _first(result.responses[0])
            if existing is None or existing.lease != session.lease_id:
                raise errors.RecipeError(f"{self._key!r} exists with another lease")
            # Ours already (an earlier attempt whose answer was lost): carry on.
            self._token = existing.create_revision
            return await self._look()
        self._token = result.revision
        counted, ready = result.responses[1], result.responses[2]
        assert isinstance(counted, GetResult) and isinstance(ready, GetResult)
        return counted.count, ready.count > 0, result.revision

    async def _look(self) -> tuple[int, bool, int]:
        result = await self._kv().txn(
            success=[
                op.get(self._waiters, range_end=prefix_end(self._waiters), count_only=True),
                op.get(self._ready, count_only=True),
                op.get(self._key, count_only=True),
            ]
        )
        counted, ready, mine = result.responses
        assert isinstance(counted, GetResult) and isinstance(ready, GetResult)
        assert isinstance(mine, GetResult)
        if not mine.count:
            raise errors.SessionExpiredError(
                f"double barrier {self.prefix!r}: our key vanished while waiting (session expired)"
            )
        return counted.count, ready.count > 0, result.revision

    async def _open_gate(self) -> None:
        await self._kv().txn(
            compare=[cmp.create(self._ready) == 0],
            success=[op.put(self._ready, b"", lease=self._session.lease_id)],
            failure=[],
        )

    async def _wait_for_others(self, revision: int, deadline: float) -> None:
        """Wait for any change under the barrier's prefix (a join, a leave, ``ready``)
        after ``revision``; the caller then looks again."""
        batch = await wait_for_change(
            self._kv(),
            self.prefix,
            range_end=prefix_end(self.prefix),
            start_revision=revision + 1,
            deadline=deadline,
            stop=[self._session.ended],
            what=f"{self.count} participants to enter {self.prefix!r}",
        )
        if batch is not None:
            self.wakeups += 1

    async def _cleanup(self) -> None:
        """After a failed or cancelled enter: delete our key, even if cancelled again."""
        self._session.unclaim(self._key, self)
        if self._session.ended.is_set():
            return  # the lease takes the key with it
        task = asyncio.ensure_future(self._delete_own())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the delete goes on in the background
        except errors.PnyxError as exc:
            _log.warning("could not delete participant key", key=self._key, error=str(exc))

    async def _delete_own(self, *extra: bytes) -> bool:
        guard = (
            cmp.create(self._key) == self._token
            if self._token
            else cmp.lease(self._key) == self._session.lease_id
        )
        result = await self._kv().txn(
            compare=[guard],
            success=[op.delete(self._key), *(op.delete(key) for key in extra)],
            failure=[],
        )
        return result.succeeded

    def _watch_session(self) -> None:
        session = self._session

        def on_end(error: errors.PnyxError) -> None:
            if self._entered and not session.closed:
                self.lost.set(
                    errors.SessionExpiredError(
                        f"double barrier {self.prefix!r}: session lost while inside "
                        f"({error.message})"
                    )
                )

        self._hook = on_end
        session.ended.add_callback(on_end)

    def _unwatch_session(self) -> None:
        if self._hook is not None:
            self._session.ended.remove_callback(self._hook)
            self._hook = None

    async def _leave(self, timeout: float | None) -> None:
        if not self._entered:
            raise errors.RecipeError("this participant has not entered")
        deadline = deadline_after(timeout)
        kv = self._kv()
        while True:
            if self.lost.is_set() or self._session.ended.is_set():
                self._finish_leave()
                error = self.lost.error or self._session.ended.error
                raise errors.SessionExpiredError(
                    f"double barrier {self.prefix!r}: session lost before leaving"
                    + (f" ({error.message})" if error else "")
                )
            result = await kv.get(
                self._waiters,
                range_end=prefix_end(self._waiters),
                sort_target="create",
                sort_order="ascend",
                timeout=_call_timeout(kv, deadline),
            )
            line = result.kvs
            mine = [item for item in line if item.key == self._key]
            if not line:
                break
            lowest, highest = line[0], line[-1]
            if len(line) == 1 and mine:
                await self._delete_own(self._ready)
                break
            if mine and lowest.key == self._key:
                # The oldest stays until the newest has gone, so nobody can see an
                # empty line while someone is still inside.
                watched = highest.key
                stop = [self._session.ended]
            else:
                if mine:
                    await self._delete_own()
                watched = lowest.key
                stop = []
            try:
                batch = await wait_for_change(
                    kv,
                    watched,
                    start_revision=result.revision + 1,
                    deadline=deadline,
                    types=_DELETE,
                    stop=stop,
                    what=f"everyone to leave {self.prefix!r}",
                )
            except errors.SessionExpiredError:
                self._finish_leave()
                raise
            if batch is not None:
                self.wakeups += 1
        self._finish_leave()

    def _finish_leave(self) -> None:
        self._entered = False
        self._unwatch_session()
        self._session.unclaim(self._key, self)

    async def _participants(self) -> list[bytes]:
        result = await self._kv().get(
            self._waiters,
            range_end=prefix_end(self._waiters),
            sort_target="create",
            sort_order="ascend",
            keys_only=True,
        )
        return [item.key for item in result.kvs]
