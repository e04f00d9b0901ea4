"""The one error hierarchy of pnyx.

Every error pnyx raises on purpose is a ``PnyxError``; any other exception is a bug.
Errors cross the wire as a numeric ``code`` (see ``pnyx.core.wire``) and become the same
class on the client side.

::

    PnyxError
    ├── ClientError                       the caller asked for something wrong
    │   ├── InvalidRequestError           malformed, wrong types, bad range, unknown type/version
    │   ├── RequestTooLargeError          message, key, value or txn over a configured limit
    │   ├── CompactedError                revision before the compact revision (.compact_revision)
    │   ├── FutureRevisionError           revision after the current revision
    │   ├── LeaseNotFoundError            lease id unknown or expired
    │   ├── LeaseTTLTooLargeError / ...   (see subclasses below)
    │   ├── MemberError                   membership change refused (.reason)
    │   └── DuplicateRequestError         a retried request that can no longer be answered
    ├── UnavailableError                  the cluster cannot answer now; safe to retry
    │   ├── NotLeaderError                this node is not the leader (.leader_hint)
    │   ├── NoLeaderError                 no leader is known (election in progress)
    │   ├── ProposalDroppedError          the Raft core dropped a proposal (.reason)
    │   ├── NoEndpointError               no endpoint could be reached
    │   ├── TimeoutError                  no answer within the deadline
    │   └── SlowWatcherError              a watch fell too far behind and was cut off (resumable)
    ├── StorageError                      the node's disk is unusable
    │   └── CorruptionError               a record fails its checksum in the middle of the WAL
    └── RecipeError                       coordination recipes
        ├── SessionExpiredError           the session's lease is (or may be) gone
        ├── LockTimeoutError              a lock was not acquired within its timeout
        ├── LockLostError                 a held lock can no longer be trusted
        └── NotLeaderAnymoreError         an elected leadership was lost
"""

from __future__ import annotations

import builtins


class PnyxError(Exception):
    """Base of every error pnyx raises on purpose."""

    code: int = 1

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__


class ClientError(PnyxError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = 100


class InvalidRequestError(ClientError):
    code = 101


class RequestTooLargeError(ClientError):
    code = 102


class CompactedError(ClientError):
    code = 103

    def __init__(self, message: str = "", *, compact_revision: int = 0) -> None:
        super().__init__(
            message or f"revision has been compacted (compact revision {compact_revision})"
        )
        self.compact_revision = compact_revision


class FutureRevisionError(ClientError):
    code = 104


class LeaseNotFoundError(ClientError):
    code = 105


class MemberError(ClientError):
    code = 106


class DuplicateRequestError(ClientError):
    code = 107


class UnavailableError(PnyxError):
    """The cluster cannot answer now; the same request may succeed later."""

    code = 200


class NotLeaderError(UnavailableError):
    code = 201

    def __init__(self, message: str = "", *, leader_hint: str | None = None) -> None:
        super().__init__(message or f"not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint


class NoLeaderError(UnavailableError):
    code = 202


class ProposalDroppedError(UnavailableError):
    code = 203

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class NoEndpointError(UnavailableError):
    code = 204


class TimeoutError(UnavailableError, builtins.TimeoutError):
    """No answer within the deadline. Also a builtin ``TimeoutError``, so either
    ``except`` clause catches it."""

    code = 205


class SlowWatcherError(UnavailableError):
    code = 206


class StorageError(PnyxError):
    code = 300


class CorruptionError(StorageError):
    code = 301


class RecipeError(PnyxError):
    code = 400


class SessionExpiredError(RecipeError):
    code = 401


class LockTimeoutError(RecipeError):
    code = 402


class LockLostError(RecipeError):
    code = 403


class NotLeaderAnymoreError(RecipeError):
    code = 404
