"""The codec: every message type round-trips, and every malformed input becomes a typed
error (InvalidRequestError / RequestTooLargeError), never another exception."""

from __future__ import annotations

import contextlib
import enum
import types
import typing
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.core.errors import InvalidRequestError, PnyxError, RequestTooLargeError
from pnyx.core.wire import codec, messages
from pnyx.core.wire.codec import (
    PROTOCOL_VERSION,
    TAGS,
    DecodeError,
    decode_batch,
    decode_envelope,
    decode_message,
    encode_batch,
    encode_envelope,
    encode_message,
    encode_wire_batch,
    header_to_wire,
    message_from_wire,
    message_to_wire,
    response_to_wire,
)
from pnyx.core.wire.limits import Limits
from pnyx.core.wire.messages import Envelope

# Deterministic: the same examples on every run, no example database between runs.
FAST = settings(derandomize=True, database=None, deadline=None, max_examples=60)
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300)

TYPED_ERRORS = (InvalidRequestError, RequestTooLargeError)
UNION_TYPES = (types.UnionType, typing.Union)

# --------------------------------------------------------------------------- strategies
# Built from the attrs fields and type hints of ``messages``, so a new field or message is
# covered without touching this file.


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(messages))


def _is_op_union(hint: Any) -> bool:
    return typing.get_origin(hint) in UNION_TYPES and all(
        attrs.has(arg) for arg in typing.get_args(hint)
    )


def strategy_for(hint: Any, depth: int) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int:
        # Everything msgpack can carry.
        return st.integers(min_value=-(2**63), max_value=2**64 - 1)
    if hint is bool:
        return st.booleans()
    if hint is bytes:
        return st.binary(max_size=12)
    if hint is str:
        return st.text(max_size=8)
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return st.sampled_from(list(hint))
    if attrs.has(hint):
        return message_strategy(hint, depth)
    if origin in UNION_TYPES:
        if _is_op_union(hint):
            # Nested transactions only while depth remains, so examples stay finite.
            classes = [arg for arg in args if depth > 0 or not _holds_ops(arg)]
            return st.one_of([message_strategy(cls, depth - 1) for cls in classes])
        return st.one_of([strategy_for(arg, depth) for arg in args])
    if hint is type(None):
        return st.none()
    if origin is tuple:
        return st.lists(strategy_for(args[0], depth), max_size=3).map(tuple)
    raise AssertionError(f"no strategy for {hint!r}")


def _holds_ops(cls: type) -> bool:
    return any(_is_op_union(arg) for hint in _hints(cls).values() for arg in typing.get_args(hint))


def message_strategy(cls: type, depth: int = 2) -> st.SearchStrategy[Any]:
    hints = _hints(cls)
    return st.builds(
        cls, **{field.name: strategy_for(hints[field.name], depth) for field in attrs.fields(cls)}
    )


ALL_TAGGED = sorted(TAGS.values(), key=lambda cls: cls.__name__)
any_message = st.one_of([message_strategy(cls) for cls in ALL_TAGGED])
envelopes = st.builds(
    Envelope,
    request_id=st.integers(min_value=0, max_value=2**64 - 1),
    message=any_message,
    client_id=st.binary(max_size=16),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    # A sequence number needs a client id (checked even without validation).
).map(lambda envelope: envelope if envelope.client_id else attrs.evolve(envelope, seq=0))


def minimal(cls: type) -> Any:
    """A simple valid instance: required fields get a plain value of their type."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.default is not attrs.NOTHING:
            continue
        hint = hints[field.name]
        if attrs.has(hint):
            values[field.name] = minimal(hint)
        elif isinstance(hint, type) and issubclass(hint, enum.IntEnum):
            values[field.name] = next(iter(hint))
        elif typing.get_origin(hint) is tuple:
            values[field.name] = ("url",) if cls is messages.MemberAddRequest else ()
        else:
            values[field.name] = {int: 1, bool: False, bytes: b"k", str: "s"}[hint]
    return cls(**values)


# --------------------------------------------------------------------------- round trips


def test_every_message_class_has_a_tag_and_tags_are_unique() -> None:
    tagged = set(TAGS.values())
    assert len(tagged) == len(TAGS)
    assert set(messages.REQUEST_TYPES) | set(messages.RESPONSE_TYPES) == tagged
    nested = {messages.ResponseHeader, messages.KeyValue, messages.Event}
    nested |= {messages.Compare, messages.Member, messages.Envelope}
    every_attrs_class = {
        value for value in vars(messages).values() if isinstance(value, type) and attrs.has(value)
    }
    assert every_attrs_class == tagged | nested


@pytest.mark.parametrize("cls", ALL_TAGGED, ids=lambda cls: cls.__name__)
def test_round_trip_of_each_message_type(cls: type) -> None:
    @FAST
    @given(message=message_strategy(cls), request_id=st.integers(0, 2**64 - 1))
    def check(message: Any, request_id: int) -> None:
        envelope = Envelope(request_id, message, b"client", 7)
        (decoded,) = decode_batch(encode_batch([envelope]), validate=False)
        assert decoded == envelope
        assert type(decoded.message) is cls
        assert decode_message(encode_message(message)) == message
        assert message_from_wire(msgpack.unpackb(msgpack.packb(message_to_wire(message)))) == (
            message
        )

    check()


RESPONSES = [cls for cls in ALL_TAGGED if "header" in attrs.fields_dict(cls)]


@pytest.mark.parametrize("cls", RESPONSES, ids=lambda cls: cls.__name__)
def test_a_stamped_response_decodes_as_the_response_with_the_stamp(cls: type) -> None:
    @FAST
    @given(message=message_strategy(cls), request_id=st.integers(0, 2**64 - 1))
    def check(message: Any, request_id: int) -> None:
        stamp = messages.ResponseHeader(0, 7, 42, 3, 9)
        wire = response_to_wire(message, header_to_wire(7, 42, 3, 9))
        (decoded,) = decode_batch(encode_wire_batch([[request_id, *wire, b"", 0]]))
        assert decoded == Envelope(request_id, attrs.evolve(message, header=stamp))

    check()


def test_a_memo_encodes_a_shared_tuple_once_and_changes_nothing() -> None:
    kv = messages.KeyValue(b"k", 1, 2, 1, b"v")
    events = (messages.Event(messages.EventType.PUT, kv),)
    header = header_to_wire(1, 2, 3, 4)
    memo: dict[int, Any] = {}
    first = response_to_wire(
        messages.WatchResponse(messages.ResponseHeader(), 1, events=events), header, memo
    )
    second = response_to_wire(
        messages.WatchResponse(messages.ResponseHeader(), 2, events=events), header, memo
    )
    plain = response_to_wire(
        messages.WatchResponse(messages.ResponseHeader(), 2, events=events), header
    )
    assert second == plain and first[1][6] is second[1][6] and len(memo) == 1
    other = response_to_wire(messages.RangeResponse(messages.ResponseHeader(), (kv,)), header, memo)
    assert other == response_to_wire(
        messages.RangeResponse(messages.ResponseHeader(), (kv,)), header
    )


def test_every_response_class_can_be_stamped() -> None:
    assert {cls.__name__ for cls in RESPONSES} == {
        cls.__name__ for cls in ALL_TAGGED if cls.__name__.endswith("Response")
    }
    with pytest.raises(InvalidRequestError):
        response_to_wire(messages.PutRequest(b"k"), header_to_wire(1, 2, 3, 4))
    with pytest.raises(InvalidRequestError):
        encode_wire_batch([[1 << 70, 13, [[0, 0, 0, 0, 0], None], b"", 0]])


@FAST
@given(batch=st.lists(envelopes, max_size=8))
def test_batches_round_trip_in_order(batch: list[Envelope]) -> None:
    assert decode_batch(encode_batch(batch), validate=False) == batch


def test_enum_fields_come_back_as_enums_and_tuples_as_tuples() -> None:
    event = messages.Event(messages.EventType.DELETE, messages.KeyValue(b"a"))
    response = messages.WatchResponse(messages.ResponseHeader(), events=(event,))
    decoded = decode_message(encode_message(response))
    assert isinstance(decoded, messages.WatchResponse)
    assert type(decoded.events) is tuple
    assert decoded.events[0].type is messages.EventType.DELETE


def test_single_envelope_helpers_keep_exactly_once_fields() -> None:
    envelope = Envelope(5, messages.PutRequest(b"k", b"v"), b"client-1", 42)
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_wire_layout_is_the_documented_one() -> None:
    # The layout other implementations rely on; a change here needs a protocol bump.
    data = encode_batch([Envelope(9, messages.PutRequest(b"k", b"v", lease=3), b"c", 2)])
    assert msgpack.unpackb(data) == [
        PROTOCOL_VERSION,
        [[9, 12, [b"k", b"v", 3, False, False, False], b"c", 2]],
    ]


def test_encoding_something_that_is_not_a_message_is_a_typed_error() -> None:
    with pytest.raises(InvalidRequestError):
        encode_batch([Envelope(1, "not a message")])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        encode_batch([Envelope(1, messages.PutRequest(b"k", lease=2**70))])
    with pytest.raises(InvalidRequestError):
        message_to_wire(messages.KeyValue(b"k"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- whole message


def _packed(value: Any) -> bytes:
    return typing.cast(bytes, msgpack.packb(value, use_bin_type=True))


WHOLE_MESSAGE_INVALID = {
    "empty": b"",
    "never-used byte": b"\xc1",
    "truncated": _packed([1, [[1, 12, [b"k", b"v", 0, False, False, False], b"", 0]]])[:-3],
    "trailing bytes": _packed([1, []]) + b"\x00",
    "map": _packed({"version": 1}),
    "int": _packed(1),
    "empty array": _packed([]),
    "version only": _packed([1]),
    "version as str": _packed(["1", []]),
    "version as bool": _packed([True, []]),
    "old version": _packed([0, []]),
    "newer version": _packed([2, []]),
    "newer version, other shape": _packed([2, {}, 3]),
    "envelopes not an array": _packed([1, {}]),
    "three items": _packed([1, [], []]),
    "bad utf-8 in a str": b"\x92\x01\x91\x91\xa1\xff",
    "array header beyond the data": b"\x92\x01\xdd\xff\xff\xff\xff",
    "not bytes": "a str",
}


@pytest.mark.parametrize("data", WHOLE_MESSAGE_INVALID.values(), ids=WHOLE_MESSAGE_INVALID)
def test_malformed_messages_raise_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        decode_batch(data)


def test_wrong_version_error_names_both_versions() -> None:
    with pytest.raises(InvalidRequestError, match=r"version 2.*speaks 1"):
        decode_batch(_packed([2, []]))


def test_oversized_message_and_batch_raise_request_too_large() -> None:
    batch = [Envelope(i, messages.RangeRequest(b"key")) for i in range(20)]
    data = encode_batch(batch)
    with pytest.raises(RequestTooLargeError):
        decode_batch(data, Limits(max_message_bytes=len(data) - 1))
    assert len(decode_batch(data, Limits(max_message_bytes=len(data)))) == 20
    with pytest.raises(RequestTooLargeError):
        decode_batch(data, Limits(max_batch=19))
    assert len(decode_batch(data, Limits(max_batch=20))) == 20


def test_empty_batch_is_fine() -> None:
    assert decode_batch(encode_batch([])) == []


def test_memoryview_and_bytearray_are_accepted() -> None:
    data = encode_batch([Envelope(1, messages.StatusRequest())])
    assert decode_batch(memoryview(data)) == decode_batch(bytearray(data)) == decode_batch(data)


# --------------------------------------------------------------------------- per envelope

GOOD_BODY = [b"k", b"v", 0, False, False, False]


def _decode_one(envelope: Any, **kwargs: Any) -> Envelope | DecodeError:
    (result,) = decode_batch(_packed([PROTOCOL_VERSION, [envelope]]), **kwargs)
    return result


def _error_of(envelope: Any, **kwargs: Any) -> PnyxError:
    result = _decode_one(envelope, **kwargs)
    assert isinstance(result, DecodeError), result
    return result.error


def test_a_bad_envelope_does_not_spoil_its_neighbours() -> None:
    data = _packed(
        [
            PROTOCOL_VERSION,
            [
                [1, 12, GOOD_BODY, b"", 0],
                [2, 999, GOOD_BODY, b"", 0],  # unknown tag
                [3, 12, GOOD_BODY, b"", 0],
                [4, 12, [b"k", "v", 0, False, False, False], b"", 0],  # value is a str
                "not an envelope",
                [6, 12, [b"k" * 10_000, b"", 0, False, False, False], b"", 0],  # key too big
                [7, 12],  # too short
            ],
        ]
    )
    results = decode_batch(data)
    assert [type(result) for result in results] == [
        Envelope,
        DecodeError,
        Envelope,
        DecodeError,
        DecodeError,
        DecodeError,
        DecodeError,
    ]
    errors = typing.cast(list[DecodeError], [*results[1::2], results[4], results[6]])
    assert [error.request_id for error in errors] == [2, 4, 6, None, 7]
    assert isinstance(errors[0].error, InvalidRequestError)
    assert "tag" in errors[0].error.message
    assert "PutRequest.value" in errors[1].error.message
    assert isinstance(errors[2].error, RequestTooLargeError)


@pytest.mark.parametrize(
    ("envelope", "fragment"),
    [
        ([1, "12", GOOD_BODY, b"", 0], "tag"),
        ([1, True, GOOD_BODY, b"", 0], "tag"),
        ([1, 12, GOOD_BODY, "client", 0], "client_id"),
        ([1, 12, GOOD_BODY, b"", "1"], "seq"),
        ([1, 12, GOOD_BODY, b"", -1], "seq"),
        ([1, 12, GOOD_BODY, b"", 5], "client_id is empty"),
        ([1, 12, GOOD_BODY, b"", 0, 0], "envelope"),
        ([1, 12, GOOD_BODY[:-1], b"", 0], "PutRequest: expected an array of 6"),
        ([1, 12, {"key": b"k"}, b"", 0], "PutRequest: expected an array"),
    ],
)
def test_envelope_field_errors_name_the_field(envelope: list[Any], fragment: str) -> None:
    error = _error_of(envelope)
    assert isinstance(error, InvalidRequestError)
    assert fragment in error.message


def test_unreadable_request_id_gives_no_one_to_answer() -> None:
    result = _decode_one(["one", 12, GOOD_BODY, b"", 0])
    assert isinstance(result, DecodeError)
    assert result.request_id is None
    assert result.to_envelope() is None


def test_decode_error_becomes_an_error_reply_for_its_request() -> None:
    result = _decode_one([8, 999, [], b"", 0])
    assert isinstance(result, DecodeError)
    reply = result.to_envelope()
    assert reply is not None
    assert reply.request_id == 8
    assert isinstance(reply.message, messages.ErrorResponse)
    assert reply.message.code == InvalidRequestError.code


def test_oversized_client_id_is_refused() -> None:
    error = _error_of([1, 12, GOOD_BODY, b"c" * 65, 1])
    assert isinstance(error, RequestTooLargeError)


def test_a_response_tag_is_not_accepted_as_a_transaction_op() -> None:
    put_response = [13, [[0, 0, 0, 0, 0], None]]
    txn = [[], [put_response], []]
    error = _error_of([1, 16, txn, b"", 0])
    assert "TxnRequest.success[]" in error.message


def _wrong_values(hint: Any) -> list[Any]:
    """Values of the wrong wire type for a field of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int:
        return ["1", True, 1.5, None, b"1"]
    if hint is bool:
        return [1, 0, "true", None]
    if hint is bytes:
        return ["k", 1, None, [1]]
    if hint is str:
        return [b"s", 1, None]
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return [99, -1, "PUT", True, None]
    if attrs.has(hint):
        return ["x", 1, None, [], {}]
    if origin in UNION_TYPES and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        return [value for value in _wrong_values(inner) if value is not None]
    if origin in UNION_TYPES and set(args) == {bytes, int}:
        return ["x", True, None, 1.5]
    if _is_op_union(hint):
        # Not a pair, a tag unknown, and a response where a request op belongs.
        return ["x", 1, [], [999, []], [13, [[0, 0, 0, 0, 0], None]]]
    if origin is tuple:
        item = args[0]
        wrong_items = [value for value in _wrong_values(item) if value is not None][:2]
        return [5, "x", None, {}, *([value] for value in wrong_items)]
    raise AssertionError(f"no wrong values for {hint!r}")


def _field_cases() -> list[tuple[type, str, Any]]:
    cases = []
    for cls in ALL_TAGGED:
        hints = _hints(cls)
        for field in attrs.fields(cls):
            cases.extend((cls, field.name, value) for value in _wrong_values(hints[field.name]))
    return cases


@pytest.mark.parametrize(
    ("cls", "field", "wrong"),
    _field_cases(),
    ids=lambda value: value.__name__ if isinstance(value, type) else repr(value)[:20],
)
def test_a_wrong_field_type_names_the_field(cls: type, field: str, wrong: Any) -> None:
    body = message_to_wire(minimal(cls))[1]
    index = [f.name for f in attrs.fields(cls)].index(field)
    body[index] = wrong
    error = _error_of([1, codec.TAG_OF[cls], body, b"", 0], validate=False)
    assert isinstance(error, InvalidRequestError)
    assert f"{cls.__name__}.{field}" in error.message


def test_every_minimal_request_is_valid() -> None:
    # Guards the test above: its only error must be the field it broke.
    for cls in ALL_TAGGED:
        result = _decode_one([1, codec.TAG_OF[cls], message_to_wire(minimal(cls))[1], b"", 0])
        assert isinstance(result, Envelope), (cls, result)


def test_nested_value_errors_carry_the_path() -> None:
    header = [0, 0, 0, 0, 0]
    body = [header, [[b"k", 1, 1, 1, "not bytes", 0]], False, 1]
    error = _error_of([1, 11, body, b"", 0])
    assert "RangeResponse.kvs[] > KeyValue.value" in error.message


def test_compare_value_must_match_its_target_when_validated() -> None:
    by_value = [3, 0, b"k", 5, b""]  # VALUE target with an int
    error = _error_of([1, 16, [[by_value], [], []], b"", 0])
    assert isinstance(error, InvalidRequestError)


# --------------------------------------------------------------------------- limits via decode


def _put_envelope(key: bytes, value: bytes = b"") -> list[Any]:
    return [1, 12, [key, value, 0, False, False, False], b"", 0]


def test_decode_applies_request_limits_only_when_validating() -> None:
    limits = Limits(max_key_bytes=4, max_value_bytes=4)
    assert isinstance(_error_of(_put_envelope(b"12345"), limits=limits), RequestTooLargeError)
    assert isinstance(_error_of(_put_envelope(b"k", b"12345"), limits=limits), RequestTooLargeError)
    assert isinstance(_error_of(_put_envelope(b"")), InvalidRequestError)
    result = _decode_one(_put_envelope(b"12345"), limits=limits, validate=False)
    assert isinstance(result, Envelope)


def test_responses_are_not_validated() -> None:
    header = [0, 0, 0, 0, 0]
    body = [header, [[b"", -1, -1, -1, b"", -1]], False, 1]  # an empty key: fine in a reply
    assert isinstance(_decode_one([1, 11, body, b"", 0]), Envelope)


def test_bad_range_is_refused_at_decode() -> None:
    range_body = [b"b", b"a", 0, 0, 0, 0, False, False, False, 0, 0, 0, 0]
    assert isinstance(_error_of([1, 10, range_body, b"", 0]), InvalidRequestError)


def test_too_many_txn_ops_is_refused_at_decode() -> None:
    ops = [[10, [b"k", b"", 0, 0, 0, 0, False, False, False, 0, 0, 0, 0]]] * 129
    assert isinstance(_error_of([1, 16, [[], ops, []], b"", 0]), RequestTooLargeError)


def _nested_txn(levels: int) -> list[Any]:
    body: list[Any] = [[], [], []]
    for _ in range(levels - 1):
        body = [[], [[16, body]], []]
    return body


def test_nesting_is_bounded_by_the_limit_even_without_validation() -> None:
    limits = Limits(max_txn_depth=4)
    ok = _decode_one([1, 16, _nested_txn(4), b"", 0], limits=limits, validate=False)
    assert isinstance(ok, Envelope)
    error = _error_of([1, 16, _nested_txn(5), b"", 0], limits=limits, validate=False)
    assert isinstance(error, RequestTooLargeError)


def _raw_nested_txn(levels: int) -> bytes:
    """msgpack of ``_nested_txn(levels)``, written by hand: msgpack's packer refuses
    structures this deep, a hostile sender's need not."""
    level = b"\x93\x90\x91\x92\x10"  # [[], [[16, <inner>]], ...
    innermost = b"\x93\x90\x90\x90"  # [[], [], []]
    return level * (levels - 1) + innermost + b"\x90" * (levels - 1)  # ..., []]


def test_hand_written_nesting_matches_msgpack() -> None:
    assert _raw_nested_txn(3) == _packed(_nested_txn(3))


def test_hostile_nesting_never_escapes_as_recursion_error() -> None:
    for levels in (50, 300, 2000, 100_000):
        data = b"\x92\x01\x91\x95\x01\x10" + _raw_nested_txn(levels) + b"\xc4\x00\x00"
        try:
            results = decode_batch(data)
        except InvalidRequestError:
            continue  # msgpack's own depth limit refused the message as a whole
        (result,) = results
        assert isinstance(result, DecodeError)
        assert isinstance(result.error, RequestTooLargeError)


# --------------------------------------------------------------------------- fuzzing


def _check_outcome(data: Any, validate: bool = True) -> None:
    try:
        results = decode_batch(data, validate=validate)
    except TYPED_ERRORS:
        return
    for result in results:
        if isinstance(result, DecodeError):
            assert isinstance(result.error, TYPED_ERRORS)
            assert "cannot decode" not in result.error.message  # the bug catch-all
        else:
            assert isinstance(result, Envelope)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check_outcome(data)
    _check_outcome(b"\x92\x01" + data)  # past the version, into the envelopes


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=6),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@FUZZ
@given(value=msgpack_values)
def test_fuzz_random_msgpack_structures(value: Any) -> None:
    _check_outcome(_packed(value))
    _check_outcome(_packed([1, value]))
    _check_outcome(_packed([1, [value]]))


@FUZZ
@given(
    tag=st.sampled_from(sorted(TAGS)),
    body=msgpack_values,
    request_id=st.integers(min_value=0, max_value=10),
)
def test_fuzz_random_bodies_under_real_tags(tag: int, body: Any, request_id: int) -> None:
    _check_outcome(_packed([1, [[request_id, tag, body, b"", 0]]]))


def _mutate(value: Any, path: list[int], replacement: Any) -> Any:
    """``value`` with the node reached by following ``path`` replaced."""
    if not path or type(value) is not list or not value:
        return replacement
    index = path[0] % len(value)
    copy = list(value)
    copy[index] = _mutate(value[index], path[1:], replacement)
    return copy


@FUZZ
@given(
    message=any_message,
    path=st.lists(st.integers(min_value=0, max_value=20), max_size=6),
    replacement=msgpack_values,
    validate=st.booleans(),
)
def test_fuzz_mutated_valid_messages(
    message: Any, path: list[int], replacement: Any, validate: bool
) -> None:
    envelope = [3, codec.TAG_OF[type(message)], message_to_wire(message)[1], b"", 0]
    _check_outcome(_packed([1, [_mutate(envelope, path, replacement)]]), validate=validate)


@FUZZ
@given(data=st.binary(max_size=100))
def test_fuzz_single_message_helpers(data: bytes) -> None:
    for decode in (decode_message, decode_envelope):
        with contextlib.suppress(TYPED_ERRORS):
            decode(data)
    try:
        value = msgpack.unpackb(data)
    except Exception:  # not msgpack at all: message_from_wire takes decoded values
        return
    with contextlib.suppress(TYPED_ERRORS):
        message_from_wire(value)
