"""pnyx.core.kv."""
