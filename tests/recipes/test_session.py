"""Session: keep-alive past the TTL, revoke on close, loss on a vanished lease and - with
a scripted client - loss declared at ``valid_until``, before the lease could expire."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pnyx.clients import (
    AsyncClient,
    Client,
    LeaseGrantResult,
    LeaseKeepAliveResult,
    PnyxError,
    RecipeError,
    SessionExpiredError,
)
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Session
from pnyx.recipes._base import Runtime
from pnyx.recipes.session import default_margin


def test_keep_alive_outlives_the_ttl_and_close_revokes(
    kv: Client, name: str, until: Callable[..., Any]
) -> None:
    # TTL 2, not 1: a refresh every 0.67 s stays well inside the window on a busy machine.
    with Session(kv, ttl=2) as session:
        granted = session.ttl
        kv.put(name, "x", lease=session.lease_id)
        first_deadline = session.valid_until
        # Wait until more than one full TTL has passed: only keep-alives can explain
        # that the key and the lease are still there.
        until(lambda: time.monotonic() > first_deadline + granted + 0.5, timeout=granted + 10)
        assert session.valid_until > first_deadline
        assert not session.lost.is_set()
        assert session.is_valid()
        assert kv.get(name).kvs
        assert kv.lease_time_to_live(session.lease_id).ttl > 0
        lease = session.lease_id
    assert session.closed and session.ended.is_set() and not session.lost.is_set()
    assert kv.lease_time_to_live(lease).ttl == -1
    assert not kv.get(name).kvs


def test_valid_until_is_before_the_servers_expiry(kv: Client) -> None:
    before = time.monotonic()
    with Session(kv, ttl=5) as session:
        assert session.margin == default_margin(session.ttl) > 0
        assert before < session.valid_until <= time.monotonic() + session.ttl - session.margin


def test_loss_when_the_lease_is_revoked_elsewhere(kv: Client) -> None:
    seen: list[PnyxError] = []
    with Session(kv, ttl=3, on_lost=seen.append) as session:
        kv.lease_revoke(session.lease_id)
        assert session.lost.wait(10)
        assert isinstance(session.error, SessionExpiredError)
        assert seen == [session.error]
        assert not session.is_valid()
        with pytest.raises(SessionExpiredError):
            session.check()


def test_async_face(shared_cluster: LocalCluster) -> None:
    async def main() -> None:
        async with AsyncClient(shared_cluster.endpoints) as akv:
            async with Session(akv, ttl=2) as session:
                assert session.client is akv
                assert (await akv.lease_time_to_live(session.lease_id)).ttl > 0
                lease = session.lease_id
                await akv.lease_revoke(lease)
                assert await session.lost.wait_async(10)
            assert (await akv.lease_time_to_live(lease)).ttl == -1

    asyncio.run(main())


def test_a_blocking_client_session_is_usable_from_asyncio(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session:

        async def main() -> int:
            result = await session.client.put(name, "v", lease=session.lease_id)
            return result.revision

        # The private loop runs the coroutine; this loop only awaits it.
        async def bridge() -> int:
            return await session.runtime.call_async(main())

        assert asyncio.run(bridge()) > 0
        assert kv.get(name).kvs[0].lease == session.lease_id


def test_sessions_of_one_client_share_one_runtime(kv: Client) -> None:
    with Session(kv, ttl=5) as first, Session(kv, ttl=5) as second:
        assert first.runtime is second.runtime
        assert first.lease_id != second.lease_id
    with Session(kv, ttl=5) as third:
        assert third.is_valid()


def test_blocking_call_on_the_recipes_loop_is_refused(kv: Client) -> None:
    with Session(kv, ttl=5) as session:
        caught: list[BaseException] = []

        async def nested() -> None:
            try:
                session.runtime.call(asyncio.sleep(0))
            except RecipeError as exc:
                caught.append(exc)

        session.runtime.call(nested())
        assert caught


def test_a_session_opens_once(kv: Client) -> None:
    session = Session(kv, ttl=5)
    with session:
        pass
    with pytest.raises(RecipeError):
        session.open()


# ---------------------------------------------------------------------- scripted client


class ScriptedClient(AsyncClient):
    """An ``AsyncClient`` whose lease calls are answered by a script: the "server"
    expires the lease ``ttl`` seconds after it *received* the last refresh, and refreshes
    can be made to hang (a partition, a paused cluster)."""

    def __init__(self, ttl: int) -> None:
        super().__init__(["tcp://127.0.0.1:9"], timeout=1.0)
        self.granted_ttl = ttl
        self.server_expiry = 0.0
        self.refreshes = 0
        self.hang = threading.Event()
        self.revoked = False

    async def lease_grant(self, ttl: int, id: int = 0, *, timeout: float | None = None) -> Any:
        self.server_expiry = time.monotonic() + self.granted_ttl
        return LeaseGrantResult(id=0xABC, ttl=self.granted_ttl)

    async def lease_keep_alive_once(self, id: int, *, timeout: float | None = None) -> Any:
        if self.hang.is_set():
            await asyncio.sleep(timeout or 1.0)
            from pnyx.clients import TimeoutError as PnyxTimeout  # noqa: PLC0415

            raise PnyxTimeout("scripted: no answer")
        self.refreshes += 1
        self.server_expiry = time.monotonic() + self.granted_ttl
        return LeaseKeepAliveResult(id=id, ttl=self.granted_ttl)

    async def lease_revoke(self, id: int, *, timeout: float | None = None) -> None:
        self.revoked = True


def test_loss_is_declared_at_valid_until_before_the_lease_can_expire() -> None:
    async def main() -> None:
        client = ScriptedClient(ttl=3)
        try:
            async with Session(client, ttl=3, margin=1.0) as session:
                # Keep-alive every TTL/3: wait for two acknowledged refreshes.
                while client.refreshes < 2:
                    assert await session.lost.wait_async(0.05) is False
                client.hang.set()  # from now on no refresh is acknowledged
                lost_at: list[float] = []
                session.add_lost_callback(lambda _error: lost_at.append(time.monotonic()))
                assert await session.lost.wait_async(10)
                assert isinstance(session.error, SessionExpiredError)
                # Declared once valid_until passed, and before the server would expire it.
                assert lost_at[0] >= session.valid_until
                assert lost_at[0] < client.server_expiry
                # The lease is revoked in the background (it may still live).
                for _ in range(100):
                    if client.revoked:
                        break
                    await asyncio.sleep(0.02)
                assert client.revoked
        finally:
            await client.close()

    asyncio.run(main())


def test_runtime_refuses_other_clients() -> None:
    with pytest.raises(PnyxError):
        Runtime.acquire(object())  # type: ignore[arg-type]
