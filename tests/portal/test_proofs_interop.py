"""The page's record-proof check (portal/src/wallet/proofs.ts) against proofs a real node gives.

A real `careledger up` node anchors records (batches, a key rotation, an anchor the chain
refuses); Python gathers their proofs (wallet/proving.py) and forges the attacks a proof
check must refuse, each also checked by Python's own verify_record_proof. vitest then runs the
page's code on the same JSON (portal/tests/proofs-interop.test.ts, through `npx vitest run`)
and writes what it decided for each case: the honest proofs must pass every check, and each
attack must fail, at the check named here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from portalutil import PORTAL

from careledger.chain.modules.identity import rotation_payload
from careledger.crypto.hashing import sha256
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.proofs import (
    PROOF_FORMAT,
    ProofError,
    TrustedHeaders,
    verify_record_proof,
)
from careledger.wallet.proving import author_key_evidence, tx_evidence
from careledger.wallet.records import RecordsClient, RecordsError, stamp
from nodeutil import NodeProcess, enrol, write_without_naming_key
from proofutil import Proof, failed_tx_of, forged_solo_proof, fresh, observations


def flip_hex(text: str, at: int) -> str:
    """One byte of a hex string changed (its low bit flipped)."""
    index = at % (len(text) // 2) * 2
    byte = int(text[index : index + 2], 16) ^ 1
    return text[:index] + f"{byte:02x}" + text[index + 2 :]


def attack(change: Callable[[Proof], None]) -> Callable[[Proof], Proof]:
    def make(proof: Proof) -> Proof:
        forged = fresh(proof)
        change(forged)
        return forged

    return make


def _set(path: tuple[str | int, ...], value: Callable[[Any], Any]) -> Callable[[Proof], None]:
    def change(proof: Proof) -> None:
        target: Any = proof
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value(target[path[-1]])

    return change


def _flipped_signature(proof: Proof) -> None:
    raw = proof["anchor"]["tx"]
    proof["anchor"]["tx"] = raw[:-2] + f"{int(raw[-2:], 16) ^ 1:02x}"


def _flipped_signature_leaf_matched(proof: Proof) -> None:
    _flipped_signature(proof)
    raw = bytes.fromhex(proof["anchor"]["tx"])
    proof["anchor"]["tx_proof"]["leaf"] = sha256(raw).hex()


# Each attack on an honest proof of a batch anchor, and the check of proofs.ts that refuses it.
ATTACKS: dict[str, tuple[Callable[[Proof], Proof], str]] = {
    "tx signature byte": (attack(_flipped_signature), "anchor-tx-leaf"),
    "tx signature byte, leaf matched": (
        attack(_flipped_signature_leaf_matched),
        "anchor-inclusion",
    ),
    "tx body byte": (attack(_set(("anchor", "tx"), lambda t: flip_hex(t, 40))), "anchor-tx-leaf"),
    "tx proof leaf byte": (
        attack(_set(("anchor", "tx_proof", "leaf"), lambda t: flip_hex(t, 3))),
        "anchor-tx-leaf",
    ),
    "tx proof aunt byte": (
        attack(_set(("anchor", "tx_proof", "aunts", 0), lambda t: flip_hex(t, 7))),
        "anchor-inclusion",
    ),
    "result proof aunt byte": (
        attack(_set(("anchor", "result_proof", "aunts", 0), lambda t: flip_hex(t, 9))),
        "anchor-result-committed",
    ),
    "result code": (attack(_set(("anchor", "result", "code"), lambda _: 8)), "anchor-result-leaf"),
    "header data_hash byte": (
        attack(_set(("anchor", "block", "header", "data_hash"), lambda t: flip_hex(t, 0))),
        "anchor-inclusion",
    ),
    "header results_hash byte": (
        attack(_set(("anchor", "block", "header", "results_hash"), lambda t: flip_hex(t, 5))),
        "anchor-result-committed",
    ),
    "header num_txs": (
        attack(_set(("anchor", "block", "header", "num_txs"), lambda n: n + 1)),
        "anchor-position",
    ),
    "header app_hash byte (hashed only)": (
        attack(_set(("anchor", "block", "header", "app_hash"), lambda t: flip_hex(t, 2))),
        "anchor-block-hash",
    ),
    "tx proof total": (
        attack(_set(("anchor", "tx_proof", "total"), lambda n: n + 1)),
        "anchor-position",
    ),
    "result proof index": (
        attack(_set(("anchor", "result_proof", "index"), lambda n: n + 1)),
        "anchor-position",
    ),
    "author key byte": (
        attack(_set(("author_key", "signing_key"), lambda t: flip_hex(t, 1))),
        "author-key",
    ),
    "anchor index": (attack(_set(("anchor_index",), lambda n: n + 1)), "commitment"),
    "anchor index outside the batch": (
        attack(_set(("anchor_index",), lambda _: 7)),
        "anchor-record",
    ),
    "resource altered": (
        attack(_set(("resource", "status"), lambda _: "entered-in-error")),
        "commitment",
    ),
    "salt byte": (attack(_set(("salt",), lambda t: flip_hex(t, 4))), "commitment"),
}


def gather_cases(node: NodeProcess, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    org = KeyFile.load(node.data_dir / "keys" / "organisation.json")
    writer = RecordsClient(node.url, org, purpose="TREAT")
    patient = enrol(writer, "proof interop")
    api = NodeClient(node.url, patient)
    monkeypatch.setattr("careledger.wallet.writing.MAX_BATCH_ANCHORS", 2)
    written = writer.write_many(patient.did, observations(5))
    cases: list[dict[str, Any]] = []

    def hashes(proof: Proof) -> dict[str, str]:
        heights = [proof["anchor"]["height"]]
        heights += [r["height"] for r in proof.get("author_key", {}).get("rotations", [])]
        return {str(h): api.block(h)["hash"] for h in heights}

    def add(name: str, proof: Proof, expect: str, trust: dict[str, str] | None = None) -> None:
        trusted = trust or hashes(proof)
        anchors = TrustedHeaders({int(h): v for h, v in trusted.items()})
        if expect == "passed":
            verify_record_proof(fresh(proof), anchors)  # Python accepts it too
        else:
            with pytest.raises(ProofError):
                verify_record_proof(fresh(proof), anchors)  # and refuses it too
        cases.append({"name": name, "proof": proof, "trust": trusted, "expect": expect})

    honest = fresh(writer.proof(written[2].ref))  # an anchor of a batch among several txs
    add("honest batch anchor", honest, "passed")
    add("honest first record", fresh(writer.proof(written[0].ref)), "passed")
    for name, (make, check) in ATTACKS.items():
        add(name, make(honest), check, hashes(honest))
    forged = forged_solo_proof(honest, patient.did, writer)
    add("forged block", forged, "anchor-block-hash", hashes(honest))

    # An anchor the chain refused (UNAUTHORISED): complete and honest, and proves nothing.
    intruder = enrol(writer, "intruder")
    made_up = {**observations(6)[5], "id": "made-up-condition"}
    with pytest.raises(RecordsError):
        write_without_naming_key(RecordsClient(node.url, intruder), patient.did, made_up)
    failed = failed_tx_of(api, intruder.did)
    evidence = tx_evidence(api, failed)
    refused = {
        "format": PROOF_FORMAT,
        "anchor": evidence,
        "author_key": author_key_evidence(api, intruder.did, evidence),
        "resource": stamp(made_up, 1),
        "salt": "00" * 32,
    }
    add("anchor refused on chain", refused, "anchor-success")
    # The author rotates its key and writes again: the proof walks one proven rotation.
    new_identity = Identity.generate()
    payload = rotation_payload(org.identity, new_identity, api.status()["chain_id"])
    Signer(api, org.did, org.identity).send("identity/rotate_key", payload)
    after = RecordsClient(node.url, org.rotated(new_identity, 1)).write(
        patient.did, observations(7)[6]
    )
    rotated = fresh(RecordsClient(node.url, patient).proof(after.ref))
    assert len(rotated["author_key"]["rotations"]) == 1
    add("honest after a key rotation", rotated, "passed")
    without = fresh(rotated)
    without["author_key"]["rotations"] = []
    add("rotation left out", without, "author-key")
    own_key = fresh(rotated)
    own_key["author_key"] = {"signing_key": org.identity.signing_public.hex(), "rotations": []}
    add("signed by the old key", own_key, "signature")
    bad_rotation = fresh(rotated)
    bad_rotation["author_key"]["rotations"][0]["tx"] = flip_hex(
        bad_rotation["author_key"]["rotations"][0]["tx"], -1
    )
    add("rotation signature byte", bad_rotation, "rotation-1-tx-leaf")

    writer.close()
    return cases


@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) for the portal")
def test_the_pages_proof_check_agrees_with_python_on_real_proofs_and_attacks(
    node: NodeProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cases = gather_cases(node, monkeypatch)
    fixture, decided = tmp_path / "proofs.json", tmp_path / "decided.json"
    fixture.write_text(json.dumps({"cases": cases}))
    env = {
        **os.environ,
        "CARELEDGER_PROOF_FIXTURE": str(fixture),
        "CARELEDGER_PROOF_DECIDED": str(decided),
    }
    run = subprocess.run(
        ["npx", "vitest", "run", "tests/proofs-interop.test.ts"],
        cwd=PORTAL,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    outcome = json.loads(decided.read_text())
    assert set(outcome) == {c["name"] for c in cases}
    for case in cases:
        assert outcome[case["name"]]["decided"] == case["expect"], (case["name"], outcome)
    honest = outcome["honest batch anchor"]["checks"]
    assert {"anchor-inclusion", "anchor-result-committed", "signature", "anchor-block-hash"} <= set(
        honest
    )
    assert outcome["honest after a key rotation"]["rotations"] == 1
    # Every single byte flipped in the honest proof's transaction, header and Merkle paths.
    sweep = outcome["honest batch anchor"]["byte_flips"]
    assert sweep["tried"] > 1000 and sweep["survived"] == [], sweep
