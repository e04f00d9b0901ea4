"""Election against a real cluster: campaign order, fenced proclaim/resign, observe
(including "no leader"), loss reporting, campaign timeout, async faces."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pnyx.clients import (
    AsyncClient,
    Client,
    LockTimeoutError,
    NotLeaderAnymoreError,
    PnyxError,
    SessionExpiredError,
)
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Contender, Election, Leadership, Session


def test_campaign_leader_resign_and_observe(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as a, Session(kv, ttl=5) as b:
        first, second = Election(a, name), Election(b, name)
        observer = Election(b, name).observe(timeout=10)
        assert next(observer) is None  # nobody leads yet: said, not left out
        assert first.leader() is None

        leadership = first.campaign("host-a", timeout=5)
        assert leadership.is_leader and leadership.value == b"host-a"
        seen = next(observer)
        assert seen is not None and (seen.value, seen.token) == (b"host-a", leadership.token)
        leader = second.leader()
        assert leader is not None and leader.key == leadership.key

        leadership.proclaim("host-a:2")
        seen = next(observer)
        assert seen is not None and seen.value == b"host-a:2" and seen.token == leadership.token

        won: list[Leadership] = []
        thread = threading.Thread(target=lambda: won.append(second.campaign("host-b", 30)))
        thread.start()
        while len(first.candidates()) < 2:
            thread.join(0.02)
        assert [c.value for c in first.candidates()] == [b"host-a:2", b"host-b"]
        leadership.resign()
        thread.join(30)
        assert not leadership.is_leader
        seen = next(observer)
        assert seen is not None and seen.value == b"host-b" and seen.token == won[0].token
        assert won[0].token > leadership.token
        won[0].resign()
        assert next(observer) is None  # the last candidate left: no leader
        observer.close()


def test_deposed_leader_cannot_proclaim_or_resign_the_new_one(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as a, Session(kv, ttl=5) as b:
        old = Election(a, name).campaign("old", timeout=5)
        kv.delete(old.key)  # as if its lease had expired
        new = Election(b, name).campaign("new", timeout=5)
        assert old.lost.wait(10)
        with pytest.raises(NotLeaderAnymoreError):
            old.proclaim("old-again")
        with pytest.raises(NotLeaderAnymoreError):
            old.resign()
        leader = Election(b, name).leader()
        assert leader is not None and leader.value == b"new" and leader.token == new.token
        new.resign()


def test_leadership_lost_on_session_loss(kv: Client, name: str) -> None:
    seen: list[PnyxError] = []
    with Session(kv, ttl=5) as session:
        election = Election(session, name, on_lost=seen.append)
        with pytest.raises(NotLeaderAnymoreError), election.campaign("x", 5) as leadership:
            kv.lease_revoke(session.lease_id)
            assert leadership.lost.wait(10)
            assert seen and isinstance(seen[0], NotLeaderAnymoreError)
            with pytest.raises(NotLeaderAnymoreError):
                leadership.fenced_put(f"{name}-data", "x")


def test_candidate_whose_session_dies_stops_campaigning(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as a, Session(kv, ttl=5) as b:
        leader = Election(a, name).campaign("a", 5)
        candidate = Election(b, name)
        outcome: list[BaseException] = []

        def campaign() -> None:
            try:
                candidate.campaign("b", 60)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=campaign)
        thread.start()
        while len(candidate.candidates()) < 2:
            thread.join(0.02)
        kv.lease_revoke(b.lease_id)
        thread.join(15)
        assert not thread.is_alive() and isinstance(outcome[0], SessionExpiredError)
        assert [c.key for c in Election(a, name).candidates()] == [leader.key]
        leader.resign()


def test_campaign_timeout_withdraws_the_candidacy(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as a, Session(kv, ttl=5) as b:
        leader = Election(a, name).campaign("a", 5)
        with pytest.raises(LockTimeoutError):
            Election(b, name).campaign("b", timeout=0.3)
        assert [c.value for c in Election(a, name).candidates()] == [b"a"]
        leader.resign()


def test_async_faces(shared_cluster: LocalCluster, name: str) -> None:
    async def main() -> None:
        async with AsyncClient(shared_cluster.endpoints) as akv, Session(akv, ttl=5) as session:
            election = Election(session, name)
            changes: list[Contender | None] = []

            async def observe() -> None:
                async for leader in election.observe_async():
                    changes.append(leader)
                    if len(changes) == 3:
                        return

            observing = asyncio.ensure_future(observe())
            while not changes:
                await asyncio.sleep(0.02)
            async with await election.campaign_async("async-a", timeout=5) as leadership:
                await leadership.proclaim_async("async-b")
            await asyncio.wait_for(observing, 10)
            assert changes[0] is None
            assert [c.value if c else None for c in changes[1:]] == [b"async-a", b"async-b"]
            assert await election.leader_async() is None

    asyncio.run(main())


def test_campaign_again_after_losing(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session:
        election = Election(session, name)
        first = election.campaign("a", 5)
        kv.delete(first.key)
        assert first.lost.wait(10)
        second = election.campaign("a-again", 5)
        assert second.is_leader and second.token > first.token and not second.lost.is_set()
        second.resign()
