"""pnyx.clients.bench: the load generators behind ``pnyx bench`` and ``pnyx check perf``.

- ``stats``: samples (``Recorder``) and their ``Summary`` (percentiles, stddev, a
  histogram over fixed buckets). Pure.
- ``report``: ``BenchResult``, its text summary and its JSON document (schema
  ``pnyx.bench/1``, ``validate_json``). Pure.
- ``load``: the concurrent request loop with an optional rate limiter.
- ``workloads``: ``bench_put``, ``bench_get``, ``bench_txn_cas``.
- ``watch``: ``bench_watch`` (put-to-event latency).
- ``failover``: ``bench_failover`` (kills the leader of a cluster it starts itself).
- ``perf``: ``check_perf`` and etcd's pass/fail rules (``evaluate``).
- ``recipe_loads``: ``bench_lock`` and ``bench_elect`` on ``pnyx.recipes``.
- ``machine``: ``machine_now()``, the facts about the machine a run reports.

Every benchmark is an ``async`` function taking an options value and returning a
``BenchResult``; they drive a cluster through the public ``pnyx.clients`` API only (and
``pnyx.clients.testing`` to start one). Benchmarks are commands, never timed tests.
Importing this package imports no benchmark module (the command line loads the one it
runs).
"""

from pnyx.clients.bench.report import SCHEMA, BenchResult, render_text, to_json, validate_json
from pnyx.clients.bench.stats import Recorder, Summary, summarize

__all__ = [
    "SCHEMA",
    "BenchResult",
    "Recorder",
    "Summary",
    "render_text",
    "summarize",
    "to_json",
    "validate_json",
]
