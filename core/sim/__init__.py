"""pnyx.core.sim."""
