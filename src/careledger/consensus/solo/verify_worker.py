"""The signature verifier's worker process: Ed25519 verifications for the solo intake.

Run as `python -m careledger.consensus.solo.verify_worker` by `SignatureVerifier`
(verifier.py), never by hand. It reads request frames on stdin and answers each, in order, on
stdout: one byte per signature, 1 when `crypto.keys.verify_signature` (the consensus rule
itself) accepts it. It reads no state and decides nothing: the answers only fill the
application's signature cache, and check_tx still decides every transaction.

The frames (big-endian lengths):
  request   u32 body length, then the body: u32 count, then count times
            (u32 len, public key)(u32 len, signature)(u32 len, message)
  answer    u32 count, then count bytes of 0 or 1

It exits when stdin reaches its end: the node closed it, or the node died (a killed node
leaves no verifier behind).
"""

from __future__ import annotations

import signal
import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO

from careledger.crypto.keys import verify_signature

_U32 = struct.Struct(">I")


def encode_request(checks: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """A request frame for (public key, signature, message) triples."""
    parts = [_U32.pack(len(checks))]
    for fields in checks:
        for field in fields:
            parts += (_U32.pack(len(field)), field)
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def decode_request(body: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    view = memoryview(body)
    (count,) = _U32.unpack_from(view, 0)
    offset = 4
    for _ in range(count):
        fields = []
        for _ in range(3):
            (length,) = _U32.unpack_from(view, offset)
            offset += 4
            fields.append(bytes(view[offset : offset + length]))
            offset += length
        yield fields[0], fields[1], fields[2]
    if offset != len(body):
        raise ValueError("a request frame with trailing bytes")


def answer(body: bytes) -> bytes:
    """The answer frame to a request body."""
    verdicts = bytes(verify_signature(key, sig, msg) for key, sig, msg in decode_request(body))
    return _U32.pack(len(verdicts)) + verdicts


def _read_exactly(source: BinaryIO, size: int) -> bytes | None:
    data = source.read(size)
    return data if len(data) == size else None  # short: the node closed the pipe


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    while (header := _read_exactly(requests, 4)) is not None:
        body = _read_exactly(requests, _U32.unpack(header)[0])
        if body is None:
            return
        answers.write(answer(body))
        answers.flush()


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the node stops this worker itself
    # (it closes stdin) after its own graceful shutdown, which may still send a batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
