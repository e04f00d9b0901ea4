"""Key and range helpers, checked against a brute-force model over a small key space."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.core.wire.keys import (
    ALL_KEYS,
    OPEN_END,
    in_range,
    is_empty_range,
    prefix_range,
    prefix_range_end,
    range_contains,
    ranges_overlap,
)

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=300)

# Every non-empty key of up to three bytes over an alphabet with the edge bytes.
ALPHABET = (0x00, 0x01, 0x61, 0xFE, 0xFF)
UNIVERSE = [
    bytes(combination)
    for length in (1, 2, 3)
    for combination in itertools.product(ALPHABET, repeat=length)
]
keys = st.sampled_from(UNIVERSE)
range_ends = st.one_of(st.just(b""), st.just(OPEN_END), keys)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"ab", b"ac"),
        (b"a\xff", b"b"),
        (b"a\xff\xff", b"b"),
        (b"\x00", b"\x01"),
        (b"\xfe", b"\xff"),
        (b"\xff", OPEN_END),
        (b"\xff\xff", OPEN_END),
        (b"", OPEN_END),
    ],
)
def test_prefix_range_end_examples(prefix: bytes, end: bytes) -> None:
    assert prefix_range_end(prefix) == end


def test_prefix_range_of_nothing_is_every_key() -> None:
    assert prefix_range(b"") == ALL_KEYS
    assert prefix_range(b"ab") == (b"ab", b"ac")


@FAST
@given(prefix=st.binary(max_size=3).filter(bool), key=keys)
def test_prefix_range_holds_exactly_the_keys_with_the_prefix(prefix: bytes, key: bytes) -> None:
    start, end = prefix_range(prefix)
    assert in_range(key, start, end) == key.startswith(prefix)


def test_all_keys_range_holds_every_key() -> None:
    assert all(in_range(key, *ALL_KEYS) for key in UNIVERSE)


def test_in_range_conventions() -> None:
    assert in_range(b"a", b"a", b"")
    assert not in_range(b"ab", b"a", b"")
    assert in_range(b"a", b"a", b"b")
    assert not in_range(b"b", b"a", b"b")
    assert in_range(b"\xff\xff", b"a", OPEN_END)
    assert not in_range(b"0", b"a", OPEN_END)


def _members(start: bytes, end: bytes) -> set[bytes]:
    return {key for key in UNIVERSE if in_range(key, start, end)}


@FAST
@given(start=keys, end=range_ends)
def test_is_empty_range_matches_brute_force(start: bytes, end: bytes) -> None:
    # The start of a non-empty range always belongs to it, and starts come from UNIVERSE.
    assert is_empty_range(start, end) == (not _members(start, end))


@FAST
@given(a=keys, a_end=range_ends, b=keys, b_end=range_ends)
def test_ranges_overlap_matches_brute_force(a: bytes, a_end: bytes, b: bytes, b_end: bytes) -> None:
    # Exact: two ranges that meet share max(start_a, start_b), which is in UNIVERSE.
    expected = bool(_members(a, a_end) & _members(b, b_end))
    assert ranges_overlap(a, a_end, b, b_end) == expected
    assert ranges_overlap(b, b_end, a, a_end) == expected


@FAST
@given(outer=keys, outer_end=range_ends, inner=keys, inner_end=range_ends)
def test_range_contains_is_sound(
    outer: bytes, outer_end: bytes, inner: bytes, inner_end: bytes
) -> None:
    if range_contains(outer, outer_end, inner, inner_end):
        assert _members(inner, inner_end) <= _members(outer, outer_end)


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ((b"a", b"c"), (b"a", b""), True),
        ((b"a", b"c"), (b"b", b"c"), True),
        ((b"a", b"c"), (b"b", b"d"), False),
        ((b"a", b"c"), (b"0", b"b"), False),
        ((b"a", OPEN_END), (b"b", OPEN_END), True),
        ((b"a", b"c"), (b"b", OPEN_END), False),
        ((b"a", b""), (b"a", b"a\0"), True),
        ((b"a", b""), (b"a", b"b"), False),
        ((b"a", b""), (b"b", b""), False),
        ((b"x", b""), (b"b", b"a"), True),  # an empty range is in anything
    ],
)
def test_range_contains_examples(
    outer: tuple[bytes, bytes], inner: tuple[bytes, bytes], expected: bool
) -> None:
    assert range_contains(*outer, *inner) is expected
