"""Barrier and DoubleBarrier against a real 3-node cluster: a double barrier releases
exactly when N have entered (every released participant sees N inside) and ``leave``
returns only when all have left; timeouts and asyncio cancellation remove the waiter's
key; an N+1-th participant is refused; session loss stops a waiter at once and is
reported to a participant inside; the single gate holds, releases and reports loss."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pnyx.clients import (
    AsyncClient,
    Client,
    RecipeError,
    SessionExpiredError,
)
from pnyx.clients import TimeoutError as PnyxTimeoutError
from pnyx.clients.testing import LocalCluster, wait_for
from pnyx.recipes.barrier import Barrier, DoubleBarrier
from pnyx.recipes.session import Session


@pytest.fixture
def cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The recipe tests' shared cluster (tests/recipes/conftest.py): nothing here harms it."""
    return shared_cluster


@pytest.fixture
def kv(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.endpoints) as client:
        yield client


def _thread(target: Callable[[], None], failures: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_double_barrier_releases_exactly_when_n_entered(kv: Client) -> None:
    count = 3
    failures: list[BaseException] = []
    inside_at_release: dict[int, int] = {}
    inside_after_leave: dict[int, list[bytes]] = {}
    released = [threading.Event() for _ in range(count)]
    go_leave = threading.Event()

    def participant(index: int) -> None:
        with Session(kv, ttl=10) as session:
            barrier = DoubleBarrier(session, "db/exact", count, timeout=60)
            barrier.enter()
            inside_at_release[index] = len(barrier.participants())
            released[index].set()
            assert go_leave.wait(60)
            barrier.leave()
            inside_after_leave[index] = barrier.participants()

    with Session(kv) as observer_session:
        observer = DoubleBarrier(observer_session, "db/exact", count)
        threads = [_thread(lambda i=i: participant(i), failures) for i in range(count - 1)]
        wait_for(lambda: len(observer.participants()) == count - 1, 20, "N-1 participants")
        assert not any(event.is_set() for event in released), "released before N entered"
        assert not failures
        threads.append(_thread(lambda: participant(count - 1), failures))
        for event in released:
            assert event.wait(30), failures
        assert inside_at_release == dict.fromkeys(range(count), count)
        go_leave.set()
        for thread in threads:
            thread.join(60)
        assert not failures, failures
        assert inside_after_leave == {i: [] for i in range(count)}
        assert kv.get("db/exact/", prefix=True).kvs == ()  # ready deleted by the last


def test_enter_timeout_and_n_plus_one_remove_their_key(kv: Client) -> None:
    with Session(kv) as one, Session(kv) as two:
        waiting = DoubleBarrier(one, "db/timeout", 2)
        with pytest.raises(PnyxTimeoutError):
            waiting.enter(timeout=0.3)
        assert waiting.participants() == []
        # count=1: the first passes at once; a second is one too many.
        first = DoubleBarrier(one, "db/full", 1)
        first.enter(timeout=5)
        extra = DoubleBarrier(two, "db/full", 1)
        with pytest.raises(RecipeError, match="full"):
            extra.enter(timeout=5)
        assert first.participants() == [first.key]
        first.leave(timeout=5)
        assert kv.get("db/full/", prefix=True).kvs == ()


def test_async_cancel_removes_the_waiting_key(cluster: LocalCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints) as akv, Session(akv) as session:
            barrier = DoubleBarrier(session, "db/cancel", 2)
            task = asyncio.create_task(barrier.enter_async())
            deadline = time.monotonic() + 20
            while await barrier.participants_async() != [barrier.key]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            while await barrier.participants_async():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert not barrier.entered

    asyncio.run(main())


def test_async_with_enters_and_leaves(cluster: LocalCluster) -> None:
    async def participant(akv: AsyncClient, seen: list[int]) -> None:
        async with (
            Session(akv) as session,
            DoubleBarrier(session, "db/async", 2, timeout=30) as barrier,
        ):
            seen.append(len(await barrier.participants_async()))

    async def main() -> list[int]:
        seen: list[int] = []
        async with AsyncClient(cluster.endpoints) as akv:
            await asyncio.gather(participant(akv, seen), participant(akv, seen))
            assert (await akv.get("db/async/", prefix=True)).kvs == ()
        return seen

    assert asyncio.run(main()) == [2, 2]


def test_session_loss_stops_a_waiter_and_is_reported_inside(kv: Client) -> None:
    with Session(kv, ttl=3) as session:
        waiting = DoubleBarrier(session, "db/loss-wait", 2)
        failures: list[BaseException] = []
        thread = _thread(lambda: waiting.enter(timeout=60), failures)
        wait_for(lambda: waiting.participants() == [waiting.key], 20, "the waiter's key")
        kv.lease_revoke(session.lease_id)
        thread.join(30)
        assert not thread.is_alive()
        assert len(failures) == 1 and isinstance(failures[0], SessionExpiredError)
    with Session(kv, ttl=3) as session:
        lost: list[BaseException] = []
        inside = DoubleBarrier(session, "db/loss-inside", 1, on_lost=lost.append)
        inside.enter(timeout=5)
        kv.lease_revoke(session.lease_id)
        assert inside.lost.wait(20)
        assert isinstance(inside.lost.error, SessionExpiredError) and lost
        with pytest.raises(SessionExpiredError):
            inside.leave(timeout=5)


def test_barrier_hold_wait_release(kv: Client) -> None:
    with Barrier(kv, "gate/a") as gate, Barrier(kv, "gate/a") as other:
        other.wait(timeout=5)  # not held: returns at once
        assert gate.hold() and not other.hold()
        assert other.is_held()
        with pytest.raises(PnyxTimeoutError):
            other.wait(timeout=0.3)
        failures: list[BaseException] = []
        done = threading.Event()

        def waiter() -> None:
            other.wait(timeout=60)
            done.set()

        thread = _thread(waiter, failures)
        assert not done.is_set()
        assert gate.release()
        thread.join(30)
        assert done.is_set() and not failures
        assert not gate.is_held()


def test_barrier_under_a_session_reports_loss(kv: Client) -> None:
    with Session(kv, ttl=3) as session, Barrier(session, "gate/leased") as gate:
        assert gate.hold()
        kv.lease_revoke(session.lease_id)
        assert gate.lost.wait(20)
        with Barrier(kv, "gate/leased") as other:
            other.wait(timeout=10)  # the lease took the gate with it
