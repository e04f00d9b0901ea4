"""The ``pnyx`` command line (click). The top layer: nothing imports it."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """pnyx: a strongly consistent key-value store with coordination recipes."""


# `pnyx node` and `pnyx up` live in their own module (owned by the server side).
from pnyx.clients.cli_server import node as _node_command  # noqa: E402
from pnyx.clients.cli_server import up as _up_command  # noqa: E402

main.add_command(_node_command, "node")
main.add_command(_up_command, "up")

# `pnyx bench ...` and `pnyx check perf` (clients/cli_bench.py).
from pnyx.clients.cli_bench import bench as _bench_command  # noqa: E402
from pnyx.clients.cli_bench import check as _check_command  # noqa: E402

main.add_command(_bench_command, "bench")
main.add_command(_check_command, "check")

# `pnyx lock` and `pnyx elect` (clients/cli_recipes.py).
from pnyx.clients.cli_recipes import elect as _elect_command  # noqa: E402
from pnyx.clients.cli_recipes import lock as _lock_command  # noqa: E402

main.add_command(_lock_command, "lock")
main.add_command(_elect_command, "elect")
