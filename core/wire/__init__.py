"""pnyx.core.wire."""
