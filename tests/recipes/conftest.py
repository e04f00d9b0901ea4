"""Fixtures for the recipe tests: one real 3-node cluster shared by every test that does
not hurt it (``shared_cluster``, one per test process), blocking and asyncio clients,
unique recipe names, and ``until`` (poll a condition with a deadline, never a fixed
sleep). Tests that kill, pause or partition nodes start their own cluster."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from pnyx.clients import Client
from pnyx.clients.testing import LocalCluster

T = TypeVar("T")

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def shared_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A 3-node cluster for the whole test process; logs kept if any test failed."""
    directory = tmp_path_factory.mktemp("pnyx-recipes") / "cluster"
    with LocalCluster(3, directory=str(directory)) as cluster:
        yield cluster
        if request.session.testsfailed:
            cluster.mark_failed()


@pytest.fixture
def kv(shared_cluster: LocalCluster) -> Iterator[Client]:
    with Client(shared_cluster.endpoints, timeout=5.0) as client:
        yield client


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A recipe name no other test uses."""
    return f"t/{request.node.name}/{os.getpid()}-{next(_counter)}"


def wait_until(condition: Callable[[], T], timeout: float = 15.0, what: str = "") -> T:
    """Poll ``condition`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


@pytest.fixture
def until() -> Callable[..., Any]:
    return wait_until
