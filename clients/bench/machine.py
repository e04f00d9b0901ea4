"""What a benchmark ran on: the facts a figure needs beside it to mean something (the
README quotes figures with the machine's cores and memory). Read once, when the run
starts; the load average says how busy the machine already was.

Reads the operating system only (``os``, ``platform``, ``/proc/meminfo`` on Linux);
never talks to a cluster.
"""

from __future__ import annotations

import contextlib
import os
import platform

from pnyx.clients.bench.report import Machine

__all__ = ["machine_now"]


def _memory_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return int(pages * size)
    return None


def _load_average() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def machine_now() -> Machine:
    """The machine this process runs on, as it is now."""
    return Machine(
        cpus=os.cpu_count(),
        memory_bytes=_memory_bytes(),
        platform=platform.platform(terse=True),
        python=platform.python_version(),
        load_average_1m=_load_average(),
    )
