"""What a recipe that can work without a session stands on: a ``Client``, an
``AsyncClient`` or an open ``Session`` (``Source``); and the small pieces the watching
recipes (barrier, discovery, config, counter, queue) share: key prefixes, a watch loop
helper that waits for one change, a waiter-side guard for session loss, and the
background loop that keeps a view of a whole prefix current (``PrefixFollower``, for
config and discovery).

The design of faces is the one written down in ``pnyx.recipes._base``: the logic is async
and runs on the ``Runtime`` of the client (a private loop thread for a blocking
``Client``); blocking methods are ``runtime.call(...)``, their asyncio twins (``*_async``)
``await runtime.call_async(...)``. A recipe given a ``Session`` uses the session's
runtime and client; given a client it acquires that client's runtime itself and gives it
back in ``close()``.

Must never talk to the cluster on its own behalf, and never import ``pnyx.core`` beyond
``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

from pnyx.clients import AsyncClient, AsyncWatch, Client, CompactedError, EventType, WatchBatch
from pnyx.core import errors
from pnyx.recipes._base import LibraryLogger, Runtime, Signal, library_logger, remaining
from pnyx.recipes.session import Session

__all__ = [
    "MAX_RESUME_PAUSE",
    "RETRY_PAUSE",
    "PrefixFollower",
    "Source",
    "key_prefix",
    "prefix_end",
    "stop_follower",
    "stop_watch_task",
    "wait_for_change",
]

_log = library_logger("pnyx.recipes")

RETRY_PAUSE = 0.1
"""Pause before looking again after a watch failed (compacted start, a give-up)."""

MAX_RESUME_PAUSE = 2.0
"""Longest pause of a ``PrefixFollower`` before it watches again after a failure."""


def key_prefix(name: str | bytes) -> bytes:
    """``name`` as a key prefix: UTF-8, always ending in exactly one ``/``."""
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


class Source:
    """The runtime, client and (optional) session a recipe uses. See the module
    docstring. ``close()`` gives back a runtime acquired here (never the session's)."""

    def __init__(self, source: Client | AsyncClient | Session) -> None:
        self.session: Session | None
        self._own: Runtime | None
        if isinstance(source, Session):
            self.session = source
            self._own = None
        elif isinstance(source, Client | AsyncClient):
            self.session = None
            self._own = Runtime.acquire(source)
        else:
            raise errors.InvalidRequestError(
                f"recipes need a pnyx Client, AsyncClient or Session, got {type(source).__name__}"
            )
        self.closed = False

    @property
    def runtime(self) -> Runtime:
        if self.closed:
            raise errors.RecipeError("this recipe object is closed")
        if self.session is not None:
            return self.session.runtime
        assert self._own is not None
        return self._own

    @property
    def client(self) -> AsyncClient:
        """The ``AsyncClient`` to use (call from the runtime's loop)."""
        return self.runtime.async_client

    def running(self) -> bool:
        """False once the runtime's loop has stopped (e.g. the session it came from
        was closed first): its background tasks are gone with it, nothing to stop."""
        if self.closed:
            return False
        try:
            loop = self.runtime.loop
        except errors.RecipeError:
            return False  # a session that is not open (any more)
        return loop is None or not loop.is_closed()

    def require_session(self, what: str) -> Session:
        """The session; ``RecipeError`` if this recipe was made from a bare client."""
        if self.session is None:
            raise errors.RecipeError(f"{what} needs a Session (keys live under its lease)")
        return self.session

    def close(self) -> None:
        """Give back a runtime acquired here (blocking: may join its loop thread)."""
        if self.closed:
            return
        self.closed = True
        if self._own is not None:
            self._own.release()

    async def close_async(self) -> None:
        if self.closed:
            return
        self.closed = True
        own = self._own
        if own is None:
            return
        if own.owns_loop:
            # Stopping a private loop joins its thread: not on an event loop.
            await asyncio.to_thread(own.release)
        else:
            own.release()


async def _first_matching_batch(
    watch: AsyncWatch, key: bytes, types: frozenset[EventType] | None
) -> WatchBatch | None:
    """The first batch with an event of ``types`` (any event if None); None if the
    watch failed or was closed (the caller looks at the state again, so nothing is
    skipped)."""
    try:
        async with watch:
            async for batch in watch:
                if not batch.events:
                    continue
                if types is None or any(event.type in types for event in batch.events):
                    return batch
    except errors.PnyxError as exc:
        # Compacted start or a resume that gave up: the caller re-reads and waits again.
        _log.info("recipe watch failed", key=key, error=str(exc))
        await asyncio.sleep(RETRY_PAUSE)
    return None


async def stop_watch_task(watch: AsyncWatch, task: asyncio.Future[Any]) -> None:
    """End a task iterating ``watch`` for sure. Cancelling alone is not enough on
    Python 3.11: ``asyncio.wait_for`` (used inside the client's watch) swallows a
    cancellation that arrives as its inner future completes, and the task would then
    wait forever; closing the watch ends its iteration whatever the task is doing."""
    watch.close()
    task.cancel()
    await asyncio.wait({task})


async def stop_follower(task: asyncio.Future[Any] | None, watch: AsyncWatch | None) -> None:
    """End a background ``task`` iterating ``watch`` (see ``stop_watch_task``), or one
    that has not made its watch yet; nothing if there is no task."""
    if task is None:
        return
    if watch is not None:
        await stop_watch_task(watch, task)
    else:
        task.cancel()
        await asyncio.wait({task})


class PrefixFollower:
    """A recipe object that keeps a view of every key under one prefix current from a
    background task (``Config``, ``ServiceWatch``). The loop lives here
    (``_follow_prefix``); the object says at which revision its view is, how a batch
    changes it and how it is rebuilt after a compaction."""

    _closing: bool
    """Set when the object closes: the loop ends."""
    _watch: AsyncWatch | None
    """The loop's current watch (to close it: ``stop_follower``)."""
    last_error: errors.PnyxError | None

    def _view_revision(self) -> int:
        """The revision the view is at; following resumes after it."""
        raise NotImplementedError

    def _apply_batch(self, batch: WatchBatch) -> None:
        """Bring the view to ``batch.revision`` (a batch with events)."""
        raise NotImplementedError

    async def _relist_after_compaction(self, error: CompactedError) -> None:
        """The revision to resume from was compacted: rebuild the view from a fresh read
        (retrying until it works or the object closes)."""
        raise NotImplementedError

    async def _stop_following(self, task: asyncio.Future[Any] | None) -> None:
        """End the ``task`` running ``_follow_prefix`` (set ``_closing`` first)."""
        await stop_follower(task, self._watch)

    def _start_following(
        self,
        source: Source,
        prefix: bytes,
        log: LibraryLogger,
        failed: str,
        name: str,
        /,
        **context: object,
    ) -> asyncio.Task[None]:
        """Start ``_follow_prefix`` on ``source``'s client, as a task of its runtime."""
        return source.runtime.create_task(
            self._follow_prefix(source.client, prefix, log, failed, **context), name=name
        )

    async def _follow_prefix(
        self,
        kv: AsyncClient,
        prefix: bytes,
        log: LibraryLogger,
        failed: str,
        /,
        **context: object,
    ) -> None:
        """Apply the prefix's changes, one revision at a time, until closed. A watch that
        gave up resuming (cluster unreachable) keeps the last good view, sets
        ``last_error``, logs ``failed`` (with ``context``) and watches again from the
        view's revision after a growing pause."""
        failures = 0
        while not self._closing:
            try:
                self._watch = kv.watch(
                    prefix, range_end=prefix_end(prefix), start_revision=self._view_revision() + 1
                )
                async with self._watch as watch:
                    async for batch in watch:
                        failures = 0
                        self.last_error = None
                        if batch.events:
                            self._apply_batch(batch)
            except CompactedError as exc:
                await self._relist_after_compaction(exc)
            except errors.PnyxError as exc:
                if self._closing:
                    return
                self.last_error = exc
                failures += 1
                log.warning(failed, **context, error=str(exc))
                await asyncio.sleep(min(MAX_RESUME_PAUSE, RETRY_PAUSE * 2**failures))


async def wait_for_change(
    kv: AsyncClient,
    key: bytes,
    *,
    range_end: bytes = b"",
    start_revision: int,
    deadline: float,
    types: Iterable[EventType] | None = None,
    stop: Iterable[Signal] = (),
    what: str = "change",
) -> WatchBatch | None:
    """Wait until ``[key, range_end)`` (just ``key`` if ``range_end`` is empty) has an
    event of ``types`` at ``start_revision`` or later. Returns that batch, or None when
    the watch failed and the caller must look at the state again. Raises
    ``errors.TimeoutError`` at ``deadline`` and ``SessionExpiredError`` when one of the
    ``stop`` signals (a session's ``ended``) is raised first. Cancelling the caller
    stops the watch."""
    signals = list(stop)

    def ended(signal: Signal) -> errors.SessionExpiredError:
        error = signal.error
        return errors.SessionExpiredError(
            f"session ended while waiting for {what}" + (f" ({error.message})" if error else "")
        )

    for signal in signals:
        if signal.is_set():
            raise ended(signal)
    if remaining(deadline) <= 0:
        raise errors.TimeoutError(f"timed out waiting for {what}")
    watch = kv.watch(key, range_end=range_end or None, start_revision=start_revision)
    wanted = frozenset(types) if types is not None else None
    task = asyncio.ensure_future(_first_matching_batch(watch, key, wanted))
    waiters = {signal.future(): signal for signal in signals}
    timeout = None if math.isinf(deadline) else remaining(deadline)
    pending: set[asyncio.Future[Any]] = {task, *waiters}
    try:
        done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        await stop_watch_task(watch, task)
        raise
    finally:
        for future in waiters:
            future.cancel()
    if task in done:
        return task.result()
    await stop_watch_task(watch, task)
    for future, signal in waiters.items():
        if future in done:
            raise ended(signal)
    raise errors.TimeoutError(f"timed out waiting for {what}")
