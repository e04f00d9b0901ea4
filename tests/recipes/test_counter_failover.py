"""Leader failover under every recipe of this group at once (Counter, Config, Discovery,
DoubleBarrier, Queue), on a cluster of its own: the leader is SIGKILLed while counters
add, a config and a service watch follow, a barrier participant and a queue consumer
wait. Afterwards nothing is lost or doubled: every add applied exactly once (distinct
results, exact total), the config follows new multi-key writes, the registration and
its sessions survived, the waiting participant and consumer are released. Also a
service watch whose resume revision was compacted while its node was down."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pnyx.clients import Client
from pnyx.clients.testing import LocalCluster, wait_for
from pnyx.recipes.barrier import DoubleBarrier
from pnyx.recipes.config import Config
from pnyx.recipes.counter import Counter
from pnyx.recipes.discovery import Discovery, InstanceChange, InstanceEvent, Registration
from pnyx.recipes.queue import Queue, QueueItem
from pnyx.recipes.session import Session

pytestmark = pytest.mark.xdist_group("recipes_group_b_failover")

ADDS_AFTER = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, directory=str(tmp_path_factory.mktemp("failover-b"))) as started:
        yield started


def test_recipes_survive_a_leader_failover(cluster: LocalCluster) -> None:
    failures: list[BaseException] = []
    results: list[int] = []
    mutex = threading.Lock()
    consumed: list[QueueItem] = []
    entered: list[str] = []

    def guarded(target: object) -> threading.Thread:
        def run() -> None:
            try:
                target()  # type: ignore[operator]
            except BaseException as exc:  # reported below
                failures.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    with (
        Client(cluster.endpoints, timeout=10) as kv,
        Session(kv, ttl=5) as registering,
        Session(kv, ttl=5) as first_participant,
        Session(kv, ttl=5) as second_participant,
        Session(kv, ttl=5) as consuming,
        Config(kv, "fo/cfg", schema={"a": int, "b": int}) as config,
        Discovery(kv) as discovery,
        Registration(registering, "svc", "i1", "h:1") as registration,
        discovery.watch("svc") as service,
        Queue(consuming, "fo/q") as consumer,
        Queue(kv, "fo/q") as producer,
    ):
        counter = Counter(kv, "fo/counter")

        stop_adding = threading.Event()

        def add() -> None:
            # Adds run before, during and after the failover until told to stop.
            while not stop_adding.is_set():
                value = counter.add(1, timeout=30)
                with mutex:
                    results.append(value)

        def enter(session: Session, who: str) -> None:
            DoubleBarrier(session, "fo/barrier", 2, timeout=60).enter()
            entered.append(who)

        assert set(service.instances) == {"i1"}  # registered before the watch began
        threads = [guarded(add), guarded(add)]
        threads.append(guarded(lambda: enter(first_participant, "first")))
        threads.append(guarded(lambda: consumed.append(consumer.get(timeout=60))))
        wait_for(lambda: len(results) >= 5, 20, "some adds before the failover")

        old_leader = cluster.leader()
        cluster.kill(old_leader)
        before = len(results)
        new_leader = cluster.leader(timeout=20)
        assert new_leader != old_leader
        wait_for(lambda: len(results) >= before + ADDS_AFTER, 30, "adds after the failover")
        stop_adding.set()

        revision = kv.txn(success=[kv.op.put("fo/cfg/a", "1"), kv.op.put("fo/cfg/b", "1")]).revision
        assert dict(config.wait_for(revision, timeout=20)) == {"a": 1, "b": 1}
        producer.put("after failover")
        threads.append(guarded(lambda: enter(second_participant, "second")))
        for thread in threads:
            thread.join(90)
        assert not failures, failures

        assert sorted(results) == list(range(1, len(results) + 1))
        assert counter.get() == len(results)
        assert sorted(entered) == ["first", "second"]
        assert [item.value for item in consumed] == [b"after failover"]
        consumed[0].ack()
        assert registration.registered and not registration.lost.is_set()
        assert [i.id for i in discovery.list("svc")] == ["i1"]
        assert service.get(timeout=0.1) is None  # no spurious leave/join
        for session in (registering, first_participant, second_participant, consuming):
            assert not session.lost.is_set(), session.lost.error
        counter.close()
    cluster.restart(old_leader)  # the next test needs all three


def test_service_watch_relists_after_compaction(cluster: LocalCluster) -> None:
    """The service watch's only endpoint dies while instances come and go and history
    is compacted; when its watch comes back at a compacted revision it re-reads the
    service and reports the difference as events."""
    for name in cluster.names:
        if not cluster.nodes[name].running:
            cluster.restart(name)
    cluster.wait_ready()
    leader = cluster.leader()
    follower = next(name for name in cluster.running_names() if name != leader)
    release = threading.Event()
    blocked = threading.Event()

    def hold_the_loop(event: InstanceEvent) -> None:
        if event.instance.id == "blocker":
            blocked.set()
            release.wait(60)  # the watch cannot resume until we let it

    with (
        Client(cluster.endpoints) as kv,
        Client([cluster.endpoint(follower)], timeout=3) as reader,
        Session(kv) as session,
        Discovery(reader) as discovery,
        discovery.watch("cmp", on_event=hold_the_loop) as service,
    ):
        stays = Registration(session, "cmp", "stays", "h:1").register()
        goes = Registration(session, "cmp", "goes", "h:2").register()
        blocker = Registration(session, "cmp", "blocker", "h:0").register()
        try:
            assert blocked.wait(20)
            cluster.kill(follower)
            goes.deregister()
            blocker.deregister()
            stays.update(address="h:1b")
            Registration(session, "cmp", "new", "h:3").register()
            head = kv.get("cmp").revision
            kv.compact(head)
            cluster.restart(follower)
            cluster.wait_caught_up(follower)
        finally:
            release.set()
        expected = {
            (InstanceChange.LEFT, "goes"),
            (InstanceChange.LEFT, "blocker"),
            (InstanceChange.UPDATED, "stays"),
            (InstanceChange.JOINED, "new"),
        }
        events: list[InstanceEvent] = []
        while not expected <= {(e.kind, e.instance.id) for e in events if e.revision >= head}:
            event = service.get(timeout=30)
            assert event is not None, events
            events.append(event)
        assert service.relists == 1
        # The re-list reports exactly the difference, all at the revision it read.
        assert len([e for e in events if e.revision >= head]) == len(expected)
        assert service.get(timeout=0.1) is None
        assert set(service.instances) == {"stays", "new"}
        assert service.instances["stays"].address == "h:1b"
