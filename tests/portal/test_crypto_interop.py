"""The portal's crypto (portal/src/crypto, TypeScript) against Python's, both ways, and against
a real node: a record Python seals opens in the page's code and one the page seals opens in
Python's; a Python claim package opens in the page's code; requests and transactions the
page's code signs are accepted by a real `careledger up` (and a request signed for another
node is refused). The TypeScript side runs under Node.js (`portal/tools/interop.ts`, through
Vite's module runner, offline); the two sides exchange JSON files in tmp_path.
Test keys only, made at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from careledger.crypto.claim import ClaimContents, new_claim_code, seal_claim_package
from careledger.crypto.envelope import (
    BlobOwner,
    RecordBinding,
    open_record,
    pack_record_blob,
    record_blob_owner,
    seal_record,
    unpack_record_blob,
)
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import (
    ScopePublic,
    unwrap_data_key,
    unwrap_naming_key,
    unwrap_scope_key,
    wrap_data_key,
    wrap_naming_key,
    wrap_scope_key,
)
from careledger.wallet.custody import new_patient_keys
from nodeutil import NodeProcess, free_port

PORTAL = Path(__file__).resolve().parents[2] / "portal"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="Node.js (`node`) is not installed: the portal's crypto cannot run"
)

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "interop-1",
    "meta": {"versionId": "1"},
    "status": "final",
    "code": {"text": "Körpertemperatur ✓ 体温"},
    "valueQuantity": {"value": 37.25, "unit": "Cel"},
    "component": [{"valueQuantity": {"value": 120, "unit": "mm[Hg]"}}],
    "effectiveDateTime": "2026-01-02T03:04:05Z",
}
# Over one 128 KiB zstd block once canonical: the page writes it as several raw blocks.
LARGE = {**OBSERVATION, "id": "interop-large", "note": [{"text": "ß" * 150_000}]}


@pytest.fixture(scope="module")
def portal_modules() -> Path:
    """The portal's node_modules (`npm ci` from the local cache if `make` has not yet)."""
    if not (PORTAL / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PORTAL, check=True)
    return PORTAL / "node_modules"


def page(tmp_path: Path, command: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one command of portal/tools/interop.ts on `payload`; its JSON answer."""
    source, answer = tmp_path / f"{command}-in.json", tmp_path / f"{command}-out.json"
    source.write_text(json.dumps(payload))
    assert NODE is not None
    done = subprocess.run(
        [NODE, "tools/run.mjs", "tools/interop.ts", command, str(source), str(answer)],
        cwd=PORTAL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"interop.ts {command} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(answer.read_text())
    return result


def _patient() -> KeyFile:
    keyfile, _ = new_patient_keys("Interop Patient")
    return keyfile


def test_a_record_sealed_by_python_opens_in_the_page(tmp_path: Path, portal_modules: Path) -> None:
    patient, grantee = _patient(), Identity.generate()
    binding = RecordBinding(patient.did, "Observation", "interop-1", 1)
    sealed = seal_record(OBSERVATION, binding)
    scope = patient.scope_key("diagnostics", 1)
    wrapped = wrap_data_key(sealed.data_key, binding, scope.recipient, scope.public_bytes)
    name = record_name(patient.naming_key, "Observation", "interop-1")
    blob = pack_record_blob(BlobOwner(patient.did, name), [wrapped], sealed.ciphertext)
    out = page(
        tmp_path,
        "open",
        {
            "keyfile": patient.to_json(),
            "blob": blob.hex(),
            "type": "Observation",
            "id": "interop-1",
            "version": 1,
            "label": scope.recipient,
            "scope": "diagnostics",
            "epoch": 1,
            "blob_hash": hashlib.sha256(blob).hexdigest(),
            "commitment": sealed.commitment.hex(),
            "record": name,
            "grantee_master": grantee.master.hex(),
            "scope_grant": wrap_scope_key(
                scope, patient.did, grantee.did, grantee.encryption_public
            ).hex(),
            "naming_grant": wrap_naming_key(
                patient.naming_key, patient.did, grantee.did, grantee.encryption_public
            ).hex(),
        },
    )
    assert out["by_patient"] == OBSERVATION
    assert out["by_grantee"] == OBSERVATION
    assert out["record_name"] == name  # the granted naming key names records as Python does
    assert out["flipped"] == "DecryptionError"
    assert out["moved"] == "DecryptionError"
    assert out["other_anchor"] == "IntegrityError"


@pytest.mark.parametrize("resource", [OBSERVATION, LARGE], ids=["small", "over-one-block"])
def test_a_record_sealed_by_the_page_opens_in_python(
    tmp_path: Path, portal_modules: Path, resource: dict[str, Any]
) -> None:
    patient, grantee = _patient(), Identity.generate()
    out = page(
        tmp_path,
        "seal",
        {
            "keyfile": patient.to_json(),
            "resource": resource,
            "version": 1,
            "scope": "diagnostics",
            "epoch": 1,
            "grantee": grantee.did,
            "grantee_public": grantee.encryption_public.hex(),
        },
    )
    blob = bytes.fromhex(out["blob"])
    name = record_name(patient.naming_key, "Observation", resource["id"])
    assert out["record"] == name
    assert out["blob_hash"] == hashlib.sha256(blob).hexdigest()
    assert record_blob_owner(blob) == BlobOwner(patient.did, name)
    binding = RecordBinding(patient.did, "Observation", resource["id"], 1)
    unpacked = unpack_record_blob(blob)
    assert [k.recipient for k in unpacked.wrapped_keys] == ["scope/diagnostics/1"] == out["labels"]
    scope = patient.scope_key("diagnostics", 1)
    data_key = unwrap_data_key(unpacked.wrapped_keys[0], binding, scope)
    opened = open_record(unpacked.ciphertext, data_key, binding)  # Python's zstd reads the frame
    assert opened.resource() == resource
    assert opened.commitment.hex() == out["commitment"]
    # The grants the page wrapped open with the grantee's key in Python.
    public = ScopePublic("diagnostics", 1, scope.public_bytes)
    granted = unwrap_scope_key(
        bytes.fromhex(out["scope_grant"]),
        patient.did,
        public,
        grantee.did,
        grantee.encryption_private,
    )
    assert granted.private_bytes() == scope.private_bytes()
    naming = unwrap_naming_key(
        bytes.fromhex(out["naming_grant"]), patient.did, grantee.did, grantee.encryption_private
    )
    assert naming == patient.naming_key


def test_a_python_claim_package_opens_in_the_page(tmp_path: Path, portal_modules: Path) -> None:
    patient = Identity.generate()
    code = new_claim_code()
    contents = ClaimContents(patient.did, "interop-chain", patient.master, "Zoë Interop")
    package = seal_claim_package(contents, code).decode()
    wrong = " ".join(reversed(code.split()))
    out = page(
        tmp_path,
        "claim",
        {"package": package, "code": code.upper().replace(" ", "-"), "wrong_code": wrong},
    )
    assert out["did"] == patient.did
    assert out["master"] == patient.master.hex()
    assert out["name"] == "Zoë Interop"
    assert out["chain_id"] == "interop-chain"
    assert out["wrong"] == "WrongClaimCode"
    assert out["tampered"] == "ClaimTampered"


def test_a_recovery_phrase_restores_the_same_identity(tmp_path: Path, portal_modules: Path) -> None:
    keyfile, phrase = new_patient_keys()
    assert page(tmp_path, "phrase", {"phrase": phrase})["did"] == keyfile.did


def _send(url: str, prepared: dict[str, str]) -> httpx.Response:
    return httpx.request(
        prepared["method"],
        url + prepared["target"],
        content=prepared["body"].encode(),
        headers={"authorization": prepared["authorization"], "content-type": "application/json"},
        timeout=30,
    )


def test_requests_and_transactions_signed_by_the_page_are_accepted_by_a_node(
    tmp_path: Path, portal_modules: Path
) -> None:
    node = NodeProcess(tmp_path / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        status = httpx.get(node.url + "/status").json()
        master = os.urandom(32)
        did = Identity(master).did
        out = page(
            tmp_path,
            "node",
            {
                "org_keyfile": node.organisation().to_json(),
                "chain_id": status["chain_id"],
                "node_id": status["node_id"],
                "patient_master": master.hex(),
                "voucher": node.voucher(did),
            },
        )
        assert out["patient"] == did
        members = _send(node.url, out["members"])
        assert members.status_code == 200, members.text
        assert node.organisation().did in json.dumps(members.json())
        elsewhere = _send(node.url, out["elsewhere"])  # signed for another node's id
        assert elsewhere.status_code == 401, elsewhere.text
        assert elsewhere.json()["error"]["code"] == "unauthenticated"
        replayed = _send(node.url, out["members"])
        assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "replayed"
        registered = _send(node.url, out["register"])
        assert registered.status_code == 200, registered.text
        assert registered.json()["code"] == 0, registered.json()
        published = _send(node.url, out["scope_keys"])
        assert published.status_code == 200, published.text
        assert [r["code"] for r in published.json()["results"]] == [0] * 6, published.json()
        keyfile = KeyFile(did, "patient", Identity(master))
        rows = node.client().query("records/scope_keys", patient=did)
        assert {(r["scope"], r["public_key"]) for r in rows} == {
            (r["scope"], keyfile.scope_key(r["scope"], 1).public_bytes.hex()) for r in rows
        }
        assert len(rows) == 6
    finally:
        node.stop()
