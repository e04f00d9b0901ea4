"""RWLock against a real cluster: readers share, writers exclude, fair by arrival."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pnyx.clients import AsyncClient, Client, LockLostError, LockTimeoutError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import RWLock, Session


def test_readers_share_writers_exclude_and_queue_fairly(kv: Client, name: str) -> None:
    sessions = [Session(kv, ttl=10).open() for _ in range(4)]
    try:
        r1, r2, w, r3 = (RWLock(s, name) for s in sessions)
        r1.read.acquire(5)
        assert r2.read.try_acquire()  # readers share
        assert {h.key for h in r1.holders()} == {r1.read.key, r2.read.key}
        assert not w.write.try_acquire()  # a writer waits for readers
        with pytest.raises(LockTimeoutError):
            w.write.acquire(timeout=0.2)

        writer_in = threading.Event()

        def write() -> None:
            with w.write as held:
                held.fenced_put(f"{name}-data", "written")
                writer_in.set()

        thread = threading.Thread(target=write)
        thread.start()
        while not r1.waiters():
            thread.join(0.02)
        # A reader arriving after a waiting writer queues behind it (no writer starvation).
        assert not r3.read.try_acquire()
        r1.read.release()
        assert not writer_in.is_set()
        assert r2.read.is_held
        r2.read.release()
        thread.join(30)
        assert writer_in.is_set()
        assert kv.get(f"{name}-data").kvs[0].value == b"written"
        assert r3.read.try_acquire()
        r3.read.release()
        assert r1.holders() == [] and r1.waiters() == []
    finally:
        for session in sessions:
            session.close()


def test_writers_exclude_each_other_and_readers(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as a, Session(kv, ttl=5) as b:
        first, second = RWLock(a, name), RWLock(b, name)
        with first.write as held:
            assert not second.write.try_acquire()
            assert not second.read.try_acquire()
            (holder,) = first.holders()
            assert holder.key == held.key and first.is_writer(holder)
        assert second.write.try_acquire()
        second.write.release()


def test_loss_of_a_read_lock(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session:
        rw = RWLock(session, name)
        with pytest.raises(LockLostError), rw.read as held:
            kv.delete(held.key)
            assert held.lost.wait(10)


def test_async_sides(shared_cluster: LocalCluster, name: str) -> None:
    async def main() -> None:
        async with (
            AsyncClient(shared_cluster.endpoints) as akv,
            Session(akv, ttl=5) as a,
            Session(akv, ttl=5) as b,
        ):
            first, second = RWLock(a, name), RWLock(b, name)
            async with first.read, second.read:
                assert len(await first.holders_async()) == 2
            async with first.write:
                assert not await second.read.try_acquire_async()

    asyncio.run(main())
