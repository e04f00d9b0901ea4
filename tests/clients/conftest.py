"""Fixtures for the client tests: fake nodes (``fakeserver.py``, a real ZeroMQ peer that
speaks the wire protocol) and clients that are closed after each test."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pnyx.clients import Client


def _load_fakeserver() -> Any:
    # Tests run with --import-mode=importlib (no sys.path entry for this folder), so
    # the helper module is loaded by path, once, under a private name.
    name = "pnyx_tests_clients_fakeserver"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("fakeserver.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fakeserver = _load_fakeserver()


@pytest.fixture
def fake() -> Iterator[Any]:
    """One started fake node (member 1, which believes itself leader)."""
    server = fakeserver.FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def cluster() -> Iterator[list[Any]]:
    """Three fake nodes sharing one store (one cluster); member 1 leads."""
    store = fakeserver.FakeStore()
    servers = [fakeserver.FakeServer(store, member_id=i, leader_id=1).start() for i in (1, 2, 3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """``make_client(endpoints, **options)``: a ``Client`` closed after the test."""
    clients: list[Client] = []

    def make(endpoints: Any, **options: Any) -> Client:
        client = Client(endpoints, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fake_module() -> Any:
    return fakeserver
