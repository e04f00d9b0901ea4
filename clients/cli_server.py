"""The ``pnyx node`` and ``pnyx up`` commands (registered on the main group in cli.py).

- ``pnyx node ...`` runs one node in the foreground. It replaces this process with
  ``python -m pnyx.core.server ...`` (same pid, same signals), so the client package
  never imports the server and the node's options are defined once, by the server
  (``pnyx node --help`` lists them).
- ``pnyx up`` starts a local cluster of N node processes (node i: client port
  ``base+i``, peer port ``base+100+i``, data in ``DIR/n<i>``, log in ``DIR/n<i>.log``),
  waits until it has a leader, prints the endpoints and stays in the foreground;
  Ctrl-C or SIGTERM stops every node it started, by pid (SIGTERM, then SIGKILL after a
  grace period). Running it again on the same data directory resumes the cluster.

This module holds command-line glue only.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import click

__all__ = ["node", "up"]


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def node(args: tuple[str, ...]) -> None:
    """Run one node in the foreground (see `pnyx node --help` for its options)."""
    command = [sys.executable, "-m", "pnyx.core.server", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


@click.command()
@click.option("--nodes", type=click.IntRange(1, 99), default=3, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="./pnyx-data",
    show_default=True,
    help="One subdirectory and one log file per node; reused on restart.",
)
@click.option("--base-port", type=click.IntRange(1, 65000), default=7100, show_default=True)
@click.option("--startup-timeout", type=float, default=30.0, show_default=True)
@click.option(
    "--node-arg",
    "node_args",
    multiple=True,
    help="Extra option passed to every node, e.g. --node-arg=--snapshot-count=1000.",
)
def up(
    nodes: int,
    data_dir: str,
    base_port: int,
    startup_timeout: float,
    node_args: tuple[str, ...],
) -> None:
    """Start a local cluster and keep it running until Ctrl-C."""
    # Imported here: the harness (and pytest, if installed) only when `up` runs.
    from pnyx.clients.testing import ClusterError, LocalCluster  # noqa: PLC0415

    cluster = LocalCluster(
        nodes,
        directory=os.path.abspath(data_dir),
        base_port=base_port,
        extra_args=node_args,
        startup_timeout=startup_timeout,
        keep_data=True,
        test_admin=False,
    )
    stop = {"requested": False}

    def _request_stop(_signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    try:
        cluster.start(attempts=1)
    except ClusterError as error:
        cluster.mark_failed()
        cluster.close()
        raise click.ClickException(str(error)) from None
    try:
        leader = cluster.leader()
        click.echo(f"pnyx: {nodes} node(s) up, leader {leader}, data in {cluster.directory}")
        for name, process in cluster.nodes.items():
            click.echo(
                f"  {name}  client {process.client_url}  peer {process.peer_url}  "
                f"pid {process.pid}  log {process.log_path}"
            )
        click.echo(f"export PNYX_ENDPOINTS={','.join(cluster.endpoints)}")
        click.echo("Press Ctrl-C to stop.")
        reported: set[str] = set()
        while not stop["requested"]:
            for name, process in cluster.nodes.items():
                if not process.running and name not in reported:
                    reported.add(name)
                    code = process.process.returncode if process.process else None
                    click.echo(f"pnyx: node {name} exited ({code}); see {process.log_path}")
            time.sleep(0.2)
        click.echo("pnyx: stopping...")
        stopped = cluster.stop_all()
        # Ctrl-C reaches the whole process group: nodes may have exited on their own
        # before stop_all looked; report every node's exit code.
        codes = {
            name: stopped.get(name, process.process.returncode if process.process else None)
            for name, process in cluster.nodes.items()
        }
        click.echo("pnyx: stopped " + ", ".join(f"{n}={c}" for n, c in codes.items()))
    finally:
        cluster.close()
