"""Key and range helpers shared by clients and server, with etcd v3's conventions.

A range is ``(key, range_end)``:

* ``range_end == b""``: the single key ``key``;
* ``range_end == b"\\0"`` (``OPEN_END``): every key ``>= key``;
* otherwise the half-open interval ``[key, range_end)`` (empty if ``range_end <= key``).

A prefix ``p`` is the range ``[p, prefix_range_end(p))``; the empty prefix is every key,
``(b"\\0", b"\\0")``, since keys are never empty.

Pure functions on bytes only; this module must never import anything of pnyx.
"""

from __future__ import annotations

OPEN_END = b"\0"
"""``range_end`` meaning "no upper bound"."""

ALL_KEYS = (b"\0", b"\0")
"""``(key, range_end)`` of the range holding every key."""


def prefix_range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``: drop trailing
    ``0xff`` bytes and increment the last remaining one. A prefix with no such key (empty,
    or all ``0xff``) gets ``OPEN_END``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return OPEN_END
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """``(key, range_end)`` of every key starting with ``prefix`` (all keys for ``b""``)."""
    if not prefix:
        return ALL_KEYS
    return prefix, prefix_range_end(prefix)


def in_range(key: bytes, start: bytes, range_end: bytes) -> bool:
    """Whether ``key`` belongs to the range ``(start, range_end)``."""
    if not range_end:
        return key == start
    if range_end == OPEN_END:
        return key >= start
    return start <= key < range_end


def is_empty_range(start: bytes, range_end: bytes) -> bool:
    """Whether the range can hold no key at all (``[a, b)`` with ``b <= a``)."""
    return bool(range_end) and range_end != OPEN_END and range_end <= start


def ranges_overlap(start_a: bytes, range_end_a: bytes, start_b: bytes, range_end_b: bytes) -> bool:
    """Whether some key belongs to both ranges."""
    if is_empty_range(start_a, range_end_a) or is_empty_range(start_b, range_end_b):
        return False
    if not range_end_a:
        return in_range(start_a, start_b, range_end_b)
    if not range_end_b:
        return in_range(start_b, start_a, range_end_a)
    # Two intervals [a, ea) and [b, eb) meet iff each starts before the other ends.
    a_before_b_ends = range_end_b == OPEN_END or start_a < range_end_b
    b_before_a_ends = range_end_a == OPEN_END or start_b < range_end_a
    return a_before_b_ends and b_before_a_ends


def range_contains(
    outer_start: bytes, outer_end: bytes, inner_start: bytes, inner_end: bytes
) -> bool:
    """Whether every key of the inner range belongs to the outer range (an empty inner
    range is contained in anything)."""
    if is_empty_range(inner_start, inner_end):
        return True
    if not inner_end:
        return in_range(inner_start, outer_start, outer_end)
    if not outer_end:
        # A single key holds a non-empty interval only if the interval is that one key.
        return inner_start == outer_start and inner_end == outer_start + b"\0"
    if inner_start < outer_start:
        return False
    if outer_end == OPEN_END:
        return True
    return inner_end != OPEN_END and inner_end <= outer_end
