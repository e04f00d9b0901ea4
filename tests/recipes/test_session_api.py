"""The curated face of ``pnyx.recipes``: ``__all__`` lists exactly what it exports, every
recipe object offers both faces (``with`` and ``async with``), and recipes stay on the
client's public API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pnyx.recipes
from pnyx.recipes import Election, Leadership, Lock, Semaphore, Session
from pnyx.recipes.lock import HeldFaces

RECIPES = Path(pnyx.recipes.__file__).parent


def test_all_matches_the_public_names() -> None:
    public = {name for name in vars(pnyx.recipes) if not name.startswith("_")}
    modules = {name for name, value in vars(pnyx.recipes).items() if inspect.ismodule(value)}
    assert set(pnyx.recipes.__all__) == public - modules - {"annotations"}
    assert sorted(pnyx.recipes.__all__) == pnyx.recipes.__all__


def test_every_recipe_object_has_both_faces() -> None:
    for cls in (Session, Lock, Semaphore, HeldFaces, Election, Leadership):
        for method in ("__enter__", "__exit__", "__aenter__", "__aexit__"):
            assert callable(getattr(cls, method, None)), (cls, method)
    # RWLock's sides (``read``, ``write``) are HeldFaces objects.
    assert "HeldFaces" in inspect.getsource(pnyx.recipes.rwlock)
    # Every blocking method of a lock has an asyncio twin.
    for name in ("acquire", "try_acquire", "release", "fenced_put", "fenced_txn"):
        assert callable(getattr(HeldFaces, f"{name}_async"))
    for name in ("campaign", "resign", "leader", "candidates", "observe"):
        assert callable(getattr(Election, f"{name}_async"))


def test_my_recipes_import_only_clients_and_errors_of_pnyx() -> None:
    mine = ["_base", "session", "lock", "rwlock", "semaphore", "election"]
    for module in mine:
        tree = ast.parse((RECIPES / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pnyx"):
                allowed = ("pnyx.clients", "pnyx.recipes")
                assert node.module.startswith(allowed) or node.module == "pnyx.core", (
                    module,
                    node.module,
                )
                if node.module == "pnyx.core":
                    assert [alias.name for alias in node.names] == ["errors"]
                assert not node.module.startswith("pnyx.clients._"), (module, node.module)
