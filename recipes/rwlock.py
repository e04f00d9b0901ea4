"""``RWLock``: a distributed readers-writer lock - readers share it, a writer holds it
alone - fair by arrival (create revision), with fencing tokens like ``Lock``.

::

    rw = RWLock(session, "catalog")
    with rw.read:                     # many readers at once
        ...
    with rw.write as w:               # one writer, no reader
        w.fenced_put("catalog/v", b"2")

    async with rw.write: ...

Keys: ``<name>/read/<lease-hex>`` and ``<name>/write/<lease-hex>``, in one line ordered by
create revision. A reader holds when no *writer* came before it (it watches only the
last writer before it); a writer holds when *nobody* came before it (it watches only
its immediate predecessor). A writer that arrives behind readers waits for them, and
readers arriving after a waiting writer queue behind it, so writers are not starved.
One release wakes only those whose turn it may be: the contender right behind a writer,
or every reader behind a writer (they all hold together).

``rw.read`` and ``rw.write`` are lock objects with the whole ``Lock`` interface
(``acquire(timeout)``, ``try_acquire``, ``release``, ``token``, ``fenced_put`` /
``fenced_txn``, ``lost``, and ``*_async`` twins); one session holds each side of a name
once (a session asking for the write side while holding the read side waits for itself:
release first).

Session loss, client crash and failover behave as for ``Lock`` (see ``pnyx.recipes.lock``):
loss while holding raises ``lost`` and ``LockLostError`` in the next fenced operation and
at the end of ``with``; a crashed holder's keys expire with its lease; a failover loses
nobody's place.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pnyx.core import errors
from pnyx.recipes.lock import Contender, HeldFaces, _as_bytes, _Wait, name_prefix, prefix_end
from pnyx.recipes.session import Session

__all__ = ["RWLock"]

READ = b"read/"
WRITE = b"write/"


class _ReadSide(HeldFaces):
    what = "read lock"

    async def _blocker(self) -> _Wait | None:
        # Only writers that came first keep a reader out.
        writers = self._prefix + WRITE
        return await self._predecessor(writers, prefix_end(writers))


class _WriteSide(HeldFaces):
    what = "write lock"
    # Default blocker: anybody (reader or writer) that came first.


class RWLock:
    """A readers-writer lock named ``name``; see the module docstring. ``timeout``,
    ``value`` and ``on_lost`` are the defaults of both sides (as for ``Lock``)."""

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
        self._session = session
        self._prefix = prefix
        self.name = prefix[:-1].decode("utf-8", errors="replace")
        raw = _as_bytes(value)
        self.read = _ReadSide(session, prefix, prefix + READ, value=raw, on_lost=on_lost)
        """The shared side."""
        self.write = _WriteSide(session, prefix, prefix + WRITE, value=raw, on_lost=on_lost)
        """The exclusive side."""
        self.read.timeout = timeout
        self.write.timeout = timeout

    def __repr__(self) -> str:
        return f"<RWLock {self.name!r} read={self.read!r} write={self.write!r}>"

    def holders(self) -> list[Contender]:
        """Who holds it now: some readers, or one writer (empty: nobody)."""
        return self._session.runtime.call(self._split())[0]

    def waiters(self) -> list[Contender]:
        """Who waits, in line order."""
        return self._session.runtime.call(self._split())[1]

    async def holders_async(self) -> list[Contender]:
        return (await self._session.runtime.call_async(self._split()))[0]

    async def waiters_async(self) -> list[Contender]:
        return (await self._session.runtime.call_async(self._split()))[1]

    def is_writer(self, contender: Contender) -> bool:
        return contender.key.startswith(self._prefix + WRITE)

    async def _split(self) -> tuple[list[Contender], list[Contender]]:
        line = await self.read._contenders(self._prefix, prefix_end(self._prefix))
        if not line:
            return [], []
        if self.is_writer(line[0]):
            count = 1
        else:
            count = next((i for i, c in enumerate(line) if self.is_writer(c)), len(line))
        waiting = [attrs.evolve(c, since=c.token) for c in line[count:]]
        return line[:count], waiting
