"""The one codec of the client protocol: messages <-> msgpack bytes.

A ZeroMQ message body is ONE msgpack value, a batch of envelopes::

    [PROTOCOL_VERSION, [[request_id, tag, body, client_id, seq], ...]]

``tag`` names the message type (``TAGS``: int tag <-> class; tags are forever, never
reuse one), ``body`` is the positional array of the message's fields in declaration
order. Nested values (``KeyValue``, ``Event``, ``Compare``, ``Member``, headers) are
positional arrays too; transaction ops are ``[tag, body]`` pairs; enums are ints;
``tuple`` fields are arrays; ``None`` is nil. A response, and every event of a watch
stream, travels in an envelope with the request id it answers.

Decoding is strict: every field of every envelope is type-checked (``bool`` is not an
``int``, ``str`` is not ``bytes``) and, for requests, checked by
``limits.validate_request``. A problem inside one envelope becomes a ``DecodeError`` for
that request id while the rest of the batch decodes; a problem with the whole message
(not msgpack, wrong version, wrong shape, over a limit) raises ``InvalidRequestError`` or
``RequestTooLargeError``. Nothing else ever escapes ``decode_batch``.

Speed matters (one Python process must move 10k ops/s), so the per-class encoders and
decoders are generated once, at import, from the attrs fields and type hints of
``messages``: straight-line code with exact ``type(x) is T`` checks instead of generic
reflection or attrs validators. Encoding does not validate: the receiving side does.

This module must never use pickle, do I/O, or import anything of pnyx but
``core.errors`` and its sibling wire modules.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information

from pnyx.core.errors import InvalidRequestError, PnyxError, RequestTooLargeError
from pnyx.core.wire import messages
from pnyx.core.wire.limits import DEFAULT_LIMITS, Limits, validate_request
from pnyx.core.wire.messages import Envelope, Message

PROTOCOL_VERSION = 1
"""Bumped on any change of the layout of an existing message."""

TAGS: dict[int, type] = {
    # session and errors
    1: messages.Hello,
    2: messages.HelloResponse,
    3: messages.ErrorResponse,
    # key-value
    10: messages.RangeRequest,
    11: messages.RangeResponse,
    12: messages.PutRequest,
    13: messages.PutResponse,
    14: messages.DeleteRangeRequest,
    15: messages.DeleteRangeResponse,
    16: messages.TxnRequest,
    17: messages.TxnResponse,
    18: messages.CompactionRequest,
    19: messages.CompactionResponse,
    # leases
    30: messages.LeaseGrantRequest,
    31: messages.LeaseGrantResponse,
    32: messages.LeaseRevokeRequest,
    33: messages.LeaseRevokeResponse,
    34: messages.LeaseKeepAliveRequest,
    35: messages.LeaseKeepAliveResponse,
    36: messages.LeaseTimeToLiveRequest,
    37: messages.LeaseTimeToLiveResponse,
    38: messages.LeaseLeasesRequest,
    39: messages.LeaseLeasesResponse,
    # watches
    50: messages.WatchCreateRequest,
    51: messages.WatchCancelRequest,
    52: messages.WatchProgressRequest,
    53: messages.WatchResponse,
    54: messages.SharedWatchResponse,
    # cluster
    70: messages.MemberListRequest,
    71: messages.MemberListResponse,
    72: messages.MemberAddRequest,
    73: messages.MemberAddResponse,
    74: messages.MemberRemoveRequest,
    75: messages.MemberRemoveResponse,
    76: messages.MemberPromoteRequest,
    77: messages.MemberPromoteResponse,
    78: messages.StatusRequest,
    79: messages.StatusResponse,
}
"""Wire tag -> message class, for every message that can fill an envelope."""

TAG_OF: dict[type, int] = {cls: tag for tag, cls in TAGS.items()}

_REQUEST_TYPES = frozenset(messages.REQUEST_TYPES)

_VALUE_TYPE_NAMES = {
    int: "int",
    bool: "bool",
    bytes: "bytes",
    str: "str",
    list: "array",
    dict: "map",
    float: "float",
    type(None): "nil",
}


@attrs.frozen
class DecodeError:
    """One envelope of a batch that could not be decoded or was refused.

    ``request_id`` is None when even the id was unreadable (then no one can be answered).
    """

    request_id: int | None
    error: PnyxError

    def to_envelope(self) -> Envelope | None:
        """The error reply for the sender, or None if there is no id to answer."""
        if self.request_id is None:
            return None
        return Envelope(self.request_id, messages.error_response_from_exception(self.error))


# --------------------------------------------------------------------------- public API


def encode_batch(envelopes: Iterable[Envelope]) -> bytes:
    """One ZeroMQ message body holding ``envelopes`` in order. Raises
    ``InvalidRequestError`` if a message cannot be encoded (not a message type, or a
    value msgpack cannot carry, such as an int beyond 64 bits)."""
    try:
        return _packb(
            [
                PROTOCOL_VERSION,
                [
                    [
                        envelope.request_id,
                        TAG_OF[type(envelope.message)],
                        _ENCODERS[type(envelope.message)](envelope.message),
                        envelope.client_id,
                        envelope.seq,
                    ]
                    for envelope in envelopes
                ],
            ]
        )
    except (KeyError, AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(f"cannot encode batch: {type(exc).__name__}: {exc}") from None


def decode_batch(
    data: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    *,
    validate: bool = True,
) -> list[Envelope | DecodeError]:
    """Decode one ZeroMQ message body into its envelopes, in order.

    A problem confined to one envelope yields a ``DecodeError`` in that envelope's place.
    With ``validate`` (the default) every request is also checked by ``validate_request``
    against ``limits``; responses never are. Raises ``RequestTooLargeError`` for a message
    over ``limits.max_message_bytes`` or ``limits.max_batch``, and ``InvalidRequestError``
    for anything else wrong with the message as a whole.
    """
    items = _unpack_batch(data, limits)
    depth = limits.max_txn_depth
    result: list[Envelope | DecodeError] = []
    append = result.append
    for item in items:
        request_id: int | None = None
        try:
            if type(item) is not list or len(item) != 5:
                if type(item) is list and item and type(item[0]) is int:
                    request_id = item[0]
                raise InvalidRequestError(
                    "envelope: expected [request_id, tag, body, client_id, seq], got "
                    + _describe(item)
                )
            request_id, tag, body, client_id, seq = item
            if type(request_id) is not int:
                bad_id = request_id
                request_id = None
                raise _bad_type("envelope.request_id", "int", bad_id)
            cls = TAGS.get(tag) if type(tag) is int else None
            if cls is None:
                raise InvalidRequestError(f"envelope: unknown message tag {_describe(tag)}")
            if type(client_id) is not bytes:
                raise _bad_type("envelope.client_id", "bytes", client_id)
            if type(seq) is not int:
                raise _bad_type("envelope.seq", "int", seq)
            if client_id or seq:
                _check_exactly_once(client_id, seq, limits)
            message = _DECODERS[cls](body, depth)
            if validate and cls in _REQUEST_TYPES:
                validate_request(message, limits)
            append(Envelope(request_id, message, client_id, seq))
        except PnyxError as exc:
            append(DecodeError(request_id, exc))
        except Exception as exc:
            # A bug in this module must not take the node down with a hostile input;
            # the sender gets a typed error and the cause stays visible in its text.
            append(
                DecodeError(
                    request_id,
                    InvalidRequestError(f"envelope: cannot decode: {type(exc).__name__}"),
                )
            )
    return result


def encode_envelope(envelope: Envelope) -> bytes:
    """One envelope on its own (a batch of one), e.g. a client request inside a Raft
    entry, keeping its ``client_id`` and ``seq`` for exactly-once application."""
    return encode_batch((envelope,))


def decode_envelope(
    data: bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    *,
    validate: bool = True,
) -> Envelope:
    """The inverse of ``encode_envelope``; raises the envelope's error if it has one."""
    decoded = decode_batch(data, limits, validate=validate)
    if len(decoded) != 1:
        raise InvalidRequestError(f"expected one envelope, got {len(decoded)}")
    (item,) = decoded
    if isinstance(item, DecodeError):
        raise item.error
    return item


def message_to_wire(message: Message) -> list[Any]:
    """``[tag, body]``: the msgpack-ready form of one message, for a caller that embeds
    messages in a structure of its own (a snapshot, a deduplication table)."""
    try:
        cls = type(message)
        return [TAG_OF[cls], _ENCODERS[cls](message)]
    except (KeyError, AttributeError, TypeError) as exc:
        raise InvalidRequestError(f"cannot encode {type(message).__name__}: {exc}") from None


def message_from_wire(value: Any, limits: Limits = DEFAULT_LIMITS) -> Message:
    """The inverse of ``message_to_wire`` (types checked, values not validated)."""
    try:
        return typing.cast(Message, _decode_tagged(value, limits.max_txn_depth, TAGS))
    except PnyxError:
        raise
    except Exception as exc:
        raise InvalidRequestError(f"cannot decode message: {type(exc).__name__}") from None


def header_to_wire(
    member_id: int, revision: int, raft_term: int, leader_id: int, cluster_id: int = 0
) -> list[Any]:
    """The wire form of ``ResponseHeader(cluster_id, member_id, revision, raft_term,
    leader_id)``, built without the object (a server stamps every reply with one)."""
    return [cluster_id, member_id, revision, raft_term, leader_id]


def response_to_wire(
    response: Message, header: list[Any], memo: dict[int, Any] | None = None
) -> list[Any]:
    """``[tag, body]`` of a response, as ``message_to_wire`` gives it, but with
    ``header`` (a ``header_to_wire`` list) in place of the response's own header: the
    answering server's stamp, without building a new response object for it.

    ``memo``, if given, is a dict the caller keeps while it encodes many responses that
    share tuples (the same events going to many watchers): each shared tuple of nested
    values is encoded once. It holds on to the tuples it saw, so it must not outlive
    the batch of responses it serves."""
    try:
        cls = type(response)
        return [TAG_OF[cls], _STAMPED_ENCODERS[cls](response, header, memo)]
    except (KeyError, AttributeError, TypeError) as exc:
        raise InvalidRequestError(f"cannot encode {type(response).__name__}: {exc}") from None


def encode_wire_batch(items: list[list[Any]]) -> bytes:
    """One ZeroMQ message body of envelopes already in wire form: each item is
    ``[request_id, tag, body, client_id, seq]`` (``[request_id, *response_to_wire(...),
    b"", 0]`` for a reply). Raises ``InvalidRequestError`` if msgpack cannot carry a
    value (an int beyond 64 bits, say); the caller may then encode the items one by one
    to find it."""
    try:
        return _packb([PROTOCOL_VERSION, items])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(f"cannot encode batch: {type(exc).__name__}: {exc}") from None


def encode_message(message: Message) -> bytes:
    """One message alone, without envelope: ``[PROTOCOL_VERSION, tag, body]``."""
    try:
        return _packb([PROTOCOL_VERSION, *message_to_wire(message)])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(f"cannot encode {type(message).__name__}: {exc}") from None


def decode_message(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> Message:
    """The inverse of ``encode_message`` (types checked, values not validated)."""
    value = _unpack(data, limits)
    if type(value) is not list or len(value) != 3:
        raise InvalidRequestError("message: expected [version, tag, body], got " + _describe(value))
    _check_version(value[0])
    return message_from_wire(value[1:], limits)


# --------------------------------------------------------------------------- whole message


def _packb(value: Any) -> bytes:
    return typing.cast(bytes, msgpack.packb(value, use_bin_type=True))


def _unpack(data: bytes | bytearray | memoryview, limits: Limits) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidRequestError(f"message: expected bytes, got {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > limits.max_message_bytes:
        raise RequestTooLargeError(
            f"message of {size} bytes exceeds the limit of {limits.max_message_bytes}"
        )
    try:
        # Lengths inside are bounded by the message size (msgpack's default), so a
        # forged array header cannot make the unpacker allocate beyond the message.
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise InvalidRequestError(
            f"message is not valid msgpack: {type(exc).__name__}: {exc}"
        ) from None


def _check_version(version: Any) -> None:
    if type(version) is not int:
        raise InvalidRequestError(
            "message: protocol version must be an int, got " + _describe(version)
        )
    if version != PROTOCOL_VERSION:
        raise InvalidRequestError(
            f"unsupported protocol version {version}; this side speaks {PROTOCOL_VERSION}"
        )


def _unpack_batch(data: bytes | bytearray | memoryview, limits: Limits) -> list[Any]:
    value = _unpack(data, limits)
    if type(value) is not list or not value:
        raise InvalidRequestError("message: expected [version, envelopes], got " + _describe(value))
    # The version comes first, before any other shape check, so that a peer speaking a
    # newer layout is told about the version rather than about a shape it cannot know.
    _check_version(value[0])
    if len(value) != 2 or type(value[1]) is not list:
        raise InvalidRequestError("message: expected [version, envelopes], got " + _describe(value))
    items: list[Any] = value[1]
    if len(items) > limits.max_batch:
        raise RequestTooLargeError(
            f"message holds {len(items)} envelopes, over the limit of {limits.max_batch}"
        )
    return items


def _check_exactly_once(client_id: bytes, seq: int, limits: Limits) -> None:
    if len(client_id) > limits.max_client_id_bytes:
        raise RequestTooLargeError(
            f"envelope.client_id of {len(client_id)} bytes exceeds the limit of "
            f"{limits.max_client_id_bytes}"
        )
    if seq < 0:
        raise InvalidRequestError(f"envelope.seq must not be negative, got {seq}")
    if seq and not client_id:
        raise InvalidRequestError("envelope.seq is set but client_id is empty")


# --------------------------------------------------------------------------- errors


def _describe(value: Any) -> str:
    name = _VALUE_TYPE_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{name} {text}"


def _bad_type(path: str, expected: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(f"{path}: expected {expected}, got {_describe(value)}")


def _bad_shape(name: str, count: int, value: Any) -> InvalidRequestError:
    return InvalidRequestError(
        f"{name}: expected an array of {count} fields, got {_describe(value)}"
    )


def _within(path: str, exc: InvalidRequestError | RequestTooLargeError) -> PnyxError:
    """``exc`` (raised by a nested decoder) with the path to the nested value in front."""
    return type(exc)(f"{path} > {exc.message}")


def _too_deep(name: str) -> RequestTooLargeError:
    return RequestTooLargeError(f"{name}: transactions nested too deeply")


def _decode_tagged(value: Any, depth: int, allowed: dict[int, type]) -> Any:
    """A ``[tag, body]`` pair whose class must be one of ``allowed``."""
    if type(value) is not list or len(value) != 2:
        raise InvalidRequestError("expected [tag, body], got " + _describe(value))
    tag, body = value
    cls = allowed.get(tag) if type(tag) is int else None
    if cls is None:
        raise InvalidRequestError(f"unknown or misplaced message tag {_describe(tag)}")
    return _DECODERS[cls](body, depth)


def _encode_tagged(message: Any) -> list[Any]:
    cls = type(message)
    return [TAG_OF[cls], _ENCODERS[cls](message)]


# --------------------------------------------------------------------------- generation
#
# For each attrs class of ``messages`` we emit the source of two functions, e.g. for
# PutRequest:
#
#     def _decode_PutRequest(body, depth):
#         if type(body) is not list or len(body) != 6:
#             raise _bad_shape("PutRequest", 6, body)
#         key, value, lease, prev_kv, ignore_value, ignore_lease = body
#         if type(key) is not bytes:
#             raise _bad_type("PutRequest.key", "bytes", key)
#         ...
#         return PutRequest(key, value, lease, prev_kv, ignore_value, ignore_lease)
#
#     def _encode_PutRequest(m):
#         return [m.key, m.value, m.lease, m.prev_kv, m.ignore_value, m.ignore_lease]

_PRIMITIVES = (int, bool, bytes, str)

_DECODERS: dict[type, Callable[[Any, int], Any]] = {}
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {}
_STAMPED_ENCODERS: dict[type, Callable[[Any, list[Any], dict[int, Any] | None], list[Any]]] = {}
"""For each response class (a class with a ``header`` field): its encoder taking the
header's wire form as a second argument instead of encoding the response's own."""


@attrs.define
class _Generator:
    """Builds the source of the codec functions and the namespace they run in."""

    namespace: dict[str, Any] = attrs.Factory(dict)
    sources: list[str] = attrs.Factory(list)

    def ref(self, name: str, value: Any) -> str:
        self.namespace[name] = value
        return name

    def enum_table(self, enum_type: type[enum.IntEnum]) -> str:
        return self.ref(
            f"_enum_{enum_type.__name__}", {member.value: member for member in enum_type}
        )

    def op_table(self, union: Any) -> str:
        classes = typing.get_args(union)
        name = "_ops_" + "_".join(cls.__name__ for cls in classes)
        return self.ref(name, {TAG_OF[cls]: cls for cls in classes})

    # ---- decoding: statements that check (and convert) the local ``var`` in place

    def check(self, hint: Any, var: str, path: str, indent: str, recursive: bool) -> list[str]:
        child_depth = "depth - 1" if recursive else "depth"
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint in _PRIMITIVES:
            return [
                f"{indent}if type({var}) is not {hint.__name__}:",
                f"{indent}    raise _bad_type({path!r}, {hint.__name__!r}, {var})",
            ]
        if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
            table = self.enum_table(hint)
            return [
                f"{indent}if type({var}) is not int or {var} not in {table}:",
                f"{indent}    raise _bad_type({path!r}, {hint.__name__!r}, {var})",
                f"{indent}{var} = {table}[{var}]",
            ]
        if attrs.has(hint):
            return self.nested(
                f"{var} = _DECODERS[{self.ref_class(hint)}]({var}, depth)", path, indent
            )
        if origin in (types.UnionType, typing.Union):
            if type(None) in args:
                (inner,) = (arg for arg in args if arg is not type(None))
                return [
                    f"{indent}if {var} is not None:",
                    *self.check(inner, var, path, indent + "    ", recursive),
                ]
            if set(args) == {bytes, int}:
                return [
                    f"{indent}if type({var}) is not bytes and type({var}) is not int:",
                    f"{indent}    raise _bad_type({path!r}, 'bytes or int', {var})",
                ]
            if all(attrs.has(arg) for arg in args):
                table = self.op_table(hint)
                return self.nested(
                    f"{var} = _decode_tagged({var}, {child_depth}, {table})", path, indent
                )
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return [
                f"{indent}if type({var}) is not list:",
                f"{indent}    raise _bad_type({path!r}, 'array', {var})",
                *self.check_items(args[0], var, path + "[]", indent, recursive),
            ]
        raise TypeError(f"codec: no wire form for {path}: {hint!r}")

    def check_items(
        self, hint: Any, var: str, path: str, indent: str, recursive: bool
    ) -> list[str]:
        child_depth = "depth - 1" if recursive else "depth"
        if hint in _PRIMITIVES:
            return [
                f"{indent}for item in {var}:",
                f"{indent}    if type(item) is not {hint.__name__}:",
                f"{indent}        raise _bad_type({path!r}, {hint.__name__!r}, item)",
                f"{indent}{var} = tuple({var})",
            ]
        if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
            table = self.enum_table(hint)
            return [
                f"{indent}for item in {var}:",
                f"{indent}    if type(item) is not int or item not in {table}:",
                f"{indent}        raise _bad_type({path!r}, {hint.__name__!r}, item)",
                f"{indent}{var} = tuple([{table}[item] for item in {var}])",
            ]
        if attrs.has(hint):
            decoder = f"_DECODERS[{self.ref_class(hint)}]"
            return self.nested(
                f"{var} = tuple([{decoder}(item, depth) for item in {var}])", path, indent
            )
        if typing.get_origin(hint) in (types.UnionType, typing.Union) and all(
            attrs.has(arg) for arg in typing.get_args(hint)
        ):
            table = self.op_table(hint)
            return self.nested(
                f"{var} = tuple([_decode_tagged(item, {child_depth}, {table}) for item in {var}])",
                path,
                indent,
            )
        raise TypeError(f"codec: no wire form for items of {path}: {hint!r}")

    def nested(self, statement: str, path: str, indent: str) -> list[str]:
        return [
            f"{indent}try:",
            f"{indent}    {statement}",
            f"{indent}except (InvalidRequestError, RequestTooLargeError) as exc:",
            f"{indent}    raise _within({path!r}, exc) from None",
        ]

    def ref_class(self, cls: type) -> str:
        return self.ref(cls.__name__, cls)

    # ---- encoding: an expression for the wire form of ``expr``

    def encode(self, hint: Any, expr: str) -> str:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint in _PRIMITIVES or (isinstance(hint, type) and issubclass(hint, enum.IntEnum)):
            # msgpack packs an IntEnum as its int value.
            return expr
        if attrs.has(hint):
            return f"_ENCODERS[{self.ref_class(hint)}]({expr})"
        if origin in (types.UnionType, typing.Union):
            if type(None) in args:
                (inner,) = (arg for arg in args if arg is not type(None))
                inner_expr = self.encode(inner, expr)
                if inner_expr == expr:
                    return expr
                return f"(None if {expr} is None else {inner_expr})"
            if set(args) == {bytes, int}:
                return expr
            if all(attrs.has(arg) for arg in args):
                return f"_encode_tagged({expr})"
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_expr = self.encode(args[0], "item")
            if item_expr == "item":
                return expr  # msgpack packs a tuple as an array
            return f"[{item_expr} for item in {expr}]"
        raise TypeError(f"codec: no wire form for {expr}: {hint!r}")

    def encode_memo(self, hint: Any, expr: str, plain: str) -> str:
        """``plain`` (the encoding of ``expr``), or for a tuple of nested values the same
        through the caller's memo (``_memo_items``)."""
        args = typing.get_args(hint)
        if typing.get_origin(hint) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
            return plain
        item_expr = self.encode(args[0], "item")
        if item_expr == "item":
            return plain
        if not item_expr.endswith("(item)"):  # pragma: no cover - no such field today
            return plain
        return f"_memo_items(memo, {expr}, {item_expr[: -len('(item)')]})"

    # ---- one class

    def add(self, cls: type) -> None:
        name = cls.__name__
        hints = typing.get_type_hints(cls, vars(messages))
        fields = [field.name for field in attrs.fields(cls)]
        recursive = any(_holds_ops(hints[field]) for field in fields)
        self.ref_class(cls)
        lines = [f"def _decode_{name}(body, depth):"]
        lines.append(f"    if type(body) is not list or len(body) != {len(fields)}:")
        lines.append(f"        raise _bad_shape({name!r}, {len(fields)}, body)")
        if recursive:
            lines.append("    if depth <= 0:")
            lines.append(f"        raise _too_deep({name!r})")
        if fields:
            # Locals get a prefix so that a field named like a builtin (``type``, ``id``)
            # cannot shadow what the generated code itself calls.
            local_names = ", ".join(f"f_{field}" for field in fields)
            lines.append(f"    {local_names}{',' if len(fields) == 1 else ''} = body")
        for field in fields:
            lines.extend(
                self.check(hints[field], f"f_{field}", f"{name}.{field}", "    ", recursive)
            )
        lines.append(f"    return {name}({', '.join(f'f_{field}' for field in fields)})")
        lines.append("")
        lines.append(f"def _encode_{name}(m):")
        encoded = [self.encode(hints[field], f"m.{field}") for field in fields]
        lines.append(f"    return [{', '.join(encoded)}]")
        if "header" in fields:
            stamped = [
                "h" if field == "header" else self.encode_memo(hints[field], f"m.{field}", code)
                for field, code in zip(fields, encoded, strict=True)
            ]
            lines.append("")
            lines.append(f"def _stamped_{name}(m, h, memo):")
            lines.append(f"    return [{', '.join(stamped)}]")
        self.sources.append("\n".join(lines))

    def build(self) -> None:
        namespace = {
            **self.namespace,
            "_bad_type": _bad_type,
            "_bad_shape": _bad_shape,
            "_within": _within,
            "_too_deep": _too_deep,
            "_decode_tagged": _decode_tagged,
            "_encode_tagged": _encode_tagged,
            "_memo_items": _memo_items,
            "_DECODERS": _DECODERS,
            "_ENCODERS": _ENCODERS,
            "InvalidRequestError": InvalidRequestError,
            "RequestTooLargeError": RequestTooLargeError,
        }
        source = "\n\n".join(self.sources)
        exec(compile(source, "<pnyx.core.wire.codec generated>", "exec"), namespace)
        for key, value in list(namespace.items()):
            if key.startswith("_decode_") and key[8:] in self.namespace:
                _DECODERS[self.namespace[key[8:]]] = value
            elif key.startswith("_encode_") and key[8:] in self.namespace:
                _ENCODERS[self.namespace[key[8:]]] = value
            elif key.startswith("_stamped_") and key[9:] in self.namespace:
                _STAMPED_ENCODERS[self.namespace[key[9:]]] = value


def _memo_items(
    memo: dict[int, Any] | None, items: tuple[Any, ...], encode: Callable[[Any], Any]
) -> list[Any]:
    """``[encode(item) for item in items]``, once per distinct tuple while ``memo``
    lives. The memo keeps each tuple it saw, so an id cannot be reused by another tuple
    while it lives."""
    if memo is None:
        return [encode(item) for item in items]
    key = id(items)
    hit = memo.get(key)
    if hit is None or hit[0] is not items:
        hit = memo[key] = (items, [encode(item) for item in items])
    encoded: list[Any] = hit[1]
    return encoded


def _holds_ops(hint: Any) -> bool:
    """Whether a field holds transaction ops (a union of message classes), which makes
    its class recursive."""
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) in (types.UnionType, typing.Union) and all(
            attrs.has(inner) for inner in typing.get_args(arg)
        ):
            return True
    return False


def _message_classes() -> list[type]:
    """Every attrs class of ``messages``: the tagged ones and the nested values."""
    return [
        value
        for value in vars(messages).values()
        if isinstance(value, type)
        and attrs.has(value)
        and value.__module__ == messages.__name__
        and value is not Envelope  # the envelope has its own layout, see decode_batch
    ]


def _generate() -> None:
    generator = _Generator()
    for cls in _message_classes():
        generator.add(cls)
    generator.build()
    missing = [cls.__name__ for cls in TAGS.values() if cls not in _DECODERS]
    if missing:  # pragma: no cover - a message added without its codec
        raise TypeError(f"codec: no codec generated for {missing}")


_generate()

__all__ = [
    "PROTOCOL_VERSION",
    "TAGS",
    "TAG_OF",
    "DecodeError",
    "decode_batch",
    "decode_envelope",
    "decode_message",
    "encode_batch",
    "encode_envelope",
    "encode_message",
    "encode_wire_batch",
    "header_to_wire",
    "message_from_wire",
    "message_to_wire",
    "response_to_wire",
]
