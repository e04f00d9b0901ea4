"""In-process parts of the server: member ids, cluster flags, configuration checks, the
replicated member table and the server commands carried in Raft entries."""

from __future__ import annotations

import msgpack
import pytest

from pnyx.core.raft.types import ConfChange, ConfChangeType, ConfState
from pnyx.core.server.config import (
    NodeConfig,
    build_parser,
    config_from_args,
    member_id,
    min_lease_ttl,
    parse_cluster,
)
from pnyx.core.server.members import (
    SERVER_COMMAND_PREFIX,
    MemberContext,
    MemberRecord,
    MemberTable,
    PublishMember,
    decode_removed_notice,
    decode_server_command,
    encode_removed_notice,
    encode_server_command,
    is_server_command,
)
from pnyx.core.server.node import lease_duration


def test_member_id_is_a_stable_positive_63_bit_hash_of_the_name() -> None:
    # Fixed value: every member, tool and test must derive the same id from a name,
    # across processes and versions.
    assert member_id("n1") == 7452203632095078013
    ids = {member_id(f"node-{i}") for i in range(1000)}
    assert len(ids) == 1000
    assert all(0 < node_id < 1 << 63 for node_id in ids)


def test_parse_cluster_reads_name_url_pairs_and_refuses_garbage() -> None:
    assert parse_cluster(" a=tcp://h:1 , b=tcp://h:2,") == {"a": "tcp://h:1", "b": "tcp://h:2"}
    assert parse_cluster("") == {}
    for bad in ("a", "=tcp://h:1", "a=", "a=x,a=y"):
        with pytest.raises(ValueError):
            parse_cluster(bad)


def _args(*extra: str) -> list[str]:
    return ["--name", "n1", "--data-dir", "/tmp/x", *extra]


def test_config_from_args_defaults_to_a_single_member_cluster() -> None:
    config = config_from_args(build_parser().parse_args(_args()))
    assert config.initial_cluster == {"n1": "tcp://127.0.0.1:7201"}
    assert config.client_url == "tcp://127.0.0.1:7101"
    assert config.tick_interval == pytest.approx(0.01)
    # Heartbeats every 50 ms, elections after 300-600 ms.
    assert config.heartbeat_ticks * config.tick_interval == pytest.approx(0.05)
    assert config.election_timeout_max == pytest.approx(0.6)


def test_min_lease_ttl_outlives_an_election() -> None:
    assert min_lease_ttl(0.6) == 1
    assert min_lease_ttl(4.0) == 6
    config = config_from_args(build_parser().parse_args(_args("--election-ticks", "300")))
    assert config.limits.min_lease_ttl >= 1.5 * config.election_timeout_max


def test_the_read_lease_is_shorter_than_the_least_vote_refusal_of_a_follower() -> None:
    config = config_from_args(build_parser().parse_args(_args()))
    assert config.lease_reads
    lease = lease_duration(config)
    # A follower refuses votes for at least election_ticks - 4 tick intervals of real
    # time after hearing from its leader (3 ticks may come in one catch-up burst).
    refusal = (config.election_ticks - 4) * config.tick_interval
    assert 0 < lease < refusal
    assert lease > 2 * config.heartbeat_ticks * config.tick_interval  # renewed in time
    off = config_from_args(build_parser().parse_args(_args("--no-lease-reads")))
    assert not off.lease_reads and lease_duration(off) == 0.0
    assert off.quorum_first  # independent switches
    assert config_from_args(build_parser().parse_args(_args("--no-quorum-first"))).lease_reads
    short = config_from_args(
        build_parser().parse_args(_args("--election-ticks", "5", "--heartbeat-ticks", "1"))
    )
    assert lease_duration(short) == 0.0  # too short an election timeout: no lease at all


def test_quorum_first_replication_is_on_unless_turned_off() -> None:
    assert config_from_args(build_parser().parse_args(_args())).quorum_first
    off = config_from_args(build_parser().parse_args(_args("--no-quorum-first")))
    assert not off.quorum_first


def test_the_client_socket_cap_lets_a_merely_oversized_message_reach_the_decoder() -> None:
    config = config_from_args(build_parser().parse_args(_args("--max-message-bytes", "1000")))
    assert config.limits.max_message_bytes == 1000
    assert config.socket_options.max_client_message_bytes > 1000


@pytest.mark.parametrize(
    "extra",
    [
        ("--initial-cluster", "n2=tcp://h:1"),  # does not list this member
        ("--heartbeat-ticks", "30", "--election-ticks", "30"),
        ("--snapshot-count", "0"),
        ("--tick-ms", "0"),
    ],
)
def test_invalid_configurations_are_refused(extra: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        config_from_args(build_parser().parse_args(_args(*extra)))


def test_node_config_requires_a_name() -> None:
    with pytest.raises(ValueError):
        NodeConfig(name="", data_dir="d", listen_client="c", listen_peer="p").validate()


def test_member_table_follows_configuration_changes_and_round_trips() -> None:
    table = MemberTable()
    n1, n2 = member_id("n1"), member_id("n2")
    # Bootstrap entries carry no context: what the node knows from its flags fills in.
    table.apply_conf_change(
        ConfChange(ConfChangeType.ADD_NODE, n1), MemberRecord(n1, "n1", "tcp://p1", "tcp://c1")
    )
    context = MemberContext("n2", "tcp://p2").encode()
    table.apply_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, n2, context))
    assert table.conf_state() == ConfState(voters=frozenset({n1}), learners=frozenset({n2}))
    assert table.get(n2) == MemberRecord(n2, "n2", "tcp://p2", "", is_learner=True)
    table.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, n2))  # promote
    assert table.get(n2) == MemberRecord(n2, "n2", "tcp://p2", "", is_learner=False)
    table.publish(PublishMember(n2, "n2", "tcp://c2"))
    assert table.by_name("n2") == MemberRecord(n2, "n2", "tcp://p2", "tcp://c2")
    assert [m.name for m in table.to_wire()] == [r.name for r in table]
    restored = MemberTable.load(msgpack.unpackb(msgpack.packb(table.dump())))
    assert restored.dump() == table.dump()
    table.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, n1))
    assert n1 not in table and len(table) == 1
    assert table.removed == {n1}
    assert MemberTable.load(msgpack.unpackb(msgpack.packb(table.dump()))).removed == {n1}
    # The same name added again is a member again, not a removed one.
    table.apply_conf_change(
        ConfChange(ConfChangeType.ADD_NODE, n1, MemberContext("n1", "p").encode())
    )
    assert n1 in table and table.removed == frozenset()


def test_publishing_for_a_non_member_changes_nothing() -> None:
    table = MemberTable()
    assert table.publish(PublishMember(42, "x", "tcp://c")) is None
    assert len(table) == 0


@pytest.mark.parametrize(
    "dumped",
    [
        None,
        [[[1, "a", "b", "c"]], []],
        [[["1", "a", "b", "c", False]], []],
        [[[1, "a", "b", 3, True]], []],
        [[], ["x"]],
        [[]],
    ],
)
def test_a_malformed_member_table_is_refused(dumped: object) -> None:
    with pytest.raises(ValueError):
        MemberTable.load(dumped)


def test_server_commands_cannot_be_confused_with_key_value_commands() -> None:
    command = PublishMember(7, "n7", "tcp://c7")
    data = encode_server_command(command)
    assert is_server_command(data)
    assert decode_server_command(data) == command
    # Every msgpack value starts with a byte other than 0xC1.
    for value in (None, 0, -1, "s", b"b", [1, 2], {"a": 1}, 1.5, True):
        assert not is_server_command(msgpack.packb(value))
    assert decode_server_command(SERVER_COMMAND_PREFIX + b"\xff\x00") is None
    assert decode_server_command(SERVER_COMMAND_PREFIX + msgpack.packb([9, 1, "a", "b"])) is None
    notice = encode_removed_notice(42)
    assert is_server_command(notice) and decode_removed_notice(notice) == 42
    assert decode_server_command(notice) is None
    assert decode_removed_notice(data) is None
    assert decode_removed_notice(SERVER_COMMAND_PREFIX + b"\xff") is None


def test_member_context_decodes_garbage_as_none() -> None:
    for garbage in (b"", b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb(["a", "b"])):
        assert MemberContext.decode(garbage) is None
    context = MemberContext("n", "tcp://p", "tcp://c")
    assert MemberContext.decode(context.encode()) == context
