"""Real CometBFT pipelines CheckTx; the application checks what is waiting as batches, and
answers exactly as checking each request in turn would.

The ABCI server reads every frame waiting on a connection and checks a run of consecutive
CheckTx as one batch (`AbciHandler.check_tx_responses`). The attack on that shortcut is a
batch whose answers differ from one-by-one checking (two registrations with one voucher
both admitted, a replay inside a batch let through), so that the mempool, and then the
proposals, carry transactions the rules refuse. Here node0's application records every
frame it reads and writes (CARELEDGER_ABCI_RECORD) while a flood goes through all four
nodes' RPC; afterwards a fresh application replays node0's requests one at a time through
the generic decoder, and every answer must be the recorded one, byte for byte.
"""

from __future__ import annotations

import base64
from collections import deque
from pathlib import Path

import httpx
import orjson
import pytest
from netutil import organisation, patient_tx, running_network, wait_until

from careledger.chain.app import Application
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx, tx_hash
from careledger.consensus.cometbft import messages as m
from careledger.consensus.cometbft.codec import (
    CHECK_TX_OK_RESPONSE,
    decode_check_tx,
    decode_request,
    encode_response,
)
from careledger.consensus.cometbft.handler import AbciHandler
from careledger.consensus.cometbft.rpc import RpcError, sync_call
from careledger.crypto.keys import Identity
from careledger.localnet.network import Network
from careledger.node.network import RECORD_ENV

pytestmark = pytest.mark.timeout(180)

FRAMES = "abci-frames.jsonl"  # relative: each application writes it in its own node directory


def _flood(network: Network) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(everything, in the order to send it; the registrations that must commit; the
    transactions that must not)."""
    good = [patient_tx(network)[1] for _ in range(240)]
    patient, org = Identity.generate(), organisation(network, 0)
    voucher = sign_voucher(
        org.identity, network.chain_id, "register_patient", patient.did, 10**9, org.did
    )
    payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
    first, second = (
        Tx(network.chain_id, "identity/register_patient", patient.did, n, payload).sign(patient)
        for n in (1, 2)
    )  # one voucher, two registrations: the mempool view admits only the first
    refused = [second, b"not a transaction"]
    # Both registrations in one RPC batch to one node (the 2nd of 60): that node's mempool
    # view decides between them, and only the one it admits is gossiped.
    everything = [*good[:100], first, *refused, *good[100:]]
    return everything, [first, *good], refused


def _broadcast(network: Network, txs: list[bytes]) -> None:
    """In JSON-RPC batches of broadcast_tx_async, round robin over the nodes: CometBFT's
    RPC queues each CheckTx without waiting for its answer, so they reach the application
    pipelined."""
    with httpx.Client(timeout=60) as http:
        for n, first in enumerate(range(0, len(txs), 60)):
            calls = [
                {"jsonrpc": "2.0", "id": i, "method": "broadcast_tx_async",
                 "params": {"tx": base64.b64encode(raw).decode()}}
                for i, raw in enumerate(txs[first : first + 60])
            ]  # fmt: skip
            url = network.nodes[n % len(network.nodes)].rpc_url
            replies = orjson.loads(http.post(url, content=orjson.dumps(calls)).content)
            assert all("error" not in r for r in replies), replies


def _committed(network: Network, raw: bytes) -> bool:
    digest = base64.b64encode(tx_hash(raw)).decode()
    try:
        found = sync_call(network.nodes[0].rpc_url, "tx", hash=digest)
    except RpcError:  # not (yet) in a block
        return False
    return int(found["tx_result"].get("code", 0)) == 0


def _replay(frames: list[dict[str, str]], handler: AbciHandler) -> tuple[int, int]:
    """Every recorded request through `handler` one at a time, in the order node0 read them;
    each answer must be the response recorded for it (requests are answered in order, and a
    batch's requests are recorded before its responses, so they pair first in, first out).
    Returns (requests replayed, CheckTx requests recorded right behind another: batched)."""
    waiting: deque[bytes] = deque()
    replayed = batched = 0
    previous_was_check = False
    for record in frames:
        body = bytes.fromhex(record["hex"])
        if record["dir"] == "request":
            is_check = decode_check_tx(body) is not None
            batched += is_check and previous_was_check
            previous_was_check = is_check
            waiting.append(encode_response(handler.handle(decode_request(body))))
            replayed += 1
        else:
            previous_was_check = False
            assert body == waiting.popleft(), f"answer {replayed} differs"
    assert not waiting
    return replayed, batched


def test_batched_check_tx_answers_real_cometbft_as_one_by_one_checking_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RECORD_ENV, FRAMES)
    with running_network(tmp_path / "net") as network:
        everything, good, refused = _flood(network)
        _broadcast(network, everything)
        pending = list(good)

        def all_committed() -> bool:  # each poll asks only for those not seen committed yet
            pending[:] = [raw for raw in pending if not _committed(network, raw)]
            return not pending

        wait_until(all_committed, 120, "every registration of the flood committed")
        node0 = network.node_dir(0)
    for raw in refused:  # refused by CheckTx: in no block
        assert not _committed_after_stop(node0, raw)
    frames = [orjson.loads(line) for line in (node0 / FRAMES).read_bytes().splitlines()]
    answers = [bytes.fromhex(f["hex"]) for f in frames if f["dir"] == "response"]
    assert answers.count(CHECK_TX_OK_RESPONSE) >= len(good)
    twin = AbciHandler(Application(StateStore(tmp_path / "twin.sqlite")))
    replayed, batched = _replay(frames, twin)
    assert replayed == len(answers)
    assert batched > 0  # CometBFT pipelined CheckTx and the server checked them as batches
    assert twin.app.info().last_height >= 1


def _committed_after_stop(node_dir: Path, raw: bytes) -> bool:
    """Whether node0 recorded `raw` in any FinalizeBlock it was asked to execute."""
    for line in (node_dir / FRAMES).read_bytes().splitlines():
        record = orjson.loads(line)
        if record["dir"] != "request":
            continue
        body = bytes.fromhex(record["hex"])
        if decode_check_tx(body) is None:
            request = decode_request(body)
            if isinstance(request, m.RequestFinalizeBlock) and raw in request.txs:
                return True
    return False
