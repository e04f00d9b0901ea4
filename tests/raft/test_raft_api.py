"""The curated public face of pnyx.core.raft."""

from __future__ import annotations

import types

from pnyx.core import raft


def test_package_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(raft).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(raft.__all__) == public
    assert {"RaftNode", "RaftStatus", "encode_message", "decode_message"} <= public
