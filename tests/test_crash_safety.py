"""SIGKILL at random moments loses no acknowledged transaction and leaves a verifiable chain."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import httpx

from careledger.chain.modules.identity import sign_voucher
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeError
from nodeutil import VOUCHER_EXPIRY, NodeProcess, free_port, run_verify

KILLS = 5
BATCH = 25


def test_sigkill_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    node = NodeProcess(tmp_path / "data", free_port())
    acknowledged: list[str] = []
    try:
        for _ in range(KILLS):
            node.start("--block-interval", "0.02")
            client = node.client(timeout=10)
            chain_id = client.status()["chain_id"]
            org = KeyFile.load(node.data_dir / "keys" / "organisation.json")
            killer = threading.Timer(rng.uniform(0.3, 1.5), node.kill)
            killer.start()
            try:
                while True:
                    batch = [_registration(chain_id, org) for _ in range(BATCH)]
                    results = client.submit_many(batch, wait=True)
                    acknowledged += [r["hash"] for r in results if r["code"] == 0]
            except (httpx.HTTPError, NodeError):
                pass  # the node died under us; what it acknowledged must survive
            finally:
                killer.join()
                client.close()
        assert len(acknowledged) > BATCH

        node.start("--block-interval", "0.02")
        client = node.client()
        for tx_hash in acknowledged:
            assert client.transaction(tx_hash)["code"] == 0, tx_hash
        client.close()
    finally:
        node.stop()
    result = run_verify(node.data_dir)
    assert result.returncode == 0, result.stderr
    assert "OK:" in result.stdout


def _registration(chain_id: str, org: KeyFile) -> bytes:
    patient = Identity.generate()
    voucher = sign_voucher(
        org.identity, chain_id, "register_patient", patient.did, VOUCHER_EXPIRY, org.did
    )
    payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
    return Tx(chain_id, "identity/register_patient", patient.did, 1, payload).sign(patient)
