"""The ``pnyx lock`` and ``pnyx elect`` commands (registered on the main group in cli.py).

::

    pnyx lock NAME [--ttl S] [--timeout S] -- CMD ...   run CMD while holding the lock
    pnyx lock NAME                                      hold it until Ctrl-C
    pnyx lock NAME --inspect [-w json]                  holder and waiters
    pnyx elect NAME PROPOSAL [--ttl S] [--timeout S]    campaign, then lead until Ctrl-C
    pnyx elect NAME --listen [-w json]                  print every leader change
    pnyx elect NAME --inspect [-w json]                 leader and candidates

``pnyx lock ... -- CMD`` starts CMD once the lock is held, with ``PNYX_LOCK_KEY`` and
``PNYX_FENCING_TOKEN`` (and ``PNYX_ENDPOINTS``) in its environment. If the lock is lost
(session expired, key deleted) CMD gets SIGTERM at once, then SIGKILL after ``--grace``
seconds. ``pnyx lock`` exits with CMD's exit code (128+N if CMD died of signal N);
SIGINT/SIGTERM sent to ``pnyx lock`` are passed on to CMD, and the lock is released when
CMD has exited. Exit codes of its own: 1 error, 3 not acquired within ``--timeout``,
4 lock / leadership lost while holding without CMD.

Command-line glue only: the logic lives in ``pnyx.recipes``, imported inside the
commands (the one place of ``pnyx.clients`` allowed to import recipes).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import click
import structlog

__all__ = ["elect", "lock"]

EXIT_TIMEOUT = 3
EXIT_LOST = 4

_ENDPOINTS_HELP = (
    "Comma-separated client URLs (host:port or tcp://host:port). "
    "Default: $PNYX_ENDPOINTS, else the endpoints of `pnyx up`."
)


def _quiet_logs() -> None:
    # The client logs connection events at debug level; these commands talk on stdout.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


class _StopRequestedError(Exception):
    """SIGTERM (or SIGINT) asked this command to stop."""


@contextmanager
def _stop_on_signals(handler: Callable[[int], None] | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM: call ``handler(signum)`` if given, else raise ``_StopRequestedError`` in
    the main thread (so blocking waits unwind and clean up their keys)."""

    def on_signal(signum: int, _frame: object) -> None:
        if handler is not None:
            handler(signum)
        else:
            raise _StopRequestedError(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _contender_dict(contender: Any) -> dict[str, object]:
    from pnyx.recipes.lock import inspect_line  # noqa: PLC0415

    return inspect_line([contender])[0]


def _echo_line(title: str, contenders: list[Any], write_out: str) -> None:
    for contender in contenders:
        item = _contender_dict(contender)
        click.echo(
            f"{title:8} {item['key']}  token {item['token']}  since {item['since']}  "
            f"lease {item['lease']}  ttl {item['ttl']}  value {item['value']!r}"
        )


def _global(endpoints: str | None, write_out: str | None) -> tuple[str | None, str, float]:
    """Endpoints, output format and timeout: this command's options, else the main
    group's (``pnyx --endpoints ... -w json --timeout S lock ...``)."""
    root = click.get_current_context().find_root().params
    endpoints = endpoints or root.get("endpoints") or None
    chosen = write_out or root.get("write_out") or "simple"
    timeout = float(root.get("timeout") or 5.0)
    return endpoints, ("json" if chosen == "json" else "simple"), timeout


def _session_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.option(
                "--endpoints",
                default=None,
                metavar="URLS",
                help=_ENDPOINTS_HELP
                + " (Also accepted before the command, as `pnyx --endpoints`.)",
            ),
            click.option(
                "--ttl",
                type=click.IntRange(1),
                default=10,
                show_default=True,
                help="Session lease TTL (seconds).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(0),
                default=None,
                help="Give up waiting after this many seconds (exit 3). Default: wait.",
            ),
            click.option("--inspect", is_flag=True, help="Show who holds and who waits; exit."),
            click.option(
                "-w",
                "--write-out",
                "write_out",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="Output format.",
            ),
        ]
    ):
        function = decorator(function)
    return function


# ---------------------------------------------------------------------------- lock


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_session_options
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when CMD must stop.",
)
def lock(  # noqa: PLR0917 - click passes every option as an argument
    name: str,
    command: tuple[str, ...],
    endpoints: str | None,
    ttl: int,
    timeout: float | None,
    inspect: bool,
    write_out: str | None,
    grace: float,
) -> None:
    """Hold the lock NAME: run `-- CMD ...` under it, or hold until Ctrl-C."""
    _quiet_logs()
    from pnyx.clients import Client, LockTimeoutError, PnyxError  # noqa: PLC0415
    from pnyx.recipes import Lock, Session  # noqa: PLC0415
    from pnyx.recipes.lock import inspect_line  # noqa: PLC0415

    endpoints, write_out, client_timeout = _global(endpoints, write_out)
    try:
        with (
            Client(endpoints, timeout=client_timeout) as kv,
            _stop_on_signals(),
            Session(kv, ttl=ttl) as session,
        ):
            the_lock = Lock(session, name, value=_who())
            if inspect:
                holder, waiters = the_lock.holder(), the_lock.waiters()
                if write_out == "json":
                    click.echo(
                        json.dumps(
                            {
                                "name": the_lock.name,
                                "holder": inspect_line([holder])[0] if holder else None,
                                "waiters": inspect_line(waiters),
                            }
                        )
                    )
                else:
                    if holder is None:
                        click.echo(f"{the_lock.name}: free")
                    _echo_line("holder", [holder] if holder else [], write_out)
                    _echo_line("waiting", waiters, write_out)
                return
            try:
                the_lock.acquire(timeout)
            except LockTimeoutError:
                click.echo(f"pnyx lock: {name}: not acquired within {timeout}s", err=True)
                sys.exit(EXIT_TIMEOUT)
            key = the_lock.key.decode("utf-8", errors="replace")
            if not command:
                click.echo(f"holding {key} (fencing token {the_lock.token}); Ctrl-C releases")
                code = _hold_until_stopped(the_lock.lost)
            else:
                env = dict(os.environ)
                env["PNYX_LOCK_KEY"] = key
                env["PNYX_FENCING_TOKEN"] = str(the_lock.token)
                env["PNYX_ENDPOINTS"] = ",".join(kv.endpoints)
                code = _run_under(list(command), env, the_lock.lost, grace)
            _release(the_lock)
            sys.exit(code)
    except PnyxError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None
    except _StopRequestedError:
        sys.exit(130)


def _who() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def _release(held: Any) -> None:
    from pnyx.clients import PnyxError  # noqa: PLC0415

    try:
        held.release()
    except PnyxError as error:
        click.echo(f"pnyx: release: {error}", err=True)


def _hold_until_stopped(lost: Any) -> int:
    """Wait for Ctrl-C/SIGTERM (0) or loss (EXIT_LOST)."""
    try:
        lost.wait()
    except _StopRequestedError:
        return 0
    click.echo(f"pnyx: lost: {lost.error}", err=True)
    return EXIT_LOST


def _run_under(command: list[str], env: dict[str, str], lost: Any, grace: float) -> int:
    """Run ``command``; SIGTERM it as soon as ``lost`` is raised (SIGKILL after
    ``grace``); pass our SIGINT/SIGTERM on. Its exit code (128+N for signal N)."""
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as error:
        raise click.ClickException(f"cannot run {command[0]}: {error}") from None
    stopping = threading.Event()

    def stop_child(signum: int) -> None:
        stopping.set()
        if child.poll() is None:
            with suppress(ProcessLookupError):
                child.send_signal(signum)

    def on_lost(error: object) -> None:
        # Runs on the recipes' thread: terminate at once, before the lease can expire.
        click.echo(f"pnyx: lock lost ({error}); terminating {command[0]}", err=True)
        stop_child(signal.SIGTERM)

    lost.add_callback(on_lost)
    with _stop_on_signals(stop_child):
        while True:
            try:
                code = child.wait(timeout=grace if stopping.is_set() else None)
                break
            except subprocess.TimeoutExpired:
                child.kill()
    return code if code >= 0 else 128 - code


# ---------------------------------------------------------------------------- elect


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.argument("proposal", required=False)
@_session_options
@click.option("--listen", is_flag=True, help="Print every leader change (and no-leader).")
def elect(  # noqa: PLR0917 - click passes every option as an argument
    name: str,
    proposal: str | None,
    endpoints: str | None,
    ttl: int,
    timeout: float | None,
    inspect: bool,
    write_out: str | None,
    listen: bool,
) -> None:
    """Campaign in election NAME with PROPOSAL and lead until Ctrl-C; or --listen,
    or --inspect."""
    _quiet_logs()
    from pnyx.clients import Client, LockTimeoutError, PnyxError  # noqa: PLC0415
    from pnyx.recipes import Election, Session  # noqa: PLC0415
    from pnyx.recipes.lock import inspect_line  # noqa: PLC0415

    if not (inspect or listen) and proposal is None:
        raise click.UsageError("give a PROPOSAL to campaign, or --listen, or --inspect")
    endpoints, write_out, client_timeout = _global(endpoints, write_out)
    try:
        with (
            Client(endpoints, timeout=client_timeout) as kv,
            _stop_on_signals(),
            Session(kv, ttl=ttl) as session,
        ):
            election = Election(session, name)
            if inspect:
                candidates = election.candidates()
                if write_out == "json":
                    line = inspect_line(candidates)
                    click.echo(
                        json.dumps(
                            {
                                "name": election.name,
                                "leader": line[0] if line else None,
                                "candidates": line,
                            }
                        )
                    )
                else:
                    if not candidates:
                        click.echo(f"{election.name}: no leader")
                    _echo_line("leader", candidates[:1], write_out)
                    _echo_line("waiting", candidates[1:], write_out)
                return
            if listen:
                _listen(election, write_out)
                return
            assert proposal is not None
            try:
                leadership = election.campaign(proposal, timeout)
            except LockTimeoutError:
                click.echo(f"pnyx elect: {name}: not elected within {timeout}s", err=True)
                sys.exit(EXIT_TIMEOUT)
            click.echo(
                f"leader of {election.name} (term {leadership.token}, "
                f"key {leadership.key.decode(errors='replace')}); Ctrl-C resigns"
            )
            code = _hold_until_stopped(leadership.lost)
            if code == 0:
                _release_leadership(leadership)
            sys.exit(code)
    except PnyxError as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None
    except _StopRequestedError:
        sys.exit(130)


def _release_leadership(leadership: Any) -> None:
    from pnyx.clients import PnyxError  # noqa: PLC0415

    try:
        leadership.resign()
    except PnyxError as error:
        click.echo(f"pnyx: resign: {error}", err=True)


def _listen(election: Any, write_out: str) -> None:
    with election.observe() as changes:
        try:
            for leader in changes:
                if write_out == "json":
                    item = _contender_dict(leader) if leader is not None else None
                    click.echo(json.dumps({"leader": item}))
                elif leader is None:
                    click.echo("no leader")
                else:
                    click.echo(
                        f"leader {leader.value.decode(errors='replace')!r}  term {leader.token}  "
                        f"key {leader.key.decode(errors='replace')}"
                    )
                sys.stdout.flush()
        except _StopRequestedError:
            return
