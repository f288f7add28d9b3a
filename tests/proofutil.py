"""Record proofs for tests: Synthea observations to write, a failed transaction, a stored
copy of a proof, and the consistent forgery (a made-up solo block) that only the trusted block
hash tells apart. Used by tests/test_proofs.py and the page's proof check
(tests/portal/test_proofs_interop.py)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import orjson

from careledger.chain.block import BlockHeader, data_hash, tx_inclusion_proof
from careledger.chain.results import TxOutcome, result_inclusion_proof, results_hash
from careledger.chain.tx import Tx, decode_tx
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.envelope import SALT_SIZE, commit
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeClient
from careledger.wallet.proofs import PROOF_FORMAT
from careledger.wallet.records import RecordsClient, stamp
from nodeutil import SHARED_DATA

Proof = dict[str, Any]


def failed_tx_of(api: NodeClient, sender: str) -> str:
    """The hash of the latest transaction of `sender` that failed on chain."""
    for height in range(int(api.status()["height"]), 0, -1):
        for tx in api.block(height)["txs"]:
            if tx["code"] == 0:
                continue
            raw = bytes.fromhex(api.transaction(tx["hash"])["tx"])
            if decode_tx(raw).tx.sender == sender:
                return str(tx["hash"])
    raise AssertionError(f"no failed transaction of {sender}")


def observations(count: int) -> list[dict[str, Any]]:
    """The first `count` Observations of a Synthea bundle, without their subject."""
    bundle = orjson.loads(
        next(iter(sorted((SHARED_DATA / "synthea-r4").glob("A*.json")))).read_bytes()
    )
    found = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    return [{k: v for k, v in r.items() if k != "subject"} for r in found[:count]]


def fresh(proof: Proof) -> Proof:
    """A deep copy, as the proof would be stored and sent."""
    copied: Proof = orjson.loads(orjson.dumps(proof))
    return copied


def forged_solo_proof(honest: Proof, patient: str, writer: RecordsClient) -> Proof:
    """The reviewer's forgery: an honest proof whose transaction is replaced by a
    records/anchor signed by a never-registered key (its did's own key "verifies itself"),
    claiming a made-up Condition for the real patient, in a made-up solo block of that one
    transaction (data_hash, results_hash over a code-0 result, num_txs 1) with matching
    Merkle proofs, at the height of the real block."""
    real = BlockHeader.from_json(honest["anchor"]["block"]["header"])
    forger = Identity.generate()
    condition = stamp({"resourceType": "Condition", "id": "made-up-condition"}, 1)
    ref = writer.ref(patient, "Condition", "made-up-condition")
    salt = os.urandom(SALT_SIZE)
    batch = decode_tx(bytes.fromhex(honest["anchor"]["tx"])).tx.payload
    payload = {
        **batch["anchors"][honest["anchor_index"]],
        "resource_type": "Condition",
        "record": ref.name,
        "version": 1,
        "commitment": commit(canonical_bytes(condition), salt).hex(),
    }
    raw = Tx(real.chain_id, "records/anchor", forger.did, 1, payload).sign(forger)
    success = TxOutcome(0)
    header = replace(
        real,
        data_hash=data_hash([raw]).hex(),
        num_txs=1,
        results_hash=results_hash([success]).hex(),
    )
    anchor = {
        "tx": raw.hex(),
        "height": real.height,
        "tx_proof": tx_inclusion_proof([raw], 0).to_json(),
        "result": success.to_json(),
        "result_proof": result_inclusion_proof([success], 0).to_json(),
        "block": {"consensus": "solo", "header": header.to_json()},
    }
    author_key = {"signing_key": forger.signing_public.hex(), "rotations": []}
    return fresh(
        {
            "format": PROOF_FORMAT,
            "anchor": anchor,
            "author_key": author_key,
            "resource": condition,
            "salt": salt.hex(),
        }
    )
