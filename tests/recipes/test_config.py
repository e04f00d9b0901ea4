"""Config against a real 3-node cluster: the typed view, validation keeping the last good
config (and reporting), atomic multi-key updates under a concurrent writer (invariant
checked on every view), compaction while the view's watch is down (re-list, nothing
lost), history and rollback, the asyncio face. Plus the I/O-free ConfigState."""

from __future__ import annotations

import asyncio
import enum
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pnyx.clients import (
    AsyncClient,
    Client,
    CompactedError,
    Event,
    EventType,
    InvalidRequestError,
    KeyValue,
    RecipeError,
    WatchBatch,
)
from pnyx.clients import TimeoutError as PnyxTimeoutError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes.config import (
    Config,
    ConfigRejection,
    ConfigSnapshot,
    ConfigState,
    parse_bool,
)
from pnyx.recipes.session import Session

pytestmark = pytest.mark.xdist_group("recipes_config")

FLAGS = {"dark_mode": bool, "max_items": int, "ratio": float, "banner": str}


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, directory=str(tmp_path_factory.mktemp("config"))) as started:
        yield started


@pytest.fixture
def kv(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.endpoints) as client:
        yield client


# --------------------------------------------------------------------------- I/O-free


def _kv(key: str, value: str, revision: int) -> KeyValue:
    return KeyValue(key.encode(), revision, revision, 1, value.encode(), 0)


def _put(key: str, value: str, revision: int) -> Event:
    return Event(EventType.PUT, _kv(key, value, revision), None)


def _delete(key: str, revision: int) -> Event:
    return Event(EventType.DELETE, KeyValue(key.encode(), 0, revision, 0, b"", 0), None)


def test_parse_bool_accepts_the_usual_spellings() -> None:
    for text in ("true", "TRUE", "1", "yes", "on", " On "):
        assert parse_bool(text.encode()) is True
    for text in ("false", "0", "no", "off"):
        assert parse_bool(text.encode()) is False
    with pytest.raises(ValueError):
        parse_bool(b"maybe")


def test_state_applies_a_revision_whole_or_not_at_all() -> None:
    state = ConfigState(b"f/", schema={"a": int, "b": int}, defaults={"b": 0})
    changed, rejection = state.load((_kv("f/a", "1", 5),), 5)
    assert (changed, rejection) == (True, None)
    assert dict(state.current) == {"a": 1, "b": 0}
    assert state.current.revision == 5
    # One revision with a good and a bad key: neither is applied.
    changed, rejection = state.apply(WatchBatch(6, (_put("f/a", "2", 6), _put("f/b", "x", 6))))
    assert not changed
    assert rejection is not None and rejection.revision == 6
    assert [p.name for p in rejection.problems] == ["b"]
    assert dict(state.current) == {"a": 1, "b": 0} and state.current.revision == 5
    # A later revision that fixes it applies everything at once.
    changed, rejection = state.apply(WatchBatch(7, (_put("f/b", "3", 7),)))
    assert (changed, rejection) == (True, None)
    assert dict(state.current) == {"a": 2, "b": 3} and state.current.revision == 7
    # Deletion falls back to the default; a replayed revision is ignored.
    state.apply(WatchBatch(8, (_delete("f/b", 8),)))
    assert dict(state.current) == {"a": 2, "b": 0}
    assert state.apply(WatchBatch(8, (_put("f/b", "9", 8),))) == (False, None)


def test_state_validator_strict_and_schemaless() -> None:
    state = ConfigState(
        b"f/", schema={"low": int, "high": int}, validator=lambda v: v["low"] <= v["high"]
    )
    state.load((_kv("f/low", "1", 3), _kv("f/high", "2", 3)), 3)
    _, rejection = state.apply(WatchBatch(4, (_put("f/low", "5", 4),)))
    assert rejection is not None and "validator" in str(rejection)
    assert dict(state.current) == {"low": 1, "high": 2}
    # Unknown keys are ignored, unless strict.
    assert state.apply(WatchBatch(5, (_put("f/low", "0", 5), _put("f/zzz", "?", 5))))[1] is None
    strict = ConfigState(b"f/", schema={"a": int}, strict=True)
    assert strict.load((_kv("f/zzz", "1", 2),), 2)[1] is not None
    schemaless = ConfigState(b"f/", parser=Color)
    schemaless.load((_kv("f/x", "red", 2), _kv("f/y", "BLUE", 2)), 2)
    assert dict(schemaless.current) == {"x": Color.RED, "y": Color.BLUE}


# --------------------------------------------------------------------------- real cluster


def test_typed_view_defaults_and_last_good_on_invalid(kv: Client) -> None:
    kv.put("cfg1/dark_mode", "on")
    kv.put("cfg1/max_items", "20")
    rejections: list[ConfigRejection] = []
    changes: list[tuple[Mapping[str, Any], Mapping[str, Any], int]] = []
    with Config(
        kv,
        "cfg1",
        schema=FLAGS,
        defaults={"banner": "hello", "ratio": 0.5},
        on_change=lambda old, new, revision: changes.append((old, new, revision)),
        on_error=rejections.append,
    ) as config:
        assert dict(config.snapshot) == {
            "dark_mode": True,
            "max_items": 20,
            "banner": "hello",
            "ratio": 0.5,
        }
        assert config["dark_mode"] is True and config.healthy
        bad = kv.put("cfg1/max_items", "lots").revision
        view = config.wait_for(bad, timeout=10)
        assert view["max_items"] == 20  # the last good value is kept
        assert not config.healthy and config.seen_revision == bad
        assert rejections and rejections[-1].revision == bad
        assert rejections[-1].problems[0].name == "max_items"
        assert config.errors[-1] == rejections[-1]
        # Another key changes while max_items is still bad: still held back.
        held = kv.put("cfg1/banner", "new").revision
        assert config.wait_for(held, timeout=10)["banner"] == "hello"
        fixed = kv.put("cfg1/max_items", "30").revision
        view = config.wait_for(fixed, timeout=10)
        assert view["max_items"] == 30 and view["banner"] == "new" and config.healthy
        assert view.revision == fixed
        old, new, revision = changes[-1]
        assert old["max_items"] == 20 and new["max_items"] == 30 and revision == fixed


def test_multi_key_update_is_never_half_applied(kv: Client, cluster: LocalCluster) -> None:
    """A writer changes three keys in one transaction per revision; every view seen by
    a listener and by a polling reader has all three equal."""
    keys = ["cfg2/a", "cfg2/b", "cfg2/c"]
    kv.txn(success=[kv.op.put(key, "0") for key in keys])
    views: list[ConfigSnapshot] = []
    broken: list[str] = []

    def check(view: Mapping[str, Any], where: str) -> None:
        if len({view.get("a"), view.get("b"), view.get("c")}) != 1:
            broken.append(f"{where}: {dict(view)}")

    stop = threading.Event()
    with Config(kv, "cfg2", schema={"a": int, "b": int, "c": int}) as config:
        config.add_listener(lambda old, new, revision: (check(new, "listener"), views.append(new)))

        def poll() -> None:
            while not stop.is_set():
                check(config.snapshot, "reader")

        reader = threading.Thread(target=poll)
        reader.start()
        try:
            with Client(cluster.endpoints) as writer:
                last = 0
                for n in range(1, 41):
                    last = writer.txn(success=[writer.op.put(key, str(n)) for key in keys]).revision
            view = config.wait_for(last, timeout=20)
        finally:
            stop.set()
            reader.join(10)
        assert view["a"] == 40
        assert not broken, broken[:5]
        assert views and all(v.revision > 0 for v in views)
        revisions = [v.revision for v in views]
        assert revisions == sorted(set(revisions))


def test_survives_compaction_while_its_watch_is_down(cluster: LocalCluster) -> None:
    """The view's only endpoint dies; meanwhile keys change (one multi-key txn among
    them) and history is compacted. When the view's watch comes back, its resume
    revision is compacted: it re-lists and shows the final contents, in one step."""
    leader = cluster.leader()
    follower = next(name for name in cluster.running_names() if name != leader)
    release = threading.Event()
    blocked = threading.Event()
    views: list[ConfigSnapshot] = []

    def listener(old: Mapping[str, Any], new: ConfigSnapshot, revision: int) -> None:
        views.append(new)
        if new.get("block") == 1:
            # Hold the recipes' loop so the watch cannot resume until we let it.
            blocked.set()
            release.wait(60)

    with (
        Client(cluster.endpoints) as writer,
        Client([cluster.endpoint(follower)], timeout=3) as reader,
        Config(reader, "cfg3", schema={"x": int, "y": int, "block": int}) as config,
    ):
        config.add_listener(listener)
        try:
            first = writer.put("cfg3/block", "1").revision
            assert blocked.wait(20)
            cluster.kill(follower)
            writer.txn(success=[writer.op.put("cfg3/x", "7"), writer.op.put("cfg3/y", "7")])
            writer.delete("cfg3/block")
            head = writer.put("cfg3/x", "8").revision
            writer.compact(head)
            cluster.restart(follower)
            cluster.wait_caught_up(follower)
        finally:
            release.set()
        view = config.wait_for(head, timeout=30)
        assert dict(view) == {"x": 8, "y": 7}
        assert view.revision == head
        assert config.relists == 1
        assert views[-1].revision == head and views[-2].revision == first


def test_history_and_rollback(kv: Client) -> None:
    with Config(kv, "cfg4", schema={"limit": int, "mode": str}) as config:
        r1 = kv.txn(success=[kv.op.put("cfg4/limit", "1"), kv.op.put("cfg4/mode", "a")]).revision
        r2 = kv.put("cfg4/limit", "2").revision
        r3 = kv.put("cfg4/limit", "oops").revision
        r4 = kv.delete("cfg4/limit").revision
        r5 = kv.txn(success=[kv.op.put("cfg4/limit", "5"), kv.op.put("cfg4/mode", "b")]).revision
        kv.put("cfg4/extra", "x")
        config.wait_for(r5, timeout=10)
        history = config.history("limit", timeout=10)
        assert [(v.revision, v.value, v.parsed) for v in history] == [
            (r1, b"1", 1),
            (r2, b"2", 2),
            (r3, b"oops", None),
            (r4, None, None),
            (r5, b"5", 5),
        ]
        assert history[2].error is not None and history[3].deleted
        assert config.history("never-set", timeout=10) == []
        assert [v.revision for v in config.history("limit", since=r4, timeout=10)] == [r4, r5]
        assert config.history("limit", since=r5 + 100, timeout=10) == []
        with pytest.raises(InvalidRequestError):
            config.rollback(r3)  # limit=oops there: refused, nothing written
        back = config.rollback(r2, timeout=10)
        view = config.wait_for(back, timeout=10)
        assert dict(view) == {"limit": 2, "mode": "a"}
        assert kv.get("cfg4/extra").kvs == ()  # did not exist at r2
        assert config.rollback(r2, timeout=10) == back  # already there: no write
        kv.compact(back)
        with pytest.raises(CompactedError):
            config.rollback(r1)
        versions = config.history("limit", timeout=10)
        assert versions[0].revision == back and versions[0].parsed == 2


def test_async_face(cluster: LocalCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.endpoints) as akv:
            await akv.put("cfg5/flag", "true")
            seen: list[int] = []
            async with Config(akv, "cfg5", schema={"flag": bool}) as config:
                config.add_listener(lambda old, new, revision: seen.append(revision))
                assert config["flag"] is True
                revision = (await akv.put("cfg5/flag", "off")).revision
                view = await config.wait_for_async(revision, timeout=10)
                assert view["flag"] is False and seen == [revision]
                history = await config.history_async("flag", timeout=10)
                assert [v.parsed for v in history] == [True, False]
                back = await config.rollback_async(history[0].revision)
                assert (await config.wait_for_async(back, timeout=10))["flag"] is True

    asyncio.run(main())


def test_wait_for_times_out_and_close_ends_the_watch(kv: Client) -> None:
    config = Config(kv, "cfg6").open()
    with pytest.raises(PnyxTimeoutError):
        config.wait_for(config.seen_revision + 10_000, timeout=0.2)
    config.close()
    with pytest.raises(RecipeError):
        config.wait_for(1)


def test_feature_flags_example_runs(cluster: LocalCluster) -> None:
    """The example a new user runs (`examples/feature_flags.py --demo`) works end to end."""
    example = Path(__file__).resolve().parents[2] / "examples" / "feature_flags.py"
    done = subprocess.run(
        [sys.executable, str(example), "--demo", "--pause", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PNYX_ENDPOINTS": ",".join(cluster.endpoints)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "applied new-checkout: False -> True, rollout-percent: 0 -> 25" in done.stdout
    assert done.stdout.count("REJECTED") == 2
    assert "rolled everything back" in done.stdout


def test_closing_after_its_session_closed_is_quiet(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints) as client:
        session = Session(client).open()
        config = Config(session, "cfg7").open()
        session.close()  # the last user of the client's runtime: its loop stops
        config.close()  # nothing left to stop; must not raise
