"""Codec throughput, by hand: ``.venv/bin/python tests/wire/bench_wire_codec.py``.

Not a test (no timing assertions anywhere): prints microseconds per logical operation
for a batch of 100 envelopes, the way the transport sends them.
"""

from __future__ import annotations

import timeit

from pnyx.core.wire import codec
from pnyx.core.wire import messages as m

BATCH = 100
ROUNDS = 2000


def per_op(function: object) -> float:
    seconds = timeit.timeit(function, number=ROUNDS)  # type: ignore[arg-type]
    return seconds / ROUNDS / BATCH * 1e6


def main() -> None:
    requests = [
        m.Envelope(i + 1, m.PutRequest(b"key/%06d" % i, b"v" * 100), b"client-0001", i + 1)
        for i in range(BATCH)
    ]
    header = m.ResponseHeader(cluster_id=1, member_id=2, revision=1000, raft_term=3)
    responses = [m.Envelope(i + 1, m.PutResponse(header)) for i in range(BATCH)]
    request_data = codec.encode_batch(requests)
    response_data = codec.encode_batch(responses)
    encode = per_op(lambda: codec.encode_batch(requests))
    decode = per_op(lambda: codec.decode_batch(request_data))
    decode_raw = per_op(lambda: codec.decode_batch(request_data, validate=False))
    encode_response = per_op(lambda: codec.encode_batch(responses))
    decode_response = per_op(lambda: codec.decode_batch(response_data))
    print(f"PutRequest  encode {encode:.2f} us/op, decode+validate {decode:.2f} us/op")
    print(f"            (decode without validation {decode_raw:.2f} us/op)")
    print(f"PutResponse encode {encode_response:.2f} us/op, decode {decode_response:.2f} us/op")
    print(f"request encode+decode: {encode + decode:.2f} us/op")


if __name__ == "__main__":
    main()
