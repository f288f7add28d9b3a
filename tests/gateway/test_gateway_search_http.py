"""Search over real HTTP: organisation A's `careledger up` process (node API + gateway) with a
SMART backend client, and organisation B's gateway in this process in front of the same node.
Searchset Bundles, paging through absolute next links, _include, _summary=count, POST
_search, the errors (400 unknown or malformed, 401, 403 scopes) and the directory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from accessutil import Consortium
from careledger.crypto.keyfile import KeyFile
from careledger.gateway.app import gateway_app
from careledger.gateway.context import Gateway
from careledger.gateway.smart.backend_client import new_private_jwk, public_jwk
from careledger.gateway.smart.clients import ClientRegistry
from gatewayutil import GatewayClient, GatewayProcess
from nodeutil import free_port, serve_over_http

pytestmark = pytest.mark.timeout(300)
FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
HEART_RATE, WEIGHT = "8867-4", "29463-7"


@dataclass
class World:
    node: GatewayProcess
    http: httpx.Client  # A's client: every scope
    b_http: httpx.Client  # B's gateway, B's client
    patient: str  # A's patient id
    observations: dict[str, dict[str, Any]]  # id -> resource as posted (A)
    b_patient: str


def post(http: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = http.post(
        f"{resource['resourceType']}",
        content=orjson.dumps(resource),
        headers={"content-type": FHIR_JSON, "prefer": "return=representation"},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def observation(patient: str, code: str, day: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"2024-03-{day:02d}T09:00:00Z",
        "valueQuantity": {"value": 60 + day, "unit": "1/min"},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("search-http")
    node = GatewayProcess(tmp / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        org_b = Consortium(node.url, node.organisation()).admit_member("Clinic B")
        with gateway_of(node.url, org_b, tmp / "gw-b") as b_http:
            yield build(node, b_http)
    finally:
        node.stop()


def gateway_of(node_url: str, org: KeyFile, data: Path) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def served() -> Iterator[httpx.Client]:
        gateway = Gateway(node_url, org, data)
        try:
            with serve_over_http(gateway_app(gateway)) as url:
                key = new_private_jwk("ES384")
                client_id = ClientRegistry(gateway.db).register(
                    jwk=public_jwk(key), scopes="system/*.cruds", purpose="TREAT", name="b"
                )
                with GatewayClient(client_id, key, url + "/auth/token", url + "/fhir").http() as h:
                    yield h
        finally:
            gateway.close()

    return served()


def build(node: GatewayProcess, b_http: httpx.Client) -> World:
    http = node.http
    patient = post(
        http,
        {
            "resourceType": "Patient",
            "name": [{"family": "Søren", "given": ["Ada"]}],
            "gender": "female",
            "birthDate": "1984-02-29",
        },
    )
    observations = {}
    for day in range(1, 14):
        code = HEART_RATE if day % 3 else WEIGHT
        created = post(http, observation(patient["id"], code, day))
        observations[created["id"]] = created
    b_patient = post(
        b_http,
        {
            "resourceType": "Patient",
            "name": [{"family": "Søren", "given": ["Bea"]}],
            "gender": "female",
        },
    )
    for day in range(1, 4):
        post(b_http, observation(b_patient["id"], HEART_RATE, day))
    return World(node, http, b_http, patient["id"], observations, b_patient["id"])


def test_searchset_bundle_with_absolute_links_and_entries(world: World) -> None:
    response = world.http.get(
        "Observation", params={"patient": world.patient, "code": f"{LOINC}|{HEART_RATE}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    bundle = response.json()
    want = {
        i for i, r in world.observations.items() if r["code"]["coding"][0]["code"] == HEART_RATE
    }
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == len(want)
    assert {e["resource"]["id"] for e in bundle["entry"]} == want
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == f"{world.node.fhir_url}/Observation/{entry['resource']['id']}"
        assert entry["search"] == {"mode": "match"}
        assert entry["resource"]["meta"]["versionId"] == "1"
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert self_link.startswith(world.node.fhir_url + "/Observation?")


def test_paging_through_next_links_to_the_end(world: World) -> None:
    url: str | None = (
        f"{world.node.fhir_url}/Observation?patient={world.patient}&_count=4&_sort=-date"
    )
    seen: list[str] = []
    pages = 0
    while url is not None:
        bundle = world.http.get(url).json()
        assert bundle["total"] == len(world.observations)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert all(u.startswith("http://") for u in links.values())
        url = links.get("next")
        pages += 1
    assert pages == 4
    assert len(seen) == len(set(seen)) == len(world.observations)
    dates = [world.observations[i]["effectiveDateTime"] for i in seen]
    assert dates == sorted(dates, reverse=True)


def test_include_summary_count_and_post_search(world: World) -> None:
    bundle = world.http.get(
        "Observation",
        params={"patient": world.patient, "_include": "Observation:patient", "_count": "2"},
    ).json()
    modes = [e["search"]["mode"] for e in bundle["entry"]]
    assert modes == ["match", "match", "include"]
    assert bundle["entry"][2]["resource"]["id"] == world.patient
    counted = world.http.get(
        "Observation", params={"patient": world.patient, "_summary": "count"}
    ).json()
    assert counted["total"] == len(world.observations) and "entry" not in counted
    posted = world.http.post(
        "Observation/_search",
        content=f"patient={world.patient}&date=ge2024-03-10&date=lt2024-03-12",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200, posted.text
    assert sorted(e["resource"]["effectiveDateTime"][:10] for e in posted.json()["entry"]) == [
        "2024-03-10",
        "2024-03-11",
    ]


def test_patient_string_and_token_parameters(world: World) -> None:
    for params in (
        {"family": "soren"},
        {"name": "SØR"},
        {"given": "ada"},
        {"gender": "female", "birthdate": "1984-02"},
    ):
        bundle = world.http.get("Patient", params=params).json()
        assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [world.patient], params


def test_another_organisations_records_are_never_in_its_results(world: World) -> None:
    """B's gateway finds B's patient and observations; A's finds none of them, and B none of
    A's: neither organisation holds a grant of the other's patient."""
    a_ids = {
        e["resource"]["id"]
        for e in world.http.get("Patient", params={"family": "soren"}).json()["entry"]
    }
    b_ids = {
        e["resource"]["id"]
        for e in world.b_http.get("Patient", params={"family": "soren"}).json()["entry"]
    }
    assert a_ids == {world.patient} and b_ids == {world.b_patient}
    b_obs = world.b_http.get("Observation", params={"_summary": "count"}).json()["total"]
    assert b_obs == 3
    found = world.b_http.get("Observation", params={"patient": world.patient}).json()
    assert found["total"] == 0 and "entry" not in found


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"nonsense": "1"}, {}, 400),
        ({"nonsense": "1"}, {"prefer": "handling=lenient"}, 200),
        ({"date": "2024-02-30"}, {}, 400),
        ({"date": "ap2024"}, {}, 400),
        ({"_count": "-5"}, {}, 400),
        ({"_sort": "code"}, {}, 400),
    ],
)
def test_bad_parameters_are_400_operation_outcomes(
    world: World, params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    response = world.http.get("Observation", params=params, headers=headers)
    assert response.status_code == status, response.text
    if status == 400:
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "invalid"


def test_an_oversized_search_form_is_413(world: World) -> None:
    response = world.http.post(
        "Observation/_search",
        content="code=" + "x" * (65 * 1024),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"


def test_no_token_is_401_and_scopes_without_search_are_403(world: World) -> None:
    assert httpx.get(f"{world.node.fhir_url}/Observation").status_code == 401
    with world.node.client.http(scope="system/Patient.rs") as narrow:
        assert narrow.get("Patient", params={"_id": world.patient}).status_code == 200
        refused = narrow.get("Observation", params={"patient": world.patient})
        assert refused.status_code == 403
        assert refused.json()["resourceType"] == "OperationOutcome"


def test_directory_search(world: World) -> None:
    post(
        world.http,
        {
            "resourceType": "Organization",
            "name": "Fjord Hospital",
            "identifier": [{"system": "urn:oid:1.2", "value": "FJ-1"}],
        },
    )
    post(world.http, {"resourceType": "Organization", "name": "Lake Clinic"})
    found = world.http.get("Organization", params={"name": "fjo"}).json()
    assert [e["resource"]["name"] for e in found["entry"]] == ["Fjord Hospital"]
    by_id = world.http.get("Organization", params={"identifier": "urn:oid:1.2|FJ-1"}).json()
    assert by_id["total"] == 1
    assert world.http.get("Organization", params={"_summary": "count"}).json()["total"] == 2
    assert world.http.get("Organization", params={"nonsense": "x"}).status_code == 400


def test_find_resolves_conditional_references_in_the_directory(world: World) -> None:
    """What gateway/bundles.py calls for `Practitioner?identifier=...`: the directory's
    matches, through the gateway's own database (the process's gateway.sqlite)."""
    post(
        world.http,
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "999"}],
            "name": [{"family": "Ng"}],
        },
    )
    from careledger.gateway.principal import Principal
    from careledger.gateway.search import find
    from careledger.gateway.smart.scopes import parse_scopes

    gateway = Gateway(world.node.url, world.node.organisation(), world.node.gateway_dir)
    try:
        principal = Principal("t", gateway.organisation.did, parse_scopes("system/*.rs"), "TREAT")
        found = find(
            gateway,
            principal,
            "Practitioner",
            [("identifier", "http://hl7.org/fhir/sid/us-npi|999")],
        )
        assert [f.resource_type for f in found] == ["Practitioner"]
        assert (
            find(
                gateway,
                principal,
                "Practitioner",
                [("identifier", "http://hl7.org/fhir/sid/us-npi|998")],
            )
            == []
        )
    finally:
        gateway.close()


def test_summary_and_elements_return_less_and_say_so(world: World) -> None:
    """`_elements` and `_summary=true|data|text` (as HAPI serves them, and fhirpy sends):
    the matches carry what was asked, the SUBSETTED tag marks them; a bad value is 400."""
    subsetted = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                 "code": "SUBSETTED"}  # fmt: skip
    asked = {"patient": world.patient, "_count": "3"}
    whole = world.http.get("Observation", params=asked).json()["entry"][0]["resource"]
    assert subsetted not in whole["meta"].get("tag", [])
    elements = world.http.get("Observation", params={**asked, "_elements": "status,code"})
    for entry in elements.json()["entry"]:
        resource = entry["resource"]
        assert set(resource) == {"resourceType", "id", "meta", "status", "code"}
        assert subsetted in resource["meta"]["tag"]
    summary = world.http.get("Observation", params={**asked, "_summary": "true"}).json()
    resource = summary["entry"][0]["resource"]
    assert {"status", "code", "subject", "effectiveDateTime"} <= set(resource)
    assert "category" not in resource and subsetted in resource["meta"]["tag"]
    data = world.http.get("Observation", params={**asked, "_summary": "data"}).json()
    assert data["entry"][0]["resource"].keys() == whole.keys() - {"text"}
    for bad in ({"_summary": "maybe"}, {"_elements": "status,Code!"}, {"_elements": ""}):
        refused = world.http.get("Observation", params={**asked, **bad})
        assert refused.status_code == 400, bad
        assert refused.json()["resourceType"] == "OperationOutcome"
