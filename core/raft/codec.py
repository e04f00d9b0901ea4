"""Binary encoding of Raft peer messages and configuration changes (msgpack).

A message is one flat msgpack array: ``[version, tag, to, sender, term, *fields]`` where
``tag`` comes from the small table below; log entries travel as a flat run of
``term, index, type, data`` quadruples inside the array (no nested object per entry).

Decoding validates every field (type, sign, arity) and raises
``pnyx.core.errors.InvalidRequestError`` on any malformed input; it must never raise any
other exception, and nothing here may ever evaluate or unpickle what it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import msgpack  # type: ignore[import-untyped]

from pnyx.core.errors import InvalidRequestError
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

PROTOCOL_VERSION = 1

# The type-tag table. Tags are part of the wire format: never renumber, only append.
TAG_VOTE_REQUEST = 0
TAG_VOTE_RESPONSE = 1
TAG_APPEND_REQUEST = 2
TAG_APPEND_RESPONSE = 3
TAG_HEARTBEAT_REQUEST = 4
TAG_HEARTBEAT_RESPONSE = 5
TAG_SNAPSHOT_REQUEST = 6
TAG_TIMEOUT_NOW = 7
TAG_PROPOSAL_FORWARD = 8
TAG_READ_INDEX_REQUEST = 9
TAG_READ_INDEX_RESPONSE = 10

_ENTRY_TYPES = tuple(EntryType)
_CONF_CHANGE_TYPES = tuple(ConfChangeType)
_MAX_UINT64 = (1 << 64) - 1

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def _invalid(what: str) -> NoReturn:
    raise InvalidRequestError(f"malformed raft message: {what}")


# --- encoding ------------------------------------------------------------------------


def _flat_entries(entries: tuple[Entry, ...]) -> list[Any]:
    flat: list[Any] = []
    extend = flat.extend
    for entry in entries:
        extend((entry.term, entry.index, int(entry.type), entry.data))
    return flat


def _encode_vote_request(m: VoteRequest) -> list[Any]:
    return [
        PROTOCOL_VERSION,
        TAG_VOTE_REQUEST,
        m.to,
        m.sender,
        m.term,
        m.last_log_index,
        m.last_log_term,
        m.pre_vote,
        m.leader_transfer,
    ]


def _encode_vote_response(m: VoteResponse) -> list[Any]:
    return [PROTOCOL_VERSION, TAG_VOTE_RESPONSE, m.to, m.sender, m.term, m.granted, m.pre_vote]


def _encode_append_request(m: AppendRequest) -> list[Any]:
    head = _encode_append_request_head(m)
    head.append(_flat_entries(m.entries))
    return head


def _encode_append_response(m: AppendResponse) -> list[Any]:
    fields = [
        PROTOCOL_VERSION,
        TAG_APPEND_RESPONSE,
        m.to,
        m.sender,
        m.term,
        m.index,
        m.reject,
        m.reject_hint,
        m.hint_term,
    ]
    if m.eager:
        fields.append(True)  # only when set: the shorter form is what older members read
    return fields


def _encode_heartbeat_request(m: HeartbeatRequest) -> list[Any]:
    return [
        PROTOCOL_VERSION,
        TAG_HEARTBEAT_REQUEST,
        m.to,
        m.sender,
        m.term,
        m.commit,
        m.context,
    ]


def _encode_heartbeat_response(m: HeartbeatResponse) -> list[Any]:
    fields = [PROTOCOL_VERSION, TAG_HEARTBEAT_RESPONSE, m.to, m.sender, m.term, m.context]
    if m.eager:
        fields.append(True)
    return fields


def _encode_snapshot_request(m: SnapshotRequest) -> list[Any]:
    metadata = m.snapshot.metadata
    return [
        PROTOCOL_VERSION,
        TAG_SNAPSHOT_REQUEST,
        m.to,
        m.sender,
        m.term,
        metadata.index,
        metadata.term,
        sorted(metadata.conf_state.voters),
        sorted(metadata.conf_state.learners),
        m.snapshot.data,
    ]


def _encode_timeout_now(m: TimeoutNow) -> list[Any]:
    return [PROTOCOL_VERSION, TAG_TIMEOUT_NOW, m.to, m.sender, m.term]


def _encode_proposal_forward(m: ProposalForward) -> list[Any]:
    return [
        PROTOCOL_VERSION,
        TAG_PROPOSAL_FORWARD,
        m.to,
        m.sender,
        m.term,
        _flat_entries(m.entries),
    ]


def _encode_read_index_request(m: ReadIndexRequest) -> list[Any]:
    return [PROTOCOL_VERSION, TAG_READ_INDEX_REQUEST, m.to, m.sender, m.term, m.context]


def _encode_read_index_response(m: ReadIndexResponse) -> list[Any]:
    return [
        PROTOCOL_VERSION,
        TAG_READ_INDEX_RESPONSE,
        m.to,
        m.sender,
        m.term,
        m.index,
        m.context,
    ]


_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    VoteRequest: _encode_vote_request,
    VoteResponse: _encode_vote_response,
    AppendRequest: _encode_append_request,
    AppendResponse: _encode_append_response,
    HeartbeatRequest: _encode_heartbeat_request,
    HeartbeatResponse: _encode_heartbeat_response,
    SnapshotRequest: _encode_snapshot_request,
    TimeoutNow: _encode_timeout_now,
    ProposalForward: _encode_proposal_forward,
    ReadIndexRequest: _encode_read_index_request,
    ReadIndexResponse: _encode_read_index_response,
}


def encode_message(message: Message, shared: dict[Any, Any] | None = None) -> bytes:
    """Encode one peer message.

    ``shared``, if given, is a dict the caller keeps while it encodes the messages of one
    batch: the entries of an ``AppendRequest`` that carries the same entries as another
    one encoded with it (a leader replicating the same tail to every follower) are
    encoded once. The bytes are the same either way (msgpack arrays concatenate: the
    head of the message, then its entries array)."""
    if shared is not None and type(message) is AppendRequest and message.entries:
        entries = message.entries
        key = (entries[0].index, len(entries))
        hit = shared.get(key)
        if hit is None or hit[0] is not entries[0] or hit[1] is not entries[-1]:
            blob: bytes = _packb(_flat_entries(entries), use_bin_type=True)
            hit = shared[key] = (entries[0], entries[-1], blob)
        head: bytes = _packb(_encode_append_request_head(message), use_bin_type=True)
        # The head is a fixarray of 8 (header byte 0x98): the message is one of 9.
        return b"\x99" + head[1:] + hit[2]
    result: bytes = _packb(_ENCODERS[type(message)](message), use_bin_type=True)
    return result


def _encode_append_request_head(m: AppendRequest) -> list[Any]:
    return [
        PROTOCOL_VERSION,
        TAG_APPEND_REQUEST,
        m.to,
        m.sender,
        m.term,
        m.prev_log_index,
        m.prev_log_term,
        m.commit,
    ]


# --- decoding ------------------------------------------------------------------------


def _uint(value: object) -> int:
    if type(value) is not int or value < 0 or value > _MAX_UINT64:
        _invalid("expected a non-negative integer")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        _invalid("expected a boolean")
    return value


def _bytes(value: object) -> bytes:
    if type(value) is not bytes:
        _invalid("expected bytes")
    return value


def _entries(flat: object) -> tuple[Entry, ...]:
    if type(flat) is not tuple or len(flat) % 4:
        _invalid("expected a flat list of entries")
    entry_types = _ENTRY_TYPES
    result: list[Entry] = []
    append = result.append
    for position in range(0, len(flat), 4):
        term, index, kind, data = flat[position : position + 4]
        if (
            type(term) is not int
            or type(index) is not int
            or type(kind) is not int
            or type(data) is not bytes
            or term < 0
            or index < 0
            or term > _MAX_UINT64
            or index > _MAX_UINT64
            or not 0 <= kind < len(entry_types)
        ):
            _invalid("bad entry")
        append(Entry(term, index, entry_types[kind], data))
    return tuple(result)


def _node_ids(value: object) -> frozenset[int]:
    if type(value) is not tuple:
        _invalid("expected a list of node ids")
    return frozenset(_uint(node_id) for node_id in value)


def _check_arity(fields: tuple[Any, ...], arity: int, longest: int = 0) -> None:
    """Exactly ``arity`` fields, or up to ``longest`` (optional trailing fields)."""
    if not arity <= len(fields) <= max(arity, longest):
        expected = f"{arity}-{longest}" if longest > arity else f"{arity}"
        _invalid(f"expected {expected} fields, got {len(fields)}")


def _decode_vote_request(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 9)
    return VoteRequest(
        _uint(f[2]), _uint(f[3]), _uint(f[4]), _uint(f[5]), _uint(f[6]), _bool(f[7]), _bool(f[8])
    )


def _decode_vote_response(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 7)
    return VoteResponse(_uint(f[2]), _uint(f[3]), _uint(f[4]), _bool(f[5]), _bool(f[6]))


def _decode_append_request(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 9)
    return AppendRequest(
        _uint(f[2]),
        _uint(f[3]),
        _uint(f[4]),
        _uint(f[5]),
        _uint(f[6]),
        _entries(f[8]),
        _uint(f[7]),
    )


def _decode_append_response(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 9, 10)
    return AppendResponse(
        _uint(f[2]),
        _uint(f[3]),
        _uint(f[4]),
        _uint(f[5]),
        _bool(f[6]),
        _uint(f[7]),
        _uint(f[8]),
        len(f) == 10 and _bool(f[9]),
    )


def _decode_heartbeat_request(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 7)
    return HeartbeatRequest(_uint(f[2]), _uint(f[3]), _uint(f[4]), _uint(f[5]), _bytes(f[6]))


def _decode_heartbeat_response(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 6, 7)
    return HeartbeatResponse(
        _uint(f[2]), _uint(f[3]), _uint(f[4]), _bytes(f[5]), len(f) == 7 and _bool(f[6])
    )


def _decode_snapshot_request(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 10)
    conf_state = ConfState(voters=_node_ids(f[7]), learners=_node_ids(f[8]))
    metadata = SnapshotMetadata(index=_uint(f[5]), term=_uint(f[6]), conf_state=conf_state)
    return SnapshotRequest(
        _uint(f[2]), _uint(f[3]), _uint(f[4]), Snapshot(metadata=metadata, data=_bytes(f[9]))
    )


def _decode_timeout_now(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 5)
    return TimeoutNow(_uint(f[2]), _uint(f[3]), _uint(f[4]))


def _decode_proposal_forward(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 6)
    return ProposalForward(_uint(f[2]), _uint(f[3]), _uint(f[4]), _entries(f[5]))


def _decode_read_index_request(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 6)
    return ReadIndexRequest(_uint(f[2]), _uint(f[3]), _uint(f[4]), _bytes(f[5]))


def _decode_read_index_response(f: tuple[Any, ...]) -> Message:
    _check_arity(f, 7)
    return ReadIndexResponse(_uint(f[2]), _uint(f[3]), _uint(f[4]), _uint(f[5]), _bytes(f[6]))


_DECODERS: tuple[Callable[[tuple[Any, ...]], Message], ...] = (
    _decode_vote_request,
    _decode_vote_response,
    _decode_append_request,
    _decode_append_response,
    _decode_heartbeat_request,
    _decode_heartbeat_response,
    _decode_snapshot_request,
    _decode_timeout_now,
    _decode_proposal_forward,
    _decode_read_index_request,
    _decode_read_index_response,
)


def _unpack(data: object) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        _invalid("expected bytes")
    try:
        return _unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types; all mean "malformed"
        raise InvalidRequestError(f"malformed raft message: {type(exc).__name__}") from None


def decode_message(data: bytes) -> Message:
    """Decode one peer message; ``InvalidRequestError`` on anything malformed."""
    fields = _unpack(data)
    if type(fields) is not tuple or len(fields) < 5:
        _invalid("expected an array")
    if fields[0] != PROTOCOL_VERSION or type(fields[0]) is not int:
        _invalid(f"unsupported protocol version {fields[0]!r}")
    tag = fields[1]
    if type(tag) is not int or not 0 <= tag < len(_DECODERS):
        _invalid(f"unknown message tag {tag!r}")
    try:
        return _DECODERS[tag](fields)
    except InvalidRequestError:
        raise
    except Exception as exc:  # defensive: any slip in a decoder is still "malformed input"
        raise InvalidRequestError(f"malformed raft message: {type(exc).__name__}") from None


def encode_conf_change(change: ConfChange) -> bytes:
    result: bytes = _packb(
        [PROTOCOL_VERSION, int(change.type), change.node_id, change.context], use_bin_type=True
    )
    return result


def decode_conf_change(data: bytes) -> ConfChange:
    """Decode a ``ConfChange`` entry payload; ``InvalidRequestError`` if malformed."""
    fields = _unpack(data)
    if type(fields) is not tuple or len(fields) != 4:
        _invalid("expected a configuration change")
    if fields[0] != PROTOCOL_VERSION or type(fields[0]) is not int:
        _invalid(f"unsupported protocol version {fields[0]!r}")
    kind = fields[1]
    if type(kind) is not int or not 0 <= kind < len(_CONF_CHANGE_TYPES):
        _invalid(f"unknown configuration change type {kind!r}")
    return ConfChange(_CONF_CHANGE_TYPES[kind], _uint(fields[2]), _bytes(fields[3]))
