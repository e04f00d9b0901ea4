"""pnyx.core.storage: durable state of a node - the write-ahead log, snapshots,
recovery, and the group-commit writer thread.

- ``fs``: the ``FileSystem`` seam (``OsFileSystem``, ``MemoryFileSystem`` with crashes);
- ``wal``: checksummed segment files and their replay;
- ``snapshot``: atomically written snapshot files;
- ``storage``: ``Storage``, the two together (open, recover, save, sync, save_snapshot);
- ``writer``: ``WalWriter``, one fsync for many batches, off the event loop.

Storage never imports the server, transport or clients, and never skips damage silently:
a bad record anywhere but a torn tail is a ``CorruptionError``.
"""

from pnyx.core.storage.fs import (
    AppendFile,
    FileSystem,
    MemoryFileSystem,
    OsFileSystem,
    SimulatedCrash,
)
from pnyx.core.storage.storage import DEFAULT_KEEP_SNAPSHOTS, Storage
from pnyx.core.storage.wal import DEFAULT_SEGMENT_SIZE
from pnyx.core.storage.writer import WalWriter, WriterStats

__all__ = [
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_SEGMENT_SIZE",
    "AppendFile",
    "FileSystem",
    "MemoryFileSystem",
    "OsFileSystem",
    "SimulatedCrash",
    "Storage",
    "WalWriter",
    "WriterStats",
]
