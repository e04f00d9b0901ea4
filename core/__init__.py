"""pnyx.core: everything a pnyx server needs.

Subpackages: ``raft`` (sans-I/O consensus), ``storage`` (WAL and snapshots), ``kv`` (the
replicated etcd-style state machine), ``wire`` (the protocol shared with clients),
``transport`` (ZeroMQ sockets), ``server`` (a node), ``sim`` (deterministic simulation).
"""
