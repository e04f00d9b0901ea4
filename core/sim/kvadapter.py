"""The real replicated store, ``pnyx.core.kv.KVStateMachine``, behind the simulation's
``KVStateMachine`` interface: a write is a put, a compare-and-set is a transaction
comparing the key's value (or, for "absent", its version with 0), a read is a range on
one key, and sessions are the store's own exactly-once table (client id, seq).

An adapter only: it translates, and must never decide anything the store decides
(duplicates, outcomes); an outcome it cannot translate is a bug and raises.
"""

from __future__ import annotations

import attrs

from pnyx.core.kv.store import ClientCommand, decode_command, encode_command
from pnyx.core.kv.store import KVStateMachine as Store
from pnyx.core.sim.history import Value
from pnyx.core.sim.statemachine import Applied, Command
from pnyx.core.wire.messages import (
    Compare,
    CompareResult,
    CompareTarget,
    ErrorResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    TxnRequest,
    TxnResponse,
)


@attrs.define
class RealKV:
    store: Store = attrs.field(factory=Store)

    def encode(self, command: Command) -> bytes:
        key, value = command.key.encode(), command.value.encode()
        put = PutRequest(key, value)
        if not command.cas:
            return encode_command(ClientCommand(_client_id(command.client), command.seq, put))
        if command.expected is None:
            guard = Compare(CompareTarget.VERSION, CompareResult.EQUAL, key, 0)
        else:
            guard = Compare(
                CompareTarget.VALUE, CompareResult.EQUAL, key, command.expected.encode()
            )
        txn = TxnRequest(compare=(guard,), success=(put,))
        return encode_command(ClientCommand(_client_id(command.client), command.seq, txn))

    def apply(self, index: int, data: bytes) -> Applied | None:
        response = self.store.apply_entry(index, data)
        if response is None or not data:
            return None
        command = decode_command(data)
        assert isinstance(command, ClientCommand)
        client, seq = int(command.client_id), command.seq
        if isinstance(response, PutResponse):
            return Applied(client, seq, True)
        if isinstance(response, TxnResponse):
            return Applied(client, seq, response.succeeded)
        if isinstance(response, ErrorResponse):
            # An old sequence number the exactly-once table no longer answers for.
            return Applied(client, seq, False, stale=True)
        raise AssertionError(f"unexpected response {response!r}")

    def read(self, key: str) -> Value:
        kvs = self.store.range(RangeRequest(key.encode())).kvs
        return kvs[0].value.decode() if kvs else None

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        self.store.restore(data)


def _client_id(client: int) -> bytes:
    return str(client).encode()
