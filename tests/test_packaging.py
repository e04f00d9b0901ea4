import importlib


def test_packages_import_under_their_pnyx_names() -> None:
    for name in ("pnyx.core", "pnyx.core.raft", "pnyx.clients", "pnyx.recipes"):
        assert importlib.import_module(name).__name__ == name
