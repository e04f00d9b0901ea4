"""``Semaphore``: at most ``limit`` holders of a name at once, FIFO-fair, with a fencing
token per holder.

::

    with Semaphore(session, "gpu-slots", limit=4, timeout=30) as slot:
        slot.token, slot.fenced_put("gpu/job-7", b"running")

Keys: ``<name>/<lease-hex>`` in a line ordered by create revision; the first ``limit``
hold. Every participant must use the same ``limit`` (it is not stored: the line is).
No herd: the first waiter watches the line for a departure; every later waiter watches
only its predecessor, which writes its key once when it is promoted (the guarded
"since" write every contender makes after waiting), so one release wakes the first
waiter, whose promotion wakes the next one, which becomes first waiter.

It is a lock object with the whole ``Lock`` interface (``acquire(timeout)``,
``try_acquire``, ``release``, ``token``, ``fenced_put`` / ``fenced_txn`` - which here
check that *this holder's* slot is still held - ``lost``, ``*_async`` twins, ``with`` /
``async with``), plus ``holders()`` and ``waiters()``.

Session loss, client crash and failover behave as for ``Lock`` (see ``pnyx.recipes.lock``):
loss while holding raises ``lost`` and ``LockLostError`` in the next fenced operation and
at the end of ``with``; a crashed holder's key expires with its lease, which frees its
slot; a failover loses nobody's place.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pnyx.core import errors
from pnyx.recipes.lock import Contender, HeldFaces, _as_bytes, _Wait, name_prefix, prefix_end
from pnyx.recipes.session import Session

__all__ = ["Semaphore"]


class Semaphore(HeldFaces):
    """``limit`` slots named ``name``; see the module docstring."""

    what = "semaphore"

    def __init__(
        self,
        session: Session,
        name: str | bytes,
        limit: int,
        *,
        timeout: float | None = None,
        value: str | bytes = b"",
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        if limit < 1:
            raise errors.InvalidRequestError(f"a semaphore needs a limit >= 1, got {limit}")
        prefix = name_prefix(name)
        super().__init__(session, prefix, prefix, value=_as_bytes(value), on_lost=on_lost)
        self.name = prefix[:-1].decode("utf-8", errors="replace")
        self.limit = limit
        self.timeout = timeout

    async def _blocker(self) -> _Wait | None:
        end = prefix_end(self._prefix)
        ahead = await self._kv().get(
            self._prefix,
            range_end=end,
            max_create_revision=self._token - 1,
            sort_target="create",
            sort_order="descend",
            limit=self.limit + 1,
            keys_only=True,
        )
        if len(ahead.kvs) < self.limit:
            return None  # fewer than `limit` before us: we hold a slot
        if len(ahead.kvs) == self.limit:
            # First waiter: any departure from the line may free a slot for us.
            return _Wait(self._prefix, end, ahead.revision)
        # Later waiter: our predecessor leaving, or being promoted (it writes its key
        # then), is the only change that can make us first waiter.
        return _Wait(ahead.kvs[0].key, b"", ahead.revision, skip_puts=False)

    def holders(self) -> list[Contender]:
        """Who holds a slot now (at most ``limit``)."""
        return self._session.runtime.call(self._split())[0]

    def waiters(self) -> list[Contender]:
        """Who waits, in line order."""
        return self._session.runtime.call(self._split())[1]

    async def holders_async(self) -> list[Contender]:
        return (await self._session.runtime.call_async(self._split()))[0]

    async def waiters_async(self) -> list[Contender]:
        return (await self._session.runtime.call_async(self._split()))[1]

    async def _split(self) -> tuple[list[Contender], list[Contender]]:
        line = await self._contenders(self._prefix, prefix_end(self._prefix))
        waiting = [attrs.evolve(c, since=c.token) for c in line[self.limit :]]
        return line[: self.limit], waiting
