"""A throughput benchmark of the WAL on the real disk (a command, never a timed test).

    python -m pnyx.core.storage.bench [--entries 200000] [--batch 100] [--size 256]

Reports entries/s for: encoding alone; ``Storage.save`` + ``sync`` per batch on the
caller's thread; and ``WalWriter`` fed with many batches in flight (group commit). It
writes only in a fresh temporary directory (or ``--dir``) and never deletes anything else.
"""

from __future__ import annotations

import argparse
import collections
import logging
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future

import structlog

from pnyx.core.raft.types import Entry
from pnyx.core.storage.fs import OsFileSystem
from pnyx.core.storage.storage import Storage
from pnyx.core.storage.wal import encode_entries
from pnyx.core.storage.writer import WalWriter


def _batches(total: int, batch: int, size: int) -> list[list[Entry]]:
    payload = bytes(range(256)) * (size // 256 + 1)
    return [
        [Entry(1, first + offset, data=payload[:size]) for offset in range(batch)]
        for first in range(1, total + 1, batch)
    ]


def _report(name: str, entries: int, seconds: float, fsyncs: int | None = None) -> None:
    line = f"{name:<34} {entries / seconds:>12,.0f} entries/s"
    if fsyncs is not None:
        line += f"   {fsyncs / seconds:>9,.0f} fsyncs/s"
    print(line)


def _encode_only(batches: Sequence[list[Entry]]) -> None:
    started = time.perf_counter()
    for batch in batches:
        encode_entries(batch)
    _report("encode only", sum(map(len, batches)), time.perf_counter() - started)


def _save_and_sync(directory: str, batches: Sequence[list[Entry]]) -> None:
    storage = Storage.open(OsFileSystem(), directory)
    started = time.perf_counter()
    for batch in batches:
        storage.save(None, batch)
        storage.sync()
    seconds = time.perf_counter() - started
    _report("save+sync per batch (inline)", sum(map(len, batches)), seconds, len(batches))
    storage.close()


def _writer(directory: str, batches: Sequence[list[Entry]], in_flight: int) -> None:
    writer = WalWriter(Storage.open(OsFileSystem(), directory)).start()
    pending: collections.deque[Future[None]] = collections.deque()
    started = time.perf_counter()
    for batch in batches:
        if len(pending) >= in_flight:
            pending.popleft().result()
        pending.append(writer.submit(None, batch))
    for future in pending:
        future.result()
    seconds = time.perf_counter() - started
    name = f"WalWriter, {in_flight} batches in flight"
    _report(name, sum(map(len, batches)), seconds, writer.stats.syncs)
    writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="bytes of data per entry")
    parser.add_argument("--dir", default=None, help="parent directory (default: a temp dir)")
    arguments = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    batches = _batches(arguments.entries, arguments.batch, arguments.size)
    print(
        f"{arguments.entries:,} entries of {arguments.size} bytes in batches of "
        f"{arguments.batch}, OsFileSystem (fdatasync)"
    )
    _encode_only(batches)
    with tempfile.TemporaryDirectory(dir=arguments.dir, prefix="pnyx-wal-bench-") as root:
        _save_and_sync(f"{root}/inline", batches)
        for in_flight in (1, 4, 16, 64):
            _writer(f"{root}/writer-{in_flight}", batches, in_flight)


if __name__ == "__main__":
    main()
