"""Record proofs from a real 4-validator CometBFT network, checked as a light client would.

A proof ties the anchor to CometBFT's own block hash: the transaction under block H's
data_hash, its result under block H+1's last_results_hash, block H+1 naming H's hash, and the
commit for H+1 signed by more than 2/3 of the validator set that H+1's validators_hash
names, which must be the set the user trusts (CometBFT's genesis.json here).
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from netutil import organisation, running_network, wait_for_height

from careledger.chain.codes import Code
from careledger.chain.tx import decode_tx
from careledger.consensus.cometbft.rpc import sync_call
from careledger.crypto.keys import Identity
from careledger.localnet.network import Network
from careledger.protocol.cometbft import (
    Validator,
    ValidatorSet,
    trusted_validator_set,
)
from careledger.wallet.node_client import NodeClient
from careledger.wallet.proofs import (
    PROOF_FORMAT,
    ProofError,
    TrustedHeaders,
    check_record_proof_untrusted,
    verify_record_proof,
)
from careledger.wallet.proving import author_key_evidence, tx_evidence
from careledger.wallet.records import RecordsClient, RecordsError, Written, stamp
from nodeutil import SHARED_DATA, enrol, write_without_naming_key

pytestmark = pytest.mark.timeout(240)

SYNTHEA = SHARED_DATA / "synthea-r4"


def observations(count: int) -> list[dict[str, Any]]:
    bundle = orjson.loads(next(iter(sorted(SYNTHEA.glob("A*.json")))).read_bytes())
    found = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    return [{k: v for k, v in r.items() if k != "subject"} for r in found[:count]]


@dataclass
class Written3:
    network: Network
    writer: RecordsClient
    patient_did: str
    written: list[Written]
    proof: dict[str, Any]
    genesis: Path  # CometBFT's genesis.json: the validator set the user trusts

    @property
    def trusted(self) -> ValidatorSet:
        return trusted_validator_set(orjson.loads(self.genesis.read_bytes()))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written3]:
    with running_network(tmp_path_factory.mktemp("proofs") / "net") as network:
        writer = RecordsClient(network.nodes[0].api_url, organisation(network, 0), purpose="TREAT")
        patient = enrol(writer, "network proof")
        written = writer.write_many(patient.did, observations(3))
        proof = orjson.loads(orjson.dumps(writer.proof(written[1].ref)))
        genesis = network.home(2) / "config" / "genesis.json"
        yield Written3(network, writer, patient.did, written, proof, genesis)


def copy(proof: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(proof))


def test_a_network_proof_verifies_against_the_trusted_validator_set(chain: Written3) -> None:
    verified = verify_record_proof(chain.proof, chain.trusted)
    block = verified.block
    assert verified.ref == chain.written[1].ref and block.consensus == "cometbft"
    assert block.trusted_by == "the trusted validator set"
    rpc = chain.network.nodes[3].rpc_url  # another node's CometBFT says the same
    found = sync_call(rpc, "block", height=str(block.height))
    assert block.block_hash == found["block_id"]["hash"]
    assert block.validators_hash == found["block"]["header"]["validators_hash"]
    assert block.validators_hash == chain.trusted.hash().hex().upper()
    assert block.signed_power * 3 > 2 * chain.trusted.total_power
    # Without a trust anchor the proof is only consistent: the proof's own set signed it,
    # and its hash is reported as what is left to trust.
    alone = check_record_proof_untrusted(chain.proof)
    assert alone.block.validators_hash == block.validators_hash and not alone.trusted
    assert alone.block.trusted_by.startswith("nothing yet: the proof's own validator set")
    # A block hash the user trusts (here: another node's) anchors a network proof as well.
    by_hash = verify_record_proof(chain.proof, TrustedHeaders({block.height: block.block_hash}))
    assert by_hash.trusted and by_hash.block.trusted_by.startswith("the block hash trusted")
    with pytest.raises(ProofError, match="not that chain's block"):
        verify_record_proof(chain.proof, TrustedHeaders({block.height: "ab" * 32}))


def _commit_signatures(proof: dict[str, Any]) -> list[dict[str, Any]]:
    signatures: list[dict[str, Any]] = proof["anchor"]["block"]["commit"]["signatures"]
    return signatures


def test_one_altered_signature_is_refused(chain: Written3) -> None:
    forged = copy(chain.proof)
    # A commit CometBFT has just seen may lack one validator's vote (flag 1, absent).
    index, signature = next(
        (i, s) for i, s in enumerate(_commit_signatures(forged)) if s["block_id_flag"] == 2
    )
    raw = bytearray(base64.b64decode(signature["signature"]))
    raw[10] ^= 0x01
    signature["signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ProofError, match=rf"not certified: signature {index} .* does not verify"):
        verify_record_proof(forged, chain.trusted)


def test_signatures_removed_below_two_thirds_are_refused(chain: Written3) -> None:
    forged = copy(chain.proof)
    absent = {
        "block_id_flag": 1,
        "validator_address": "",
        "timestamp": "0001-01-01T00:00:00Z",
        "signature": None,
    }
    signatures = _commit_signatures(forged)
    signatures[1] = signatures[2] = absent
    with pytest.raises(ProofError, match="not more than 2/3"):
        verify_record_proof(forged, chain.trusted)
    del signatures[1:3]
    with pytest.raises(ProofError, match="2 signatures for a set of 4"):
        verify_record_proof(forged, chain.trusted)


def test_a_different_validator_set_is_refused(chain: Written3) -> None:
    strangers = ValidatorSet.canonical(
        [Validator(Identity.generate().signing_public, 10) for _ in range(4)]
    )
    with pytest.raises(ProofError, match="not more than 1/3"):
        verify_record_proof(chain.proof, strangers)
    swapped = copy(chain.proof)  # the forger brings a set of its own
    swapped["anchor"]["block"]["validators"] = strangers.to_json()
    with pytest.raises(ProofError, match="validators_hash"):
        check_record_proof_untrusted(swapped)


def test_a_header_or_result_that_is_not_the_signed_one_is_refused(chain: Written3) -> None:
    altered = copy(chain.proof)
    altered["anchor"]["block"]["header"]["app_hash"] = "00" * 32
    with pytest.raises(ProofError, match="header altered"):
        verify_record_proof(altered, chain.trusted)
    moved = copy(chain.proof)
    moved["anchor"]["block"]["next_header"]["last_results_hash"] = "11" * 32
    with pytest.raises(ProofError, match="the commit does not sign block"):
        verify_record_proof(moved, chain.trusted)


def test_a_failed_anchor_is_refused_in_network_mode_too(chain: Written3) -> None:
    node = chain.network.nodes[1]
    intruder = enrol(chain.writer, "intruder")  # through node0
    enrolled_at = int(chain.writer.node.status()["height"])
    wait_for_height(chain.network, 1, enrolled_at)  # node1 has the block that registered it
    made_up = {**observations(5)[4], "id": "made-up-in-network"}
    with pytest.raises(RecordsError, match="may not write records"):
        write_without_naming_key(RecordsClient(node.api_url, intruder), chain.patient_did, made_up)
    api = NodeClient(node.api_url, intruder)  # any registered identity may read
    failed = _failed_tx_of(api, intruder.did)
    evidence = tx_evidence(api, failed)
    assert evidence["result"]["code"] == Code.UNAUTHORISED
    proof = {
        "format": PROOF_FORMAT,
        "anchor": evidence,
        "author_key": author_key_evidence(api, intruder.did, evidence),
        "resource": stamp(made_up, 1),
        "salt": "00" * 32,
    }
    with pytest.raises(ProofError, match=r"result code 8 \(UNAUTHORISED\)"):
        verify_record_proof(proof, chain.trusted)
    proof["anchor"]["result"]["code"] = 0
    proof["anchor"]["result_proof"]["leaf"] = ""
    with pytest.raises(ProofError, match="results root"):
        verify_record_proof(proof, chain.trusted)


def _failed_tx_of(api: NodeClient, sender: str) -> str:
    for height in range(int(api.status()["height"]), 0, -1):
        for tx in api.block(height)["txs"]:
            if (
                tx["code"]
                and decode_tx(bytes.fromhex(api.transaction(tx["hash"])["tx"])).tx.sender == sender
            ):
                return str(tx["hash"])
    raise AssertionError(f"no failed transaction of {sender}")


def test_verify_record_checks_the_validators_the_user_gives(
    chain: Written3, tmp_path: Path
) -> None:
    path = tmp_path / "proof.json"
    path.write_bytes(orjson.dumps(chain.proof))
    trusted = _cli("verify-record", str(path), "--validators", str(chain.genesis))
    assert trusted.returncode == 0, trusted.stderr
    assert "Trusted because: the trusted validator set." in trusted.stdout
    alone = _cli("verify-record", str(path))  # its own validator set vouches for nothing
    assert alone.returncode == 2, alone.stderr
    assert alone.stdout.startswith("UNVERIFIED: ") and "--validators" in alone.stdout
    assert chain.trusted.hash().hex().upper() in alone.stdout.replace("\n", "")
    key = tmp_path / "keys" / "org.json"
    organisation(chain.network, 3).save(key)
    node = chain.network.nodes[3].api_url
    by_node = _cli("verify-record", str(path), "--node", node, "--as", str(key))
    assert by_node.returncode == 0, by_node.stderr
    assert "Trusted because: the block hash trusted" in by_node.stdout
    other = tmp_path / "other.json"
    strangers = [Validator(Identity.generate().signing_public, 10) for _ in range(4)]
    other.write_bytes(orjson.dumps({"validators": [v.to_json() for v in strangers]}))
    refused = _cli("verify-record", str(path), "--validators", str(other))
    assert refused.returncode == 1 and "1/3" in refused.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "careledger.cli", *args], capture_output=True, text=True, timeout=120
    )
