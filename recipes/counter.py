"""``Counter``: an integer in one key, changed atomically by many clients at once.

::

    with Client() as kv, Counter(kv, "stats/visits") as visits:
        visits.add(1)                        # -> the new value
        visits.compare_and_set(5, 0)         # -> True if it was 5 (and is now 0)
        visits.get()

    async with AsyncClient() as kv, Counter(kv, "stats/visits") as visits:
        await visits.add_async(1)

The value is stored as decimal ASCII (``b"42"``); a missing key counts as ``initial``
(default 0). Every change is a compare-and-swap on the key's mod revision: read, compute,
``txn(mod == read's mod revision) -> put``; if another client changed the key in between,
the failure branch returns the fresh value in the same round trip and the loop tries
again, until the call's ``timeout`` (then ``errors.TimeoutError``). A value that is not an
integer raises ``InvalidRequestError`` (nothing is overwritten).

What happens on:

- **Session loss**: a counter needs no session (its key has no lease) and is not affected.
- **Client crash** mid-``add``: the write was applied once or not at all; nothing is
  left half-done.
- **Leader failover / reconnects**: the client retries its requests exactly-once (the
  same sequence number), so a retried ``add`` is never applied twice; the CAS loop goes
  on with the next read.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from pnyx.clients import AsyncClient, Client, GetResult, KeyValue, cmp, op
from pnyx.core import errors
from pnyx.recipes._base import deadline_after, remaining
from pnyx.recipes._source import Source
from pnyx.recipes.session import Session

__all__ = ["Counter"]


def parse_count(kv: KeyValue | None, initial: int) -> int:
    """The counter's value from its key (``initial`` if absent)."""
    if kv is None:
        return initial
    try:
        return int(kv.value.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise errors.InvalidRequestError(
            f"counter {kv.key!r} holds {kv.value[:40]!r}, not an integer"
        ) from None


def _first(result: object) -> KeyValue | None:
    if isinstance(result, GetResult) and result.kvs:
        return result.kvs[0]
    return None


class Counter:
    """An atomic integer counter in the key ``key``; see the module docstring.

    ``source``: a ``Client``, ``AsyncClient`` or ``Session``. ``initial``: the value of a
    missing key. ``timeout``: default bound of each call, CAS retries included (None:
    the client's timeout).
    """

    def __init__(
        self,
        source: Client | AsyncClient | Session,
        key: str | bytes,
        *,
        initial: int = 0,
        timeout: float | None = None,
    ) -> None:
        self.key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if not self.key:
            raise errors.InvalidRequestError("a counter key must not be empty")
        self.initial = initial
        self.timeout = timeout
        self._source = Source(source)

    def __repr__(self) -> str:
        return f"<Counter {self.key!r}>"

    # ------------------------------------------------------------------ blocking face

    def get(self) -> int:
        """The current value (a linearizable read)."""
        return self._source.runtime.call(self._get())

    def add(self, delta: int = 1, *, timeout: float | None = None) -> int:
        """Add ``delta`` atomically; returns the value after this addition."""
        return self._source.runtime.call(self._add(delta, timeout))

    def set(self, value: int) -> None:
        """Overwrite the value (no compare)."""
        self._source.runtime.call(self._set(value))

    def compare_and_set(self, expected: int, value: int, *, timeout: float | None = None) -> bool:
        """Set ``value`` if the counter is ``expected`` now; True if it was set."""
        return self._source.runtime.call(self._compare_and_set(expected, value, timeout))

    def close(self) -> None:
        """Give back the client's runtime (a session's stays open)."""
        self._source.close()

    def __enter__(self) -> Counter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ asyncio face

    async def get_async(self) -> int:
        return await self._source.runtime.call_async(self._get())

    async def add_async(self, delta: int = 1, *, timeout: float | None = None) -> int:
        return await self._source.runtime.call_async(self._add(delta, timeout))

    async def set_async(self, value: int) -> None:
        await self._source.runtime.call_async(self._set(value))

    async def compare_and_set_async(
        self, expected: int, value: int, *, timeout: float | None = None
    ) -> bool:
        return await self._source.runtime.call_async(
            self._compare_and_set(expected, value, timeout)
        )

    async def close_async(self) -> None:
        await self._source.close_async()

    async def __aenter__(self) -> Counter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    # ------------------------------------------------------------------ logic

    def _deadline(self, timeout: float | None) -> float:
        chosen = timeout if timeout is not None else self.timeout
        if chosen is None:
            chosen = self._source.client.timeout
        return deadline_after(chosen)

    async def _get(self) -> int:
        return parse_count(_first(await self._source.client.get(self.key)), self.initial)

    async def _set(self, value: int) -> None:
        await self._source.client.put(self.key, str(int(value)))

    async def _compare_and_set(self, expected: int, value: int, timeout: float | None) -> bool:
        return await self._update(lambda current: value if current == expected else None, timeout)

    async def _add(self, delta: int, timeout: float | None) -> int:
        box: list[int] = []

        def plus(current: int) -> int:
            box[:] = [current + delta]
            return current + delta

        await self._update(plus, timeout)
        return box[0]

    async def _update(self, change: Callable[[int], int | None], timeout: float | None) -> bool:
        """The CAS loop: ``change(current)`` gives the new value, or None to leave it.
        True if a value was written."""
        kv = self._source.client
        deadline = self._deadline(timeout)
        current = _first(await kv.get(self.key, timeout=max(0.01, remaining(deadline))))
        while True:
            new = change(parse_count(current, self.initial))
            if new is None:
                return False
            # mod == 0 also means "absent": a missing key is created only if still absent.
            guard = cmp.mod(self.key) == (current.mod_revision if current is not None else 0)
            left = remaining(deadline)
            if left <= 0:
                raise errors.TimeoutError(f"counter {self.key!r}: too much contention")
            result = await kv.txn(
                compare=[guard],
                success=[op.put(self.key, str(int(new)))],
                failure=[op.get(self.key)],
                timeout=left,
            )
            if result.succeeded:
                return True
            current = _first(result.responses[0])
