"""Client-side throughput ceiling against a fake node in another process (run by hand:
``python tests/clients/bench_client.py``; not a test). Reports round trips per second for
sequential puts (blocking ``Client``), 100 concurrent puts (``AsyncClient`` with
``asyncio.gather``; and ``Client`` shared by 100 threads), and a raw blocking
DEALER as the floor of what any client on this machine can do against the same peer."""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from pnyx.clients import AsyncClient, Client
from pnyx.core.wire import (
    Envelope,
    PutRequest,
    PutResponse,
    ResponseHeader,
    decode_batch,
    encode_batch,
)


def _fakeserver() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_fakeserver", Path(__file__).with_name("fakeserver.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fakeserver"] = module
    spec.loader.exec_module(module)
    return module


def _serve(port_queue: Any, stop: Any) -> None:
    server = _fakeserver().FakeServer().start()
    port_queue.put(server.port)
    stop.wait()
    server.stop()


def _serve_echo(port_queue: Any, stop: Any) -> None:
    """The cheapest possible peer: every envelope answered with a fixed PutResponse,
    in one reply message per request message. Measures the client, not the server."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    port_queue.put(router.bind_to_random_port("tcp://127.0.0.1"))
    reply = PutResponse(ResponseHeader(1, 1, 1, 1, 1))
    while not stop.is_set():
        if not router.poll(100):
            continue
        routing_id, data = router.recv_multipart()
        envelopes = decode_batch(data)
        router.send_multipart(
            [routing_id, encode_batch([Envelope(e.request_id, reply) for e in envelopes])]
        )


_cpu_started = [0.0]


def _rate(count: int, started: float) -> str:
    """Round trips per second (wall clock: depends on the machine's load) and client
    CPU per round trip (this process, all threads: the client-side cost, which bounds
    the client at 1e6 / that many round trips per second per core)."""
    wall = time.perf_counter() - started
    cpu = time.process_time() - _cpu_started[0]
    return f"{count / wall:9.0f} round trips/s, {cpu / count * 1e6:6.1f} us client CPU each"


def _start() -> float:
    _cpu_started[0] = time.process_time()
    return time.perf_counter()


def main(seconds: float = 2.0) -> None:
    for name, target in (("echo peer", _serve_echo), ("fake node", _serve)):
        print(f"--- against the {name} (another process)")
        _run(target, seconds)


def _run(target: Any, seconds: float) -> None:
    ports: Any = multiprocessing.Queue()
    stop = multiprocessing.Event()
    process = multiprocessing.Process(target=target, args=(ports, stop), daemon=True)
    process.start()
    endpoint = f"tcp://127.0.0.1:{ports.get(timeout=10)}"
    try:
        # Raw floor: one blocking DEALER, one envelope per message, no client logic.
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(endpoint)
        put = PutRequest(b"bench/raw", b"v" * 16)
        count, started = 0, _start()
        while time.perf_counter() - started < seconds:
            sock.send(encode_batch([Envelope(count + 1, put, b"raw-client", count + 1)]))
            decode_batch(sock.recv(), validate=False)
            count += 1
        print(f"raw DEALER, sequential         {_rate(count, started)}")
        sock.close(linger=0)

        with Client(endpoint) as kv:
            kv.put("warm", "up")
            count, started = 0, _start()
            while time.perf_counter() - started < seconds:
                kv.put("bench/seq", "v" * 16)
                count += 1
            print(f"Client, sequential puts        {_rate(count, started)}")

            done = [0]
            lock = threading.Lock()
            deadline = time.perf_counter() + seconds

            def worker() -> None:
                while time.perf_counter() < deadline:
                    kv.put("bench/threads", "v" * 16)
                    with lock:
                        done[0] += 1

            threads = [threading.Thread(target=worker) for _ in range(100)]
            started = _start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            print(f"Client, 100 threads            {_rate(done[0], started)}")

        async def concurrent() -> None:
            async with AsyncClient(endpoint) as kv:
                await kv.put("warm", "up")
                count, started = 0, _start()
                while time.perf_counter() - started < seconds:
                    await kv.put("bench/seq", "v" * 16)
                    count += 1
                print(f"AsyncClient, sequential puts   {_rate(count, started)}")
                count, started = 0, _start()
                while time.perf_counter() - started < seconds:
                    await asyncio.gather(*(kv.put("bench/conc", "v" * 16) for _ in range(100)))
                    count += 100
                print(f"AsyncClient, 100 concurrent    {_rate(count, started)}")

        asyncio.run(concurrent())
    finally:
        stop.set()
        process.join(10)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
