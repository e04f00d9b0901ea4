"""pnyx.core.server."""
