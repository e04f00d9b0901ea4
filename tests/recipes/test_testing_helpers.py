"""``LocalCluster.expire_lease``: the helper users call to test their code's reaction to
a lost session, checked against the recipes that must report the loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pnyx.clients import Client, LeaseNotFoundError, LockLostError
from pnyx.clients.testing import LocalCluster
from pnyx.recipes import Lock, Session


def test_expiring_a_session_lease_reports_the_loss_to_the_lock_holder(
    shared_cluster: LocalCluster, kv: Client, name: str, until: Callable[..., Any]
) -> None:
    with Session(kv, ttl=30) as session:
        lock = Lock(session, name, timeout=10)
        lock.acquire()
        assert kv.get(name, prefix=True).count == 1
        shared_cluster.expire_lease(session.lease_id)
        # Long before the 30 s TTL could have run out on its own:
        until(session.lost.is_set, 10.0, "the session to report its loss")
        until(lock.lost.is_set, 10.0, "the lock to report its loss")
        assert kv.get(name, prefix=True).count == 0  # the key went with the lease
        with pytest.raises(LockLostError):
            lock.fenced_put(f"{name}-result", "late")
        assert kv.get(f"{name}-result").count == 0


def test_expiring_an_unknown_lease_is_an_error(shared_cluster: LocalCluster) -> None:
    with pytest.raises(LeaseNotFoundError):
        shared_cluster.expire_lease(0x7EADBEEF)
