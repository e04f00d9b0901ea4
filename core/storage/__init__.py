"""pnyx.core.storage."""
