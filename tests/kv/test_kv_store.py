"""KVStateMachine: exactly-once, determinism of snapshots, restore, the command codec."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import msgpack  # type: ignore[import-untyped]  # ships no type information
import pytest

from pnyx.core.errors import DuplicateRequestError, InvalidRequestError
from pnyx.core.kv import (
    ClientBatch,
    ClientCommand,
    Command,
    CompactHistory,
    ExpireLeases,
    KVStateMachine,
    decode_command,
    encode_command,
)
from pnyx.core.kv.store import SNAPSHOT_FORMAT, has_unbounded_cost
from pnyx.core.wire.messages import (
    CompactionResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    ErrorResponse,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Response,
    TxnRequest,
    WatchCreateRequest,
)


def workload(seed: int, length: int = 400) -> list[Command]:
    """A seeded mix of every command kind, including retries."""
    rng = random.Random(seed)
    commands: list[Command] = []
    seqs: dict[bytes, int] = {}
    sent: list[ClientCommand] = []
    revision_guess = 1
    for _ in range(length):
        roll = rng.random()
        client = b"client-%d" % rng.randrange(5)
        key = b"k/%d" % rng.randrange(20)
        if roll < 0.08 and sent:
            commands.append(rng.choice(sent[-50:]))  # a retry
            continue
        if roll < 0.10:
            commands.append(ExpireLeases((rng.randrange(1, 4),)))
            continue
        if roll < 0.14:
            commands.append(CompactHistory(max(1, revision_guess - rng.randrange(30))))
            continue
        request: object
        if roll < 0.55:
            request = PutRequest(key, rng.randbytes(8), rng.choice([0, 1, 2, 3]))
        elif roll < 0.65:
            request = DeleteRangeRequest(key, rng.choice([b"", b"k/5", b"\0"]))
        elif roll < 0.8:
            request = TxnRequest(
                (Compare(CompareTarget.VERSION, CompareResult.GREATER, key, rng.randrange(3)),),
                (PutRequest(key, b"t"), RangeRequest(b"k/", b"k0")),
                (DeleteRangeRequest(key),),
            )
        elif roll < 0.95:
            request = LeaseGrantRequest(rng.randrange(1, 60), rng.choice([0, 1, 2, 3]))
        else:
            request = LeaseRevokeRequest(rng.randrange(1, 4))
        seqs[client] = seqs.get(client, 0) + 1
        command = ClientCommand(client, seqs[client], request)  # type: ignore[arg-type]
        sent.append(command)
        commands.append(command)
        revision_guess += 1
    return commands


def run(
    commands: list[Command], sm: KVStateMachine | None = None, start: int = 1
) -> KVStateMachine:
    sm = sm or KVStateMachine()
    for index, command in enumerate(commands, start=start):
        sm.apply(index, command)
    return sm


# --------------------------------------------------------------------------- exactly-once


def test_a_retry_gets_the_first_response_and_is_not_applied_again() -> None:
    sm = KVStateMachine()
    first_put = ClientCommand(b"alice", 1, PutRequest(b"counter", b"1", prev_kv=True))
    first = sm.apply(1, first_put)
    sm.apply(2, ClientCommand(b"bob", 1, PutRequest(b"counter", b"2")))
    retried = sm.apply(3, first_put)
    assert retried == first
    assert isinstance(retried, PutResponse) and retried.header.revision == 2
    kv = sm.range(RangeRequest(b"counter")).kvs[0]
    assert (kv.value, kv.version) == (b"2", 2)
    # A retried error is answered with the same error.
    bad = ClientCommand(b"alice", 2, PutRequest(b"x", b"", 99))
    assert sm.apply(4, bad) == sm.apply(5, bad)
    assert sm.revision == 3


def test_seq_zero_and_reads_are_not_deduplicated() -> None:
    sm = KVStateMachine()
    put = ClientCommand(b"alice", 0, PutRequest(b"k", b"v"))
    sm.apply(1, put)
    sm.apply(2, put)
    assert sm.revision == 3
    read = ClientCommand(b"alice", 5, RangeRequest(b"k"))
    first = sm.apply(3, read)
    sm.apply(4, ClientCommand(b"alice", 0, PutRequest(b"k", b"w")))
    second = sm.apply(5, read)
    assert isinstance(first, RangeResponse) and isinstance(second, RangeResponse)
    assert first.kvs[0].value == b"v" and second.kvs[0].value == b"w"


def test_window_floor_refuses_a_seq_it_can_no_longer_answer() -> None:
    sm = KVStateMachine(dedup_window=4)
    for seq in range(1, 11):
        sm.apply(seq, ClientCommand(b"alice", seq, PutRequest(b"k", b"%d" % seq)))
    old = sm.apply(11, ClientCommand(b"alice", 3, PutRequest(b"k", b"3")))
    assert isinstance(old, ErrorResponse) and old.code == DuplicateRequestError.code
    recent = sm.apply(12, ClientCommand(b"alice", 9, PutRequest(b"k", b"9")))
    assert isinstance(recent, PutResponse) and recent.header.revision == 10
    assert sm.revision == 11  # neither was applied again


def test_least_recently_used_clients_are_evicted_deterministically() -> None:
    sm = KVStateMachine(dedup_max_clients=3)
    for index, client in enumerate([b"a", b"b", b"c", b"a", b"d"], start=1):
        sm.apply(index, ClientCommand(client, index, PutRequest(b"k", client)))
    assert len(sm.dedup) == 3
    assert sm.dedup.lookup(b"b", 2) is None  # b was the least recently used: forgotten
    assert sm.dedup.lookup(b"a", 4) is not None


def test_dedup_memory_is_bounded_by_bytes() -> None:
    sm = KVStateMachine(dedup_max_bytes=50_000)
    big = b"x" * 10_000
    for index in range(1, 41):
        sm.apply(index, ClientCommand(b"c%d" % index, 1, PutRequest(b"k", big)))
        sm.apply(
            1000 + index, ClientCommand(b"c%d" % index, 2, PutRequest(b"k", big, prev_kv=True))
        )
    assert sm.dedup.size_bytes <= 50_000


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_commands_give_byte_identical_snapshots(seed: int) -> None:
    commands = workload(seed)
    one, two = run(commands), run(commands)
    assert one.snapshot() == two.snapshot()
    assert one.revision > 100


@pytest.mark.parametrize("chunk_bytes", [1, 700, 1 << 20])
def test_the_store_encoded_key_by_key_in_chunks_is_the_whole_dump_encoded(
    chunk_bytes: int,
) -> None:
    sm = run(workload(4))
    for index in range(300):  # more keys than are packed between two size checks
        sm.apply(
            sm.applied_index + 1, ClientCommand(b"c", index + 1, PutRequest(b"n%d" % index, b"v"))
        )
    whole = msgpack.packb(sm.mvcc.dump(), use_bin_type=True)
    chunks = list(sm.mvcc.dump_packed(chunk_bytes))
    assert b"".join(chunks) == whole
    assert len(chunks) > 1 or chunk_bytes > len(whole)
    expected = msgpack.packb(
        [SNAPSHOT_FORMAT, sm.applied_index, sm.mvcc.dump(), sm.leases.dump(), sm.dedup.dump()],
        use_bin_type=True,
    )
    assert sm.snapshot() == expected


def test_snapshots_do_not_depend_on_hash_randomization(tmp_path: Path) -> None:
    """Iterating a set or dict of bytes in hash order would differ between processes."""
    script = (
        "import hashlib, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(Path(__file__))!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(hashlib.sha256(m.run(m.workload(7)).snapshot()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert digests == {hashlib.sha256(run(workload(7)).snapshot()).hexdigest()}


@pytest.mark.parametrize("cut", [0, 1, 57, 200, 399])
def test_restore_mid_stream_then_continue_equals_uninterrupted(cut: int) -> None:
    commands = workload(11)
    straight = KVStateMachine()
    responses = [straight.apply(i, c) for i, c in enumerate(commands, start=1)]
    first = run(commands[:cut])
    second = KVStateMachine()
    second.restore(first.snapshot())
    assert second.applied_index == cut
    continued = [second.apply(i, c) for i, c in enumerate(commands[cut:], start=cut + 1)]
    assert continued == responses[cut:]
    assert second.snapshot() == straight.snapshot()


def test_restore_keeps_watchers_exact() -> None:
    sm = KVStateMachine()
    sm.watches.create(WatchCreateRequest(b"k"))
    sm.apply(1, ClientCommand(b"c", 1, PutRequest(b"k", b"1")))
    other = run(
        [
            ClientCommand(b"c", 1, PutRequest(b"k", b"1")),
            ClientCommand(b"c", 2, PutRequest(b"k", b"2")),
        ]
    )
    sm.restore(other.snapshot())  # a follower installing a newer snapshot
    sm.apply(3, ClientCommand(b"c", 3, PutRequest(b"k", b"3")))
    got = []
    while sm.watches.pending:
        got.extend(d.response.header.revision for d in sm.watches.drain(10))
    assert got == [2, 3, 4]


def test_a_bad_snapshot_is_refused_and_changes_nothing() -> None:
    sm = run(workload(3, 50))
    before = sm.snapshot()
    for bad in (b"", b"\xc1", b"\x93\x01\x02\x03", before[:-3]):
        with pytest.raises(InvalidRequestError):
            sm.restore(bad)
        assert sm.snapshot() == before


# --------------------------------------------------------------------------- entries


def test_apply_entry_noop_replay_and_garbage() -> None:
    sm = KVStateMachine()
    assert sm.apply_entry(1, b"") is None  # a new leader's empty entry
    assert sm.applied_index == 1
    data = encode_command(ClientCommand(b"c", 1, PutRequest(b"k", b"v")))
    assert isinstance(sm.apply_entry(2, data), PutResponse)
    assert sm.apply_entry(2, data) is None  # already applied (replay after restart)
    garbage = sm.apply_entry(3, b"\x00garbage")
    assert isinstance(garbage, ErrorResponse) and garbage.code == InvalidRequestError.code
    assert sm.applied_index == 3 and sm.revision == 2


def test_command_codec_round_trip_and_refusals() -> None:
    commands: list[Command] = [
        ClientCommand(b"id", 3, TxnRequest((), (PutRequest(b"k", b"v"),), ())),
        ExpireLeases((1, 2, 3)),
        CompactHistory(42),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command
    for bad in (
        b"",
        b"\x92\x01\x00",
        b"\x93\x02\x01\x90",
        b"\x93\x01\x07\x01",
        b"\x93\x01\x01\x91\xa1x",
    ):
        with pytest.raises(InvalidRequestError):
            decode_command(bad)


def test_internal_compaction_command() -> None:
    sm = run(workload(5, 60))
    target = sm.revision - 2
    response = sm.apply(sm.applied_index + 1, CompactHistory(target))
    assert isinstance(response, CompactionResponse)
    assert sm.mvcc.compact_revision == target


def test_a_client_with_thousands_of_writes_in_flight_gets_first_answers_on_retry() -> None:
    """Many writes of one client in flight, a failover, every one retried: each retry is
    answered with its first response, never with DuplicateRequestError."""
    sm = KVStateMachine()
    in_flight = 5_000
    first = {
        seq: sm.apply(seq, ClientCommand(b"busy", seq, PutRequest(b"k%d" % seq, b"v")))
        for seq in range(1, in_flight + 1)
    }
    revision = sm.revision
    for seq in range(1, in_flight + 1):
        retried = sm.apply(in_flight + seq, ClientCommand(b"busy", seq, PutRequest(b"x", b"")))
        assert retried == first[seq]
    assert sm.revision == revision


def test_compact_and_full_dedup_entries_survive_a_snapshot() -> None:
    sm = KVStateMachine(dedup_window=3)
    commands = [
        ClientCommand(b"c", 1, PutRequest(b"k", b"1")),
        ClientCommand(b"c", 2, PutRequest(b"k", b"2", prev_kv=True)),
        ClientCommand(b"c", 3, PutRequest(b"k", b"3")),
        ClientCommand(b"c", 4, DeleteRangeRequest(b"k", prev_kv=True)),
    ]
    answers = [sm.apply(i, c) for i, c in enumerate(commands, start=1)]
    copy = KVStateMachine(dedup_window=3)
    copy.restore(sm.snapshot())
    assert copy.snapshot() == sm.snapshot()
    assert copy.dedup.size_bytes == sm.dedup.size_bytes
    for seq in (2, 3, 4):
        assert copy.dedup.lookup(b"c", seq) == sm.dedup.lookup(b"c", seq) == answers[seq - 1]
    with pytest.raises(DuplicateRequestError):
        copy.dedup.lookup(b"c", 1)  # evicted from a window of 3


# --------------------------------------------------------------------------- batches


def client_commands(seed: int) -> list[ClientCommand]:
    """The client commands of a workload, but lease grants (a granted id derives from the
    entry index, which a batch shares)."""
    return [
        command
        for command in workload(seed)
        if isinstance(command, ClientCommand) and not isinstance(command.request, LeaseGrantRequest)
    ]


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_a_batch_applies_as_if_each_command_had_its_own_entry(size: int) -> None:
    commands = client_commands(5)
    one_by_one = KVStateMachine()
    expected = [one_by_one.apply(i, c) for i, c in enumerate(commands, start=1)]
    batched = KVStateMachine()
    got: list[Response] = []
    for index, start in enumerate(range(0, len(commands), size), start=1):
        batch = ClientBatch(tuple(commands[start : start + size]))
        assert decode_command(encode_command(batch)) == batch
        responses = batched.apply_batch(index, batch)
        assert responses is not None
        got.extend(responses)
    assert got == expected
    assert batched.mvcc.dump() == one_by_one.mvcc.dump()
    assert batched.dedup.dump() == one_by_one.dedup.dump()
    assert batched.apply_batch(1, ClientBatch(tuple(commands[:1]))) is None  # a replay


def test_a_repeat_within_one_batch_gets_the_first_response() -> None:
    sm = KVStateMachine()
    put = ClientCommand(b"c", 1, PutRequest(b"k", b"v", prev_kv=True))
    responses = sm.apply_batch(1, ClientBatch((put, put, ClientCommand(b"c", 2, put.request))))
    assert responses is not None
    first, repeat, second = responses
    assert repeat == first and isinstance(second, PutResponse)
    assert sm.revision == 3  # the repeat was not applied
    assert sm.apply(2, ClientBatch((put,))) is None and sm.revision == 3


def test_malformed_batches_are_refused() -> None:
    good = encode_command(ClientBatch((ClientCommand(b"c", 1, PutRequest(b"k")),)))
    assert isinstance(decode_command(good), ClientBatch)
    for bad in (
        b"\x93\x01\x03\x90",  # empty
        b"\x93\x01\x03\x91\x01",  # an item that is not an array
        b"\x93\x01\x03\x91\x93\xa1c\x01\x90",  # client id not bytes
        b"\x93\x01\x03\x91\x92\xc4\x01c\x01",  # two fields
    ):
        with pytest.raises(InvalidRequestError):
            decode_command(bad)


def test_responses_nobody_waits_for_are_not_built_and_change_nothing_else() -> None:
    commands = [
        *client_commands(9),
        ClientCommand(b"x", 1, PutRequest(b"k", b"v", lease=12345)),  # refused: no lease
        ClientCommand(b"x", 2, PutRequest(b"k", b"v")),
        ClientCommand(b"x", 2, PutRequest(b"k", b"again")),  # a repeat
    ]
    full, lean = KVStateMachine(), KVStateMachine()
    wanted = {(c.client_id, c.seq) for c in commands[::3]}
    for index, start in enumerate(range(0, len(commands), 16), start=1):
        batch = ClientBatch(tuple(commands[start : start + 16]))
        everything = full.apply_batch(index, batch)
        some = lean.apply_batch(index, batch, wanted)
        assert everything is not None and some is not None
        for command, one, other in zip(batch.commands, everything, some, strict=True):
            request = command.request
            plain_put = isinstance(request, PutRequest) and not request.prev_kv
            if (command.client_id, command.seq) in wanted or not plain_put:
                assert other == one
            elif other is not None:
                assert other == one and isinstance(other, ErrorResponse)
    assert lean.snapshot() == full.snapshot()
    # A retry after all of it gets the first answer either way.
    retry = ClientCommand(b"x", 1, PutRequest(b"k", b"v", lease=12345))
    assert lean.apply(10_000, retry) == full.apply(10_000, retry)
    assert isinstance(lean.apply(10_001, commands[-2]), PutResponse)


@pytest.mark.parametrize(
    ("command", "unbounded"),
    [
        (ClientCommand(b"c", 1, PutRequest(b"k", b"v")), False),
        (ClientCommand(b"c", 1, DeleteRangeRequest(b"k")), False),
        (ClientCommand(b"c", 1, DeleteRangeRequest(b"k", b"l")), True),
        (ClientCommand(b"c", 1, LeaseRevokeRequest(7)), True),
        (ClientCommand(b"c", 1, TxnRequest(success=(PutRequest(b"k", b"v"),))), False),
        (
            ClientCommand(
                b"c",
                1,
                TxnRequest(
                    failure=(TxnRequest(success=(DeleteRangeRequest(b"a", b"\0"),)),),
                ),
            ),
            True,
        ),
        (ClientBatch((ClientCommand(b"c", 1, PutRequest(b"k", b"v")),) * 3), False),
        (
            ClientBatch(
                (
                    ClientCommand(b"c", 1, PutRequest(b"k", b"v")),
                    ClientCommand(b"d", 1, DeleteRangeRequest(b"p/", b"p0")),
                )
            ),
            True,
        ),
        (CompactHistory(5), True),
        (ExpireLeases((1, 2)), True),
    ],
)
def test_commands_whose_apply_cost_is_not_bounded_by_their_size(
    command: Command, unbounded: bool
) -> None:
    assert has_unbounded_cost(command) is unbounded
