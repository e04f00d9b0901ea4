"""Lock against a real cluster: FIFO line, timeouts and cancellation that clean up,
fencing, guarded unlock, loss reporting, introspection, no herd, and mutual exclusion
between worker processes checked by fencing tokens."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pnyx.clients import (
    AsyncClient,
    Client,
    LockLostError,
    LockTimeoutError,
    PnyxError,
    RecipeError,
    SessionExpiredError,
)
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Lock, Session


def test_acquire_release_and_tokens_increase(kv: Client, name: str) -> None:
    tokens = []
    with Session(kv, ttl=5) as session:
        for _ in range(3):
            with Lock(session, name, timeout=5) as lock:
                assert lock.is_held
                assert lock.key == f"{name}/{session.lease_id:x}".encode()
                assert kv.get(lock.key).kvs[0].create_revision == lock.token
                tokens.append(lock.token)
            assert not lock.is_held and lock.token == 0
            assert not kv.get(lock.key).kvs
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_try_acquire_and_timeout_leave_no_key(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as first, Session(kv, ttl=5) as second:
        holder = Lock(first, name)
        assert holder.try_acquire()
        other = Lock(second, name)
        assert not other.try_acquire()
        with pytest.raises(LockTimeoutError):
            other.acquire(timeout=0.3)
        with pytest.raises(LockTimeoutError), Lock(second, name, timeout=0.2):
            pytest.fail("entered the body without the lock")
        assert holder.waiters() == []
        assert [kv_.key for kv_ in kv.get(f"{name}/", prefix=True).kvs] == [holder.key]
        holder.release()
        assert other.try_acquire()
        other.release()


def test_cancelled_async_wait_removes_its_key(shared_cluster: LocalCluster, name: str) -> None:
    async def main() -> None:
        async with (
            AsyncClient(shared_cluster.endpoints) as akv,
            Session(akv, ttl=5) as a,
            Session(akv, ttl=5) as b,
            Lock(a, name) as held,
        ):
            waiter = Lock(b, name)
            task = asyncio.ensure_future(waiter.acquire_async())
            while not await held.waiters_async():
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The key is deleted before the cancellation completes.
            assert (await akv.get(f"{name}/", prefix=True, count_only=True)).count == 1
            assert not waiter.is_held

    asyncio.run(main())


def test_fifo_order_and_no_herd(kv: Client, name: str, until: Callable[..., Any]) -> None:
    sessions = [Session(kv, ttl=10).open() for _ in range(5)]
    try:
        holder = Lock(sessions[0], name)
        holder.acquire(5)
        order: list[int] = []
        waiters = [Lock(s, name) for s in sessions[1:]]
        threads = []

        def take(index: int) -> None:
            waiters[index].acquire(30)
            order.append(index)
            waiters[index].release()

        for index in range(len(waiters)):
            thread = threading.Thread(target=take, args=(index,))
            thread.start()
            threads.append(thread)
            # Queue them one after the other: the line order is known.
            until(lambda index=index: len(holder.waiters()) == index + 1, what="waiter queued")
        line = holder.waiters()
        assert [w.key for w in line] == [w.key for w in waiters]
        assert [w.token for w in line] == sorted(w.token for w in line)
        holder.release()
        for thread in threads:
            thread.join(30)
        assert order == [0, 1, 2, 3]
        # A short line: each waiter heard each departure ahead of it (one notification
        # per release, no request) and took the lock with the last one, reading nothing.
        assert [w.wakeups for w in waiters] == [1, 2, 3, 4]
        assert [w.looks for w in waiters] == [0, 0, 0, 0]
    finally:
        for session in sessions:
            session.close()


def test_loss_while_held_is_reported_everywhere(kv: Client, name: str) -> None:
    seen: list[PnyxError] = []
    with Session(kv, ttl=5) as session:
        with pytest.raises(LockLostError), Lock(session, name, on_lost=seen.append) as lock:
            lock.fenced_put(f"{name}-data", "1")
            kv.delete(lock.key)  # an operator deletes the lock key
            assert lock.lost.wait(10)
            assert isinstance(lock.lost.error, LockLostError)
            assert seen == [lock.lost.error]
            with pytest.raises(LockLostError):
                lock.fenced_put(f"{name}-data", "2")
        assert kv.get(f"{name}-data").kvs[0].value == b"1"


def test_session_loss_while_held_fires_lock_lost(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session:
        lock = Lock(session, name).acquire(5)
        kv.lease_revoke(session.lease_id)
        # The lock notices its key vanish, the session its lease; both report.
        assert lock.lost.wait(10)
        assert session.lost.wait(10)
        with pytest.raises(LockLostError):
            lock.fenced_put(f"{name}-data", "x")
        with pytest.raises(LockLostError):
            lock.release()


def test_late_release_never_deletes_a_newer_holders_key(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as first, Session(kv, ttl=5) as second:
        old = Lock(first, name).acquire(5)
        old_token = old.token
        # The old holder's key disappears (as if its lease had expired) ...
        kv.delete(old.key)
        new = Lock(second, name).acquire(5)
        assert new.token > old_token
        # ... and its late release and fenced writes must not touch the new holder.
        with pytest.raises(LockLostError):
            old.release()
        result = kv.txn(
            compare=[kv.cmp.create(old.key) == old_token], success=[kv.op.put(name + "-x", "old")]
        )
        assert not result.succeeded
        assert kv.get(new.key).kvs[0].create_revision == new.token
        new.fenced_put(f"{name}-x", "new")
        new.release()


def test_waiter_stops_at_once_when_its_session_dies(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as first, Session(kv, ttl=5) as second:
        held = Lock(first, name).acquire(5)
        waiter = Lock(second, name)
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                waiter.acquire(60)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=wait)
        thread.start()
        while not held.waiters():
            thread.join(0.02)
        kv.lease_revoke(second.lease_id)
        thread.join(15)
        assert not thread.is_alive()
        assert isinstance(outcome[0], SessionExpiredError)
        assert held.is_held and held.waiters() == []
        held.release()


def test_holder_and_waiters_introspection(kv: Client, name: str) -> None:
    with Session(kv, ttl=7) as first, Session(kv, ttl=7) as second:
        held = Lock(first, name, value="worker-1").acquire(5)
        assert held.since == held.token
        waiter = Lock(second, name, value="worker-2")
        thread = threading.Thread(target=waiter.acquire, args=(30,))
        thread.start()
        while not held.waiters():
            thread.join(0.02)
        holder = held.holder()
        assert holder is not None
        assert (holder.key, holder.lease, holder.token) == (held.key, first.lease_id, held.token)
        assert holder.value == b"worker-1" and 0 < (holder.ttl or 0) <= 7
        (queued,) = held.waiters()
        assert queued.lease == second.lease_id and queued.value == b"worker-2"
        assert queued.since == queued.token > held.token
        held.release()
        thread.join(30)
        now = waiter.holder()
        assert now is not None and now.key == waiter.key
        # It took the lock after waiting: its "since" is the revision it took it at, the
        # one that deleted the previous holder's key; taking it wrote nothing, so the
        # line shows when it joined.
        assert waiter.since > waiter.token and now.since == waiter.token
        assert kv.get(held.key, revision=waiter.since - 1).kvs
        assert not kv.get(held.key, revision=waiter.since).kvs
        waiter.release()
        assert waiter.holder() is None


def _record_requests(client: AsyncClient) -> list[str]:
    """The names of the key-value requests ``client`` makes from now on (reads and
    transactions; keep-alives and watches are left out)."""
    sent: list[str] = []
    request = client._request

    async def recording(message: Any, *args: Any, **kwargs: Any) -> Any:
        if type(message).__name__ in ("RangeRequest", "TxnRequest"):
            sent.append(type(message).__name__)
        return await request(message, *args, **kwargs)

    client._request = recording  # type: ignore[method-assign]
    return sent


def test_joining_is_one_transaction_and_taking_over_no_request(
    shared_cluster: LocalCluster, kv: Client, name: str, until: Callable[..., Any]
) -> None:
    with (
        Client(shared_cluster.endpoints) as own,
        Session(kv, ttl=10) as first,
        Session(own, ttl=10) as second,
    ):
        sent = _record_requests(second.client)
        alone = Lock(second, f"{name}-alone").acquire(5)
        assert sent == ["TxnRequest"]  # joined and found nobody ahead: held
        alone.release()
        held = Lock(first, name).acquire(5)
        waiter = Lock(second, name)
        sent.clear()
        thread = threading.Thread(target=waiter.acquire, args=(30,))
        thread.start()
        until(held.waiters, what="the waiter in line")
        assert sent == ["TxnRequest"]  # joined, and learned whom to watch, in one request
        held.release()
        thread.join(30)
        assert waiter.is_held
        # Its watch of the line saw the holder's key deleted and never its own: nobody
        # was left ahead, so it holds without asking anything.
        assert sent == ["TxnRequest"]
        assert waiter.looks == 0 and waiter.wakeups == 1
        waiter.release()


def test_a_waiter_whose_key_vanished_does_not_take_the_lock(
    kv: Client, name: str, until: Callable[..., Any]
) -> None:
    with Session(kv, ttl=30) as first, Session(kv, ttl=30) as second:
        held = Lock(first, name).acquire(5)
        waiter = Lock(second, name)
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                waiter.acquire(30)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=wait)
        thread.start()
        until(held.waiters, what="the waiter in line")
        kv.delete(waiter.key)  # its session lives on; only the look after waking sees it
        held.release()
        thread.join(30)
        assert not thread.is_alive()
        assert isinstance(outcome[0], SessionExpiredError) and not waiter.is_held
        assert kv.get(f"{name}/", prefix=True, count_only=True).count == 0


def test_fenced_txn_user_compare_failure_is_not_loss(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session, Lock(session, name) as lock:
        result = lock.fenced_txn(
            compare=[kv.cmp.version(f"{name}-absent") > 0],
            success=[kv.op.put(f"{name}-y", "1")],
            failure=[kv.op.get(f"{name}-absent")],
        )
        assert not result.succeeded and len(result.responses) == 1
        assert lock.is_held


def test_one_session_holds_a_name_once(kv: Client, name: str) -> None:
    with Session(kv, ttl=5) as session, Lock(session, name), pytest.raises(RecipeError):
        Lock(session, name).try_acquire()


def test_async_face(shared_cluster: LocalCluster, name: str) -> None:
    async def main() -> None:
        async with AsyncClient(shared_cluster.endpoints) as akv, Session(akv, ttl=5) as session:
            async with Lock(session, name) as lock:
                result = await lock.fenced_put_async(f"{name}-v", "1")
                assert result.revision > lock.token
                holder = await lock.holder_async()
                assert holder is not None and holder.token == lock.token
            assert not lock.is_held

    asyncio.run(main())


# ---------------------------------------------------------------------- worker processes

QUIET = """
import logging, sys, structlog
structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    logger_factory=structlog.PrintLoggerFactory(sys.stderr),
)
"""

WORKER = (
    QUIET
    + """
import json, sys
from pnyx.clients import Client
from pnyx.recipes import Lock, Session

endpoints, name, rounds, ident = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with Client(endpoints.split(","), timeout=10) as kv, Session(kv, ttl=5) as session:
    for _ in range(rounds):
        with Lock(session, name, timeout=60) as lock:
            token = lock.token
            enter = lock.fenced_put(f"{name}-cs/{token:012d}/enter", ident).revision
            # A read-modify-write without compare-and-set: only exclusion keeps it right.
            got = kv.get(f"{name}-counter")
            count = int(got.kvs[0].value) if got.kvs else 0
            lock.fenced_put(f"{name}-counter", str(count + 1))
            leave = lock.fenced_put(f"{name}-cs/{token:012d}/exit", ident).revision
            print(json.dumps({"token": token, "enter": enter, "exit": leave}), flush=True)
"""
)


def test_mutual_exclusion_between_worker_processes(
    shared_cluster: LocalCluster, kv: Client, name: str
) -> None:
    workers, rounds = 3, 4
    endpoints = ",".join(shared_cluster.endpoints)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, endpoints, name, str(rounds), f"w{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    reports = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        reports += [json.loads(line) for line in out.splitlines()]
    assert len(reports) == workers * rounds
    assert int(kv.get(f"{name}-counter").kvs[0].value) == workers * rounds
    # Critical sections, as linearized by the store, never overlap, and their fencing
    # tokens grow in the order they ran.
    sections = sorted(reports, key=lambda r: r["enter"])
    tokens = [r["token"] for r in sections]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    for before, after in itertools.pairwise(sections):
        assert before["exit"] < after["enter"]
    # The store holds the same story.
    stored = kv.get(f"{name}-cs/", prefix=True).kvs
    assert len(stored) == 2 * workers * rounds


PAUSED_HOLDER = (
    QUIET
    + """
import json, sys
from pnyx.clients import Client, LockLostError
from pnyx.recipes import Lock, Session

endpoints, name = sys.argv[1], sys.argv[2]
with Client(endpoints.split(","), timeout=3) as kv, Session(kv, ttl=1) as session:
    lock = Lock(session, name).acquire(10)
    lock.fenced_put(f"{name}-resource", "paused-holder-before")
    print(json.dumps({"token": lock.token, "key": lock.key.decode()}), flush=True)
    sys.stdin.readline()          # the test stops us here (SIGSTOP) and resumes us later
    try:
        lock.fenced_put(f"{name}-resource", "paused-holder-after")
        fenced = "written"
    except LockLostError:
        fenced = "refused"
    # Even bypassing the local check, the cluster refuses the stale token.
    raw = kv.txn(
        compare=[kv.cmp.create(lock.key) == lock.token],
        success=[kv.op.put(f"{name}-resource", "paused-holder-raw")],
    )
    told = lock.lost.wait(10)
    print(json.dumps({"fenced": fenced, "raw": raw.succeeded, "told": told,
                      "error": type(lock.lost.error).__name__}), flush=True)
"""
)


def test_paused_holder_loses_the_lock_and_its_writes_are_refused(
    shared_cluster: LocalCluster, kv: Client, name: str, until: Callable[..., Any]
) -> None:
    endpoints = ",".join(shared_cluster.endpoints)
    worker = subprocess.Popen(
        [sys.executable, "-c", PAUSED_HOLDER, endpoints, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdin is not None
        first = json.loads(worker.stdout.readline())
        worker.send_signal(signal.SIGSTOP)
        # Paused past its TTL: the cluster expires its lease and its key.
        until(lambda: not kv.get(first["key"]).kvs, timeout=30, what="the lease to expire")
        with Session(kv, ttl=5) as session, Lock(session, name, timeout=10) as new:
            assert new.token > first["token"]
            new.fenced_put(f"{name}-resource", "new-holder")
            worker.send_signal(signal.SIGCONT)
            worker.stdin.write("go\n")
            worker.stdin.flush()
            second = json.loads(worker.stdout.readline())
            assert second == {
                "fenced": "refused",
                "raw": False,
                "told": True,
                "error": "LockLostError",
            }
            assert new.is_held
            assert kv.get(f"{name}-resource").kvs[0].value == b"new-holder"
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
            worker.kill()
            worker.wait()
