"""Attacks of the issue 10 review on the merged gateway, each against a real `careledger up`
process over HTTP (tests/gatewayutil.py): what the streams' own tests did not reach."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from accessutil import Consortium
from careledger.gateway.app import gateway_app
from careledger.gateway.context import SCHEMAS, Gateway
from careledger.gateway.db import GatewayDb
from careledger.gateway.index.store import Located, RecordIndex
from careledger.gateway.principal import Principal
from careledger.gateway.resources import Resources
from careledger.gateway.smart.backend_client import new_private_jwk, public_jwk
from careledger.gateway.smart.clients import ClientRegistry
from careledger.gateway.smart.scopes import parse_scopes
from careledger.wallet.consent import ConsentClient
from careledger.wallet.importing import PendingClaim
from careledger.wallet.records import RecordsClient
from gatewayutil import GatewayClient, GatewayProcess
from nodeutil import claimed_keys, serve_over_http

pytestmark = pytest.mark.timeout(300)

FHIR_JSON = "application/fhir+json"


def send(http: httpx.Client, method: str, path: str, resource: dict[str, Any]) -> httpx.Response:
    return http.request(
        method, path, content=orjson.dumps(resource), headers={"content-type": FHIR_JSON}
    )


def new_patient(gateway: GatewayProcess, index: RecordIndex) -> tuple[str, PendingClaim]:
    created = send(gateway.http, "POST", "Patient", {"resourceType": "Patient", "gender": "male"})
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    did = index.patient_did(patient_id)
    assert did is not None
    package = gateway.gateway_dir / "claims" / f"claim-{did.rsplit(':', 1)[-1]}.json"
    return patient_id, PendingClaim(did, package, created.headers["careledger-claim-code"])


def observation(patient_id: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_erased_record_stays_gone_after_the_follower_forgets_it(
    gateway: GatewayProcess,
) -> None:
    """The patient erases a record; the gateway's follower drops it from the index. Reading,
    vreading, its history, updating or deleting it later is 410 Gone (not 404), and an
    update cannot create a new resource under the erased one's id."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        index = RecordIndex(db)
        patient_id, claim = new_patient(gateway, index)
        obs = send(gateway.http, "POST", "Observation", observation(patient_id)).json()
        patient = claimed_keys(claim)
        with RecordsClient(gateway.url, patient) as own:
            own.erase([own.ref(patient.did, "Observation", obs["id"])])
        wait_for(lambda: index.locate("Observation", obs["id"]) is None, "the follower's pass")
    finally:
        db.close()
    path = f"Observation/{obs['id']}"
    for method, url in [
        ("GET", path),
        ("GET", path + "/_history/1"),
        ("GET", path + "/_history"),
        ("DELETE", path),
    ]:
        answer = gateway.http.request(method, url)
        assert answer.status_code == 410, (method, url, answer.text)
        assert answer.json()["issue"][0]["code"] == "deleted"
    again = send(gateway.http, "PUT", path, {**observation(patient_id, "amended"), "id": obs["id"]})
    assert again.status_code == 410, again.text
    assert gateway.http.get(path).status_code == 410
    # A resource that never existed is still 404.
    assert gateway.http.get("Observation/never-was").status_code == 404


def test_a_huge_search_form_to_a_view_is_413(gateway: GatewayProcess) -> None:
    """`POST Consent/_search` (and the other views') read the whole body before: a token
    holder could make the gateway hold any amount. Now the same bound as every `_search`."""
    form = b"patient=" + b"x" * (1 << 20)
    for kind in ("Consent", "Provenance", "AuditEvent", "Observation"):
        answer = gateway.http.post(
            f"{kind}/_search",
            content=form,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413, (kind, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"
    assert gateway.http.post("Consent/_search", content=b"status=active").status_code == 200


DID = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]+")
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def test_a_refusal_names_no_did_and_no_record_name(gateway: GatewayProcess, tmp_path: Path) -> None:
    """A's patient grants a second member organisation B reads for treatment; B's client
    registered for research reads: the node refuses (403) with its reason, which names the
    grant and dids. The FHIR client gets the 403 without dids or on-chain names (a did links
    a patient's activity across the chain; a record name is the patient's keyed secret).
    A's own token is 401 at B's gateway."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        index = RecordIndex(db)
        patient_id, claim = new_patient(gateway, index)
        obs = send(gateway.http, "POST", "Observation", observation(patient_id)).json()
        located = index.locate("Observation", obs["id"])
        assert located is not None
    finally:
        db.close()
    org_b = Consortium(gateway.url, gateway.organisation()).admit_member("Second Clinic")
    ConsentClient(gateway.url, claimed_keys(claim)).grant(org_b.did, purposes=["TREAT"])
    other = Gateway(gateway.url, org_b, tmp_path / "gw-b")
    try:
        other.index.put([(located, obs)])
        key = new_private_jwk("ES384")
        client_id = ClientRegistry(other.db).register(
            jwk=public_jwk(key), scopes="system/*.rs", purpose="HRESCH"
        )
        with serve_over_http(gateway_app(other)) as url:
            client = GatewayClient(client_id, key, url + "/auth/token", url + "/fhir")
            with client.http() as http:
                answers = [
                    http.get(f"Observation/{obs['id']}"),
                    http.get(f"Observation/{obs['id']}/_history/1"),
                    http.get(f"Observation/{obs['id']}/_history"),
                ]
            # A's token (every scope, organisation A) is nothing at B's gateway.
            foreign = httpx.get(
                url + f"/fhir/Observation/{obs['id']}",
                headers={"authorization": f"Bearer {gateway.token()}"},
            )
            assert foreign.status_code == 401, foreign.text
    finally:
        other.close()
    for answer in answers:
        assert answer.status_code in (403, 404), answer.text
        text = answer.text
        assert not DID.search(text) and not HEX64.search(text), text
        assert located.record not in text and located.patient not in text


def test_an_index_row_the_chain_does_not_know_is_404_without_the_patients_did(
    gateway: GatewayProcess,
) -> None:
    """An index row whose record the chain does not hold (a write cut off between index and
    chain, a restored backup): the SDK's refusal names the patient's did; the FHIR client
    gets a 404 that does not."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        index = RecordIndex(db)
        patient_id, _ = new_patient(gateway, index)
        did = index.patient_did(patient_id)
        assert did is not None
        ghost = Located("Observation", "ghost", did, "ab" * 32, 1, "2026-01-01T00:00:00Z", False)
        index.put([(ghost, observation(patient_id) | {"id": "ghost"})])
    finally:
        db.close()
    for path in ("Observation/ghost", "Observation/ghost/_history", "Observation/ghost/_history/1"):
        answer = gateway.http.get(path)
        assert answer.status_code == 404, answer.text
        assert did not in answer.text and not DID.search(answer.text), answer.text
        assert answer.json()["issue"][0]["code"] == "not-found"


def test_bundle_answers_carry_absolute_full_urls(gateway: GatewayProcess) -> None:
    """Bundle.entry.fullUrl is the resource's absolute URL (FHIR R4; what HAPI answers and
    what clients resolve references against): a transaction-response and a batch's GET
    searchset had `Observation/x` and `/Observation/x` when no --base-url was set. A batch
    entry may name this server's absolute URL, as HAPI takes it."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        patient_id, _ = new_patient(gateway, RecordIndex(db))
    finally:
        db.close()
    base = gateway.fhir_url
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": observation(patient_id),
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    answer = send(gateway.http, "POST", "", transaction)
    assert answer.status_code == 200, answer.text
    entry = answer.json()["entry"][0]
    obs_id = entry["response"]["location"].split("/")[1]
    assert entry["fullUrl"] == f"{base}/Observation/{obs_id}"
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Observation?subject=Patient/{patient_id}"}},
            {"request": {"method": "GET", "url": f"{base}/Observation/{obs_id}"}},
        ],
    }
    answer = send(gateway.http, "POST", "", batch)
    assert answer.status_code == 200, answer.text
    searched, read = answer.json()["entry"]
    assert searched["response"]["status"].startswith("200"), searched
    assert [e["fullUrl"] for e in searched["resource"]["entry"]] == [f"{base}/Observation/{obs_id}"]
    assert read["response"]["status"].startswith("200"), read
    assert read["resource"]["id"] == obs_id


def test_concurrent_updates_with_one_if_match_one_wins_the_rest_412(
    gateway: GatewayProcess,
) -> None:
    """Four clients update the same version at once, each with `If-Match: W/"1"`: exactly
    one update is stored (version 2); every other is 412 Precondition Failed, as FHIR says
    for a stale If-Match (a race lost after the check was 409 before)."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        patient_id, _ = new_patient(gateway, RecordIndex(db))
    finally:
        db.close()
    obs = send(gateway.http, "POST", "Observation", observation(patient_id)).json()
    statuses = ("amended", "corrected", "cancelled", "preliminary")

    def update(status: str) -> int:
        with gateway.client.http() as http:
            body = orjson.dumps({**obs, "status": status})
            headers = {"content-type": FHIR_JSON, "if-match": 'W/"1"'}
            return http.put(f"Observation/{obs['id']}", content=body, headers=headers).status_code

    with ThreadPoolExecutor(len(statuses)) as pool:
        answers = list(pool.map(update, statuses))
    assert sorted(answers) == [200, 412, 412, 412], answers
    history = gateway.http.get(f"Observation/{obs['id']}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    winner = statuses[answers.index(200)]
    assert gateway.http.get(f"Observation/{obs['id']}").json()["status"] == winner


def test_another_patients_resource_with_the_same_id_does_not_take_over_the_id(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """Organisation B writes, for its own patient P1, a Patient whose id is that of A's
    patient P0 (the same source bundle imported at both, or on purpose) and an Observation
    naming it. P1 grants A. A's follower meets B's Patient under P0's id: it must not
    replace A's row, or `Patient/<id>` would name P1 and A's next writes for P0 would be
    encrypted into P1's record (readable by P1 and by B)."""
    # (B is admitted first: the organisation's key signs here, and the gateway's writer
    # would meet the nonce it used on its next write.)
    org_b = Consortium(gateway.url, gateway.organisation()).admit_member("Second Clinic")
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    index = RecordIndex(db)
    try:
        taken_id, _ = new_patient(gateway, index)
        p0 = index.patient_did(taken_id)
        other = Gateway(gateway.url, org_b, tmp_path / "gw-b")
        try:
            as_b = Principal("b", org_b.did, parse_scopes("system/*.cruds"), "TREAT")
            resources = Resources(other)
            p1 = {"resourceType": "Patient", "id": taken_id, "gender": "female"}
            stored = resources.update(as_b, "Patient", taken_id, p1, None)
            p1_did = other.index.patient_did(taken_id)
            assert stored.claim_code is not None and p1_did is not None and p1_did != p0
            package = other.claims_dir / f"claim-{p1_did.rsplit(':', 1)[-1]}.json"
            claim = PendingClaim(p1_did, package, stored.claim_code)
            marker = resources.create(as_b, observation(taken_id)).resource
            obs = observation(taken_id) | {
                "hasMember": [{"reference": f"Observation/{marker['id']}"}]
            }
            obs = resources.create(as_b, obs).resource
            seed = other.index.locate("Observation", obs["id"])
            assert seed is not None
        finally:
            other.close()
        ConsentClient(gateway.url, claimed_keys(claim)).grant(
            gateway.organisation().did, purposes=["TREAT"]
        )
        # A's index learns of P1's Observation (what its follower starts from); a pass
        # follows its references, to P1's Patient and (in the same pass) the marker.
        index.put([(seed, obs)])
        wait_for(lambda: index.locate("Observation", marker["id"]) is not None, "a pass")
        located = index.locate("Patient", taken_id)
        assert located is not None and located.patient == p0
    finally:
        db.close()
    assert gateway.http.get(f"Patient/{taken_id}").json()["gender"] == "male"
    answer = send(gateway.http, "POST", "Observation", observation(taken_id))
    assert answer.status_code == 201, answer.text
    written = answer.json()
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        row = RecordIndex(db).locate("Observation", written["id"])
        assert row is not None and row.patient == p0
    finally:
        db.close()


def test_a_views_search_pages_with_next_links(gateway: GatewayProcess) -> None:
    """Consent (and the other views) answered `total` with the first `_count` entries and
    no `next` link: a client paging as FHIR says (fhirpy's fetch_all) never saw the rest."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        index = RecordIndex(db)
        for _ in range(3):
            new_patient(gateway, index)
    finally:
        db.close()
    everything = gateway.http.get("Consent", params={"_count": 100}).json()
    expected = {e["resource"]["id"] for e in everything["entry"]}
    assert len(expected) == everything["total"] >= 3
    seen: list[str] = []
    page = gateway.http.get("Consent", params={"_count": 2}).json()
    while True:
        assert page["total"] == len(expected)
        seen += [e["resource"]["id"] for e in page["entry"]]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        assert following[0].startswith(gateway.fhir_url + "/Consent?")
        page = gateway.http.get(following[0]).json()
    assert sorted(seen) == sorted(expected)


def test_concurrent_deletes_with_one_if_match_one_wins_the_rest_412(
    gateway: GatewayProcess,
) -> None:
    """Three clients delete version 1 at once with `If-Match: W/"1"`: one tombstone
    (version 2), the others 412."""
    db = GatewayDb.open(gateway.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        patient_id, _ = new_patient(gateway, RecordIndex(db))
    finally:
        db.close()
    obs = send(gateway.http, "POST", "Observation", observation(patient_id)).json()

    def delete(_: int) -> int:
        with gateway.client.http() as http:
            path = f"Observation/{obs['id']}"
            return http.delete(path, headers={"if-match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(delete, range(3)))
    assert sorted(answers) == [200, 412, 412], answers
    history = gateway.http.get(f"Observation/{obs['id']}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
