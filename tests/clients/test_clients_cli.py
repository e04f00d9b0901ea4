"""The client commands of the ``pnyx`` command line, through click's CliRunner against a
fake node: parsing, simple and JSON output, error lines and exit codes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from pnyx.clients import Client, cmp, op
from pnyx.clients.cli import (
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    main,
    parse_compare,
    parse_op,
    parse_txn,
)
from pnyx.core.wire import (
    DeleteRangeRequest,
    LeaseKeepAliveRequest,
    PutRequest,
    RangeRequest,
    WatchCreateRequest,
)

Pnyx = Callable[..., Result]


@pytest.fixture
def pnyx(fake: Any) -> Pnyx:
    """``pnyx(*args, input=None)``: run the command line against the fake node."""
    runner = CliRunner()

    def run(*args: str, input: bytes | str | None = None) -> Result:
        return runner.invoke(main, ["--endpoints", fake.endpoint, *args], input=input)

    return run


def lines(result: Result) -> list[str]:
    return result.output.splitlines()


def received(fake: Any, message_type: type) -> list[Any]:
    return [e.message for e in fake.received if type(e.message) is message_type]


# --------------------------------------------------------------------------- parsing


def test_compare_lines_in_etcdctl_syntax() -> None:
    assert parse_compare('mod("key1") > "0"') == (cmp.mod("key1") > 0)
    assert parse_compare('value("k") = "a b"') == (cmp.value("k") == "a b")
    assert parse_compare("version(k) != 3") == (cmp.version("k") != 3)
    assert parse_compare('c("k") < "9"') == (cmp.create("k") < 9)
    assert parse_compare('lease("k") == "1f"') == (cmp.lease("k") == 0x1F)
    for bad in ['size("k") = "1"', 'version("k") = "x"', "version k = 1", 'mod("k") >= "1"']:
        with pytest.raises(click.UsageError):
            parse_compare(bad)


def test_op_lines() -> None:
    assert parse_op('put k "two words" --lease=ff') == op.put("k", "two words", lease=0xFF)
    assert parse_op("get p/ --prefix --limit=2 --keys-only") == op.get(
        "p/", prefix=True, limit=2, keys_only=True
    )
    assert parse_op("get a c --rev=4") == op.get("a", range_end="c", revision=4)
    assert parse_op("del p/ --prefix") == op.delete("p/", prefix=True)
    for bad in ["put k", "get", "frobnicate k", "del k --lease=1", 'put k "unclosed']:
        with pytest.raises(click.UsageError):
            parse_op(bad)


def test_txn_sections_are_separated_by_blank_lines() -> None:
    compares, success, failure = parse_txn(
        '# claim the job\nversion("job") = "0"\n\nput job mine\nget job\n\nget job\n'
    )
    assert compares == [cmp.version("job") == 0]
    assert success == [op.put("job", "mine"), op.get("job")]
    assert failure == [op.get("job")]
    assert parse_txn("\n\nput a b\n") == ([], [], [op.put("a", "b")])


# --------------------------------------------------------------------------- key-value


def test_put_get_del_simple_output(pnyx: Pnyx, fake: Any) -> None:
    assert pnyx("put", "a", "1").output == "OK\n"
    assert pnyx("put", "b", input=b"from stdin").output == "OK\n"
    assert received(fake, PutRequest)[-1].value == b"from stdin"
    assert lines(pnyx("get", "", "--prefix")) == ["a", "1", "b", "from stdin"]
    assert lines(pnyx("get", "a", "--keys-only")) == ["a"]
    assert lines(pnyx("get", "a", "c", "--count-only")) == ["2"]
    get = received(fake, RangeRequest)[-1]
    assert (get.key, get.range_end, get.count_only) == (b"a", b"c", True)
    pnyx("get", "a", "--serializable", "--limit", "1", "--rev", "3")
    get = received(fake, RangeRequest)[-1]
    assert (get.serializable, get.limit, get.revision) == (True, 1, 3)
    assert lines(pnyx("del", "", "--prefix")) == ["2"]
    assert received(fake, DeleteRangeRequest)[-1].range_end == b"\0"


def test_json_output_uses_etcd_field_names_and_base64_for_non_utf8(pnyx: Pnyx, fake: Any) -> None:
    pnyx("put", "k", input=b"\xff\x00binary")
    out = json.loads(pnyx("-w", "json", "get", "k").output)
    assert set(out) == {"header", "kvs", "more", "count"}
    assert set(out["header"]) == {"cluster_id", "member_id", "revision", "raft_term"}
    (kv,) = out["kvs"]
    assert kv["key"] == "k" and "key_base64" not in kv
    assert kv["value_base64"] is True and kv["value"] == "/wBiaW5hcnk="
    assert {"create_revision", "mod_revision", "version", "lease"} <= set(kv)
    put = json.loads(pnyx("-w", "json", "put", "k", "v", "--prev-kv").output)
    assert put["prev_kv"]["value"] == "/wBiaW5hcnk="
    deleted = json.loads(pnyx("-w", "json", "del", "k").output)
    assert deleted["deleted"] == 1


def test_txn_from_stdin(pnyx: Pnyx, fake: Any) -> None:
    script = 'version("job") = "0"\n\nput job mine\n\nget job\n'
    assert lines(pnyx("txn", input=script)) == ["SUCCESS", "", "OK"]
    assert lines(pnyx("txn", input=script)) == ["FAILURE", "", "job", "mine"]
    out = json.loads(pnyx("-w", "json", "txn", input=script).output)
    assert out["succeeded"] is False
    assert out["responses"][0]["response_range"]["kvs"][0]["value"] == "mine"


def test_compact(pnyx: Pnyx) -> None:
    for value in "abc":
        pnyx("put", "k", value)
    assert pnyx("compact", "3").output == "compacted revision 3\n"
    result = pnyx("get", "k", "--rev", "2")
    assert result.exit_code == EXIT_REFUSED
    assert (
        result.output == "Error: CompactedError: revision has been compacted (compact revision 3)\n"
    )


# --------------------------------------------------------------------------- watch


def test_watch_prints_events_until_count(pnyx: Pnyx, fake: Any) -> None:
    def writer() -> None:
        deadline = time.monotonic() + 10
        while not fake.watches and time.monotonic() < deadline:
            time.sleep(0.005)
        with Client([fake.endpoint]) as kv:
            kv.put("cfg/a", "on")
            kv.delete("cfg/a")

    thread = threading.Thread(target=writer)
    thread.start()
    result = pnyx("watch", "cfg/", "--prefix", "--count", "2")
    thread.join(10)
    assert result.exit_code == 0, result.output
    assert lines(result) == ["PUT", "cfg/a", "on", "DELETE", "cfg/a"]
    assert received(fake, WatchCreateRequest)[0].range_end == b"cfg0"


def test_watch_json_replays_history_one_line_per_revision(pnyx: Pnyx) -> None:
    pnyx("put", "k", "1")
    pnyx("put", "k", "2")
    result = pnyx("-w", "json", "watch", "k", "--rev", "2", "--count", "2", "--prev-kv")
    rows = [json.loads(line) for line in lines(result)]
    assert [row["header"]["revision"] for row in rows] == [2, 3]
    assert rows[1]["events"][0]["type"] == "PUT"
    assert rows[1]["events"][0]["prev_kv"]["value"] == "1"


# --------------------------------------------------------------------------- leases


def test_lease_commands_use_hex_ids(pnyx: Pnyx, fake: Any) -> None:
    assert pnyx("lease", "grant", "30").output == "lease 1000 granted with TTL(30s)\n"
    pnyx("put", "owned", "x", "--lease", "1000")
    assert received(fake, PutRequest)[-1].lease == 0x1000
    assert lines(pnyx("lease", "list")) == ["found 1 leases", "1000"]
    assert pnyx("lease", "ttl", "1000", "--keys").output == (
        "lease 1000 granted with TTL(30s), remaining(30s), attached keys([owned])\n"
    )
    assert pnyx("lease", "keep-alive", "--once", "1000").output == (
        "lease 1000 keepalived with TTL(30)\n"
    )
    assert received(fake, LeaseKeepAliveRequest)[-1].id == 0x1000
    granted = json.loads(pnyx("-w", "json", "lease", "grant", "10").output)
    assert granted["id"] == 0x1001 and granted["ttl"] == 10
    assert pnyx("lease", "revoke", "1000").output == "lease 1000 revoked\n"
    assert pnyx("lease", "ttl", "1000").output == "lease 1000 already expired\n"
    gone = pnyx("lease", "revoke", "1000")
    assert gone.exit_code == EXIT_REFUSED
    assert gone.output.startswith("Error: LeaseNotFoundError: ")
    assert pnyx("lease", "revoke", "not-hex").exit_code == EXIT_USAGE


# --------------------------------------------------------------------------- cluster


def test_member_commands(pnyx: Pnyx) -> None:
    assert lines(pnyx("member", "list"))[0].startswith("1, started, node1, , tcp://127.0.0.1:")
    added = pnyx("member", "add", "n2", "--peer-urls", "tcp://10.0.0.2:7200", "--learner")
    assert added.output == "Member 2 added to cluster as a learner\n"
    members = json.loads(pnyx("-w", "json", "member", "list").output)["members"]
    assert members[1] == {
        "id": 2,
        "name": "n2",
        "peer_urls": ["tcp://10.0.0.2:7200"],
        "client_urls": [],
        "is_learner": True,
    }
    assert pnyx("member", "promote", "2").output == "Member 2 promoted\n"
    assert pnyx("member", "remove", "2").output == "Member 2 removed from cluster\n"
    assert pnyx("member", "remove", "2").exit_code == EXIT_REFUSED


def test_status_and_health(pnyx: Pnyx, fake: Any) -> None:
    (line,) = lines(pnyx("status"))
    assert line.startswith(f"{fake.endpoint}, 1, fake-0, ")
    assert "leader" in line
    (row,) = json.loads(pnyx("-w", "json", "status").output)
    assert row["endpoint"] == fake.endpoint and row["status"]["leader"] == 1
    healthy = pnyx("health")
    assert healthy.exit_code == 0
    assert healthy.output.startswith(f"{fake.endpoint} is healthy: took = ")
    fake.leader_id = 0
    sick = pnyx("-w", "json", "health")
    assert sick.exit_code == EXIT_REFUSED
    (report,) = json.loads(sick.output)
    assert report["health"] is False and report["error"] == "no leader"


# --------------------------------------------------------------------------- errors


def test_unreachable_cluster_is_one_line_and_exit_code_3() -> None:
    result = CliRunner().invoke(
        main, ["--endpoints", "tcp://127.0.0.1:1", "--timeout", "0.3", "get", "k"]
    )
    assert result.exit_code == EXIT_UNAVAILABLE
    assert len(lines(result)) == 1
    # Which of the two a refused endpoint gives depends on whether the refusal is seen
    # before the 0.3 s deadline (a busy machine may not get there): both are
    # "unavailable", one line, exit code 3.
    assert result.output.startswith(("Error: NoEndpointError: ", "Error: TimeoutError: "))
    status = CliRunner().invoke(
        main, ["--endpoints", "tcp://127.0.0.1:1", "--timeout", "0.3", "status"]
    )
    assert status.exit_code == EXIT_UNAVAILABLE


def test_invalid_input_is_refused_before_the_network(pnyx: Pnyx, fake: Any) -> None:
    result = pnyx("get", "b", "a")
    assert result.exit_code == EXIT_REFUSED
    assert result.output.startswith("Error: InvalidRequestError: RangeRequest: range_end")
    assert received(fake, RangeRequest) == []
    assert pnyx("get").exit_code == EXIT_USAGE
    assert pnyx("--timeout", "0", "get", "k").exit_code == EXIT_USAGE


def test_endpoints_come_from_the_environment(fake: Any) -> None:
    result = CliRunner().invoke(main, ["put", "k", "v"], env={"PNYX_ENDPOINTS": fake.endpoint})
    assert result.exit_code == 0 and result.output == "OK\n"


def test_help_documents_the_output_conventions() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    assert "base64" in text and "Exit codes" in text
    for command in ["put", "get", "del", "txn", "watch", "lease", "member", "status", "health"]:
        assert command in text


def test_write_out_is_accepted_after_the_command_too(pnyx: Pnyx) -> None:
    assert pnyx("put", "k", "v").exit_code == 0
    after = pnyx("get", "k", "-w", "json")
    before = pnyx("-w", "json", "get", "k")
    assert after.exit_code == 0 and before.exit_code == 0, after.output + before.output
    assert json.loads(after.output)["kvs"][0]["value"] == "v"
    assert json.loads(after.output)["kvs"] == json.loads(before.output)["kvs"]
    # The local option wins over the global one.
    assert pnyx("-w", "json", "get", "k", "--write-out=simple").output.splitlines() == ["k", "v"]
