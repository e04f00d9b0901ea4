"""Queue against a real 3-node cluster: FIFO order, ack / release, a blocked consumer
woken by a put, at-least-once delivery when a consumer dies holding a claim (its lease
revoked or a real consumer process SIGKILLed), several concurrent consumers each getting
distinct items, and asyncio cancellation leaving no claim behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from pnyx.clients import (
    AsyncClient,
    Client,
    LockLostError,
    RecipeError,
    SessionExpiredError,
)
from pnyx.clients import TimeoutError as PnyxTimeoutError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes.queue import Queue
from pnyx.recipes.session import Session


@pytest.fixture
def cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The recipe tests' shared cluster (tests/recipes/conftest.py): nothing here harms it."""
    return shared_cluster


@pytest.fixture
def kv(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.endpoints) as client:
        yield client


def test_fifo_ack_release_and_timeout(kv: Client) -> None:
    with Queue(kv, "q/fifo") as producer, Session(kv) as session, Queue(session, "q/fifo") as q:
        producer.put("one")
        producer.put_many(["two", "three", "four"])
        producer.put("five")
        assert q.size() == 5
        first = q.get(timeout=5)
        assert first.value == b"one"
        second = q.get(timeout=5)
        assert second.value == b"two" and q.claimed() == 2
        assert first.release()  # back to the queue, and the oldest again
        again = q.get(timeout=5)
        assert again.value == b"one" and again.id == first.id
        with again:
            pass  # acked on exit
        second.ack()
        with pytest.raises(RecipeError):
            second.ack()
        values = []
        for _ in range(3):
            with q.get(timeout=5) as item:
                values.append(item.value)
        assert values == [b"three", b"four", b"five"]
        assert q.size() == 0 and q.claimed() == 0 and q.try_get() is None
        with pytest.raises(PnyxTimeoutError):
            q.get(timeout=0.3)
        with pytest.raises(RecipeError):
            producer.get(timeout=1)  # no session: cannot consume


def test_exception_in_the_body_releases_the_item(kv: Client) -> None:
    with Session(kv) as session, Queue(session, "q/raise") as q:
        q.put("job")
        with pytest.raises(ValueError), q.get(timeout=5):
            raise ValueError("worker failed")
        with q.get(timeout=5) as item:
            assert item.value == b"job"
        assert q.size() == 0


def test_blocked_get_is_woken_by_a_put(kv: Client) -> None:
    with Session(kv) as session, Queue(session, "q/wake") as q, Queue(kv, "q/wake") as producer:
        got: list[bytes] = []
        thread = threading.Thread(target=lambda: got.append(q.get(timeout=30).value))
        thread.start()
        producer.put("late")
        thread.join(30)
        assert got == [b"late"]


def test_claim_of_a_dead_consumer_is_delivered_again(kv: Client) -> None:
    with Queue(kv, "q/dead") as producer, Session(kv) as survivor_session:
        producer.put("precious")
        with Session(kv, ttl=3) as doomed_session, Queue(doomed_session, "q/dead") as doomed:
            item = doomed.get(timeout=5)
            with Queue(survivor_session, "q/dead") as survivor:
                assert survivor.try_get() is None  # claimed: invisible
                assert not item.lost.is_set()
                kv.lease_revoke(doomed_session.lease_id)  # the consumer "dies"
                assert item.lost.wait(20)  # told before anything else happens to it
                redelivered = survivor.get(timeout=20)
                assert redelivered.value == b"precious" and redelivered.id == item.id
                with pytest.raises(LockLostError):
                    item.ack()
                redelivered.ack()
                assert survivor.size() == 0
            with pytest.raises(SessionExpiredError):
                doomed.get(timeout=5)


CLAIM_AND_HANG = textwrap.dedent(
    """
    import sys, time
    from pnyx.clients import Client
    from pnyx.recipes.queue import Queue
    from pnyx.recipes.session import Session

    endpoints = sys.argv[1].split(",")
    with Client(endpoints) as kv, Session(kv, ttl=2) as session, Queue(session, "q/proc") as q:
        item = q.get(timeout=20)
        print("claimed", item.id, flush=True)
        while True:
            time.sleep(3600)
    """
)


def test_killed_consumer_process_item_is_redelivered(cluster: LocalCluster, kv: Client) -> None:
    with Queue(kv, "q/proc") as producer, Session(kv) as session, Queue(session, "q/proc") as q:
        item_id = producer.put("work")
        process = subprocess.Popen(
            [sys.executable, "-c", CLAIM_AND_HANG, ",".join(cluster.endpoints)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith(b"claimed"):
                    assert line.split()[1].decode() == item_id
                    break
            else:
                pytest.fail("the consumer process exited before claiming")
            assert q.try_get() is None
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            with q.get(timeout=20) as item:
                assert item.id == item_id and item.value == b"work"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_concurrent_consumers_get_distinct_items(cluster: LocalCluster, kv: Client) -> None:
    total = 30
    with Queue(kv, "q/many") as producer:
        producer.put_many([f"job-{n:02d}" for n in range(total)])
    got: list[bytes] = []
    mutex = threading.Lock()
    failures: list[BaseException] = []

    def consumer(client: Client) -> None:
        try:
            with Session(client) as session, Queue(session, "q/many") as q:
                while True:
                    item = q.try_get()
                    if item is None:
                        return
                    with mutex:
                        got.append(item.value)
                    item.ack()
        except BaseException as exc:
            failures.append(exc)

    clients = [Client(cluster.endpoints) for _ in range(3)]
    try:
        threads = [threading.Thread(target=consumer, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for client in clients:
            client.close()
    assert not failures, failures
    assert sorted(got) == [f"job-{n:02d}".encode() for n in range(total)]
    assert kv.get("q/many/", prefix=True, count_only=True).count == 0


def test_async_cancel_leaves_no_claim(cluster: LocalCluster) -> None:
    async def main() -> None:
        async with (
            AsyncClient(cluster.endpoints) as akv,
            Session(akv) as session,
            Queue(session, "q/async") as q,
        ):
            task = asyncio.create_task(q.get_async(timeout=30))
            await asyncio.sleep(0)  # let it start waiting
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await q.put_async("x")
            async with await q.get_async(timeout=10) as item:
                assert item.value == b"x"
            assert await q.size_async() == 0 and await q.claimed_async() == 0

    asyncio.run(main())
