"""The ``pnyx`` command line (click). The top layer: nothing imports it."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """pnyx: a strongly consistent key-value store with coordination recipes."""
