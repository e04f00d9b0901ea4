"""Library logging: the clients and recipes print nothing below WARNING unless the
application configured structlog, and follow the application's configuration once it has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from pnyx.clients import Client
from pnyx.clients.log import library_logger
from pnyx.recipes import _base as recipes_base


@pytest.fixture
def unconfigured() -> Iterator[None]:
    """structlog as a fresh process has it (other tests may have configured it)."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    if was_configured:
        structlog.configure(**saved)


def test_below_warning_is_silent_until_structlog_is_configured(
    unconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = library_logger("pnyx.test").bind(request=7)
    log.debug("hidden-debug")
    log.info("hidden-info")
    assert capsys.readouterr().out == ""
    log.warning("shown-warning")
    log.error("shown-error")
    out = capsys.readouterr().out
    assert "shown-warning" in out and "shown-error" in out and "request=7" in out


def test_a_configuration_made_later_applies_to_existing_loggers(
    unconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = library_logger("pnyx.test")
    seen: list[dict[str, Any]] = []

    def capture(_logger: Any, method: str, event: dict[str, Any]) -> str:
        seen.append({"method": method, **event})
        raise structlog.DropEvent

    structlog.configure(processors=[capture])
    log.bind(endpoint="e").debug("now-visible")
    assert seen == [{"method": "debug", "event": "now-visible", "endpoint": "e"}]
    assert capsys.readouterr().out == ""


def test_a_client_prints_nothing_by_default(
    unconfigured: None, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client([fake.endpoint]) as kv:  # connecting logs "connected" at debug level
        kv.put("k", "v")
        assert kv.get("k").kvs[0].value == b"v"
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("make", [library_logger, recipes_base.library_logger])
def test_clients_and_recipes_loggers_behave_alike(
    make: Any, unconfigured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = make("pnyx.test")
    log.info("hidden")
    log.exception("shown")
    assert "hidden" not in capsys.readouterr().out
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    log.info("visible")
    assert "visible" in capsys.readouterr().out
