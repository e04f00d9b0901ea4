"""The process entry point of a node: ``main(argv) -> exit code``.

Parses the command line (``config.build_parser``), configures structlog to write JSON
lines to stderr, runs the ``Node`` with SIGTERM/SIGINT wired to a graceful stop, and
maps failures to exit codes (``node.EXIT_*``): 1 for bad configuration, 2 for a storage
failure (the node must not continue), 3 for a listen address in use.

Only entry points configure logging; library modules just call ``structlog.get_logger``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import sys
from collections.abc import Sequence

import structlog
import zmq

from pnyx.core.errors import StorageError
from pnyx.core.server.config import parse_node_args
from pnyx.core.server.node import (
    EXIT_ADDRESS_IN_USE,
    EXIT_CONFIG,
    EXIT_STORAGE,
    Node,
    install_signal_handlers,
)

__all__ = ["SWITCH_INTERVAL", "configure_logging", "exit_with_parent", "main"]

SWITCH_INTERVAL = 0.0005
"""Seconds a thread may keep the GIL while another waits for it (CPython's default: 5 ms).
The loop thread releases the GIL in every ZeroMQ send and receive; under load the WAL
writer thread takes it then (encoding a batch), and the loop waited up to the default
interval to get it back. Measured with ``check perf --load xl`` (25 s, six A/B pairs,
fresh clusters): 13,117-13,824 -> 13,829-13,960 writes/s, B ahead in all six."""


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr: one object per event with timestamp, level and bound context."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def exit_with_parent() -> None:
    """If ``PNYX_EXIT_WITH_PARENT`` holds the pid of the process that started this one,
    have the kernel SIGKILL this process when that parent dies (Linux prctl
    PR_SET_PDEATHSIG), so supervisors and test harnesses never leak nodes."""
    parent = os.environ.get("PNYX_EXIT_WITH_PARENT", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        os._exit(1)  # the parent died before the request took effect


def main(argv: Sequence[str] | None = None) -> int:
    exit_with_parent()
    config, level = parse_node_args(argv)
    configure_logging(level)
    log = structlog.get_logger("pnyx.node").bind(node=config.name)
    node = Node(config)
    try:
        node.open()
    except zmq.ZMQError as error:
        log.critical("node.bind_failed", error=str(error))
        return EXIT_ADDRESS_IN_USE if error.errno == errno.EADDRINUSE else EXIT_CONFIG
    except StorageError as error:
        log.critical("node.storage_failed", error=str(error))
        return EXIT_STORAGE
    install_signal_handlers(node, signal.signal)
    sys.setswitchinterval(SWITCH_INTERVAL)
    code = node.run()
    # Stopping is done: a late second signal (Ctrl-C reaches the whole process group,
    # and a supervisor may also send SIGTERM) must not turn a clean exit into a kill
    # while the interpreter tears down.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code
