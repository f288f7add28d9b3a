"""The read-only views (gateway/views/) against a real `careledger up` node: Consent shows
the organisation's grants, Provenance checks against the chain, a refused read shows as a
failed AuditEvent. Service-layer tests: a `Gateway` object, no HTTP (tests/gateway/
test_gateway_bundles.py serves them over HTTP)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from careledger.chain.tx import decode_tx
from careledger.crypto.keys import ed25519_from_did, verify_signature
from careledger.gateway.context import Gateway
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.receipts import receipt_states
from careledger.gateway.smart.scopes import parse_scopes
from careledger.gateway.views import AuditEventView, ConsentView, ProvenanceView
from careledger.wallet.fhir import validate_resource
from careledger.wallet.records import RecordsClient, Written
from nodeutil import NodeProcess, enrol


@pytest.fixture
def gateway(node: NodeProcess, tmp_path: Path) -> Iterator[Gateway]:
    gateway = Gateway(node.url, node.organisation(), tmp_path / "gateway")
    try:
        yield gateway
    finally:
        gateway.close()


def _principal(gateway: Gateway, scopes: str = "system/*.cruds") -> Principal:
    return Principal("test-client", gateway.organisation.did, parse_scopes(scopes), "TREAT")


def _observation(resource_id: str, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }


def _write_indexed(gateway: Gateway, principal: Principal) -> tuple[str, list[Written]]:
    """A patient enrolled for a claim, its Patient and an Observation written in two versions
    by the organisation, and the index rows the gateway keeps for them."""
    client = gateway.records_for(principal)
    patient = client.enrol_for_claim("Ada Test").did
    resources = [{"resourceType": "Patient", "id": "p1"}, _observation("o1", "p1")]
    written = client.write_many(patient, resources)
    written.append(client.write(patient, {**_observation("o1", "p1"), "status": "amended"}))
    gateway.index.put(
        (
            Located(
                w.ref.resource_type,
                w.ref.resource_id,
                patient,
                w.ref.name,
                w.version,
                "2026-01-01T00:00:00.000Z",
                False,
            ),
            None,
        )
        for w in written
    )
    return patient, written


def test_consent_view_shows_the_organisations_grants(gateway: Gateway) -> None:
    principal = _principal(gateway)
    patient, _ = _write_indexed(gateway, principal)
    consents_view = ConsentView(gateway)
    consents = consents_view.search(principal, {"patient": "Patient/p1"})
    assert len(consents) == 1  # the write grant enrolment gives the organisation
    consent = consents[0]
    validate_resource(consent)
    assert consent["status"] == "active"
    assert consent["patient"]["reference"] == "Patient/p1"
    assert consent["patient"]["identifier"]["value"] == patient
    actor = consent["provision"]["actor"][0]["reference"]["identifier"]["value"]
    assert actor == gateway.organisation.did
    assert consents_view.read(principal, consent["id"]) == consent
    assert consents_view.search(principal, {"patient": "Patient/nobody"}) == []
    with pytest.raises(FhirError) as caught:
        consents_view.read(principal, "0" * 32)
    assert caught.value.status == 404


def test_provenance_of_each_version_checks_against_the_chain(gateway: Gateway) -> None:
    principal = _principal(gateway)
    _, written = _write_indexed(gateway, principal)
    view = ProvenanceView(gateway)
    found = view.search(principal, {"target": "Observation/o1"})
    assert [p["target"][0]["reference"] for p in found] == [
        "Observation/o1/_history/1",
        "Observation/o1/_history/2",
    ]
    node = gateway.records_for(principal).node  # a signed client
    for provenance, version in zip(found, written[1:], strict=True):
        validate_resource(provenance)
        tx_hash = provenance["entity"][0]["what"]["identifier"]["value"]
        assert tx_hash == version.tx_hash
        signed = decode_tx(bytes.fromhex(node.transaction(tx_hash)["tx"]))
        author = provenance["agent"][0]["who"]["identifier"]["value"]
        assert author == signed.tx.sender == gateway.organisation.did
        signature = base64.b64decode(provenance["signature"][0]["data"])
        assert signature == signed.signature
        assert verify_signature(ed25519_from_did(author), signature, signed.body)
        block_time = node.block(version.height)["header"]["time"]
        assert provenance["recorded"][:23] == block_time[:23]
    assert [p["activity"]["coding"][0]["code"] for p in found] == ["CREATE", "UPDATE"]
    one = view.read(principal, found[1]["id"])
    assert one == found[1]
    assert len(view.search(principal, {"patient": "Patient/p1"})) == 3
    only_patients = _principal(gateway, "system/Patient.rs system/Provenance.rs")
    assert view.search(only_patients, {"target": "Observation/o1"}) == []


def _events_until(
    views: AuditEventView, principal: Principal, outcome: str
) -> list[dict[str, Any]]:
    """AuditEvents with this outcome, once the node has committed the receipted entries."""
    deadline = time.monotonic() + 60
    while True:
        events = views.search(principal, {"outcome": outcome})
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_a_refused_read_shows_as_a_failed_audit_event(gateway: Gateway, node: NodeProcess) -> None:
    principal = _principal(gateway)
    clinic = gateway.records_for(principal)
    patient_keys = enrol(clinic, "Own Keys")  # the patient's own keys: it writes its own
    with RecordsClient(node.url, patient_keys) as patient:
        own = patient.write(patient_keys.did, _observation("mine", "me"))
    [(status, _)] = clinic.fetch([own.blob_hash])  # the organisation may write, not read
    assert status == 403
    views = AuditEventView(gateway)
    failed = _events_until(views, principal, "4")
    assert len(failed) == 1
    event = failed[0]
    validate_resource(event)
    assert event["outcomeDesc"] == "denied"
    assert event["agent"][0]["who"]["identifier"]["value"] == gateway.organisation.did
    assert event["entity"][0]["what"]["identifier"]["value"] == patient_keys.did
    assert event["entity"][1]["what"]["identifier"]["value"] == own.ref.name[:32]
    assert views.read(principal, event["id"]) == event
    assert receipt_states(gateway.audit_db) == {"proven": 1}


def test_a_served_read_shows_as_an_audit_event_of_its_patient(gateway: Gateway) -> None:
    principal = _principal(gateway)
    _, written = _write_indexed(gateway, principal)
    client = gateway.records_for(principal)
    assert client.read(written[1].ref)["id"] == "o1"
    views = AuditEventView(gateway)
    served = _events_until(views, principal, "0")
    assert [e["outcomeDesc"] for e in served] == ["author"]
    assert served[0]["entity"][0]["what"]["reference"] == "Patient/p1"
    assert views.search(principal, {"patient": "Patient/p1"}) == served
    assert views.search(principal, {"patient": "Patient/other"}) == []
