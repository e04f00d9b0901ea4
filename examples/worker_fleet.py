"""A worker fleet: K worker processes share N jobs, each job under its own lock, and every
write guarded by the lock's fencing token; a summary proves no job was processed twice.

Run against `make run`'s cluster (or set PNYX_ENDPOINTS):

    .venv/bin/python examples/worker_fleet.py --workers 4 --jobs 20
    .venv/bin/python examples/worker_fleet.py --workers 4 --jobs 40 --pause-one 6 --ttl 2

How a worker takes a job: ``Lock(session, "fleet/<run>/locks/<job>")`` (try-acquire, so
workers spread over the jobs instead of queueing), then - inside the lock - it checks
that the job has no result yet, records that it *started* the job and, after the work,
writes the result and a completion record in one transaction. Both writes are fenced
(``lock.fenced_put`` / ``lock.fenced_txn``): the cluster applies them only while the
lock is held, and the result only if none exists. The summary reads the records back:
every job has exactly one result, written once (version 1), and one completion.

``--pause-one S`` freezes one worker (SIGSTOP) for S seconds in the middle of the run.
With S longer than ``--ttl`` its session expires, its lock passes to another worker,
and when it wakes up its fenced writes are refused (``LockLostError``): the summary
counts those refusals, and still shows every job started and finished exactly once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import structlog

from pnyx.clients import Client, KeyValue, LockLostError, PnyxError, SessionExpiredError
from pnyx.recipes import Lock, Session


def quiet() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def work(job: int) -> str:
    """The 'work': a little CPU and a little waiting."""
    time.sleep(random.uniform(0.05, 0.2))
    return hashlib.sha256(f"job-{job}".encode()).hexdigest()[:16]


def run_worker(endpoints: str | None, run: str, jobs: int, worker: str, ttl: int) -> None:
    stats = {"worker": worker, "done": 0, "skipped": 0, "busy": 0, "refused": 0}
    order = list(range(jobs))
    random.shuffle(order)
    with Client(endpoints) as kv:
        remaining = set(order)
        while remaining:
            try:
                with Session(kv, ttl=ttl) as session:
                    for job in [j for j in order if j in remaining]:
                        outcome = take_job(kv, session, run, job, worker)
                        stats[outcome] += 1
                        if outcome != "busy":
                            remaining.discard(job)
                    # Busy jobs: another worker holds them; look again until all have results.
                    remaining = {j for j in remaining if not kv.get(result_key(run, j)).kvs}
                    if remaining:
                        time.sleep(0.05)
            except SessionExpiredError:
                continue  # e.g. after a pause: start a new session and carry on
    print(json.dumps(stats), flush=True)


def result_key(run: str, job: int) -> str:
    return f"fleet/{run}/results/{job:04d}"


def take_job(kv: Client, session: Session, run: str, job: int, worker: str) -> str:
    lock = Lock(session, f"fleet/{run}/locks/{job:04d}", value=worker)
    if not lock.try_acquire():
        return "busy"
    try:
        if kv.get(result_key(run, job)).kvs:
            return "skipped"  # someone finished it before we got the lock
        token = lock.token
        # Record the start: fenced, so a worker that lost the lock cannot record it.
        lock.fenced_put(f"fleet/{run}/started/{job:04d}/{token}", worker)
        answer = work(job)
        result = lock.fenced_txn(
            compare=[kv.cmp.version(result_key(run, job)) == 0],
            success=[
                kv.op.put(
                    result_key(run, job),
                    json.dumps({"by": worker, "token": token, "answer": answer}),
                ),
                kv.op.put(f"fleet/{run}/completed/{job:04d}/{token}", worker),
            ],
        )
        return "done" if result.succeeded else "skipped"
    except LockLostError:
        print(f"{worker}: lost the lock on job {job}: fenced write refused", file=sys.stderr)
        return "refused"
    finally:
        try:
            if lock.is_held or lock.lost.is_set():
                lock.release()
        except PnyxError:
            pass  # lost: the new holder's key is untouched (guarded release)


def pause_a_lock_holder(
    endpoints: str | None, run: str, workers: list[subprocess.Popen[str]], seconds: float
) -> None:
    """SIGSTOP, for ``seconds``, a worker in the middle of a job: it holds the job's lock
    and has recorded the start, but not the result yet."""
    with Client(endpoints) as kv:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for item in kv.get(f"fleet/{run}/started/", prefix=True).kvs:
                job = int(item.key.decode().split("/")[3])
                if kv.get(result_key(run, job)).kvs:
                    continue
                name = item.value.decode()
                victim = workers[int(name.rsplit("-", 1)[1])]
                victim.send_signal(signal.SIGSTOP)
                print(f"paused {name} (pid {victim.pid}) in the middle of job {job}")
                time.sleep(seconds)
                victim.send_signal(signal.SIGCONT)
                print(f"resumed {name} after {seconds}s")
                return
            time.sleep(0.01)


def per_job(items: tuple[KeyValue, ...]) -> dict[str, int]:
    """How many keys ``fleet/<run>/<kind>/<job>/<token>`` each job has."""
    counts: dict[str, int] = {}
    for item in items:
        job = item.key.decode().split("/")[3]
        counts[job] = counts.get(job, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--ttl", type=int, default=5, help="session TTL of each worker (s)")
    parser.add_argument("--endpoints", default=None, help="default: $PNYX_ENDPOINTS / pnyx up")
    parser.add_argument(
        "--pause-one",
        type=float,
        default=0.0,
        metavar="S",
        help="SIGSTOP one worker for S seconds mid-run",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()
    if args.worker:
        run_worker(args.endpoints, args.run, args.jobs, args.worker, args.ttl)
        return

    run = uuid.uuid4().hex[:8]
    print(f"run {run}: {args.workers} workers, {args.jobs} jobs (keys under fleet/{run}/)")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--run",
        run,
        "--jobs",
        str(args.jobs),
        "--ttl",
        str(args.ttl),
    ]
    if args.endpoints:
        command += ["--endpoints", args.endpoints]
    started = time.monotonic()
    workers = [
        subprocess.Popen([*command, "--worker", f"worker-{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(args.workers)
    ]
    if args.pause_one > 0:
        pause_a_lock_holder(args.endpoints, run, workers, args.pause_one)
    reports = []
    for process in workers:
        out, _ = process.communicate()
        if process.returncode != 0:
            sys.exit(f"a worker failed with exit code {process.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - started
    summarize(args.endpoints, run, args.jobs, reports, elapsed)


def summarize(
    endpoints: str | None, run: str, jobs: int, reports: list[dict[str, object]], elapsed: float
) -> None:
    with Client(endpoints) as kv:
        results = kv.get(f"fleet/{run}/results/", prefix=True).kvs
        starts = per_job(kv.get(f"fleet/{run}/started/", prefix=True).kvs)
        completions = per_job(kv.get(f"fleet/{run}/completed/", prefix=True).kvs)
    print(f"\n{'worker':10} {'done':>5} {'skipped':>8} {'busy':>5} {'refused':>8}")
    for report in sorted(reports, key=lambda r: str(r["worker"])):
        print(
            f"{report['worker']!s:10} {report['done']:>5} {report['skipped']:>8} "
            f"{report['busy']:>5} {report['refused']:>8}"
        )
    done = sum(int(str(r["done"])) for r in reports)
    refused = sum(int(str(r["refused"])) for r in reports)
    twice = [job for job, count in completions.items() if count > 1]
    rewritten = [item.key.decode() for item in results if item.version != 1]
    taken_over = [job for job, count in starts.items() if count > 1]
    print(
        f"\njobs: {jobs}, results: {len(results)}, done reports: {done}, "
        f"fenced writes refused: {refused}, {elapsed:.1f}s"
    )
    print(
        f"jobs completed more than once: {len(twice)}; results written more than once: "
        f"{len(rewritten)}; jobs taken over from a worker that lost its lock: "
        f"{len(taken_over)}"
    )
    ok = len(results) == jobs == done == len(completions) and not twice and not rewritten
    print("OK: every job processed exactly once" if ok else "FAILED: see above")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
