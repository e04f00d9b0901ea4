"""A service with leader election: several replicas campaign, one is active (it does the
work, every write fenced by its term), the others stand by; kill the active one and
another takes over.

Run against `make run`'s cluster (or set PNYX_ENDPOINTS):

    .venv/bin/python examples/leader_service.py --replicas 3 --kills 2

The parent starts the replicas, watches the election (``Election.observe``: every leader
change, and "no leader"), and every ``--kill-after`` seconds SIGKILLs the active replica
(``--graceful`` sends SIGTERM instead: the replica resigns at once, no TTL to wait
for). A killed replica's lease expires after ``--ttl`` seconds and the next candidate
in campaign order becomes active; a replica that learns it lost leadership stops its
work and campaigns again. At the end the parent prints the terms it saw (strictly
increasing) and checks, from the store, that every write of the service's "work log"
came from the leader of its term.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import structlog

from pnyx.clients import Client, NotLeaderAnymoreError, SessionExpiredError
from pnyx.recipes import Election, Leadership, Session


def quiet() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


class Terminated(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM: stop (resigning, and revoking the session, on the way out)."""


def run_replica(endpoints: str | None, service: str, replica: str, ttl: int) -> None:
    def on_term(_signum: int, _frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, on_term)
    try:
        with Client(endpoints) as kv:
            while True:
                try:
                    with Session(kv, ttl=ttl) as session:
                        election = Election(session, f"{service}/election")
                        print(f"{replica}: standing by", flush=True)
                        # Waits in line (FIFO among candidates) until elected; SIGTERM
                        # interrupts the wait and withdraws the candidacy.
                        leadership = election.campaign(replica)
                        serve(service, replica, leadership)
                except SessionExpiredError as error:
                    print(f"{replica}: session lost ({error}); campaigning again", flush=True)
    except Terminated:
        return


def serve(service: str, replica: str, leadership: Leadership) -> None:
    print(f"{replica}: ACTIVE (term {leadership.token})", flush=True)
    beat = 0
    try:
        with leadership:  # resigns on the way out (SIGTERM included)
            while True:
                beat += 1
                leadership.fenced_put(
                    f"{service}/work/{leadership.token:012d}-{beat:06d}",
                    json.dumps({"replica": replica, "term": leadership.token}),
                )
                if leadership.lost.wait(0.2):
                    raise NotLeaderAnymoreError(str(leadership.lost.error))
    except NotLeaderAnymoreError:
        print(f"{replica}: lost leadership (term {leadership.token})", flush=True)
    except Terminated:
        print(f"{replica}: resigned (term {leadership.token})", flush=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2, help="how many active replicas to kill")
    parser.add_argument("--kill-after", type=float, default=3.0, metavar="S")
    parser.add_argument("--ttl", type=int, default=3, help="session TTL of each replica (s)")
    parser.add_argument("--graceful", action="store_true", help="SIGTERM instead of SIGKILL")
    parser.add_argument("--endpoints", default=None, help="default: $PNYX_ENDPOINTS / pnyx up")
    parser.add_argument("--replica", help=argparse.SUPPRESS)
    parser.add_argument("--service", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()
    if args.replica:
        run_replica(args.endpoints, args.service, args.replica, args.ttl)
        return

    service = f"service-{uuid.uuid4().hex[:8]}"
    print(f"{service}: {args.replicas} replicas, killing the active one {args.kills} times")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--service",
        service,
        "--ttl",
        str(args.ttl),
    ]
    if args.endpoints:
        command += ["--endpoints", args.endpoints]
    replicas = {
        f"replica-{i}": subprocess.Popen([*command, "--replica", f"replica-{i}"])
        for i in range(args.replicas)
    }
    terms: list[tuple[int, str]] = []
    try:
        with Client(args.endpoints) as kv, Session(kv, ttl=10) as session:
            observer = Election(session, f"{service}/election").observe()
            kills = 0
            next_kill = None
            for leader in observer:
                if leader is None:
                    print("observer: no leader")
                    continue
                name = leader.value.decode()
                terms.append((leader.token, name))
                print(f"observer: leader {name} (term {leader.token})")
                if kills == args.kills:
                    time.sleep(args.kill_after)
                    break
                next_kill = name
                time.sleep(args.kill_after)
                victim = replicas[next_kill]
                sent = signal.SIGTERM if args.graceful else signal.SIGKILL
                print(f"observer: sending {sent.name} to {next_kill} (pid {victim.pid})")
                victim.send_signal(sent)
                kills += 1
            observer.close()
            check(kv, service, terms)
    finally:
        for process in replicas.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in replicas.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def check(kv: Client, service: str, terms: list[tuple[int, str]]) -> None:
    tokens = [token for token, _ in terms]
    increasing = all(a < b for a, b in itertools.pairwise(tokens))
    leader_of = dict(terms)
    writes = kv.get(f"{service}/work/", prefix=True).kvs
    records = [json.loads(item.value) for item in writes]
    # A fenced write carries its term; only that term's leader could have made it.
    wrong = [r for r in records if leader_of.get(r["term"], r["replica"]) != r["replica"]]
    per_term: dict[int, int] = {}
    for record in records:
        term = record["term"]
        per_term[term] = per_term.get(term, 0) + 1
    print("\nterm      leader       fenced writes")
    for token, name in terms:
        print(f"{token:<9} {name:12} {per_term.get(token, 0)}")
    print(
        f"terms strictly increasing: {increasing}; "
        f"writes not from their term's leader: {len(wrong)}"
    )
    ok = increasing and not wrong and len(terms) >= 2
    print("OK: one active replica per term, failover on kill" if ok else "FAILED: see above")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
