"""Lock and leadership survive a leader failover of the cluster (their own cluster: this
test kills the Raft leader)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pnyx.clients import Client
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Election, Lock, Session


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    directory = tmp_path_factory.mktemp("pnyx-failover") / "cluster"
    with LocalCluster(3, directory=str(directory)) as local:
        yield local
        if request.session.testsfailed:
            local.mark_failed()


def test_lock_waiter_and_leadership_survive_a_leader_failover(cluster: LocalCluster) -> None:
    with (
        Client(cluster.endpoints, timeout=10) as kv,
        Session(kv, ttl=6) as first,
        Session(kv, ttl=6) as second,
    ):
        held = Lock(first, "failover/lock").acquire(10)
        leadership = Election(first, "failover/election").campaign("a", timeout=10)
        observer = Election(second, "failover/election").observe(timeout=30)
        assert next(observer).token == leadership.token  # type: ignore[union-attr]
        waiter = Lock(second, "failover/lock")
        acquired = threading.Event()

        def wait() -> None:
            waiter.acquire(60)
            acquired.set()

        thread = threading.Thread(target=wait)
        thread.start()
        while not held.waiters():
            thread.join(0.02)

        old_leader = cluster.leader()
        cluster.kill(old_leader)
        try:
            # Writes go on (retried exactly-once on the new leader) under the same token.
            held.fenced_put("failover/data", "after-failover")
            leadership.proclaim("a2")
            assert kv.get("failover/data").kvs[0].value == b"after-failover"
            assert cluster.leader() != old_leader
            assert not held.lost.is_set() and not leadership.lost.is_set()
            assert not first.lost.is_set() and not second.lost.is_set()
            # Nobody lost its place: the waiter is still second in line.
            assert [w.key for w in held.waiters()] == [waiter.key]
            assert not acquired.is_set()
            change = next(observer)
            assert change is not None and change.value == b"a2"
            assert change.token == leadership.token
            held.release()
            thread.join(30)
            assert (acquired.is_set() and waiter.token > held.token) or waiter.is_held
            waiter.fenced_put("failover/data", "waiter")
            waiter.release()
            leadership.resign()
            assert next(observer) is None
        finally:
            observer.close()
            cluster.restart(old_leader)
            cluster.wait_ready()
