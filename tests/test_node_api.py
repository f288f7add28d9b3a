"""The node HTTP API on a real `careledger up` process: submit, read, prove, bad input."""

from __future__ import annotations

import base64

import httpx
import pytest

from careledger.chain.block import BlockHeader
from careledger.chain.tx import Tx
from careledger.crypto.hashing import sha256
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.merkle import InclusionProof, verify_inclusion
from careledger.protocol.signing import RequestSigner
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from nodeutil import NodeProcess, practitioner_payload, register_patient_tx


def test_a_committed_transaction_is_provable_from_its_block_header(node: NodeProcess) -> None:
    patient = Identity.generate()
    client = NodeClient(node.url, patient)  # the patient's own device registers itself
    signer = Signer(client, patient.did, patient, last_nonce=0)
    payload = {"encryption_key": "66" * 32, "voucher": node.voucher(patient.did)}
    result = signer.send("identity/register_patient", payload)
    assert result["code"] == 0 and result["height"] >= 1

    found = client.transaction(result["hash"])
    raw = bytes.fromhex(found["tx"])
    header = BlockHeader.from_json(found["header"])
    proof = InclusionProof.from_json(found["proof"])
    assert proof.leaf == sha256(raw)
    assert verify_inclusion(proof, bytes.fromhex(header.data_hash))
    assert client.block(header.height)["hash"] == header.hash().hex()
    assert client.query("identity/identity", did=patient.did)["kind"] == "patient"
    status = client.status()
    assert status["height"] >= header.height and status["consensus"] == "solo"


def test_the_organisation_key_written_on_first_start_can_act_at_once(node: NodeProcess) -> None:
    org = KeyFile.load(node.data_dir / "keys" / "organisation.json")
    client = NodeClient(node.url, org)
    doctor = Identity.generate()
    Signer(client, org.did, org.identity).send(
        "identity/register_practitioner",
        practitioner_payload(client.status()["chain_id"], org.did, doctor, "Dr. B"),
    )
    staff = client.query("identity/practitioners", org=org.did)
    assert [p["did"] for p in staff] == [doctor.did]


def test_bad_input_gets_clear_errors_and_the_node_keeps_serving(node: NodeProcess) -> None:
    client = node.client()
    org = node.organisation()
    http = httpx.Client(base_url=node.url, auth=RequestSigner(org.identity, org.did))
    patient = Identity.generate()
    good = Tx(
        client.status()["chain_id"],
        "identity/register_patient",
        patient.did,
        1,
        {"encryption_key": "77" * 32, "voucher": node.voucher(patient.did)},
    ).sign(patient)
    client.submit(good, wait=True)

    with pytest.raises(NodeError) as replay:
        client.submit(good)
    assert (replay.value.status, replay.value.code) == (400, "replay")

    def post(body: bytes) -> httpx.Response:
        return http.post("/tx", content=body, headers={"content-type": "application/json"})

    for body, status, code in [
        (b"not json", 400, "malformed"),
        (b"[]", 400, "malformed"),
        (b'{"tx": 5}', 400, "malformed"),
        (b'{"tx": "%%%"}', 400, "malformed"),
        (b'{"tx": "' + base64.b64encode(b"x" * 70_000) + b'"}', 413, "oversized"),
        (b'{"tx": "' + base64.b64encode(b"{}" + b"0" * 64) + b'"}', 400, "malformed"),
    ]:
        response = post(body)
        assert response.status_code == status, body[:30]
        assert response.json()["error"]["code"] == code

    assert http.get("/blocks/999999").status_code == 404
    assert http.get("/blocks/abc").json()["error"]["code"] == "malformed"
    assert http.get("/txs/00").status_code == 400
    assert http.get("/txs/" + "00" * 32).status_code == 404
    assert http.get("/query/identity/identity", params={"did": "nobody"}).status_code == 404
    assert http.get("/query/identity/identity").json()["error"]["code"] == "malformed"
    assert http.get("/nowhere").status_code == 404
    assert client.status()["height"] >= 1  # still serving


def test_a_block_height_is_plain_digits_within_sqlites_range(node: NodeProcess) -> None:
    """A height past SQLite's 64-bit integers made the block store raise OverflowError (500);
    int() also took `1_0`, `-1`, ` 1` and other scripts' digits."""
    org = node.organisation()
    http = httpx.Client(base_url=node.url, auth=RequestSigner(org.identity, org.did))
    chain_id = node.client().status()["chain_id"]
    registered = node.client().submit(
        register_patient_tx(chain_id, Identity.generate(), org.identity), wait=True
    )
    for height in (
        "99999999999999999999999",
        "9223372036854775808",  # 2**63: one past SQLite's largest integer
        "1_0",
        "-1",
        "+1",
        "%201",
        "1%0A",
        "%D9%A1",  # ARABIC-INDIC DIGIT ONE
        "0x1",
    ):
        response = http.get(f"/blocks/{height}")
        assert response.status_code == 400, height
        assert response.json()["error"]["code"] == "malformed", height
    assert http.get("/blocks/9223372036854775807").status_code == 404  # the largest: absent
    padded = f"/blocks/{registered['height']:05d}"  # leading zeros are still digits
    assert http.get(padded).json()["header"]["height"] == registered["height"]
    assert node.client().status()["height"] >= 1  # still serving


def test_a_batch_of_submissions_is_answered_one_by_one(node: NodeProcess) -> None:
    client = node.client()
    chain_id = client.status()["chain_id"]
    patients = [Identity.generate() for _ in range(20)]
    org = node.organisation().identity
    txs = [register_patient_tx(chain_id, p, org) for p in patients]
    results = client.submit_many([*txs, txs[0]], wait=True)
    assert [r["code"] for r in results[:-1]] == [0] * 20
    assert results[-1]["check_code"] == 6  # the duplicate is a replay
    for p in patients[:3]:
        assert client.query("identity/identity", did=p.did)["did"] == p.did
