"""Bundles, $everything and the views over real HTTP: a `careledger up` process, a SMART
backend client's bearer token (tests/gatewayutil.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from careledger.gateway.bundles import MAX_ENTRIES
from careledger.gateway.context import SCHEMAS
from careledger.gateway.db import GatewayDb
from careledger.gateway.index.store import Located, RecordIndex
from careledger.wallet.records import RecordsClient
from gatewayutil import GatewayProcess
from nodeutil import SHARED_DATA, enrol

PATIENT_BUNDLE = next((SHARED_DATA / "synthea-r4").glob("Delbert_Williamson_*.json"))


def _post_bundle(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("", content=body, headers={"content-type": "application/fhir+json"})


def _import(gateway: GatewayProcess) -> tuple[dict[str, Any], dict[str, Any], str]:
    bundle = orjson.loads(PATIENT_BUNDLE.read_bytes())
    response = _post_bundle(gateway.http, orjson.dumps(bundle))
    assert response.status_code == 200, response.text
    answer = response.json()
    patient = next(
        e["response"]["location"].split("/")[1]
        for e in answer["entry"]
        if e["response"]["location"].startswith("Patient/")
    )
    return bundle, answer, patient


def test_a_transaction_over_http_and_everything_in_pages(gateway: GatewayProcess) -> None:
    bundle, answer, patient = _import(gateway)
    assert answer["type"] == "transaction-response"
    assert all(e["response"]["status"] == "201 Created" for e in answer["entry"])
    assert all(e["response"]["etag"] == 'W/"1"' for e in answer["entry"])
    url: str | None = f"Patient/{patient}/$everything?_count=40"
    matched: list[dict[str, Any]] = []
    pages = 0
    total = None
    while url is not None:
        page = gateway.http.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        total = body["total"]
        matched += [e["resource"] for e in body["entry"] if e["search"]["mode"] == "match"]
        following = [link["url"] for link in body["link"] if link["relation"] == "next"]
        assert all(link.startswith(gateway.fhir_url + "/") for link in following)  # absolute
        url = following[0] if following else None
        pages += 1
    records = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in _DIRECTORY]
    assert total == len(matched) == len(records)
    assert pages == -(-len(records) // 40)
    assert matched[0]["resourceType"] == "Patient"


_DIRECTORY = {"Organization", "Practitioner", "Location", "PractitionerRole"}


def test_bundles_are_bounded_and_the_gateway_keeps_serving(gateway: GatewayProcess) -> None:
    deep = b'{"resourceType":"Bundle","type":"transaction","entry":[{"resource":'
    deep += b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}]}"
    response = _post_bundle(gateway.http, deep)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    many = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * 100_000}
    response = _post_bundle(gateway.http, orjson.dumps(many))
    assert response.status_code == 413
    assert str(MAX_ENTRIES) in response.json()["issue"][0]["diagnostics"]
    document = {"resourceType": "Bundle", "type": "document", "entry": []}
    assert _post_bundle(gateway.http, orjson.dumps(document)).status_code == 400
    assert httpx.post(gateway.fhir_url, content=orjson.dumps(document)).status_code == 401
    assert gateway.http.get("metadata").status_code == 200


def test_views_over_http(gateway: GatewayProcess) -> None:
    _, answer, patient = _import(gateway)
    for kind in ("Consent", "Provenance", "AuditEvent"):
        refused = gateway.http.post(kind, json={"resourceType": kind})
        assert refused.status_code == 405, kind
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert gateway.http.delete(f"{kind}/x").status_code == 405
        wrapped = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": {"resourceType": kind}, "request": {"method": "POST", "url": kind}}
            ],
        }
        # A client's Provenance in a bundle is checked and answered with the chain's
        # (test_gateway_bundles.py); Consent and AuditEvent are refused as written directly.
        expected = 422 if kind == "Provenance" else 405  # this one is not even valid FHIR
        assert _post_bundle(gateway.http, orjson.dumps(wrapped)).status_code == expected, kind
    consents = gateway.http.get("Consent", params={"patient": f"Patient/{patient}"}).json()
    assert consents["total"] == 1
    assert consents["entry"][0]["resource"]["patient"]["reference"] == f"Patient/{patient}"
    observation = next(
        "/".join(e["response"]["location"].split("/")[:2])
        for e in answer["entry"]
        if e["response"]["location"].startswith("Observation/")
    )
    provenance = gateway.http.get("Provenance", params={"target": observation}).json()
    assert [e["resource"]["target"][0]["reference"] for e in provenance["entry"]] == [
        f"{observation}/_history/1"
    ]
    assert gateway.http.get(f"Patient/{patient}/$everything").status_code == 200
    deadline = time.monotonic() + 60
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        found = gateway.http.get("AuditEvent", params={"patient": f"Patient/{patient}"})
        events = [e["resource"] for e in found.json()["entry"]]
        time.sleep(0.2)
    assert events and all(e["outcome"] == "0" for e in events)
    assert events[0]["entity"][0]["what"]["reference"] == f"Patient/{patient}"
    narrow = gateway.token(scope="system/Observation.rs")
    forbidden = httpx.get(
        gateway.fhir_url + "/Consent", headers={"authorization": f"Bearer {narrow}"}
    )
    assert forbidden.status_code == 403


def test_a_refused_read_over_http_leaves_a_failed_audit_event(gateway: GatewayProcess) -> None:
    """The index still names a patient whose records the organisation may not read (as the
    follower's rows do until a revoked grant is seen): $everything leaves the records out,
    and each refusal is an AuditEvent with outcome 4."""
    with RecordsClient(gateway.url, gateway.organisation()) as clinic:
        keys = enrol(clinic, "Own Keys")
    with RecordsClient(gateway.url, keys) as patient:
        own = patient.write_many(
            keys.did,
            [
                {"resourceType": "Patient", "id": "own", "gender": "female"},
                {
                    "resourceType": "Observation",
                    "id": "own-obs",
                    "status": "final",
                    "code": {"text": "pulse"},
                    "subject": {"reference": "Patient/own"},
                },
            ],
        )
    index = RecordIndex(GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS))
    index.put(
        (
            Located(
                w.ref.resource_type,
                w.ref.resource_id,
                keys.did,
                w.ref.name,
                1,
                "2026-01-01T00:00:00.000Z",
                False,
            ),
            None,
        )
        for w in own
    )
    everything = gateway.http.get("Patient/own/$everything")
    assert everything.status_code == 200
    assert everything.json()["entry"] == []  # nothing the organisation may not read
    deadline = time.monotonic() + 60
    failed: list[dict[str, Any]] = []
    while len(failed) < 2 and time.monotonic() < deadline:
        found = gateway.http.get("AuditEvent", params={"patient": "Patient/own", "outcome": "4"})
        failed = [e["resource"] for e in found.json()["entry"]]
        time.sleep(0.2)
    assert {e["outcomeDesc"] for e in failed} == {"denied"}
    records = {e["entity"][1]["what"]["identifier"]["value"] for e in failed}
    assert records == {w.ref.name[:32] for w in own}
    assert all(e["entity"][0]["what"]["reference"] == "Patient/own" for e in failed)
