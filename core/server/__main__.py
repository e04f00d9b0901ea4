"""``python -m pnyx.core.server``: run one node (the same as ``pnyx node``).

This is an entry point: it configures logging (structlog JSON lines on stderr, with the
member name and Raft term on the node's events), installs signal handlers and maps
failures to exit codes. It must hold no logic of the node itself.
"""

from __future__ import annotations

import sys

from pnyx.core.server.main import main

if __name__ == "__main__":
    sys.exit(main())
