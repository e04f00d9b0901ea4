"""Readable builders for transactions: ``cmp`` for compares and ``op`` for operations.

::

    kv.txn(
        compare=[kv.cmp.version("jobs/1") == 0, kv.cmp.value("mode") != "off"],
        success=[kv.op.put("jobs/1", "claimed", lease=lease.id)],
        failure=[kv.op.get("jobs/1")],
    )

``cmp.version``/``create``/``mod``/``lease`` compare an int (the key's version, create
revision, mod revision, lease id); ``cmp.value`` compares bytes (``str`` is UTF-8
encoded). Only ``==``, ``!=``, ``<`` and ``>`` exist, as in etcd; ``<=``/``>=`` raise.
With ``prefix=True`` or ``range_end`` every key in the range must satisfy the compare.

Both namespaces are also attributes of every client (``kv.cmp``, ``kv.op``). They build
wire values (``Compare`` and requests) and never do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from pnyx.clients import _core
from pnyx.clients._core import KeyLike
from pnyx.core import errors
from pnyx.core.wire import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
)

__all__ = ["CompareBuilder", "cmp", "op"]


class CompareBuilder:
    """One side of a compare: ``<target> of <key or range>``, completed by an operator.

    The operators return a wire ``Compare``, not a bool, so this class is not hashable
    and must not be used in ``if``.
    """

    __slots__ = ("_key", "_range_end", "_target")

    def __init__(self, target: CompareTarget, key: bytes, range_end: bytes) -> None:
        self._target = target
        self._key = key
        self._range_end = range_end

    def _compare(self, result: CompareResult, value: object) -> Compare:
        wire_value: bytes | int
        if self._target == CompareTarget.VALUE:
            if not isinstance(value, str | bytes | bytearray | memoryview):
                raise errors.InvalidRequestError(
                    f"cmp.value compares bytes or str, got {type(value).__name__}"
                )
            wire_value = _core.as_bytes(value, "compare value")
        else:
            if type(value) is not int:
                raise errors.InvalidRequestError(
                    f"cmp.{self._target.name.lower()} compares an int, got {type(value).__name__}"
                )
            wire_value = value
        return Compare(self._target, result, self._key, wire_value, self._range_end)

    def __eq__(self, value: object) -> Compare:  # type: ignore[override]
        return self._compare(CompareResult.EQUAL, value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]
        return self._compare(CompareResult.NOT_EQUAL, value)

    def __lt__(self, value: object) -> Compare:
        return self._compare(CompareResult.LESS, value)

    def __gt__(self, value: object) -> Compare:
        return self._compare(CompareResult.GREATER, value)

    def __le__(self, value: object) -> Compare:
        raise errors.InvalidRequestError("compares support ==, !=, < and > only (as etcd)")

    def __ge__(self, value: object) -> Compare:
        raise errors.InvalidRequestError("compares support ==, !=, < and > only (as etcd)")

    __hash__ = None  # type: ignore[assignment]  # == builds a Compare, so no hashing

    def __bool__(self) -> bool:
        raise errors.InvalidRequestError(
            "a compare is not a bool: pass it in txn(compare=[...]), e.g. cmp.version(key) == 0"
        )

    def __repr__(self) -> str:
        return f"cmp.{self._target.name.lower()}({self._key!r})"


class _Compares:
    """The ``cmp`` namespace."""

    __slots__ = ()

    @staticmethod
    def _builder(
        target: CompareTarget, key: KeyLike, prefix: bool, range_end: KeyLike | None
    ) -> CompareBuilder:
        start, end = _core.key_range(key, prefix, range_end)
        return CompareBuilder(target, start, end)

    def value(
        self, key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None
    ) -> CompareBuilder:
        """The key's value (bytes)."""
        return self._builder(CompareTarget.VALUE, key, prefix, range_end)

    def version(
        self, key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None
    ) -> CompareBuilder:
        """Puts since the key was created; 0 if it does not exist."""
        return self._builder(CompareTarget.VERSION, key, prefix, range_end)

    def create(
        self, key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None
    ) -> CompareBuilder:
        """The revision that created the key; 0 if it does not exist."""
        return self._builder(CompareTarget.CREATE, key, prefix, range_end)

    def mod(
        self, key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None
    ) -> CompareBuilder:
        """The revision of the key's last change; 0 if it does not exist."""
        return self._builder(CompareTarget.MOD, key, prefix, range_end)

    def lease(
        self, key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None
    ) -> CompareBuilder:
        """The id of the lease attached to the key; 0 for none."""
        return self._builder(CompareTarget.LEASE, key, prefix, range_end)


class _Ops:
    """The ``op`` namespace: the operations a transaction branch may run. Arguments
    mean what they mean for the client methods of the same name."""

    __slots__ = ()

    def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> PutRequest:
        return _core.put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )

    def get(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        range_end: KeyLike | None = None,
        revision: int = 0,
        limit: int = 0,
        sort_order: SortOrder | str = SortOrder.NONE,
        sort_target: SortTarget | str = SortTarget.KEY,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeRequest:
        return _core.range_request(
            key,
            prefix=prefix,
            range_end=range_end,
            revision=revision,
            limit=limit,
            sort_order=sort_order,
            sort_target=sort_target,
            keys_only=keys_only,
            count_only=count_only,
        )

    def delete(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        range_end: KeyLike | None = None,
        prev_kv: bool = False,
    ) -> DeleteRangeRequest:
        return _core.delete_request(key, prefix=prefix, range_end=range_end, prev_kv=prev_kv)

    def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[RequestOp] = (),
        failure: Iterable[RequestOp] = (),
    ) -> TxnRequest:
        """A nested transaction."""
        return _core.txn_request(compare, success, failure)


cmp = _Compares()
op = _Ops()
