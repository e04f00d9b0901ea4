"""The clients against real node processes (``LocalCluster``): exactly-once writes and
gap-free watches across the death of a node, the async client under concurrency, and
the command line end to end."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pnyx.clients import AsyncClient, Client
from pnyx.clients.cli import main
from pnyx.clients.testing import LocalCluster

pytestmark = [pytest.mark.xdist_group("pnyx-cluster"), pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, directory=str(tmp_path_factory.mktemp("clients"))) as shared:
        yield shared


@pytest.fixture
def healed(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared cluster, with every node running again after the test."""
    yield cluster
    for name in cluster.names:
        if name not in cluster.running_names():
            cluster.restart(name)
    cluster.wait_ready()


def test_writes_across_a_leader_kill_are_applied_exactly_once(healed: LocalCluster) -> None:
    with Client(healed.endpoints, timeout=20.0) as kv:
        key = "exactly-once/counter"
        acknowledged = 0
        for i in range(60):
            if i == 20:
                healed.kill(healed.leader())
            kv.put(key, str(i))
            acknowledged += 1
        (item,) = kv.get(key).kvs
        # A retried put applied twice would bump the version past the acknowledged count.
        assert item.version == acknowledged == 60
        assert item.value == b"59"


def test_a_watch_survives_the_death_of_its_node_without_gap_or_duplicate(
    healed: LocalCluster,
) -> None:
    with Client(healed.endpoints, timeout=20.0) as kv, Client(healed.endpoints) as writer:
        start = writer.put("watched/seed", "0").revision + 1
        watch = kv.watch("watched/", prefix=True, start_revision=start)
        assert watch._call is not None
        serving = watch._call.endpoint  # the node the watch lives on
        written: list[int] = []
        done = threading.Event()

        def write() -> None:
            with Client(healed.endpoints, timeout=20.0) as own:
                for i in range(40):
                    written.append(own.put(f"watched/{i % 3}", str(i)).revision)
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        seen: list[int] = []
        killed = False
        while len(seen) < 40:  # the writer makes 40 revisions
            batch = watch.get(30)
            assert batch is not None, (
                f"the watch stalled: {len(seen)} of {len(written)} seen, writer done: "
                f"{done.is_set()}, killed: {killed}"
            )
            if batch.events:
                seen.append(batch.revision)
            if len(seen) == 10 and not killed:
                name = next(n for n in healed.names if healed.endpoint(n) == serving)
                healed.kill(name)
                killed = True
        thread.join(60)
        watch.close()
        assert killed
        assert seen == written  # every revision once, in order, none missing


def test_async_client_with_many_concurrent_calls(healed: LocalCluster) -> None:
    async def main_() -> None:
        async with AsyncClient(healed.endpoints, timeout=20.0) as kv:
            results = await asyncio.gather(*(kv.put(f"async/{i}", str(i)) for i in range(300)))
            assert len({r.revision for r in results}) == 300
            assert (await kv.get("async/", prefix=True, count_only=True)).count == 300
            lease = await kv.lease_grant(10)
            async with kv.lease_keep_alive(lease.id) as keeper:
                await kv.put("async/leased", "x", lease=lease.id)
                assert not keeper.lost
            await kv.lease_revoke(lease.id)
            assert (await kv.get("async/leased")).kvs == ()

    asyncio.run(main_())


def test_command_line_end_to_end(healed: LocalCluster) -> None:
    runner = CliRunner()
    base = ["--endpoints", ",".join(healed.endpoints), "--timeout", "20"]

    def pnyx(*args: str, input: str | None = None) -> str:
        result = runner.invoke(main, [*base, *args], input=input)
        assert result.exit_code == 0, result.output
        return result.output

    assert pnyx("put", "cli/a", "1") == "OK\n"
    assert pnyx("get", "cli/", "--prefix") == "cli/a\n1\n"
    assert pnyx("txn", input='value("cli/a") = "1"\n\nput cli/b 2\n\n') == "SUCCESS\n\nOK\n"
    statuses = json.loads(pnyx("-w", "json", "status"))
    assert {row["endpoint"] for row in statuses} == set(healed.endpoints)
    assert len({row["status"]["leader"] for row in statuses}) == 1
    assert pnyx("health").count("is healthy") == 3
    members = json.loads(pnyx("-w", "json", "member", "list"))["members"]
    assert len(members) == 3


def test_a_paused_node_is_detected_by_heartbeats_and_abandoned(healed: LocalCluster) -> None:
    # The attempt timeout equals the call's: only the ZMTP heartbeat noticing the silent
    # peer (and failing the attempt) leaves time to finish elsewhere.
    with Client(healed.endpoints, timeout=15.0, attempt_timeout=15.0) as kv:
        kv.put("paused/k", "0")
        watch = kv.watch("paused/k")
        assert watch._call is not None
        serving = watch._call.endpoint
        name = next(n for n in healed.names if healed.endpoint(n) == serving)
        healed.pause(name)
        try:
            revision = kv.put("paused/k", "1").revision
            batch = watch.get(15)
        finally:
            healed.resume(name)
        watch.close()
        assert batch is not None and batch.revision == revision
