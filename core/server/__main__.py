"""``python -m pnyx.core.server``: run one node (the same as ``pnyx node``).

This is an entry point: it configures logging (structlog JSON lines on stderr, with the
member name and Raft term on the node's events), installs signal handlers and maps
failures to exit codes. It must hold no logic of the node itself.

Once ``main`` returned, the node has closed its storage (everything durable) and its
sockets; the process then leaves with ``os._exit``: tearing down an interpreter that
holds millions of state-machine objects frees them one by one and took seconds, which
``pnyx up`` and supervisors counted against their stop timeout.
"""

from __future__ import annotations

import os
import sys

from pnyx.core.server.main import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
