"""``AsyncClient`` against fake nodes: the same protocol through asyncio futures that
the I/O thread resolves in batches; watches as async iterators; async keep-alive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pnyx.clients import (
    AsyncClient,
    ClientError,
    CompactedError,
    LeaseNotFoundError,
    TimeoutError,
    WatchBatch,
)
from pnyx.core.wire import PutRequest, RangeRequest


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_operations_and_results_match_the_sync_client(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            assert (await kv.put("a", "1")).revision == 2
            got = await kv.get("a")
            assert got.kvs[0].value == b"1" and got.revision == 2
            txn = await kv.txn(
                compare=[kv.cmp.value("a") == "1"],
                success=[kv.op.put("b", "2")],
                failure=[],
            )
            assert txn.succeeded
            assert (await kv.delete("", prefix=True)).deleted == 2
            lease = await kv.lease_grant(10)
            assert (await kv.lease_keep_alive_once(lease.id)).ttl == 10
            assert (await kv.lease_list()).leases == (lease.id,)
            await kv.lease_revoke(lease.id)
            with pytest.raises(LeaseNotFoundError):
                await kv.lease_keep_alive_once(lease.id)
            assert (await kv.status()).member_id == 1
            assert [m.id for m in (await kv.member_list()).members] == [1]

    run(main)


def test_concurrent_calls_are_packed_into_few_messages(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            await kv.put("warm", "up")
            before = fake.messages
            results = await asyncio.gather(*(kv.put(f"k{i}", "v") for i in range(200)))
            assert sorted(r.revision for r in results) == list(range(3, 203))
            # One event-loop turn queues all 200 before the I/O thread drains them;
            # anything near one message per call would mean no packing at all.
            assert fake.messages - before <= 20
            tickets = [(e.client_id, e.seq) for e in fake.received if type(e.message) is PutRequest]
            assert len(set(tickets)) == 201
            # 200 writes at once: 4 client ids, 64 seqs each at most (the window).
            assert len({client_id for client_id, _ in tickets}) == 4

    run(main)


def test_timeouts_and_closing(fake: Any) -> None:
    async def main() -> None:
        fake.silent = True
        kv = AsyncClient([fake.endpoint], timeout=0.4)
        with pytest.raises(TimeoutError):
            await kv.get("k")
        pending = asyncio.ensure_future(kv.get("k", timeout=30))
        await eventually(lambda: sum(type(e.message) is RangeRequest for e in fake.received) >= 3)
        await kv.close()
        with pytest.raises(ClientError):
            await pending
        with pytest.raises(ClientError):
            await kv.put("k", "v")

    run(main)


def test_a_cancelled_task_does_not_disturb_other_calls(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            fake.silent = True
            waiting = asyncio.ensure_future(kv.get("k", timeout=30))
            await eventually(lambda: any(type(e.message) is RangeRequest for e in fake.received))
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            fake.silent = False
            assert (await kv.put("k", "v")).revision == 2

    run(main)


def test_async_watch_iterates_batches_and_resumes_after_a_cut(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            seen: list[WatchBatch] = []
            async with kv.watch("k") as watch:
                await kv.put("k", "1")
                async for batch in watch:
                    seen.append(batch)
                    if len(seen) == 1:
                        fake.cancel_watches("slow watcher: resume from 3")
                        await kv.put("k", "2")
                        await kv.put("k", "3")
                    if len(seen) == 3:
                        break
            assert [b.revision for b in seen] == [2, 3, 4]

    run(main)


def test_async_watch_created_lazily_by_iteration_and_ended_by_close(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            await kv.put("k", "old")
            watch = kv.watch("k", start_revision=1)
            first = await watch.__anext__()
            assert first.revision == 2
            consumer = asyncio.ensure_future(watch.get())
            await asyncio.sleep(0)
            watch.close()
            with pytest.raises(StopAsyncIteration):
                await consumer

    run(main)


def test_async_watch_on_a_compacted_revision_raises(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            for value in "abc":
                await kv.put("k", value)
            await kv.compact(3)
            with pytest.raises(CompactedError) as caught:
                watch = await kv.watch("k", start_revision=1)
                await watch.get(5)
            assert caught.value.compact_revision == 3

    run(main)


def test_async_keep_alive_reports_revocation(fake: Any) -> None:
    async def main() -> None:
        async with AsyncClient([fake.endpoint]) as kv:
            lease = await kv.lease_grant(1)
            lost: list[BaseException] = []
            async with kv.lease_keep_alive(lease.id, on_lost=lost.append) as keeper:
                await eventually(lambda: keeper.ttl == 1)
                assert not keeper.lost
                await kv.lease_revoke(lease.id)
                assert await keeper.wait_lost(10)
            assert isinstance(keeper.error, LeaseNotFoundError)
            assert lost == [keeper.error]

    run(main)
