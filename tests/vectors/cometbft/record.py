"""Record what a live CometBFT v0.38.25 network serves into recorded.json.

Four validators run our application (the real `careledger` node processes behind the real
CometBFT binary, as tests/network/ does). A few transactions go in, one block holding a
success and a failure (the same patient registering twice: CONFLICT), so the results hash
covers a non-zero code. For each height the file keeps CometBFT's own RPC answers:
`/block` (block id, header, transactions, last commit), `/commit`, `/validators` and the
hashed fields of `/block_results`, plus CometBFT's genesis validators and a `/tx` proof.
tests/test_lightclient.py checks every header hash, validator set hash, commit signature and
results hash in it against the pure code of protocol/cometbft/.

Run from the project root (needs the cometbft binary, `make cometbft`, or COMETBFT_BIN):
    PYTHONPATH=src .venv/bin/python tests/vectors/cometbft/record.py
"""

from __future__ import annotations

import base64
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from careledger.chain.tx import Tx
from careledger.consensus.cometbft.config import NetSettings
from careledger.consensus.cometbft.rpc import sync_call
from careledger.crypto.keys import Identity
from careledger.localnet.network import create_network, start_network, stop_network
from careledger.wallet.node_client import NodeClient

HERE = Path(__file__).resolve().parent
SETTINGS = NetSettings(timeout_commit="300ms", create_empty_blocks_interval="0s")
HEIGHTS = 8


def register(chain_id: str, patient: Identity, nonce: int) -> bytes:
    payload = {"encryption_key": patient.encryption_public.hex()}
    return Tx(chain_id, "identity/register_patient", patient.did, nonce, payload).sign(patient)


def rpc(url: str, method: str, **params: Any) -> Any:
    return sync_call(url, method, timeout=10, **params)


def record(root: Path) -> dict[str, Any]:
    network = create_network(root, 4, base_port=_free_base_port(), settings=SETTINGS)
    try:
        start_network(network)
        url = network.nodes[0].rpc_url
        api = NodeClient(network.nodes[0].api_url)
        twice = Identity.generate()
        hashes = [
            api.submit(register(network.chain_id, twice, 1), wait=False)["hash"],
            api.submit(register(network.chain_id, twice, 2), wait=False)["hash"],  # CONFLICT
            api.submit(register(network.chain_id, Identity.generate(), 1), wait=True)["hash"],
        ]
        while int(rpc(url, "status")["sync_info"]["latest_block_height"]) < HEIGHTS + 1:
            time.sleep(0.2)
        return {
            "source": "live CometBFT v0.38.25, 4 validators, careledger app (record.py)",
            "chain_id": network.chain_id,
            "genesis_validators": rpc(url, "genesis")["genesis"]["validators"],
            "heights": [_height(url, h) for h in range(1, HEIGHTS + 1)],
            "txs": [rpc(url, "tx", hash=_b64(h), prove=True) for h in hashes],
        }
    finally:
        stop_network(network)


def _height(url: str, height: int) -> dict[str, Any]:
    block = rpc(url, "block", height=str(height))
    results = rpc(url, "block_results", height=str(height))["txs_results"] or []
    hashed = ("code", "data", "gas_wanted", "gas_used")
    return {
        "block_id": block["block_id"],
        "block": block["block"],
        "commit": rpc(url, "commit", height=str(height))["signed_header"],
        "validators": rpc(url, "validators", height=str(height))["validators"],
        "results": [{k: r[k] for k in hashed} for r in results],
    }


def _b64(hex_hash: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_hash)).decode()


def _free_base_port() -> int:
    for _ in range(200):
        base = random.randrange(20_000, 60_000, 10)
        if all(_free(f"127.0.0.{i + 1}", base + k) for i in range(4) for k in range(4)):
            return base
    raise RuntimeError("no free ports")


def _free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        recorded = record(Path(scratch) / "net")
    (HERE / "recorded.json").write_bytes(orjson.dumps(recorded, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
