"""``Queue``: a FIFO work queue with at-least-once delivery: consumers claim an item
under their session's lease and acknowledge it when done.

::

    with Client() as kv, Queue(kv, "jobs") as jobs:          # producers need no session
        jobs.put(b"resize img-1")

    with Client() as kv, Session(kv, ttl=10) as session, Queue(session, "jobs") as jobs:
        with jobs.get(timeout=30) as item:                   # claimed
            work(item.value)                                  # acked on a clean exit,
                                                              # released on an exception

Keys: ``<name>/items/<id>`` hold the items; their create revision orders the queue
(FIFO; items put together with ``put_many`` keep their order). ``<name>/claims/<id>``
marks an item taken, attached to the consumer's session lease. ``get`` reads items and
claims at one revision, claims the oldest unclaimed item with a transaction (item still
there and not claimed -> put the claim), and if there is none watches the queue from
that revision for a change (a put, a released or expired claim) before looking again.
``ack`` deletes item and claim in one transaction guarded by the claim's create
revision; ``release`` deletes only the claim, so the item is offered again (first, as
it is the oldest).

Delivery is **at least once**: an item is removed only by an ``ack``; a claim dies with
its consumer's lease, making the item visible again. A consumer that processed an item
but lost its claim before acking gets ``LockLostError`` from ``ack`` - the item may be
(or have been) delivered to someone else, so processing must be idempotent. Every
waiting consumer wakes on each change to the queue (simple and fair; fine for tens of
consumers, not for thousands).

What happens on:

- **Session loss** (consumer): a waiting ``get`` stops at once with
  ``SessionExpiredError``; its claims vanish with the lease, and their items go back to
  the queue; ``ack`` of such an item raises ``LockLostError``.
- **Client crash** (consumer): its lease expires after its TTL, its claims with it, and
  the items are delivered again to other consumers.
- **Leader failover / reconnects**: puts, claims and acks are retried exactly-once
  (never two items for one retried put, never a lost ack); a waiting ``get`` resumes its
  watch from its last revision. A cancelled (asyncio) or interrupted ``get`` gives back
  a claim it may have made.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from types import TracebackType

import attrs

from pnyx.clients import AsyncClient, Client, GetResult, KeyValue, cmp, op
from pnyx.core import errors
from pnyx.recipes._base import Signal, deadline_after, lease_hex, library_logger
from pnyx.recipes._source import Source, key_prefix, prefix_end, wait_for_change
from pnyx.recipes.session import Session

__all__ = ["Queue", "QueueItem"]

_log = library_logger("pnyx.recipes.queue")

PAGE = 16
"""Unclaimed items looked at per ``get`` (claims lost to other consumers meanwhile
just mean another look)."""


@attrs.define(eq=False)
class QueueItem:
    """A claimed item: ``ack`` when done (or ``release`` to give it back). As a context
    manager it acks on a clean exit and releases on an exception."""

    queue: Queue
    id: str
    value: bytes
    revision: int
    """When it was put (its key's create revision)."""
    claim_revision: int
    """When this consumer claimed it."""
    session: Session
    done: bool = False

    @property
    def lost(self) -> Signal:
        """Raised when the consumer's session ends (lost or closed): the claim is then
        gone or going, and the item may be delivered to someone else - before the lease
        can have expired, so long work can stop early. ``ack`` would raise."""
        return self.session.ended

    def ack(self) -> None:
        """Remove the item for good. ``LockLostError`` if the claim was lost."""
        self.queue._source.runtime.call(self.queue._ack(self))

    def release(self) -> bool:
        """Give the item back to the queue; False if the claim was already lost."""
        return self.queue._source.runtime.call(self.queue._release(self))

    async def ack_async(self) -> None:
        await self.queue._source.runtime.call_async(self.queue._ack(self))

    async def release_async(self) -> bool:
        return await self.queue._source.runtime.call_async(self.queue._release(self))

    def __enter__(self) -> QueueItem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.ack()
        elif not self.done:
            with contextlib.suppress(errors.PnyxError):
                self.release()

    async def __aenter__(self) -> QueueItem:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.ack_async()
        elif not self.done:
            with contextlib.suppress(errors.PnyxError):
                await self.release_async()


class Queue:
    """A FIFO, at-least-once queue under ``name``; see the module docstring.

    ``source``: a ``Client`` / ``AsyncClient`` (producing only) or a ``Session``
    (producing and consuming). ``timeout``: default for ``get`` (None: wait until an
    item comes or the session ends).
    """

    def __init__(
        self,
        source: Client | AsyncClient | Session,
        name: str | bytes,
        *,
        timeout: float | None = None,
    ) -> None:
        self._source = Source(source)
        self.prefix = key_prefix(name)
        self.timeout = timeout
        self._items = self.prefix + b"items/"
        self._claims = self.prefix + b"claims/"

    def __repr__(self) -> str:
        return f"<Queue {self.prefix!r}>"

    # ------------------------------------------------------------------ blocking face

    def put(self, value: str | bytes) -> str:
        """Append one item; returns its id."""
        return self._source.runtime.call(self._put_many([value]))[0]

    def put_many(self, values: Iterable[str | bytes]) -> list[str]:
        """Append several items at once (one transaction, their order kept)."""
        return self._source.runtime.call(self._put_many(list(values)))

    def get(self, timeout: float | None = None) -> QueueItem:
        """Claim the oldest unclaimed item, waiting up to ``timeout`` (default the
        queue's) for one; ``errors.TimeoutError`` then."""
        item = self._source.runtime.call(self._get(self._pick(timeout), wait=True))
        assert item is not None
        return item

    def try_get(self) -> QueueItem | None:
        """Claim the oldest unclaimed item if there is one now."""
        return self._source.runtime.call(self._get(None, wait=False))

    def size(self) -> int:
        """Items in the queue, claimed or not."""
        return self._source.runtime.call(self._count(self._items))

    def claimed(self) -> int:
        """Items claimed and not acked yet."""
        return self._source.runtime.call(self._count(self._claims))

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ asyncio face

    async def put_async(self, value: str | bytes) -> str:
        return (await self._source.runtime.call_async(self._put_many([value])))[0]

    async def put_many_async(self, values: Iterable[str | bytes]) -> list[str]:
        return await self._source.runtime.call_async(self._put_many(list(values)))

    async def get_async(self, timeout: float | None = None) -> QueueItem:
        item = await self._source.runtime.call_async(self._get(self._pick(timeout), wait=True))
        assert item is not None
        return item

    async def try_get_async(self) -> QueueItem | None:
        return await self._source.runtime.call_async(self._get(None, wait=False))

    async def size_async(self) -> int:
        return await self._source.runtime.call_async(self._count(self._items))

    async def claimed_async(self) -> int:
        return await self._source.runtime.call_async(self._count(self._claims))

    async def close_async(self) -> None:
        await self._source.close_async()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    # ------------------------------------------------------------------ logic

    def _pick(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _kv(self) -> AsyncClient:
        return self._source.client

    def _id_of(self, key: bytes) -> str:
        return key[len(self._items) :].decode("ascii")

    async def _put_many(self, values: list[str | bytes]) -> list[str]:
        if not values:
            return []
        # One random stem per call, a counter after it: unique across producers, and
        # sorting by key keeps the order of items put in the same revision.
        stem = uuid.uuid4().hex
        ids = [f"{stem}-{index:06d}" for index in range(len(values))]
        await self._kv().txn(
            success=[
                op.put(self._items + item_id.encode(), value)
                for item_id, value in zip(ids, values, strict=True)
            ]
        )
        return ids

    async def _count(self, start: bytes) -> int:
        return (await self._kv().get(start, range_end=prefix_end(start), count_only=True)).count

    async def _get(self, timeout: float | None, wait: bool) -> QueueItem | None:
        session = self._source.require_session("consuming from a queue")
        deadline = deadline_after(timeout)
        while True:
            session.check()
            item, revision = await self._claim_oldest(session)
            if item is not None or not wait:
                return item
            await wait_for_change(
                self._kv(),
                self.prefix,
                range_end=prefix_end(self.prefix),
                start_revision=revision + 1,
                deadline=deadline,
                stop=[session.ended],
                what=f"an item in {self.prefix!r}",
            )

    async def _claim_oldest(self, session: Session) -> tuple[QueueItem | None, int]:
        """Claim the oldest unclaimed item; (None, revision read) if every item is
        claimed or there is none."""
        kv = self._kv()
        claims = await kv.get(self._claims, range_end=prefix_end(self._claims), keys_only=True)
        revision = claims.revision
        claimed = {entry.key[len(self._claims) :] for entry in claims.kvs}
        # At most len(claimed) items are taken, so the oldest free one is among the
        # first len(claimed) + 1 (read at the same revision as the claims).
        items = await kv.get(
            self._items,
            range_end=prefix_end(self._items),
            revision=revision,
            sort_target="create",
            sort_order="ascend",
            limit=len(claimed) + PAGE,
            keys_only=True,
        )
        candidates = sorted(
            (entry for entry in items.kvs if entry.key[len(self._items) :] not in claimed),
            key=lambda entry: (entry.create_revision, entry.key),
        )
        for entry in candidates:
            item = await self._claim(session, entry)
            if item is not None:
                return item, revision
        return None, revision

    async def _claim(self, session: Session, entry: KeyValue) -> QueueItem | None:
        item_id = entry.key[len(self._items) :]
        claim_key = self._claims + item_id
        token = f"{lease_hex(session.lease_id)}:{uuid.uuid4().hex}".encode()
        try:
            result = await self._kv().txn(
                compare=[
                    cmp.create(entry.key) == entry.create_revision,
                    cmp.create(claim_key) == 0,
                ],
                success=[op.put(claim_key, token, lease=session.lease_id), op.get(entry.key)],
                failure=[],
            )
        except BaseException:
            # Cancelled or failed with an unknown outcome: give back a claim we may hold.
            self._give_back(claim_key, token, session)
            raise
        if not result.succeeded:
            return None
        fetched = result.responses[1]
        assert isinstance(fetched, GetResult) and fetched.kvs
        return QueueItem(
            queue=self,
            id=item_id.decode("ascii"),
            value=fetched.kvs[0].value,
            revision=entry.create_revision,
            claim_revision=result.revision,
            session=session,
        )

    def _give_back(self, claim_key: bytes, token: bytes, session: Session) -> None:
        async def undo() -> None:
            try:
                await self._kv().txn(
                    compare=[cmp.value(claim_key) == token],
                    success=[op.delete(claim_key)],
                    failure=[],
                )
            except errors.PnyxError as exc:
                # The claim dies with the lease at the latest.
                _log.warning("could not give back a claim", key=claim_key, error=str(exc))

        if not session.ended.is_set():
            task = asyncio.ensure_future(undo())
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    async def _ack(self, item: QueueItem) -> None:
        if item.done:
            raise errors.RecipeError(f"item {item.id} was already acked or released")
        claim_key = self._claims + item.id.encode()
        result = await self._kv().txn(
            compare=[cmp.create(claim_key) == item.claim_revision],
            success=[op.delete(self._items + item.id.encode()), op.delete(claim_key)],
            failure=[],
        )
        item.done = True
        if not result.succeeded:
            raise errors.LockLostError(
                f"queue {self.prefix!r}: the claim on item {item.id} was lost before the ack "
                "(its session expired); the item may be delivered again"
            )

    async def _release(self, item: QueueItem) -> bool:
        if item.done:
            return False
        claim_key = self._claims + item.id.encode()
        result = await self._kv().txn(
            compare=[cmp.create(claim_key) == item.claim_revision],
            success=[op.delete(claim_key)],
            failure=[],
        )
        item.done = True
        return result.succeeded


_BACKGROUND: set[asyncio.Future[None]] = set()
"""Give-back tasks in flight (a reference keeps them from being collected)."""
