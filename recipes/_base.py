"""What every recipe shares: the one design of their sync and async faces, the ``Signal``
that reports loss, and small helpers for deadlines and waiting.

The design (followed by every module of ``pnyx.recipes``)
=========================================================

**One implementation, async.** Each recipe's logic is written once, as ``async`` methods
(private, named ``_something``) on the recipe object, running on an asyncio event loop and
talking to the cluster through an ``AsyncClient``. Both come from a ``Runtime``:

- given an ``AsyncClient``, the runtime borrows the caller's running event loop (bound at
  the first ``async`` use) and that very client;
- given a blocking ``Client``, the runtime owns a private event loop on a daemon thread
  and an ``AsyncClient`` to the same endpoints, shared by every session and recipe made
  from that ``Client`` (reference counted: the thread and its client stop when the last
  user releases them).

**Two thin faces.** Every public blocking method is a one-liner,
``return self._runtime.call(self._method(...))``, and its asyncio twin is named with an
``_async`` suffix, ``return await self._runtime.call_async(self._method(...))``. Context
managers: ``__enter__``/``__exit__`` and ``__aenter__``/``__aexit__`` wrap the same
coroutines, so one object serves ``with`` and ``async with``. ``call`` runs the coroutine
on the runtime's loop and blocks the calling thread until it ends; if that thread is
interrupted (``KeyboardInterrupt``) the task is cancelled and given time to clean up
(e.g. delete its waiting key) before the interruption propagates. ``call_async`` awaits
the coroutine directly on the runtime's own loop, or bridges from another loop; either
way cancelling the awaiting task cancels the recipe's task (so a cancelled wait removes
its key). A blocking method called *on* the runtime's loop (e.g. from a loss callback or
an ``async def``) raises ``RecipeError`` instead of deadlocking.

**Loss is a ``Signal``.** A thread-safe, one-shot flag: ``is_set()``, ``wait(timeout)``,
``await wait_async(timeout)``, ``add_callback(fn)``; ``error`` says why. Callbacks run on
the runtime's loop thread (for a ``Client``, the private thread); they must be quick and
must not block. A recipe that holds something exposes ``lost`` (a ``Signal`` per
acquisition) and raises its error (``LockLostError``, ``NotLeaderAnymoreError``, ...) in
the holder's next guarded operation and when its ``with`` block ends.

**Timeouts.** Every call that waits takes ``timeout`` (seconds; ``None``: until done or
the session is lost). Every cluster request is bounded by the client's timeout.

**Logging.** Recipe modules log through ``library_logger(name)``: silent below WARNING
until the application configures structlog (``structlog.is_configured()``), so a program
that never set up logging does not get the recipes' info lines on stdout; never
configuring structlog itself. The helper is the client library's (``pnyx.clients.log``).

This module holds plumbing only: it must never talk to the cluster itself, and never
import ``pnyx.core`` beyond ``pnyx.core.errors`` (recipes use the public client API).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import attrs

from pnyx.clients import AsyncClient, Client
from pnyx.clients.log import LibraryLogger, library_logger
from pnyx.core import errors

__all__ = [
    "LibraryLogger",
    "Runtime",
    "Signal",
    "deadline_after",
    "lease_hex",
    "library_logger",
    "remaining",
    "run_callback",
]

T = TypeVar("T")

_log = library_logger("pnyx.recipes")

CLEANUP_SECONDS = 10.0
"""How long an interrupted blocking call waits for its task to clean up."""


def deadline_after(timeout: float | None) -> float:
    """A ``time.monotonic()`` deadline ``timeout`` seconds from now (``inf`` for None)."""
    if timeout is None:
        return math.inf
    if timeout < 0:
        raise errors.InvalidRequestError(f"timeout must not be negative, got {timeout}")
    return time.monotonic() + timeout


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (0 if passed, ``inf`` if none)."""
    return max(0.0, deadline - time.monotonic())


def lease_hex(lease_id: int) -> str:
    """How a lease id appears in recipe keys (``<name>/<lease-hex>``, as etcd)."""
    return f"{lease_id:x}"


def run_callback(callback: Callable[[], object]) -> None:
    """Run a user callback; an exception in it is logged, never propagated into the
    recipe machinery."""
    try:
        callback()
    except Exception:
        _log.exception("recipe callback raised")


class Signal:
    """A thread-safe one-shot flag with callbacks, waitable from threads and from any
    event loop. ``set(error)`` records why; later calls do nothing."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._mutex = threading.Lock()
        self._callbacks: list[Callable[[errors.PnyxError], object]] = []
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.error: errors.PnyxError | None = None

    def __bool__(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, error: errors.PnyxError) -> bool:
        """Raise the flag (once): wake every waiter, then run the callbacks in order.
        True if this call raised it."""
        with self._mutex:
            if self._event.is_set():
                return False
            self.error = error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
            futures, self._futures = self._futures, []
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)
        for callback in callbacks:
            run_callback(lambda callback=callback: callback(error))  # type: ignore[misc]
        return True

    def add_callback(self, callback: Callable[[errors.PnyxError], object]) -> None:
        """Call ``callback(error)`` when the flag is raised (now, if it already is)."""
        with self._mutex:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        error = self.error
        assert error is not None
        run_callback(lambda: callback(error))

    def remove_callback(self, callback: Callable[[errors.PnyxError], object]) -> None:
        with self._mutex, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until raised (True) or ``timeout`` passes (False)."""
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Wait in the running event loop until raised (True) or ``timeout`` (False)."""
        future = self.future()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            self.forget(future)
        return True

    def future(self) -> asyncio.Future[None]:
        """A future of the running loop, resolved when the flag is raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._mutex:
            if not self._event.is_set():
                self._futures.append((loop, future))
                return future
        future.set_result(None)
        return future

    def forget(self, future: asyncio.Future[None]) -> None:
        """Drop a future from ``future()`` that nobody waits for any more (a long-lived
        signal, like a session's, must not collect one per finished wait)."""
        with self._mutex:
            self._futures = [entry for entry in self._futures if entry[1] is not future]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@attrs.define(eq=False)
class Runtime:
    """The event loop and ``AsyncClient`` the recipes of one client run on. Get it with
    ``Runtime.acquire(client)`` and give it back with ``release()``."""

    client: AsyncClient | None
    """None until created (private loop) or until given (borrowed loop)."""
    owns_loop: bool
    loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _users: int = 0
    _source: weakref.ref[Client] | None = None

    @classmethod
    def acquire(cls, client: Client | AsyncClient) -> Runtime:
        """The runtime for ``client`` (one per blocking ``Client``, shared); count one
        more user of it."""
        if isinstance(client, AsyncClient):
            runtime = cls(client=client, owns_loop=False)
            with contextlib.suppress(RuntimeError):
                runtime.loop = asyncio.get_running_loop()
            runtime._users = 1
            return runtime
        if not isinstance(client, Client):
            raise errors.InvalidRequestError(
                f"recipes need a pnyx Client or AsyncClient, got {type(client).__name__}"
            )
        with _REGISTRY_LOCK:
            shared = _REGISTRY.get(client)
            if shared is None or shared._users == 0:
                shared = cls(client=None, owns_loop=True, source=weakref.ref(client))
                shared._start(client)
                _REGISTRY[client] = shared
            shared._users += 1
            return shared

    def release(self) -> None:
        """One user fewer; the last one stops a private loop and its client."""
        if not self.owns_loop:
            return
        with _REGISTRY_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            source = self._source() if self._source is not None else None
            if source is not None and _REGISTRY.get(source) is self:
                del _REGISTRY[source]
        self._stop()

    @property
    def async_client(self) -> AsyncClient:
        if self.client is None:
            raise errors.RecipeError("the recipe runtime is not started")
        return self.client

    # ------------------------------------------------------------------ private loop

    def _start(self, source: Client) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                self.client = AsyncClient(list(source.endpoints), timeout=source.timeout)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="pnyx-recipes", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.close()

    def _stop(self) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(CLEANUP_SECONDS)

    # ------------------------------------------------------------------ the two faces

    def _bind(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise errors.RecipeError(
                "this recipe runs on an AsyncClient's event loop: use it with `async with` "
                "(or an *_async method) in that loop first"
            )
        if self.loop.is_closed():
            raise errors.RecipeError("the recipe runtime is closed")
        return self.loop

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the runtime's loop and block until it ends."""
        try:
            loop = self._bind()
            if _running_loop() is loop:
                raise errors.RecipeError(
                    "a blocking recipe method was called on the recipes' own event loop "
                    "(from a callback or async code): use its *_async twin"
                )
        except BaseException:
            coroutine.close()
            raise
        done = threading.Event()
        box: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coroutine)
            task.add_done_callback(lambda _task: done.set())
            box.append(task)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:
            coroutine.close()
            raise errors.RecipeError("the recipe runtime is closed") from None
        try:
            done.wait()
        except BaseException:
            # Interrupted (Ctrl-C): cancel the task so it cleans up (e.g. deletes its
            # waiting key), give it a moment, then let the interruption through.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: box[0].cancel() if box else None)
            done.wait(CLEANUP_SECONDS)
            raise
        task = box[0]
        if task.cancelled():
            raise errors.RecipeError("the recipe call was cancelled (runtime stopping)")
        return task.result()

    async def call_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the runtime's loop (directly if it is the running one)."""
        running = asyncio.get_running_loop()
        if self.loop is None and not self.owns_loop:
            self.loop = running
        try:
            loop = self._bind()
        except BaseException:
            coroutine.close()
            raise
        if loop is running:
            return await coroutine
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        # Cancelling the wrapper cancels the concurrent future, which cancels the task.
        return await asyncio.wrap_future(future)

    def create_task(self, coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start a background task on the runtime's loop (call from that loop)."""
        return self._bind().create_task(coroutine, name=name)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_REGISTRY_LOCK = threading.Lock()
_REGISTRY: weakref.WeakKeyDictionary[Client, Runtime] = weakref.WeakKeyDictionary()
