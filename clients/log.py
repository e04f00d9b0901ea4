"""Loggers for library code (``pnyx.clients``, ``pnyx.recipes``) that stay quiet until the
application configures structlog.

structlog's defaults print every event, debug included, to stdout. An application that
never configured logging must not get a client's "connected" lines in its output, so a
``LibraryLogger`` drops events below WARNING while ``structlog.is_configured()`` is false;
once the application configures structlog (at any time, before or after this module is
imported), every event goes to structlog as usual and the application's own level and
processors decide. WARNING and above always go through.

This module must never configure structlog (that is the application's decision) nor keep a
bound logger across calls (it would miss a later configuration).
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["LibraryLogger", "library_logger"]

QUIET_BELOW = logging.WARNING
"""Without the application's structlog configuration, events below this level are dropped."""


class LibraryLogger:
    """A structlog logger for library modules; see the module docstring. ``args`` go to
    ``structlog.get_logger`` (the logger name), ``context`` is bound to every event."""

    __slots__ = ("_args", "_context")

    def __init__(self, *args: Any, **context: Any) -> None:
        self._args = args
        self._context = context

    def bind(self, **values: Any) -> LibraryLogger:
        return LibraryLogger(*self._args, **{**self._context, **values})

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._emit(logging.DEBUG, "debug", event, args, kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._emit(logging.INFO, "info", event, args, kw)

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._emit(logging.WARNING, "warning", event, args, kw)

    warn = warning

    def error(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._emit(logging.ERROR, "error", event, args, kw)

    def exception(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._emit(logging.ERROR, "exception", event, args, kw)

    def critical(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return self._emit(logging.CRITICAL, "critical", event, args, kw)

    def _emit(
        self, level: int, method: str, event: str | None, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        if level < QUIET_BELOW and not structlog.is_configured():
            return None
        # Looked up per event, never cached: the application may configure structlog
        # after this logger was made, and its configuration must then apply.
        logger = structlog.get_logger(*self._args)
        if self._context:
            logger = logger.bind(**self._context)
        return getattr(logger, method)(event, *args, **kw)


def library_logger(*args: Any, **context: Any) -> LibraryLogger:
    """The logger a library module keeps in ``_log``: ``library_logger("pnyx.clients")``."""
    return LibraryLogger(*args, **context)
