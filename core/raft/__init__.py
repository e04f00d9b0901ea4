"""pnyx.core.raft: a sans-I/O Raft core (no sockets, files, clocks, threads or global
randomness). See ``types.Ready`` for the contract with the application."""
