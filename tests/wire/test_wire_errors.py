"""Error codes map both ways, for every class of core/errors.py, across the wire."""

from __future__ import annotations

import builtins
import inspect

import pytest

from pnyx.core import errors
from pnyx.core.wire import messages as m
from pnyx.core.wire.codec import decode_message, encode_message


def _all_error_classes() -> list[type[errors.PnyxError]]:
    return [
        value
        for _, value in inspect.getmembers(errors, inspect.isclass)
        if issubclass(value, errors.PnyxError) and value.__module__ == errors.__name__
    ]


ERROR_CLASSES = _all_error_classes()


def _instance(cls: type[errors.PnyxError]) -> errors.PnyxError:
    if cls is errors.CompactedError:
        return errors.CompactedError("compacted", compact_revision=41)
    if cls is errors.NotLeaderError:
        return errors.NotLeaderError("not me", leader_hint="tcp://127.0.0.1:2379")
    if cls is errors.ProposalDroppedError:
        return errors.ProposalDroppedError("leadership transfer")
    return cls(f"a {cls.__name__}")


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes))


def test_every_class_is_in_the_code_table() -> None:
    assert set(m.ERROR_CLASSES.values()) == set(ERROR_CLASSES)
    assert all(m.ERROR_CLASSES[cls.code] is cls for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_error_round_trips_through_the_wire(cls: type[errors.PnyxError]) -> None:
    original = _instance(cls)
    response = m.error_response_from_exception(original)
    assert response.code == cls.code
    decoded = decode_message(encode_message(response))
    assert isinstance(decoded, m.ErrorResponse)
    error = m.error_from_response(decoded)
    assert type(error) is cls
    assert error.message == original.message
    assert str(error) == str(original)


def test_extra_attributes_survive() -> None:
    compacted = m.error_from_response(
        m.error_response_from_exception(errors.CompactedError(compact_revision=41))
    )
    assert isinstance(compacted, errors.CompactedError)
    assert compacted.compact_revision == 41

    not_leader = m.error_from_response(
        m.error_response_from_exception(errors.NotLeaderError(leader_hint="tcp://h:1"))
    )
    assert isinstance(not_leader, errors.NotLeaderError)
    assert not_leader.leader_hint == "tcp://h:1"

    no_hint = m.error_from_response(m.error_response_from_exception(errors.NotLeaderError()))
    assert isinstance(no_hint, errors.NotLeaderError)
    assert no_hint.leader_hint is None

    dropped = m.error_from_response(
        m.error_response_from_exception(errors.ProposalDroppedError("queue full"))
    )
    assert isinstance(dropped, errors.ProposalDroppedError)
    assert dropped.reason == "queue full"


def test_timeout_is_still_a_builtin_timeout_after_the_trip() -> None:
    error = m.error_from_response(m.error_response_from_exception(errors.TimeoutError("slow")))
    assert isinstance(error, builtins.TimeoutError)
    assert isinstance(error, errors.UnavailableError)


def test_unknown_code_becomes_plain_pnyx_error() -> None:
    error = m.error_from_response(m.ErrorResponse(code=9999, message="from the future"))
    assert type(error) is errors.PnyxError
    assert error.message == "from the future"
    assert type(m.error_from_response(m.ErrorResponse(code=9999))) is errors.PnyxError


def test_a_foreign_exception_is_sent_as_plain_pnyx_error() -> None:
    response = m.error_response_from_exception(KeyError("oops"))
    assert response.code == errors.PnyxError.code
    assert "KeyError" in response.message
    assert type(m.error_from_response(response)) is errors.PnyxError


def test_a_subclass_outside_the_tree_does_not_take_a_code() -> None:
    class Local(errors.InvalidRequestError):
        code = 9000

    assert 9000 not in m.ERROR_CLASSES
    response = m.error_response_from_exception(Local("x"))
    # It is sent with its own code; the receiver, not knowing it, makes a PnyxError.
    assert type(m.error_from_response(response)) is errors.PnyxError
