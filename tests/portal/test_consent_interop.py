"""The page's consent code (portal/src/wallet/consent.ts) against a real node, checked by Python.

A real `careledger up` node; a patient with three records it wrote itself (so that no
organisation reads them as their author); a practitioner of the founding organisation. The
page's code (portal/tests/consent-interop.test.ts, through `npx vitest run`) grants the
practitioner read access to clinical and diagnostic records for treatment, exactly as the
Sharing page does, and later revokes it. Python then checks what it signed: the organisation
unwraps the scope keys and the naming key it was given (the same keys the patient's key file
derives), the practitioner reads the granted records and is refused the others; after the
revocation it is refused, the scopes it held moved to a new epoch, signed by the patient, and
the new keys went to the grant that remains; and the patient's access log shows both reads,
each proven on chain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from portalutil import PORTAL

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.audit import AuditClient, LoggedAccess
from careledger.wallet.consent import ConsentClient
from careledger.wallet.keyring import GrantedKeys, encryption_keys, verified_scope_keys
from careledger.wallet.node_client import Signer
from careledger.wallet.records import RecordsClient, RecordsError
from nodeutil import NodeProcess, enrol, practitioner_payload

RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "Observation",
        "id": "weight-1",
        "status": "final",
        "code": {"text": "Body weight"},
        "valueQuantity": {"value": 72, "unit": "kg"},
    },
    {
        "resourceType": "Condition",
        "id": "asthma-1",
        "code": {"text": "Asthma"},
        "subject": {"reference": "Patient/pat-1"},
    },
    {
        "resourceType": "MedicationRequest",
        "id": "salbutamol-1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Salbutamol"},
        "subject": {"reference": "Patient/pat-1"},
    },
]


def run_page_step(step: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    out = tmp_path / f"{step}.json"
    run = subprocess.run(
        ["npx", "vitest", "run", "tests/consent-interop.test.ts"],
        cwd=PORTAL,
        env={
            **os.environ,
            "CARELEDGER_CONSENT_STEP": step,
            "CARELEDGER_CONSENT_OUT": str(out),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    found: dict[str, Any] = json.loads(out.read_text())
    return found


def register_practitioner(node: NodeProcess, org: KeyFile, name: str) -> KeyFile:
    identity = Identity.generate()
    client = node.client(org)
    chain_id = str(client.status()["chain_id"])
    payload = practitioner_payload(chain_id, org.did, identity, name)
    raw = Signer(client, org.did, org.identity).sign("identity/register_practitioner", payload)
    assert client.submit(raw)["code"] == 0
    return KeyFile(identity.did, "practitioner", identity, name)


def read_status(reader: RecordsClient, patient: str, resource_type: str, resource_id: str) -> int:
    try:
        reader.read(reader.ref(patient, resource_type, resource_id))
    except RecordsError as exc:
        return exc.status
    return 200


def practitioner_entries(client: AuditClient, reader: str, count: int) -> list[LoggedAccess]:
    """The practitioner's entries in the patient's log, each proven, once `count` are in."""
    deadline = time.monotonic() + 30
    while True:
        found = [a for a in client.log(verify=True) if a.entry.reader == reader]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) for the portal")
def test_a_grant_and_revoke_signed_by_the_page_work_for_python_readers(
    node: NodeProcess, tmp_path: Path
) -> None:
    org = node.organisation()
    patient = enrol(RecordsClient(node.url, org), "Pat Page")
    with RecordsClient(node.url, patient) as own:
        for resource in RESOURCES:
            own.write(patient.did, resource)
    doctor = register_practitioner(node, org, "Dr. Page")
    patient.save(tmp_path / "patient.json")
    org.save(tmp_path / "org.json")
    doctor.save(tmp_path / "doctor.json")
    common = {
        "CARELEDGER_CONSENT_NODE": node.url,
        "CARELEDGER_CONSENT_PATIENT": str(tmp_path / "patient.json"),
        "CARELEDGER_CONSENT_ORG": str(tmp_path / "org.json"),
        "CARELEDGER_CONSENT_GRANTEE": doctor.did,
        "CARELEDGER_CONSENT_PRACTITIONER": str(tmp_path / "doctor.json"),
    }

    granted = run_page_step("grant", tmp_path, **common)
    # What the page wrapped to the organisation is the patient's own keys, and only those.
    assert granted["clinical"] == patient.scope_key("clinical", 1).private_bytes().hex()
    assert granted["diagnostics"] == patient.scope_key("diagnostics", 1).private_bytes().hex()
    assert granted["medications"] is None
    assert granted["naming"] == patient.naming_key.hex()
    detail = ConsentClient(node.url, patient).grant_detail(granted["grant"])
    assert detail["grantee"] == doctor.did and detail["org"] == org.did
    assert sorted(detail["scopes"]) == ["clinical", "diagnostics"]
    assert detail["purposes"] == ["TREAT"]

    with RecordsClient(node.url, doctor, purpose="TREAT", organisation=org) as reader:
        assert read_status(reader, patient.did, "Condition", "asthma-1") == 200
        assert read_status(reader, patient.did, "Observation", "weight-1") == 200
        assert read_status(reader, patient.did, "MedicationRequest", "salbutamol-1") == 403

    # A grant that stays: the organisation reads diagnostics (it must get the new epoch; it
    # also lets its practitioners read diagnostics, so the revocation shows on clinical).
    staying = ConsentClient(node.url, patient).grant(org.did, scopes=("diagnostics",))
    revoked = run_page_step("revoke", tmp_path, **common, CARELEDGER_CONSENT_GRANT=granted["grant"])
    assert sorted(revoked["rotated"]) == ["clinical", "diagnostics"]

    with RecordsClient(node.url, doctor, purpose="TREAT", organisation=org) as reader:
        assert read_status(reader, patient.did, "Condition", "asthma-1") == 403

    api = node.client(patient)
    chain_id = str(api.status()["chain_id"])
    identity = api.query("identity/identity", did=patient.did)
    rows = api.query("records/scope_keys", patient=patient.did)
    current = verified_scope_keys(identity, rows, chain_id)
    assert current["clinical"].epoch == 2 and current["diagnostics"].epoch == 2
    assert current["medications"].epoch == 1
    # The grant that stays got the new diagnostics key, which its holder opens.
    org_keys = GrantedKeys(node.client(org), org.did, encryption_keys(org))
    pair = org_keys.scope_pair(patient.did, "diagnostics", 2)
    assert pair is not None
    assert pair.private_bytes() == patient.scope_key("diagnostics", 2).private_bytes()
    assert ConsentClient(node.url, patient).grant_detail(staying)["revoked_at"] == 0

    with AuditClient(node.url, patient) as audit:
        entries = practitioner_entries(audit, doctor.did, 4)  # 3 before, 1 after
    outcomes = [a.entry.outcome for a in entries]
    assert "grant" in outcomes and "denied" in outcomes, outcomes
    assert all(a.block is not None for a in entries)  # each proven in its block
