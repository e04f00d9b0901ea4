"""The public face of pnyx.core.wire and its import discipline."""

from __future__ import annotations

import ast
import pathlib

from pnyx.core import wire
from pnyx.core.wire import codec, keys, limits, messages

WIRE_DIR = pathlib.Path(wire.__file__).parent


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(wire) if not name.startswith("_")}
    submodules = {"codec", "keys", "limits", "messages", "annotations"}
    assert set(wire.__all__) == public - submodules
    assert all(hasattr(wire, name) for name in wire.__all__)


def test_every_public_name_of_the_modules_is_exported() -> None:
    for module in (codec, keys, limits, messages):
        for name, value in vars(module).items():
            if name.startswith("_") or (name.isupper() and name in {"KIB", "MIB"}):
                continue
            if getattr(value, "__module__", module.__name__) != module.__name__:
                continue  # imported from elsewhere
            if callable(value) or isinstance(value, type):
                assert name in wire.__all__, f"{module.__name__}.{name}"


def test_wire_imports_only_errors_attrs_msgpack_and_the_stdlib() -> None:
    allowed_pnyx = {"pnyx.core.errors", "pnyx.core", "pnyx.core.wire"}
    for path in WIRE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("pnyx"):
                    assert name in allowed_pnyx or name.startswith("pnyx.core.wire."), (
                        path.name,
                        name,
                    )
                else:
                    assert name.split(".")[0] not in {"pickle", "zmq", "structlog"}, (
                        path.name,
                        name,
                    )
