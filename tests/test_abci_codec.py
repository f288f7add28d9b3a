"""The ABCI codec against bytes written by CometBFT v0.38.25 itself.

tests/vectors/abci/recorded.jsonl: frames recorded between a live CometBFT node and CometBFT's
Go kvstore application (record.py); generated.jsonl: frames encoded by CometBFT's Go types
for the messages a live network does not send (gen/main.go). Every frame must decode to its
message type and re-encode to the very same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.codec import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    FrameReader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
)
from careledger.consensus.cometbft.protowire import CodecError, decode_uvarint, encode_uvarint

VECTORS = Path(__file__).parent / "vectors" / "abci"


def _load(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (VECTORS / name).read_bytes().splitlines() if line]


ALL = _load("recorded.jsonl") + _load("generated.jsonl")


def _split(data: bytes) -> bytes:
    frames = FrameReader().feed(data)
    assert len(frames) == 1
    return frames[0]


@pytest.mark.parametrize("vector", ALL, ids=lambda v: f"{v['direction']}-{v['type']}")
def test_every_recorded_frame_decodes_and_reencodes_byte_for_byte(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["frame"])
    body = _split(data)
    if vector["direction"] == "request":
        message = decode_request(body)
        again = encode_request(message)
    else:
        message = decode_response(body)
        again = encode_response(message)
    assert type(message).__name__ == vector["type"]
    assert again == body
    assert frame(again) == data


def test_the_vectors_cover_every_request_and_response_type() -> None:
    seen = {(v["direction"], v["type"]) for v in ALL}
    wanted = {("request", c.__name__) for c in REQUEST_TYPES.values()}
    wanted |= {("response", c.__name__) for c in RESPONSE_TYPES.values()}
    assert wanted <= seen
    live = {v["type"] for v in _load("recorded.jsonl")}
    for name in ("RequestFinalizeBlock", "RequestPrepareProposal", "RequestProcessProposal"):
        assert name in live  # the consensus path itself comes from a running node


def _generated(type_name: str) -> Any:
    vector = next(v for v in _load("generated.jsonl") if v["type"] == type_name)
    body = _split(bytes.fromhex(vector["frame"]))
    return decode_request(body) if vector["direction"] == "request" else decode_response(body)


def test_decoded_fields_carry_cometbft_values() -> None:
    init = _generated("RequestInitChain")
    assert init.chain_id == "c" and init.initial_height == 1
    assert init.app_state_bytes == b'{"a":1}'
    assert init.validators[0].pub_key.ed25519 == bytes([7]) * 32
    assert init.time.unix_ns == 1_767_323_045_000_006_007
    final = _generated("RequestFinalizeBlock")
    assert final.height == 1 << 40 and final.txs == [b"a", b"b"]
    assert final.misbehavior[0].time.seconds < 0  # 1960: negative int64 in ten bytes
    assert final.decided_last_commit.votes[0].block_id_flag == 2
    query = _generated("ResponseQuery")
    assert query.index == -2 and query.code == 9 and query.proof_ops
    chunk = _generated("ResponseApplySnapshotChunk")
    assert chunk.refetch_chunks == [1, 300]  # packed repeated uint32
    assert _generated("RequestEcho").message == "héllo"


def test_frames_split_correctly_whatever_the_chunking() -> None:
    stream = b"".join(bytes.fromhex(v["frame"]) for v in ALL)
    expected = [_split(bytes.fromhex(v["frame"])) for v in ALL]
    rng = random.Random(7)
    reader = FrameReader()
    got: list[bytes] = []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 17, 500, 4096])
        got += reader.feed(stream[pos : pos + step])
        pos += step
    assert got == expected and reader.pending == 0


def test_bad_bytes_raise_codec_errors_not_other_exceptions() -> None:
    with pytest.raises(CodecError):
        FrameReader(max_frame=10).feed(encode_uvarint(11) + b"x" * 11)
    with pytest.raises(CodecError):
        FrameReader().feed(b"\xff" * 11)  # a length prefix that never ends
    with pytest.raises(CodecError):
        decode_request(b"\x3a\x00")  # field 7 (DeliverTx, removed): not a v0.38 request
    with pytest.raises(CodecError):
        decode_request(b"\x42\x05\x0a\x01")  # CheckTx whose length runs past the end
    assert decode_uvarint(encode_uvarint(2**64 - 1), 0) == (2**64 - 1, 10)


def test_empty_messages_and_defaults_encode_as_cometbft_expects() -> None:
    assert frame(encode_response(m.ResponseFlush())) == bytes.fromhex("021a00")
    # An explicit ACCEPT is on the wire; UNKNOWN (0) would be omitted and halt the node.
    assert encode_response(m.ResponseProcessProposal(status=m.STATUS_ACCEPT)) == bytes.fromhex(
        "92010208" + "01"
    )
    # A oneof member set to empty bytes is still written (a validator's key is never dropped).
    empty_key = m.ValidatorUpdate(m.PublicKey(ed25519=b""), 0)
    assert decode_response(
        encode_response(m.ResponseFinalizeBlock(validator_updates=[empty_key]))
    ).validator_updates == [empty_key]
