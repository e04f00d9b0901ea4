"""pnyx.clients: the asyncio and blocking clients, and the ``pnyx`` command line."""
