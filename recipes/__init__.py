"""pnyx.recipes: coordination recipes built on the client's public API.

::

    from pnyx.clients import Client
    from pnyx.recipes import Lock, Session

    with Client() as kv, Session(kv, ttl=10) as session:
        with Lock(session, "jobs/42", timeout=5) as lock:
            lock.fenced_put("results/42", b"done")

One module per recipe, each a context manager for ``with`` and ``async with`` (the design
is written down in ``pnyx.recipes._base``). Recipes import only ``pnyx.clients`` and
``pnyx.core.errors``; nothing in ``pnyx.clients`` imports them.
"""

from pnyx.recipes._base import Signal
from pnyx.recipes.barrier import Barrier, DoubleBarrier
from pnyx.recipes.config import Config, ConfigRejection, ConfigSnapshot
from pnyx.recipes.counter import Counter
from pnyx.recipes.discovery import (
    Discovery,
    Instance,
    InstanceChange,
    InstanceEvent,
    Registration,
    ServiceWatch,
)
from pnyx.recipes.election import Election, Leadership, Observation
from pnyx.recipes.lock import Contender, Lock
from pnyx.recipes.queue import Queue, QueueItem
from pnyx.recipes.rwlock import RWLock
from pnyx.recipes.semaphore import Semaphore
from pnyx.recipes.session import Session

__all__ = [
    "Barrier",
    "Config",
    "ConfigRejection",
    "ConfigSnapshot",
    "Contender",
    "Counter",
    "Discovery",
    "DoubleBarrier",
    "Election",
    "Instance",
    "InstanceChange",
    "InstanceEvent",
    "Leadership",
    "Lock",
    "Observation",
    "Queue",
    "QueueItem",
    "RWLock",
    "Registration",
    "Semaphore",
    "ServiceWatch",
    "Session",
    "Signal",
]
