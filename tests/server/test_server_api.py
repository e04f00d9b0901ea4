"""The package faces of pnyx.core.server and pnyx.core.transport: ``__all__`` lists
exactly the public names each face imports, and every one resolves."""

from __future__ import annotations

import types

import pytest

import pnyx.core.server
import pnyx.core.transport


@pytest.mark.parametrize("package", [pnyx.core.server, pnyx.core.transport])
def test_all_matches_the_public_names_of_the_package_face(package: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(package.__all__) == public
    assert len(package.__all__) == len(set(package.__all__))
    assert all(hasattr(package, name) for name in package.__all__)
