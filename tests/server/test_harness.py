"""The real-process harness itself: ports taken between probe and bind are retried, every
process started is killed on exit (even when the test fails), and logs are kept then."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest

from pnyx.clients import testing
from pnyx.clients.testing import LocalCluster

pytestmark = [pytest.mark.xdist_group("pnyx-cluster"), pytest.mark.timeout(120)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists": read its state.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[1].split()[0] != "Z"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_taken_after_the_probe_is_retried_with_new_ports(
    monkeypatch: pytest.MonkeyPatch, taken_port: int, tmp_path: object
) -> None:
    real_free_port = testing.free_port
    handed_out: list[int] = []

    def first_one_taken(host: str = "127.0.0.1") -> int:
        port = taken_port if not handed_out else real_free_port(host)
        handed_out.append(port)
        return port

    monkeypatch.setattr(testing, "free_port", first_one_taken)
    with LocalCluster(1, directory=os.path.join(str(tmp_path), "c")) as cluster:
        assert cluster.endpoints != [f"tcp://127.0.0.1:{taken_port}"]
        assert cluster.status("n1") is not None
    assert handed_out[0] == taken_port and len(handed_out) > 3


def test_every_process_is_killed_and_logs_are_kept_when_the_test_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pids: list[int] = []
    directory = ""
    with pytest.raises(RuntimeError, match="test failure"), LocalCluster(2) as cluster:
        directory = cluster.directory
        pids = [node.pid for node in cluster.nodes.values() if node.pid is not None]
        cluster.pause(cluster.names[0])  # even a stopped process is killed
        raise RuntimeError("test failure")
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)
    assert os.path.exists(os.path.join(directory, "n1.log"))
    assert "LocalCluster logs kept in" in capsys.readouterr().err
    shutil.rmtree(directory)
    # A successful run removes the directory it created.
    with LocalCluster(1) as clean:
        clean_directory = clean.directory
    assert not os.path.exists(clean_directory)
