"""pnyx.recipes: coordination recipes built on the client's public API."""
