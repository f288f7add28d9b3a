"""Real FHIR client libraries against a real `careledger up` over HTTP, unchanged (no patching):
fhirpy 2.3 (create, read, update, search with paging, counts, sort), fhirclient 4.4 (reads the
CapabilityStatement, finds the token endpoint in its oauth-uris extension, gets its own token
with a signed assertion, reads and searches) and smart-fetch (the CLI: reads
.well-known/smart-configuration, signs its own assertion, crawls a patient with searches).

One Synthea patient is imported through a transaction Bundle first; each client then sees
exactly what the gateway holds for it."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from fhirclient import client as fhirclient
from fhirclient.models.observation import Observation as FcObservation
from fhirclient.models.patient import Patient as FcPatient
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as FhirpyOutcome

from careledger.gateway.smart.backend_client import sign_assertion
from gatewayutil import GatewayClient, GatewayProcess
from nodeutil import SHARED_DATA, free_port

pytestmark = pytest.mark.timeout(600)
SYNTHEA = SHARED_DATA / "synthea-r4"
PATIENT_BUNDLE = "Jesus_Alvarez_c0580b5a-6fc2-4b72-b691-57a71afb5597.json"
LOINC = "http://loinc.org"
CATEGORIES = "http://terminology.hl7.org/CodeSystem/observation-category"
BODY_HEIGHT, HEART_RATE = "8302-2", "8867-4"


@dataclass
class World:
    gateway: GatewayProcess
    patient: str  # the imported Synthea patient's id
    written: dict[str, set[str]]  # type -> ids the transaction wrote (the patient's records)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("client-libraries")
    gateway = GatewayProcess(tmp / "data", free_port())
    gateway.start("--block-interval", "0.05")
    try:
        answer = gateway.http.post(
            "",
            content=(SYNTHEA / PATIENT_BUNDLE).read_bytes(),
            headers={"content-type": "application/fhir+json"},
        )
        assert answer.status_code == 200, answer.text
        written: dict[str, set[str]] = defaultdict(set)
        for entry in answer.json()["entry"]:
            assert entry["response"]["status"].startswith("201"), entry
            resource_type, resource_id = entry["response"]["location"].split("/")[:2]
            written[resource_type].add(resource_id)
        (patient,) = written["Patient"]
        yield World(gateway, patient, dict(written))
    finally:
        gateway.stop()


# --- fhirpy --------------------------------------------------------------------------------------


def heart_rate(fhir: SyncFHIRClient, patient: Any, day: int) -> Any:
    return fhir.resource(
        "Observation",
        status="final",
        category=[
            {
                "coding": [
                    {
                        "system": CATEGORIES,
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        code={"coding": [{"system": LOINC, "code": HEART_RATE}]},
        subject=patient.to_reference(),
        effectiveDateTime=f"2024-03-{day:02d}T09:00:00Z",
        valueQuantity={"value": 60 + day, "unit": "/min"},
    )


def test_fhirpy_creates_reads_updates_and_searches(world: World) -> None:
    gateway = world.gateway
    fhir = SyncFHIRClient(gateway.fhir_url, authorization=f"Bearer {gateway.token()}")

    patient = fhir.resource(
        "Patient",
        name=[{"family": "Fhirpy", "given": ["Ada"]}],
        gender="female",
        birthDate="1971-05-06",
    )
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"
    observations = [heart_rate(fhir, patient, day) for day in range(1, 26)]
    for observation in observations:
        observation.save()
    first = observations[0]
    assert first["meta"]["versionId"] == "1"

    read = fhir.reference("Observation", first.id).to_resource()
    assert read["valueQuantity"]["value"] == 61
    assert read["subject"]["reference"] == f"Patient/{patient.id}"

    # update: a new version, its ETag, and fhirpy's refresh() (If-None-Match: <versionId>)
    first["valueQuantity"]["value"] = 99
    first.save()
    assert first["meta"]["versionId"] == "2"
    raw = gateway.http.get(f"Observation/{first.id}")
    assert raw.headers["etag"] == 'W/"2"' and raw.json()["valueQuantity"]["value"] == 99
    first.refresh()
    assert first["meta"]["versionId"] == "2" and first["valueQuantity"]["value"] == 99

    searched = fhir.resources("Observation").search(patient=patient.id)
    # paging: 25 results in pages of 10, fhirpy following the absolute next links
    paged = searched.limit(10).fetch_all()
    assert sorted(o.id for o in paged) == sorted(o.id for o in observations)
    assert len(searched.limit(10).fetch()) == 10
    # counts: fhirpy's count() (_count=0&_totalMethod=count) and _summary=count
    assert searched.count() == 25
    assert searched.search(_summary="count").fetch_raw()["total"] == 25
    # sort by date, newest first; a search by code and date
    newest = searched.sort("-date").limit(3).fetch()
    assert [o["effectiveDateTime"][:10] for o in newest] == [
        "2024-03-25",
        "2024-03-24",
        "2024-03-23",
    ]
    late = searched.search(code=f"{LOINC}|{HEART_RATE}", date__ge="2024-03-20").fetch_all()
    assert sorted(o["effectiveDateTime"][:10] for o in late) == [
        f"2024-03-{day}" for day in range(20, 26)
    ]
    assert fhir.resources("Observation").search(patient=patient.id, code="none").count() == 0

    # the imported Synthea patient, found by name and by _id; its body heights by code
    found = fhir.resources("Patient").search(family="Alvarez", _id=world.patient).fetch_all()
    assert [p.id for p in found] == [world.patient]
    heights = fhir.resources("Observation").search(
        subject=f"Patient/{world.patient}", code=f"{LOINC}|{BODY_HEIGHT}"
    )
    assert heights.count() == len(heights.fetch_all()) > 0
    assert {o.id for o in heights.fetch_all()} <= world.written["Observation"]


def test_fhirpy_get_or_create_is_refused_not_duplicated(world: World) -> None:
    """fhirpy's get_or_create() puts its search on the POST's URL (Aidbox's form): the gateway
    answers 400 (conditional create is If-None-Exist in FHIR R4) instead of creating the
    resource again each time, and the If-None-Exist way works."""
    gateway = world.gateway
    fhir = SyncFHIRClient(gateway.fhir_url, authorization=f"Bearer {gateway.token()}")
    identifier = {"system": "urn:example:mrn", "value": "get-or-create-1"}
    patient = fhir.resource("Patient", identifier=[identifier], gender="male")
    search = fhir.resources("Patient").search(identifier="urn:example:mrn|get-or-create-1")
    for _ in range(2):
        with pytest.raises(FhirpyOutcome) as refused:
            search.get_or_create(patient)
        assert "If-None-Exist" in str(refused.value)
    assert search.count() == 0

    created = [
        gateway.http.post(
            "Patient",
            content=orjson.dumps(patient.serialize()),
            headers={
                "content-type": "application/fhir+json",
                "if-none-exist": "identifier=urn:example:mrn|get-or-create-1",
            },
        )
        for _ in range(2)
    ]
    assert [answer.status_code for answer in created] == [201, 200]
    assert search.count() == 1


def test_bare_version_etags_as_hapi_reads_them(world: World) -> None:
    """fhirpy sends meta.versionId as it is (`If-None-Match: 2`): HAPI takes a bare version as
    `W/"2"`, and so does the gateway, for If-None-Match (304) and If-Match (412 when stale)."""
    http = world.gateway.http
    url = f"Patient/{world.patient}"
    current = http.get(url)
    version = current.json()["meta"]["versionId"]
    assert current.headers["etag"] == f'W/"{version}"'
    assert http.get(url, headers={"if-none-match": version}).status_code == 304
    assert http.get(url, headers={"if-none-match": str(int(version) + 1)}).status_code == 200
    stale = http.put(
        url,
        content=orjson.dumps(current.json() | {"gender": "other"}),
        headers={"content-type": "application/fhir+json", "if-match": str(int(version) + 1)},
    )
    assert stale.status_code == 412, stale.text
    assert http.get(url, headers={"if-match": "3x"}).status_code == 200  # If-Match: writes only
    malformed = http.put(
        url,
        content=current.content,
        headers={"content-type": "application/fhir+json", "if-match": '"3'},
    )
    assert malformed.status_code == 400


# --- fhirclient ----------------------------------------------------------------------------------


def fhirclient_settings(client: GatewayClient, **more: str) -> dict[str, str]:
    """fhirclient's settings for SMART Backend Services: app_id = the client id, a signed
    assertion as jwt_token (fhirclient posts it as client_assertion), system/ scopes."""
    assertion = sign_assertion(client.key, client.client_id, client.token_url)
    return {
        "app_id": client.client_id,
        "api_base": client.fhir_url + "/",
        "jwt_token": assertion,
        "scope": "system/*.rs",
    } | more


def test_fhirclient_finds_the_token_endpoint_and_reads_and_searches(world: World) -> None:
    client = world.gateway.add_client(alg="RS384", name="fhirclient")
    smart = fhirclient.FHIRClient(settings=fhirclient_settings(client, patient_id=world.patient))
    assert not smart.ready
    assert not smart.prepare()  # read the CapabilityStatement: oauth2, no token yet
    capability = smart.server.capabilityStatement
    assert capability.fhirVersion == "4.0.1"
    smart.authorize()  # its own client_credentials request to the oauth-uris token endpoint
    assert smart.ready

    patient = FcPatient.read(world.patient, smart.server)
    assert patient.id == world.patient and patient.name[0].family.startswith("Alvarez")
    assert smart.patient is not None and smart.patient.id == world.patient

    heights = FcObservation.where(
        {"patient": world.patient, "code": f"{LOINC}|{BODY_HEIGHT}", "_count": "1"}
    )
    found = list(heights.perform_resources_iter(smart.server))  # one per page: next links
    assert len(found) > 1
    assert {o.id for o in found} <= world.written["Observation"]
    assert all(o.code.coding[0].code == BODY_HEIGHT for o in found)
    every = FcObservation.where({"patient": world.patient, "_count": "20"})
    assert {o.id for o in every.perform_resources_iter(smart.server)} == world.written[
        "Observation"
    ]
    recent = FcObservation.where({"patient": world.patient, "date": "ge2018-01-01"})
    dated = list(recent.perform_resources_iter(smart.server))
    assert dated and all(o.effectiveDateTime.isostring >= "2018" for o in dated)


def test_fhirclient_default_launch_scope_is_refused(world: World) -> None:
    """Without a patient_id, fhirclient asks for `launch/patient` too: a backend client has no
    launch context, so the token endpoint answers invalid_scope (hence `patient_id`, or
    `wants_patient = False`, in the recipe)."""
    client = world.gateway.add_client(alg="ES384", name="fhirclient, no patient")
    smart = fhirclient.FHIRClient(settings=fhirclient_settings(client))
    smart.prepare()
    with pytest.raises(requests.HTTPError) as refused:
        smart.authorize()
    assert refused.value.response.status_code == 400
    assert refused.value.response.json()["error"] == "invalid_scope"

    population = fhirclient.FHIRClient(settings=fhirclient_settings(client))
    population.wants_patient = False  # a population-level backend job: system/ scopes only
    population.prepare()
    population.authorize()
    assert FcPatient.read(world.patient, population.server).id == world.patient


# --- smart-fetch ---------------------------------------------------------------------------------


def read_ndjson(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Every resource of every `Type.ndjson[.gz]` smart-fetch wrote, by type."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.ndjson*")):
        if path.name.startswith("log."):
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        resource_type = path.name.split(".")[0]
        found[resource_type] = [orjson.loads(line) for line in data.splitlines() if line]
    return found


def smart_fetch_crawl(client: GatewayClient, key_file: Path, out: Path, *args: str) -> None:
    """`smart-fetch crawl OUT` as an integration engineer runs it, with the client's JWKS."""
    command = [
        str(Path(sys.executable).parent / "smart-fetch"), "crawl", str(out),
        "--fhir-url", client.fhir_url,
        "--smart-client-id", client.client_id, "--smart-key", str(key_file),
        "--verbose", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (out / "error").exists(), done.stdout  # an error answer lands there


def test_smart_fetch_crawls_a_patient_then_what_is_new(world: World, tmp_path: Path) -> None:
    client = world.gateway.add_client(alg="ES384", scopes="system/*.rs", name="smart-fetch")
    key_file = tmp_path / "smart-fetch.jwks"
    key_file.write_bytes(orjson.dumps({"keys": [client.key]}))
    first = tmp_path / "crawl"
    # every patient type smart-fetch knows; Observations with its default category filter
    smart_fetch_crawl(client, key_file, first, "--id-list", world.patient)

    crawled = read_ndjson(first)
    crawled_ids = {kind: {r["id"] for r in found} for kind, found in crawled.items() if found}
    crawled_types = {"Patient", "Encounter", "Condition", "Observation", "Immunization"} | {
        "DiagnosticReport", "Procedure", "MedicationRequest"
    }  # fmt: skip
    expected = {kind: ids for kind, ids in world.written.items() if kind in crawled_types}
    assert crawled_ids == expected  # every one of the patient's records, nothing else
    http = world.gateway.http
    for kind, resources in crawled.items():
        for resource in resources:
            assert resource == http.get(f"{kind}/{resource['id']}").json()

    # an incremental crawl of the same cohort (_lastUpdated=gt the newest record crawled,
    # in the server's own clock): only what was written since
    since = max(r["meta"]["lastUpdated"] for found in crawled.values() for r in found)
    new = http.post(
        "Observation",
        content=orjson.dumps(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"code": "vital-signs", "system": CATEGORIES}]}],
                "code": {"coding": [{"system": LOINC, "code": HEART_RATE}]},
                "subject": {"reference": f"Patient/{world.patient}"},
                "effectiveDateTime": "2025-01-02T03:04:05Z",
            }
        ),
        headers={"content-type": "application/fhir+json"},
    )
    assert new.status_code == 201, new.text
    world.written["Observation"].add(new.json()["id"])
    later = tmp_path / "later"
    smart_fetch_crawl(
        client, key_file, later,
        "--source-dir", str(first), "--type", "Observation,Condition", "--since", since,
    )  # fmt: skip
    assert {k: [r["id"] for r in found] for k, found in read_ndjson(later).items() if found} == {
        "Observation": [new.json()["id"]]
    }


def test_last_updated_finer_than_the_millisecond(world: World) -> None:
    """smart-fetch's next --since can be its own clock in microseconds: a record stamped in
    that same millisecond (the gateway keeps milliseconds) may be later, so `gt` finds it
    (FHIR: the range above the value overlaps the record's), and `lt` likewise."""
    http = world.gateway.http
    stamped = http.get(f"Patient/{world.patient}").json()["meta"]["lastUpdated"]
    assert stamped.endswith("Z") and len(stamped.split(".")[1]) == 4  # milliseconds
    finer = stamped[:-1] + "500Z"  # half a millisecond into the same one

    def found(value: str) -> bool:
        answer = http.get("Patient", params={"_id": world.patient, "_lastUpdated": value})
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["total"])

    assert found(f"gt{finer}") and found(f"lt{finer}")
    assert not found(f"gt{stamped}") and not found(f"lt{stamped}")  # the same millisecond
    assert found(f"ge{stamped}") and found(f"le{stamped}") and found(f"eq{stamped}")
    # its first and last microseconds: still inside the record's millisecond
    assert found(f"gt{stamped[:-1]}999Z") and found(f"lt{stamped[:-1]}001Z")
    assert not found(f"gt{stamped[:-1]}000Z")  # no finer than the millisecond after all
