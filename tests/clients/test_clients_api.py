"""The public face of pnyx.clients: the curated ``__all__``, the error tree re-export,
and the two clients having the same methods with the same signatures."""

from __future__ import annotations

import inspect
from pathlib import Path

import pnyx.clients
from pnyx.clients import AsyncClient, AsyncLeaseKeepAlive, AsyncWatch, Client, LeaseKeepAlive, Watch
from pnyx.core import errors

EXPECTED = {
    "AsyncClient",
    "AsyncLeaseKeepAlive",
    "AsyncWatch",
    "Client",
    "LeaseKeepAlive",
    "Watch",
    # results and the wire values they carry
    "CompactResult",
    "DeleteResult",
    "GetResult",
    "LeaseGrantResult",
    "LeaseKeepAliveResult",
    "LeaseListResult",
    "LeaseTimeToLiveResult",
    "MemberAddResult",
    "MemberListResult",
    "MemberPromoteResult",
    "MemberRemoveResult",
    "OpResult",
    "PutResult",
    "StatusResult",
    "TxnResult",
    "WatchBatch",
    "Compare",
    "Event",
    "EventType",
    "KeyValue",
    "Member",
    "SortOrder",
    "SortTarget",
    "WatchFilterType",
    # transaction builders
    "cmp",
    "op",
    # the error tree
    "PnyxError",
    "ClientError",
    "InvalidRequestError",
    "RequestTooLargeError",
    "CompactedError",
    "FutureRevisionError",
    "LeaseNotFoundError",
    "MemberError",
    "DuplicateRequestError",
    "UnavailableError",
    "NotLeaderError",
    "NoLeaderError",
    "ProposalDroppedError",
    "NoEndpointError",
    "TimeoutError",
    "SlowWatcherError",
    "StorageError",
    "CorruptionError",
    "RecipeError",
    "SessionExpiredError",
    "LockTimeoutError",
    "LockLostError",
    "NotLeaderAnymoreError",
}


def test_all_is_curated_and_importable() -> None:
    assert set(pnyx.clients.__all__) == EXPECTED
    assert len(pnyx.clients.__all__) == len(EXPECTED)
    for name in pnyx.clients.__all__:
        assert getattr(pnyx.clients, name) is not None


def test_every_error_class_of_the_tree_is_reexported_as_the_same_object() -> None:
    tree = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.PnyxError)
    }
    for name in tree:
        assert getattr(pnyx.clients, name) is getattr(errors, name)


def test_py_typed_ships_with_the_package() -> None:
    assert (Path(pnyx.clients.__file__).parent / "py.typed").exists()


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member) and not isinstance(member, type)
    }


def _parameters(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_sync_and_async_clients_have_the_same_methods_and_arguments() -> None:
    sync_methods = _public_methods(Client)
    async_methods = _public_methods(AsyncClient)
    assert set(sync_methods) == set(async_methods)
    for name, signature in sync_methods.items():
        assert _parameters(signature) == _parameters(async_methods[name]), name
        if name not in {"close", "watch", "lease_keep_alive"}:
            # Same result type, awaitable on the async side.
            assert signature.return_annotation == async_methods[name].return_annotation, name
            assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_sync_and_async_handles_offer_the_same_operations() -> None:
    def names(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    assert names(Watch) <= names(AsyncWatch)
    assert names(LeaseKeepAlive) <= names(AsyncLeaseKeepAlive)
