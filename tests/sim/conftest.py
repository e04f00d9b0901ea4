"""Fixtures for the simulator's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_structlog_configuration() -> Iterator[None]:
    """The command line configures structlog for the whole process (as an entry point
    should); tests that invoke it in-process must not leak that into later tests."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
