"""`pnyx up` end to end: it starts a cluster, prints endpoints that serve, stops every node
it started on SIGINT, and a second run on the same data directory resumes the data.
`pnyx node` hands over to the server's own option parser."""

from __future__ import annotations

import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from pnyx.clients import Client

pytestmark = [pytest.mark.xdist_group("pnyx-cluster"), pytest.mark.timeout(120)]

_CLI = [sys.executable, "-c", "from pnyx.clients.cli import main; main()"]


def _free_base_port() -> int:
    """A base port whose client (base+i) and peer (base+100+i) ports are all free now."""
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 50000)
        ports = [base + i for i in (1, 2, 3, 101, 102, 103)]
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range found")


class Up:
    """A running `pnyx up`, its output read line by line on a thread."""

    def __init__(self, data_dir: str, base_port: int, own_group: bool = False) -> None:
        self.process = subprocess.Popen(
            [*_CLI, "up", "--nodes", "3", "--data-dir", data_dir, "--base-port", str(base_port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=own_group,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.output)
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in:\n{''.join(self.output)}")

    def interrupt(self, group: bool = False) -> str:
        """SIGINT to `pnyx up`, or (``group``) to its whole process group, nodes
        included, as Ctrl-C in a terminal does."""
        if group:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGINT)
        line = self.wait_for_line("pnyx: stopped")
        assert self.process.wait(timeout=30) == 0
        return line

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_pnyx_up_serves_stops_its_nodes_and_resumes_on_the_same_data(tmp_path: object) -> None:
    data_dir = os.path.join(str(tmp_path), "pnyx-data")
    base = _free_base_port()
    endpoints = [f"tcp://127.0.0.1:{base + i}" for i in (1, 2, 3)]
    up = Up(data_dir, base)
    try:
        exported = up.wait_for_line("export PNYX_ENDPOINTS=")
        assert exported.strip() == "export PNYX_ENDPOINTS=" + ",".join(endpoints)
        up.wait_for_line("Press Ctrl-C")
        with Client(endpoints, timeout=15.0) as kv:
            kv.put("persisted", "yes")
        stopped = up.interrupt()
        assert stopped.strip() == "pnyx: stopped n1=0, n2=0, n3=0"
    finally:
        up.kill()
    assert sorted(os.listdir(data_dir)) == ["n1", "n1.log", "n2", "n2.log", "n3", "n3.log"]

    again = Up(data_dir, base)
    try:
        again.wait_for_line("Press Ctrl-C")
        with Client(endpoints, timeout=15.0) as kv:
            assert [item.value for item in kv.get("persisted").kvs] == [b"yes"]
        again.interrupt()
    finally:
        again.kill()


def test_pnyx_node_uses_the_server_option_parser() -> None:
    result = subprocess.run(
        [*_CLI, "node", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "--initial-cluster-state" in result.stdout
    assert "usage: pnyx node" in result.stdout
    bad = subprocess.run(
        [*_CLI, "node", "--name", "x"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "--data-dir" in bad.stderr


def test_ctrl_c_that_reaches_every_node_still_reports_every_exit_code(tmp_path: object) -> None:
    """The nodes may exit on their own SIGINT before `pnyx up` stops them."""
    data_dir = os.path.join(str(tmp_path), "pnyx-data")
    up = Up(data_dir, _free_base_port(), own_group=True)
    try:
        up.wait_for_line("Press Ctrl-C")
        stopped = up.interrupt(group=True)
        assert stopped.strip() == "pnyx: stopped n1=0, n2=0, n3=0"
    finally:
        up.kill()
