"""Throughput of the state machine alone (no Raft, no network): a measurement to run by
hand, not a test (pytest does not collect it).

    .venv/bin/python tests/kv/bench_kv.py [--puts N] [--keys K]

Reports applied puts/s (256-byte values, through ``apply_entry`` from encoded commands,
exactly-once on, one watcher per 100 keys), the same through ``apply`` with decoded
commands, single-key range gets/s, 100-key range gets/s, and snapshot size and time.
"""

from __future__ import annotations

import argparse
import time

from pnyx.core.kv import ClientCommand, KVStateMachine, encode_command
from pnyx.core.wire.messages import PutRequest, RangeRequest, WatchCreateRequest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--puts", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    value = b"v" * 256
    keys = [b"bench/%08d" % i for i in range(args.keys)]
    commands = [
        ClientCommand(b"client-%d" % (i % 16), i // 16 + 1, PutRequest(keys[i % args.keys], value))
        for i in range(args.puts)
    ]
    entries = [encode_command(command) for command in commands]

    sm = KVStateMachine()
    for key in keys[::100]:
        sm.watches.create(WatchCreateRequest(key))
    start = time.perf_counter()
    for index, data in enumerate(entries, start=1):
        sm.apply_entry(index, data)
        if index % 64 == 0:
            sm.watches.drain(4096)
    elapsed = time.perf_counter() - start
    print(f"apply_entry puts/s (decode + apply + dedup + watch): {args.puts / elapsed:,.0f}")

    sm2 = KVStateMachine()
    start = time.perf_counter()
    for index, command in enumerate(commands, start=1):
        sm2.apply(index, command)
    elapsed = time.perf_counter() - start
    print(f"apply puts/s (decoded commands): {args.puts / elapsed:,.0f}")

    gets = [RangeRequest(keys[(i * 7919) % args.keys]) for i in range(args.puts)]
    start = time.perf_counter()
    for request in gets:
        sm.range(request)
    elapsed = time.perf_counter() - start
    print(f"range gets/s (one key): {len(gets) / elapsed:,.0f}")

    scans = [
        RangeRequest(keys[i], keys[i + 100]) for i in range(0, args.keys - 100, args.keys // 1000)
    ]
    start = time.perf_counter()
    for request in scans:
        sm.range(request)
    elapsed = time.perf_counter() - start
    print(f"range gets/s (100 keys): {len(scans) / elapsed:,.0f}")

    start = time.perf_counter()
    data = sm.snapshot()
    elapsed = time.perf_counter() - start
    print(f"snapshot: {len(data) / 1e6:.1f} MB in {elapsed:.2f} s ({args.puts} versions)")
    start = time.perf_counter()
    KVStateMachine().restore(data)
    print(f"restore: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
