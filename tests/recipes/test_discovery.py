"""Discovery against a real 3-node cluster: register / list / pick (round-robin and
seeded random) / update / deregister, a taken instance id, take-over reported as loss,
a live ServiceWatch (join, update, leave, in order, with a consistent set), the asyncio
face, and a real subprocess that registers and is SIGKILLed: its instance leaves every
view within its lease TTL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from pnyx.clients import AsyncClient, Client, RecipeError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes.discovery import (
    Discovery,
    InstanceChange,
    InstanceEvent,
    Registration,
)
from pnyx.recipes.session import Session


@pytest.fixture
def cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The recipe tests' shared cluster (tests/recipes/conftest.py): nothing here harms it."""
    return shared_cluster


@pytest.fixture
def kv(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.endpoints) as client:
        yield client


def test_register_list_pick_update_deregister(kv: Client) -> None:
    with Session(kv) as session, Discovery(session, rng=random.Random(7)) as discovery:
        assert discovery.list("api") == [] and discovery.pick("api") is None
        first = discovery.register("api", "b", "10.0.0.2:80", {"zone": "x"})
        second = discovery.register("api", "a", "10.0.0.1:80")
        instances = discovery.list("api")
        assert [(i.id, i.address) for i in instances] == [
            ("a", "10.0.0.1:80"),
            ("b", "10.0.0.2:80"),
        ]
        assert instances[1].metadata == {"zone": "x"} and instances[1].lease == session.lease_id
        assert discovery.services() == ["api"]
        picks = [discovery.pick("api", "round_robin") for _ in range(4)]
        assert [p.id for p in picks if p is not None] == ["a", "b", "a", "b"]
        randomly = {p.id for p in (discovery.pick("api", "random") for _ in range(30)) if p}
        assert randomly == {"a", "b"}
        first.update(metadata={"zone": "y"})
        assert discovery.list("api")[1].metadata == {"zone": "y"}
        second.deregister()
        assert [i.id for i in discovery.list("api")] == ["b"]
        first.deregister()
        assert discovery.list("api") == []


def test_taken_id_is_refused_and_take_over_is_reported(kv: Client) -> None:
    with Session(kv) as one, Session(kv) as two:
        original = Registration(one, "db", "primary", "h1:5432").register()
        with pytest.raises(RecipeError, match="another live session"):
            Registration(two, "db", "primary", "h2:5432").register()
        with Registration(two, "db", "primary", "h2:5432", replace=True) as taker:
            assert original.lost.wait(20)
            assert not original.registered and taker.registered
            with Discovery(kv) as discovery:
                (instance,) = discovery.list("db")
                assert instance.address == "h2:5432" and instance.lease == two.lease_id
            original.deregister()  # guarded by lease: must not delete the taker's key
            assert len(kv.get("services/db/primary").kvs) == 1
        assert kv.get("services/db/primary").kvs == ()


def test_service_watch_sees_join_update_leave_in_order(kv: Client) -> None:
    heard: list[InstanceEvent] = []
    with (
        Session(kv) as session,
        Discovery(kv) as discovery,
        discovery.watch("web", on_event=heard.append) as instances,
    ):
        assert instances.instances == {}
        registration = discovery.register("web", "w1", "h:1", session=session)
        event = instances.get(timeout=10)
        assert event is not None and event.kind is InstanceChange.JOINED
        assert event.instance.id == "w1" and set(instances.instances) == {"w1"}
        assert instances.revision >= event.revision == registration.revision
        registration.update(address="h:2")
        event = instances.get(timeout=10)
        assert event is not None and event.kind is InstanceChange.UPDATED
        assert event.instance.address == "h:2"
        assert instances.pick() is not None
        registration.deregister()
        event = instances.get(timeout=10)
        assert event is not None and event.kind is InstanceChange.LEFT
        assert event.instance.address == "h:2" and instances.instances == {}
        assert instances.get(timeout=0.05) is None
        assert [e.kind for e in heard] == [
            InstanceChange.JOINED,
            InstanceChange.UPDATED,
            InstanceChange.LEFT,
        ]


def test_async_face(cluster: LocalCluster) -> None:
    async def main() -> list[InstanceChange]:
        kinds: list[InstanceChange] = []
        async with (
            AsyncClient(cluster.endpoints) as akv,
            Session(akv) as session,
            Discovery(akv) as discovery,
        ):
            watch = await discovery.watch_async("async-svc")
            async with Registration(session, "async-svc", "i1", "h:9"):
                assert [i.id for i in await discovery.list_async("async-svc")] == ["i1"]
                assert (await discovery.pick_async("async-svc")) is not None
            async with watch:
                async for event in watch:
                    kinds.append(event.kind)
                    if event.kind is InstanceChange.LEFT:
                        break
        return kinds

    assert asyncio.run(main()) == [InstanceChange.JOINED, InstanceChange.LEFT]


REGISTER_AND_HANG = textwrap.dedent(
    """
    import sys, time
    from pnyx.clients import Client
    from pnyx.recipes.discovery import Registration
    from pnyx.recipes.session import Session

    endpoints, ttl = sys.argv[1].split(","), int(sys.argv[2])
    with Client(endpoints) as kv, Session(kv, ttl=ttl) as session:
        with Registration(session, "workers", "doomed", "10.9.9.9:1"):
            print("registered", flush=True)
            while True:
                time.sleep(3600)
    """
)


def test_killed_instance_leaves_within_its_ttl(cluster: LocalCluster) -> None:
    ttl = 2
    with Client(cluster.endpoints) as kv, Discovery(kv) as discovery:
        watch = discovery.watch("workers")
        process = subprocess.Popen(
            [sys.executable, "-c", REGISTER_AND_HANG, ",".join(cluster.endpoints), str(ttl)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        try:
            assert process.stdout is not None
            # Its log lines come first (structlog's default is stdout).
            for line in process.stdout:
                if line.strip() == b"registered":
                    break
            else:
                pytest.fail("the instance process exited before registering")
            event = watch.get(timeout=20)
            assert event is not None and event.kind is InstanceChange.JOINED
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            killed_at = time.monotonic()
            # The lease expires TTL after the last refresh the leader received; allow the
            # leader's expiry check and the commit some slack on a busy machine.
            event = watch.get(timeout=ttl + 5)
            assert event is not None and event.kind is InstanceChange.LEFT
            assert event.instance.id == "doomed"
            assert time.monotonic() - killed_at <= ttl + 5
            assert discovery.list("workers") == [] and watch.instances == {}
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            watch.close()
