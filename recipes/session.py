"""``Session``: a lease kept alive in the background, the ground every other recipe
stands on (a lock, a candidacy, a registration are keys attached to the session's lease).

::

    with Client() as kv, Session(kv, ttl=10) as session:
        session.lease_id, session.valid_until, session.lost.is_set()

    async with AsyncClient() as kv, Session(kv, ttl=10) as session:
        ...

Keep-alive: one refresh every TTL/3 (sooner after a failed one). ``valid_until`` is a
``time.monotonic()`` deadline: the *send* time of the last acknowledged refresh plus the
TTL it granted, minus a safety ``margin`` (default: a tenth of the TTL, at least 0.5 s,
at most a quarter of it). Because the leader counts the TTL from when it *received* the
refresh, the lease cannot expire on the servers before ``valid_until + margin``.

What happens when:

- **Session loss** - the cluster says the lease is gone (``LeaseNotFoundError``), or
  ``valid_until`` passes without an acknowledged refresh (cluster unreachable, this
  process paused): ``lost`` is raised with a ``SessionExpiredError``, the ``on_lost``
  callbacks run (on the recipes' event loop thread), keep-alive stops, and the lease is
  revoked on a best-effort basis so that what it held is freed at once. Declaring loss
  at ``valid_until`` means it is reported *before* the lease can have expired on the
  servers, unless this process itself was stopped for longer than the margin - which is
  why held locks also carry fencing tokens. A lost session stays lost: open a new one.
- **Client crash** (this process dies): nothing revokes the lease; it expires on the
  servers after its TTL and every key attached to it (locks, candidacies) is deleted.
- **Leader failover / reconnects**: the client retries refreshes on other members; a new
  leader extends every lease's TTL instead of expiring them, so a session survives a
  failover as long as some refresh is acknowledged before ``valid_until``.
- **close()** (or leaving ``with``): stops keep-alive and revokes the lease (its keys go
  with it). ``lost`` is not raised by a close, but ``ended`` is.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``; talks to the cluster only
through the public client API.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from types import TracebackType

from pnyx.clients import AsyncClient, Client
from pnyx.core import errors
from pnyx.recipes._base import Runtime, Signal, library_logger

__all__ = ["Session", "default_margin"]

_log = library_logger("pnyx.recipes.session")

MIN_RETRY_PAUSE = 0.05


def default_margin(ttl: float) -> float:
    """The default safety margin for a granted TTL: ttl/10 clamped to [0.5 s, ttl/4]."""
    return min(ttl / 4, max(0.5, ttl / 10))


class Session:
    """A lease with background keep-alive. See the module docstring.

    ``client``: a ``Client`` or ``AsyncClient``. ``ttl``: seconds (the cluster may raise
    it to its minimum; ``ttl`` then says what was granted). ``margin``: seconds subtracted
    from each refresh's deadline (see ``valid_until``). ``on_lost``: called with the
    ``SessionExpiredError`` when the session is lost. ``timeout``: bound of the grant and
    revoke requests (default the client's timeout).
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        ttl: int = 10,
        *,
        margin: float | None = None,
        on_lost: Callable[[errors.PnyxError], object] | None = None,
        timeout: float | None = None,
    ) -> None:
        if ttl < 1:
            raise errors.InvalidRequestError(f"ttl must be at least 1 second, got {ttl}")
        if margin is not None and margin < 0:
            raise errors.InvalidRequestError(f"margin must not be negative, got {margin}")
        self._client = client
        self._requested_ttl = int(ttl)
        self._requested_margin = margin
        self._timeout = timeout
        self._runtime: Runtime | None = None
        self.lease_id = 0
        """The lease (0 until opened)."""
        self.ttl = self._requested_ttl
        """The TTL the cluster granted, in seconds."""
        self.margin = 0.0
        self.valid_until = -math.inf
        """``time.monotonic()`` time until which the lease surely lives on the servers
        (minus the margin); moved forward by every acknowledged refresh."""
        self.lost = Signal()
        """Raised (with a ``SessionExpiredError``) when the session is lost."""
        self.ended = Signal()
        """Raised when the session is lost *or* closed: what recipes wait on."""
        self.closed = False
        self._opened = False
        self._keepalive: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._claims: dict[bytes, object] = {}
        if on_lost is not None:
            self.lost.add_callback(on_lost)

    # ------------------------------------------------------------------ properties

    @property
    def runtime(self) -> Runtime:
        """Where the recipes of this session run (for recipe implementations)."""
        if self._runtime is None:
            raise errors.RecipeError("the session is not open: use `with Session(...)`")
        return self._runtime

    @property
    def client(self) -> AsyncClient:
        """The ``AsyncClient`` the recipes of this session use (for a blocking
        ``Client``, a private one to the same endpoints)."""
        return self.runtime.async_client

    @property
    def error(self) -> errors.PnyxError | None:
        """Why the session was lost (None while it is not)."""
        return self.lost.error

    def is_valid(self) -> bool:
        """Open, not lost, and ``valid_until`` not passed."""
        return self._opened and not self.ended.is_set() and time.monotonic() < self.valid_until

    def check(self) -> None:
        """Raise ``SessionExpiredError`` unless ``is_valid()``."""
        if not self._opened:
            raise errors.SessionExpiredError("the session is not open")
        if self.ended.is_set():
            error = self.ended.error
            raise errors.SessionExpiredError(error.message if error else "session ended")
        if time.monotonic() >= self.valid_until:
            raise errors.SessionExpiredError(
                f"session {self.lease_id:x}: no keep-alive acknowledged in time"
            )

    def add_lost_callback(self, callback: Callable[[errors.PnyxError], object]) -> None:
        """Call ``callback(error)`` on loss (on the recipes' event loop thread)."""
        self.lost.add_callback(callback)

    def claim(self, key: bytes, owner: object) -> None:
        """Record that ``owner`` (a recipe object) uses ``key`` of this session's lease;
        ``RecipeError`` if another live object does (a session holds a name once)."""
        current = self._claims.get(key)
        if current is not None and current is not owner:
            raise errors.RecipeError(
                f"{key!r} is already used by another recipe object of this session "
                "(one session holds a lock or candidacy name once; use another session)"
            )
        self._claims[key] = owner

    def unclaim(self, key: bytes, owner: object) -> None:
        if self._claims.get(key) is owner:
            del self._claims[key]

    # ------------------------------------------------------------------ faces

    def open(self) -> Session:
        """Grant the lease and start keeping it alive (``with`` does this)."""
        self._acquire_runtime()
        try:
            self.runtime.call(self._open())
        except BaseException:
            self._release_runtime()
            raise
        return self

    async def open_async(self) -> Session:
        self._acquire_runtime()
        try:
            await self.runtime.call_async(self._open())
        except BaseException:
            await self._release_runtime_async()
            raise
        return self

    def close(self) -> None:
        """Stop keep-alive and revoke the lease (deleting its keys)."""
        if self._runtime is None or self.closed:
            return
        try:
            self._runtime.call(self._close())
        finally:
            self._release_runtime()

    async def close_async(self) -> None:
        if self._runtime is None or self.closed:
            return
        try:
            await self._runtime.call_async(self._close())
        finally:
            await self._release_runtime_async()

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return await self.open_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "closed" if self.closed else "open"
        return f"<Session lease={self.lease_id:x} ttl={self.ttl} {state}>"

    def _acquire_runtime(self) -> None:
        if self._opened or self._runtime is not None:
            raise errors.RecipeError("a session is opened once; make a new one")
        self._runtime = Runtime.acquire(self._client)

    def _release_runtime(self) -> None:
        if self._runtime is not None:
            self._runtime.release()

    async def _release_runtime_async(self) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        if runtime.owns_loop:
            # Stopping a private loop joins its thread: not on this event loop.
            await asyncio.to_thread(runtime.release)
        else:
            runtime.release()

    # ------------------------------------------------------------------ logic

    async def _open(self) -> None:
        kv = self.client
        sent_at = time.monotonic()
        grant = await kv.lease_grant(self._requested_ttl, timeout=self._timeout)
        self.lease_id = grant.id
        self.ttl = grant.ttl
        margin = self._requested_margin
        self.margin = default_margin(grant.ttl) if margin is None else margin
        if self.margin >= grant.ttl / 2:
            await self._revoke_quietly()
            raise errors.InvalidRequestError(
                f"margin {self.margin}s must be under half the granted TTL ({grant.ttl}s)"
            )
        self.valid_until = sent_at + grant.ttl - self.margin
        self._opened = True
        self._arm_watchdog()
        self._keepalive = self.runtime.create_task(
            self._keep_alive(sent_at), name=f"pnyx-session-{grant.id:x}"
        )
        _log.debug("session opened", lease=f"{grant.id:x}", ttl=grant.ttl)

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        was_lost = self.lost.is_set()
        self._stop_background()
        self.ended.set(errors.SessionExpiredError(f"session {self.lease_id:x} closed"))
        if self._opened and not was_lost:
            await self._revoke_quietly()

    async def _revoke_quietly(self) -> None:
        try:
            await self.client.lease_revoke(self.lease_id, timeout=self._timeout)
        except errors.LeaseNotFoundError:
            pass
        except errors.PnyxError as exc:
            # The lease will expire on its own after its TTL.
            _log.warning("lease revoke failed", lease=f"{self.lease_id:x}", error=str(exc))

    def _stop_background(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        task = self._keepalive
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _arm_watchdog(self) -> None:
        """Fire at ``valid_until``: a timer, so loss is declared on time even while a
        refresh is still waiting for its answer."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, self.valid_until - time.monotonic())
        self._watchdog = loop.call_later(delay, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self.ended.is_set():
            return
        if time.monotonic() >= self.valid_until:
            self._declare_lost(
                errors.SessionExpiredError(
                    f"session {self.lease_id:x}: no keep-alive acknowledged for "
                    f"{self.ttl - self.margin:.1f}s; the lease may expire"
                )
            )
        else:
            self._arm_watchdog()

    def _declare_lost(self, error: errors.SessionExpiredError) -> None:
        if self.ended.is_set():
            return
        _log.warning("session lost", lease=f"{self.lease_id:x}", reason=error.message)
        self._stop_background()
        self.ended.set(error)
        self.lost.set(error)
        # The lease may still live (we only could not confirm it): revoking frees what
        # it holds now instead of after its TTL. Best effort.
        self.runtime.create_task(self._revoke_quietly(), name="pnyx-session-revoke")

    async def _keep_alive(self, last_sent: float) -> None:
        kv = self.client
        next_at = last_sent + self.ttl / 3
        while not self.ended.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self.ended.is_set():
                return
            sent_at = time.monotonic()
            left = self.valid_until - sent_at
            if left <= 0:
                self._on_watchdog()
                return
            try:
                result = await kv.lease_keep_alive_once(
                    self.lease_id, timeout=max(MIN_RETRY_PAUSE, min(kv.timeout, left))
                )
            except errors.LeaseNotFoundError:
                self._declare_lost(
                    errors.SessionExpiredError(f"session {self.lease_id:x}: lease not found")
                )
                return
            except errors.ClientError as exc:
                self._declare_lost(
                    errors.SessionExpiredError(f"session {self.lease_id:x}: {exc.message}")
                )
                return
            except errors.PnyxError as exc:
                # Unavailable for now: try again soon, while the lease surely lives.
                _log.info("keep-alive failed", lease=f"{self.lease_id:x}", error=str(exc))
                left = self.valid_until - time.monotonic()
                next_at = time.monotonic() + min(self.ttl / 6, max(MIN_RETRY_PAUSE, left / 4))
                continue
            if result.ttl <= 0:
                self._declare_lost(
                    errors.SessionExpiredError(f"session {self.lease_id:x}: lease expired")
                )
                return
            deadline = sent_at + result.ttl - self.margin
            if deadline > self.valid_until:
                self.valid_until = deadline
                self._arm_watchdog()
            next_at = sent_at + self.ttl / 3
