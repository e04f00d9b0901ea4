"""Lock handoff without a read: a waiter in a short line follows every deletion of its
line and holds at the deletion of the last key ahead of it. Tested here: the line's
other departures (cancelled, timed-out and expired waiters), our own key vanishing
while we wait, a line longer than ``TRACK_LIMIT`` (predecessor watch and a read, then
following the line once it is short), and mutual exclusion under a random interleaving,
with a planted bug that the same check catches."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from pnyx.clients import AsyncClient, LockTimeoutError, SessionExpiredError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Lock, Session
from pnyx.recipes import lock as lock_module


async def until_async(
    condition: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0
) -> Any:
    """Poll ``condition`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def until_true(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    async def check() -> object:
        return condition()

    await until_async(check, what, timeout)


async def join_in_order(
    holder: Lock, waiters: list[Lock], timeouts: list[float | None]
) -> list[asyncio.Task[Lock]]:
    """Start each waiter's acquire once the previous one is in line: a known order."""
    tasks = []
    for index, (waiter, timeout) in enumerate(zip(waiters, timeouts, strict=True)):
        tasks.append(asyncio.ensure_future(waiter.acquire_async(timeout)))

        async def queued(count: int = index + 1) -> bool:
            return len(await holder.waiters_async()) == count

        await until_async(queued, f"waiter {index} in line")
    return tasks


async def open_sessions(akv: AsyncClient, count: int) -> list[Session]:
    sessions = []
    for _ in range(count):
        session = Session(akv, ttl=10)
        await session.open_async()
        sessions.append(session)
    return sessions


def run(shared_cluster: LocalCluster, body: Callable[[AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with AsyncClient(shared_cluster.endpoints, timeout=5.0) as akv:
            await body(akv)

    asyncio.run(main())


def test_cancelled_and_timed_out_waiters_mid_line(shared_cluster: LocalCluster, name: str) -> None:
    async def body(akv: AsyncClient) -> None:
        sessions = await open_sessions(akv, 6)
        try:
            holder = await Lock(sessions[0], name).acquire_async(5)
            w0, w1, w2, w3, w4 = (Lock(s, name) for s in sessions[1:])
            t0, t1, t2, t3, t4 = await join_in_order(
                holder, [w0, w1, w2, w3, w4], [30, 30, 0.5, 30, 30]
            )
            t1.cancel()  # a cancelled wait deletes its key before it ends
            with pytest.raises(asyncio.CancelledError):
                await t1
            with pytest.raises(LockTimeoutError):
                await t2
            # w3 heard both departures (keys ahead of it) and still waits: two are left.
            # w0 heard them too (a line's watch sees every deletion in the line).
            await until_true(lambda: w3.wakeups == 2, "w3 to hear w1 and w2 leave")
            await until_true(lambda: w0.wakeups == 2, "w0 to hear w1 and w2 leave")
            assert not w0.is_held and not w3.is_held
            await holder.release_async()
            await t0
            assert w0.is_held and not w3.is_held
            # A waiter behind the holder leaves: no loss for the holder.
            t4.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t4
            await until_true(lambda: w3.wakeups == 4, "w3 to hear the holder and w4 leave")
            await w0.fenced_put_async(f"{name}-data", "w0")
            assert w0.is_held and not w0.lost.is_set() and not w3.is_held
            await w0.release_async()
            await t3
            assert w3.is_held and w3.since > w3.token
            # Nobody read the line again: every turn came with the last departure ahead.
            assert (w0.looks, w3.looks) == (0, 0)
            assert (w0.wakeups, w3.wakeups) == (3, 5)
            await w3.release_async()
            assert (await akv.get(f"{name}/", prefix=True, count_only=True)).count == 0
        finally:
            for session in sessions:
                await session.close_async()

    run(shared_cluster, body)


def test_waiter_whose_key_is_deleted_stops_at_once(shared_cluster: LocalCluster, name: str) -> None:
    async def body(akv: AsyncClient) -> None:
        sessions = await open_sessions(akv, 3)
        try:
            holder = await Lock(sessions[0], name).acquire_async(5)
            gone, behind = Lock(sessions[1], name), Lock(sessions[2], name)
            t_gone, t_behind = await join_in_order(holder, [gone, behind], [60, 60])
            # Someone deletes its key; its session lives on, the holder keeps holding:
            # the line's watch alone tells it (before: only its next look at the line).
            await akv.delete(gone.key)
            with pytest.raises(SessionExpiredError, match="vanished"):
                await asyncio.wait_for(t_gone, 15)
            assert sessions[1].is_valid() and not gone.is_held and holder.is_held
            await holder.release_async()
            await t_behind
            assert behind.is_held and behind.looks == 0
            await behind.release_async()
        finally:
            for session in sessions:
                await session.close_async()

    run(shared_cluster, body)


def test_session_expiring_mid_line_ends_its_wait_only(
    shared_cluster: LocalCluster, name: str
) -> None:
    async def body(akv: AsyncClient) -> None:
        sessions = await open_sessions(akv, 3)
        try:
            holder = await Lock(sessions[0], name).acquire_async(5)
            expiring, behind = Lock(sessions[1], name), Lock(sessions[2], name)
            t_expiring, t_behind = await join_in_order(holder, [expiring, behind], [60, 60])
            await akv.lease_revoke(sessions[1].lease_id)  # its key goes with the lease
            with pytest.raises(SessionExpiredError):
                await asyncio.wait_for(t_expiring, 15)
            await until_true(lambda: behind.wakeups == 1, "behind to hear the expiry")
            assert not behind.is_held
            await holder.release_async()
            await t_behind
            assert behind.is_held and behind.looks == 0 and behind.wakeups == 2
            await behind.release_async()
        finally:
            for session in sessions:
                await session.close_async()

    run(shared_cluster, body)


def test_a_line_longer_than_the_limit_falls_back_to_the_predecessor(
    shared_cluster: LocalCluster, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock_module, "TRACK_LIMIT", 1)

    async def body(akv: AsyncClient) -> None:
        sessions = await open_sessions(akv, 4)
        try:
            holder = await Lock(sessions[0], name).acquire_async(5)
            w0, w1, w2 = (Lock(s, name) for s in sessions[1:])
            t0, t1, t2 = await join_in_order(holder, [w0, w1, w2], [0.5, 30, 30])
            # w0 has one key ahead (follows the line); w1 and w2 two and three (each
            # watches its predecessor). w0 times out while the holder holds: w1 wakes,
            # reads the line, finds the holder still ahead - and now follows the line.
            with pytest.raises(LockTimeoutError):
                await t0
            await until_true(lambda: w1.looks == 1, "w1 to look at the line again")
            assert not w1.is_held and w2.wakeups == 0
            await holder.release_async()
            await t1
            assert w1.is_held and (w1.looks, w1.wakeups) == (1, 2)
            assert not w2.is_held
            await w1.release_async()
            await t2
            # w2's predecessor was w1 from the start: one wake-up, one read.
            assert w2.is_held and (w2.looks, w2.wakeups) == (1, 1)
            await w2.release_async()
        finally:
            for session in sessions:
                await session.close_async()

    run(shared_cluster, body)


# ---------------------------------------------------------------------- mutual exclusion


@attrs.frozen
class Section:
    token: int
    enter: int
    exit: int


async def critical_section(lock: Lock, name: str, extra_writes: int = 0) -> Section:
    """Fenced writes on entry and exit: the store's revisions bracket the section."""
    marker = f"{name}-cs/{lock.token:012d}"
    enter = (await lock.fenced_put_async(marker, "enter")).revision
    for index in range(extra_writes):
        await lock.fenced_put_async(f"{name}-work", str(index))
    leave = (await lock.fenced_put_async(marker, "exit")).revision
    return Section(lock.token, enter, leave)


def overlaps(sections: list[Section]) -> list[tuple[Section, Section]]:
    """Pairs of critical sections that overlap in the store's order; and tokens must
    grow in the order the sections ran."""
    ordered = sorted(sections, key=lambda s: s.enter)
    bad = [(a, b) for a, b in itertools.pairwise(ordered) if b.enter < a.exit]
    bad += [(a, b) for a, b in itertools.pairwise(ordered) if b.token <= a.token]
    return bad


class PredecessorOnlyLock(Lock):
    """A planted bug: follows only the key right ahead and takes the lock when it goes,
    as if that key could only leave by releasing the lock (it can also give up)."""

    def _ahead(self, line: object, revision: int) -> lock_module._Wait | None:
        wait = super()._ahead(line, revision)
        if wait is not None and wait.ahead:
            assert isinstance(line, lock_module.GetResult)
            return attrs.evolve(wait, ahead=frozenset({line.kvs[1].key}))
        return wait


async def predecessor_gives_up(
    akv: AsyncClient, name: str, lock_class: type[Lock], planted: bool
) -> list[Section]:
    """The holder is in its critical section; the waiter right behind it gives up; the
    one behind that must keep waiting until the holder leaves. With ``planted``, wait
    for it to (wrongly) take the lock before the holder leaves."""
    sessions = await open_sessions(akv, 3)
    try:
        holder = await Lock(sessions[0], name).acquire_async(5)
        quitter, last = Lock(sessions[1], name), lock_class(sessions[2], name)
        t_quitter, t_last = await join_in_order(holder, [quitter, last], [30, 30])
        marker = f"{name}-cs/{holder.token:012d}"
        enter = (await holder.fenced_put_async(marker, "enter")).revision
        t_quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t_quitter
        await until_true(lambda: last.wakeups >= 1, "the last waiter to hear it")
        if planted:
            await until_true(lambda: last.is_held, "the planted bug to take the lock")
        sections = []
        if last.is_held:  # only with the bug: it entered while the holder was inside
            sections.append(await critical_section(last, name))
        leave = (await holder.fenced_put_async(marker, "exit")).revision
        sections.append(Section(holder.token, enter, leave))
        await holder.release_async()
        if not last.is_held:
            await t_last
            sections.append(await critical_section(last, name))
        await last.release_async()
        return sections
    finally:
        for session in sessions:
            await session.close_async()


def test_the_exclusion_check_catches_a_planted_bug(shared_cluster: LocalCluster, name: str) -> None:
    found: dict[str, list[tuple[Section, Section]]] = {}

    async def body(akv: AsyncClient) -> None:
        planted = await predecessor_gives_up(akv, name + "-bug", PredecessorOnlyLock, True)
        found["planted"] = overlaps(planted)
        found["real"] = overlaps(await predecessor_gives_up(akv, name, Lock, False))

    run(shared_cluster, body)
    assert found["planted"], "the check missed two holders at once"
    assert found["real"] == []


def test_no_two_holders_under_a_random_interleaving(
    shared_cluster: LocalCluster, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small limit puts both kinds of waiters (following the line, watching the
    # predecessor) in the same line, and waiters move from one to the other.
    monkeypatch.setattr(lock_module, "TRACK_LIMIT", 3)
    rng = random.Random(20261130)
    contenders, rounds = 7, 8
    # Per round: how to wait (to the end; a short timeout; cancelled after a while),
    # writes inside the critical section, and yields before joining (who joins first).
    plans = [
        [
            (rng.choice(["wait", "wait", "timeout", "cancel"]), rng.randrange(3), rng.randrange(4))
            for _ in range(rounds)
        ]
        for _ in range(contenders)
    ]
    sections: list[Section] = []
    holding = 0
    most = 0
    outcomes = {"held": 0, "gave up": 0}

    async def contender(session: Session, plan: list[tuple[str, int, int]]) -> None:
        nonlocal holding, most
        for how, work, yields in plan:
            lock = Lock(session, name)
            for _ in range(yields):
                await asyncio.sleep(0)
            try:
                if how == "wait":
                    await lock.acquire_async(60)
                elif how == "timeout":
                    await lock.acquire_async(rng.choice([0.002, 0.01, 0.03]))
                else:
                    await asyncio.wait_for(lock.acquire_async(60), rng.choice([0.002, 0.01]))
            except (LockTimeoutError, TimeoutError):
                assert not lock.is_held
                outcomes["gave up"] += 1
                continue
            holding += 1
            most = max(most, holding)
            sections.append(await critical_section(lock, name, work))
            holding -= 1
            await lock.release_async()
            outcomes["held"] += 1

    async def body(akv: AsyncClient) -> None:
        sessions = await open_sessions(akv, contenders)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(contender(s, p) for s, p in zip(sessions, plans, strict=True))),
                120,
            )
        finally:
            for session in sessions:
                await session.close_async()
        assert (await akv.get(f"{name}/", prefix=True, count_only=True)).count == 0

    run(shared_cluster, body)
    assert most == 1
    assert overlaps(sections) == []
    assert outcomes["held"] == len(sections) > contenders
