"""Semaphore against a real cluster: at most N holders, FIFO, one wake-up per change."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pnyx.clients import AsyncClient, Client, InvalidRequestError, LockTimeoutError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Semaphore, Session


def test_at_most_n_holders_fifo_and_no_herd(
    kv: Client, name: str, until: Callable[..., Any]
) -> None:
    sessions = [Session(kv, ttl=10).open() for _ in range(6)]
    try:
        slots = [Semaphore(s, name, 2) for s in sessions]
        assert slots[0].try_acquire() and slots[1].try_acquire()
        assert not slots[2].try_acquire()
        with pytest.raises(LockTimeoutError):
            slots[2].acquire(timeout=0.2)
        order: list[int] = []
        events = {i: threading.Event() for i in range(2, 6)}
        threads = []

        def take(index: int) -> None:
            slots[index].acquire(30)
            order.append(index)
            events[index].wait(30)  # hold until the test says so
            slots[index].release()

        for index in range(2, 6):
            thread = threading.Thread(target=take, args=(index,))
            thread.start()
            threads.append(thread)
            until(lambda index=index: len(slots[0].waiters()) == index - 1, what="queued")
        assert [h.key for h in slots[0].holders()] == [slots[0].key, slots[1].key]
        slots[0].release()
        until(lambda: order == [2], what="first waiter in")
        slots[1].release()
        until(lambda: order == [2, 3], what="second waiter in")
        assert len(slots[2].holders()) == 2
        events[2].set()
        until(lambda: order == [2, 3, 4], what="third waiter in")
        events[3].set()
        events[4].set()
        until(lambda: order == [2, 3, 4, 5], what="last waiter in")
        events[5].set()
        for thread in threads:
            thread.join(30)
        # No herd: the first waiter was woken once (by a departure); each later one at
        # most twice - by its predecessor's promotion, then by the departure that let it
        # in (once if that departure came before it looked again) - although every
        # release happened while they all waited.
        wakeups = [slots[i].wakeups for i in range(2, 6)]
        assert wakeups[0] == 1 and all(1 <= count <= 2 for count in wakeups[1:]), wakeups
        assert slots[0].holders() == []
    finally:
        for session in sessions:
            session.close()


def test_limit_must_be_positive(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session, pytest.raises(InvalidRequestError):
        Semaphore(session, name, 0)


def test_async_face(shared_cluster: LocalCluster, name: str) -> None:
    async def main() -> None:
        async with (
            AsyncClient(shared_cluster.endpoints) as akv,
            Session(akv, ttl=5) as a,
            Session(akv, ttl=5) as b,
            Session(akv, ttl=5) as c,
        ):
            async with Semaphore(a, name, 2) as one, Semaphore(b, name, 2):
                assert not await Semaphore(c, name, 2).try_acquire_async()
                await one.fenced_put_async(f"{name}-x", "1")
            assert await Semaphore(c, name, 2).try_acquire_async()

    asyncio.run(main())
