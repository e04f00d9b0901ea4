"""pnyx.core.transport."""
