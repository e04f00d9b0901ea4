"""The peer-message codec: exact round trips, and InvalidRequestError for anything else."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pnyx.core.errors import InvalidRequestError
from pnyx.core.raft.codec import (
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)
from pnyx.core.raft.types import (
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HeartbeatRequest,
    HeartbeatResponse,
    Message,
    ProposalForward,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    SnapshotMetadata,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
small = st.integers(min_value=0, max_value=1000)
ids = st.integers(min_value=1, max_value=1 << 20)
blobs = st.binary(max_size=64)
entries = st.lists(
    st.builds(Entry, term=u64, index=u64, type=st.sampled_from(EntryType), data=blobs),
    max_size=8,
).map(tuple)
conf_states = st.builds(
    ConfState, voters=st.frozensets(ids, max_size=7), learners=st.frozensets(ids, max_size=3)
)
snapshots = st.builds(
    Snapshot,
    metadata=st.builds(SnapshotMetadata, index=u64, term=u64, conf_state=conf_states),
    data=blobs,
)

MESSAGES: dict[type, st.SearchStrategy[Message]] = {
    VoteRequest: st.builds(
        VoteRequest, ids, ids, u64, u64, u64, pre_vote=st.booleans(), leader_transfer=st.booleans()
    ),
    VoteResponse: st.builds(VoteResponse, ids, ids, u64, st.booleans(), pre_vote=st.booleans()),
    AppendRequest: st.builds(AppendRequest, ids, ids, u64, u64, u64, entries, u64),
    AppendResponse: st.builds(
        AppendResponse,
        ids,
        ids,
        u64,
        u64,
        reject=st.booleans(),
        reject_hint=u64,
        hint_term=u64,
        eager=st.booleans(),
    ),
    HeartbeatRequest: st.builds(HeartbeatRequest, ids, ids, u64, u64, context=blobs),
    HeartbeatResponse: st.builds(
        HeartbeatResponse, ids, ids, u64, context=blobs, eager=st.booleans()
    ),
    SnapshotRequest: st.builds(SnapshotRequest, ids, ids, u64, snapshots),
    TimeoutNow: st.builds(TimeoutNow, ids, ids, u64),
    ProposalForward: st.builds(ProposalForward, ids, ids, u64, entries),
    ReadIndexRequest: st.builds(ReadIndexRequest, ids, ids, u64, blobs),
    ReadIndexResponse: st.builds(ReadIndexResponse, ids, ids, u64, u64, blobs),
}


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(Message.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", list(MESSAGES), ids=lambda k: k.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_codec_round_trips_every_message_type(kind: type, data: st.DataObject) -> None:
    message = data.draw(MESSAGES[kind])
    decoded = decode_message(encode_message(message))
    assert decoded == message
    assert type(decoded) is kind


@settings(max_examples=100, deadline=None)
@given(change=st.builds(ConfChange, st.sampled_from(ConfChangeType), ids, blobs))
def test_conf_change_round_trips(change: ConfChange) -> None:
    assert decode_conf_change(encode_conf_change(change)) == change


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_bytes_raise_invalid_request_error_only(garbage: bytes) -> None:
    for decode in (decode_message, decode_conf_change):
        with contextlib.suppress(InvalidRequestError):
            decode(garbage)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.integers(0, 20)
    | blobs
    | st.text(max_size=4)
    | st.floats(allow_nan=False)
)
msgpack_values = _scalars | st.lists(_scalars, max_size=9)


@settings(max_examples=150, deadline=None)
@given(fields=st.lists(msgpack_values, max_size=11), tag=st.integers(0, 12))
def test_well_formed_msgpack_with_wrong_fields_raises_invalid_request_error(
    fields: list[object], tag: int
) -> None:
    payload = msgpack.packb([1, tag, *fields], use_bin_type=True)
    try:
        message = decode_message(payload)
    except InvalidRequestError:
        return
    # If it decoded, it must be a proper message that survives a round trip.
    assert decode_message(encode_message(message)) == message


@settings(max_examples=100, deadline=None)
@given(message=st.one_of(*MESSAGES.values()), data=st.data())
def test_truncated_or_mutated_encodings_never_raise_anything_else(
    message: Message, data: st.DataObject
) -> None:
    encoded = encode_message(message)
    cut = data.draw(st.integers(0, len(encoded)))
    position = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= data.draw(st.integers(1, 255))
    for candidate in (encoded[:cut], bytes(flipped)):
        with contextlib.suppress(InvalidRequestError):
            decode_message(candidate)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        msgpack.packb({"a": 1}),
        msgpack.packb([2, 0, 1, 2, 3, 4, 5, False, False]),  # unknown version
        msgpack.packb([1, 99, 1, 2, 3]),  # unknown tag
        msgpack.packb([1, 7, 1, 2]),  # too short
        msgpack.packb([1, 7, 1, 2, -3]),  # negative term
        msgpack.packb([1, 7, 1, 2, True]),  # a boolean is not an integer
        msgpack.packb([1, 0, 1, 2, 3, 4, 5, 1, 0]),  # an integer is not a boolean
        msgpack.packb([1, 4, 1, 2, 3, 4, "text"], use_bin_type=True),  # str is not bytes
        msgpack.packb([1, 2, 1, 2, 3, 4, 5, 6, [1, 2, 0]]),  # entries not in quadruples
        msgpack.packb([1, 2, 1, 2, 3, 4, 5, 6, [1, 2, 9, b""]], use_bin_type=True),  # bad type
        msgpack.packb([1, 7, 1, 2, 3], use_bin_type=True) + b"\x00",  # trailing bytes
        msgpack.packb([1, 7, 1, 2, 3, 9]),  # extra field
        b"\x91" * 100_000,  # deeply nested arrays
    ],
)
def test_malformed_inputs_raise_invalid_request_error(payload: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        decode_message(payload)


def test_non_bytes_input_raises_invalid_request_error() -> None:
    with pytest.raises(InvalidRequestError):
        decode_message("not bytes")  # type: ignore[arg-type]


def test_append_request_encoding_is_compact() -> None:
    entries = tuple(Entry(3, 100 + i, data=b"x" * 10) for i in range(100))
    request = AppendRequest(2, 1, 3, 99, 3, entries, 99)
    encoded = encode_message(request)
    # about 16 bytes per entry: term, index, type, a 10-byte payload and framing
    assert len(encoded) < 100 * 20


def test_append_requests_sharing_their_entries_encode_the_same_bytes() -> None:
    entries = tuple(
        Entry(term=2, index=i, type=EntryType.NORMAL, data=b"x" * i) for i in range(5, 40)
    )
    shared: dict[object, object] = {}
    for to, commit in ((2, 3), (3, 2**63), (4, 0)):
        message = AppendRequest(
            to=to,
            sender=1,
            term=2**40,
            prev_log_index=4,
            prev_log_term=2,
            commit=commit,
            entries=entries,
        )
        encoded = encode_message(message, shared)
        assert encoded == encode_message(message)
        assert decode_message(encoded) == message
    assert len(shared) == 1
    other = entries[:3]  # same first index, another length: its own encoding
    message = AppendRequest(
        to=2, sender=1, term=2, prev_log_index=4, prev_log_term=2, commit=1, entries=other
    )
    assert decode_message(encode_message(message, shared)) == message


def test_answers_carry_eager_only_when_set_and_the_short_form_still_decodes() -> None:
    # Older members send (and read) the answers without the trailing eager field.
    plain = AppendResponse(1, 2, 3, 4)
    assert len(msgpack.unpackb(encode_message(plain))) == 9
    assert decode_message(encode_message(plain)) == plain
    eager = AppendResponse(1, 2, 3, 4, eager=True)
    assert len(msgpack.unpackb(encode_message(eager))) == 10
    assert decode_message(encode_message(eager)) == eager
    beat = HeartbeatResponse(1, 2, 3, b"c", eager=True)
    assert decode_message(encode_message(beat)) == beat
    assert len(msgpack.unpackb(encode_message(HeartbeatResponse(1, 2, 3)))) == 6
    too_long = [*msgpack.unpackb(encode_message(eager)), True]
    with pytest.raises(InvalidRequestError, match="expected 9-10 fields, got 11"):
        decode_message(msgpack.packb(too_long))
