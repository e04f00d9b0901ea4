"""Counter against a real 3-node cluster: atomic add under contention from several
clients and threads (every returned value distinct, the total exact), compare-and-set,
the asyncio face, and refusal of a non-integer value."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pnyx.clients import AsyncClient, Client, InvalidRequestError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes.counter import Counter


@pytest.fixture
def cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The recipe tests' shared cluster (tests/recipes/conftest.py): nothing here harms it."""
    return shared_cluster


@pytest.fixture
def kv(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.endpoints) as client:
        yield client


def test_add_get_set_and_compare_and_set(kv: Client) -> None:
    with Counter(kv, "counter/basic") as counter:
        assert counter.get() == 0
        assert counter.add(5) == 5
        assert counter.add(-2) == 3
        assert counter.get() == 3
        assert not counter.compare_and_set(4, 10)
        assert counter.get() == 3
        assert counter.compare_and_set(3, 10)
        assert counter.get() == 10
        counter.set(-7)
        assert counter.get() == -7
    assert kv.get("counter/basic").kvs[0].value == b"-7"


def test_missing_key_counts_as_initial(kv: Client) -> None:
    with Counter(kv, "counter/initial", initial=100) as counter:
        assert counter.get() == 100
        assert counter.compare_and_set(100, 101)
        assert counter.add(1) == 102


def test_non_integer_value_is_refused_and_kept(kv: Client) -> None:
    kv.put("counter/garbage", "not a number")
    with Counter(kv, "counter/garbage") as counter:
        with pytest.raises(InvalidRequestError):
            counter.add(1)
        with pytest.raises(InvalidRequestError):
            counter.get()
    assert kv.get("counter/garbage").kvs[0].value == b"not a number"


def test_concurrent_adds_from_many_clients_are_exact(cluster: LocalCluster) -> None:
    """4 clients x 2 threads each x 15 adds: the total is exact and every add saw a
    distinct value (no lost update, no double apply)."""
    clients = [Client(cluster.endpoints) for _ in range(4)]
    seen: list[int] = []
    mutex = threading.Lock()
    failures: list[BaseException] = []

    def work(counter: Counter) -> None:
        try:
            for _ in range(15):
                value = counter.add(1, timeout=30)
                with mutex:
                    seen.append(value)
        except BaseException as exc:  # reported below
            failures.append(exc)

    counters = [Counter(client, "counter/contended") for client in clients]
    threads = [threading.Thread(target=work, args=(c,)) for c in counters for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert sorted(seen) == list(range(1, 121))
        assert counters[0].get() == 120
    finally:
        for counter in counters:
            counter.close()
        for client in clients:
            client.close()


def test_async_face_concurrent_adds(cluster: LocalCluster) -> None:
    async def main() -> list[int]:
        async with (
            AsyncClient(cluster.endpoints) as akv,
            Counter(akv, "counter/async") as counter,
        ):
            values = await asyncio.gather(*(counter.add_async(2) for _ in range(20)))
            assert await counter.get_async() == 40
            assert await counter.compare_and_set_async(40, 0)
            assert await counter.get_async() == 0
            return list(values)

    values = asyncio.run(main())
    assert sorted(values) == list(range(2, 41, 2))
