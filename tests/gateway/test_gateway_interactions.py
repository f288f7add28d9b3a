"""The FHIR interactions over real HTTP (gateway/interactions.py), with tokens got the SMART
way: organisation A's `careledger up` process (node API + gateway, tests/gatewayutil.py),
and gateways of the same chain run in this process in front of that node over HTTP (as
`careledger gateway` runs them): a second member organisation B's, and a second gateway of
A. Patients are claimed from the packages the gateway wrote, with the code it returned.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from accessutil import Consortium
from careledger.crypto.keyfile import KeyFile
from careledger.gateway.app import gateway_app
from careledger.gateway.context import SCHEMAS, Gateway
from careledger.gateway.db import GatewayDb
from careledger.gateway.http import MAX_RESOURCE_BYTES
from careledger.gateway.index.store import RecordIndex
from careledger.gateway.smart.backend_client import new_private_jwk, public_jwk
from careledger.gateway.smart.clients import ClientRegistry
from careledger.wallet.audit import AuditClient
from careledger.wallet.consent import ConsentClient
from careledger.wallet.fhir import BundleIndex
from careledger.wallet.importing import PendingClaim
from careledger.wallet.records import RecordsClient
from gatewayutil import GatewayClient, GatewayProcess
from nodeutil import SHARED_DATA, careledger_command, claimed_keys, free_port, serve_over_http

pytestmark = pytest.mark.timeout(300)

FHIR_JSON = "application/fhir+json"
EXAMPLES = SHARED_DATA / "fhir-r4-examples"
SYNTHEA = SHARED_DATA / "synthea-r4"


@dataclass
class Served:
    """A running gateway as a test sees it: its FHIR base, a client with every scope, its
    index and claim packages (read from its gateway.sqlite), and how to add clients."""

    fhir: str
    http: httpx.Client
    index: RecordIndex
    claims_dir: Path
    registry: ClientRegistry

    def client(self, scopes: str = "system/*.cruds", purpose: str = "TREAT") -> httpx.Client:
        """A new registered client's HTTP session (close it)."""
        key = new_private_jwk("ES384")
        client_id = self.registry.register(
            jwk=public_jwk(key), scopes=scopes, purpose=purpose, name="test"
        )
        token_url = self.fhir.removesuffix("/fhir") + "/auth/token"
        return GatewayClient(client_id, key, token_url, self.fhir).http()


@contextmanager
def served_process(process: GatewayProcess) -> Iterator[Served]:
    db = GatewayDb.open(process.gateway_dir / "gateway.sqlite", SCHEMAS)
    try:
        registry = ClientRegistry(db)
        claims = process.gateway_dir / "claims"
        yield Served(process.fhir_url, process.http, RecordIndex(db), claims, registry)
    finally:
        db.close()


@contextmanager
def served_here(node_url: str, org: KeyFile, data: Path) -> Iterator[Served]:
    """A gateway of `org` in this process, in front of the node at `node_url`."""
    gateway = Gateway(node_url, org, data)
    try:
        with serve_over_http(gateway_app(gateway)) as url:
            fhir = url + "/fhir"
            served = Served(
                fhir, httpx.Client(), gateway.index, gateway.claims_dir, ClientRegistry(gateway.db)
            )
            with served.client() as http:
                served.http = http
                yield served
    finally:
        gateway.close()


@dataclass
class World:
    node: GatewayProcess  # A's careledger up: the node and A's gateway
    a: Served
    b: Served  # a second member organisation's gateway
    org_b: KeyFile


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("interactions")
    node = GatewayProcess(tmp / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        org_b = Consortium(node.url, node.organisation()).admit_member("Second Clinic")
        with served_process(node) as a, served_here(node.url, org_b, tmp / "gw-b") as b:
            yield World(node, a, b, org_b)
    finally:
        node.stop()


def example(name: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return value


def synthea_patient(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = next(SYNTHEA.glob(f"{name}_*.json"))
    index = BundleIndex.of(orjson.loads(path.read_bytes()))
    group = index.split_by_patient()[0][0]
    patient = index.local_references(group.patient.resource)
    return patient, [index.local_references(e.resource) for e in group.entries]


def post(served: Served, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return served.http.post(
        f"/{resource['resourceType']}",
        content=orjson.dumps(resource),
        headers={"content-type": FHIR_JSON, **headers},
    )


def put(served: Served, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return served.http.put(
        f"/{resource['resourceType']}/{resource['id']}",
        content=orjson.dumps(resource),
        headers={"content-type": FHIR_JSON, **headers},
    )


def outcome_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def new_patient(served: Served, name: str = "Angelita_Howe") -> tuple[str, PendingClaim]:
    """A Patient created through the gateway: its id, and its claim as the patient gets it."""
    patient, _ = synthea_patient(name)
    response = post(served, patient)
    assert response.status_code == 201, response.text
    patient_id = response.json()["id"]
    did = served.index.patient_did(patient_id)
    assert did is not None
    package = served.claims_dir / f"claim-{did.rsplit(':', 1)[-1]}.json"
    return patient_id, PendingClaim(did, package, response.headers["careledger-claim-code"])


def observation(patient_id: str) -> dict[str, Any]:
    resource = example("observation-example-bmi.json")
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    return resource


def test_create_read_vread_update_delete_history(world: World) -> None:
    a = world.a
    patient_id, claim = new_patient(a)
    assert claim.code
    created = post(a, observation(patient_id))
    assert created.status_code == 201
    obs = created.json()
    url = f"{a.fhir}/Observation/{obs['id']}/_history/1"
    assert created.headers["location"] == url
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["last-modified"].endswith("GMT")
    assert "careledger-claim-code" not in created.headers

    read = a.http.get(f"/Observation/{obs['id']}")
    assert read.status_code == 200 and read.json() == obs
    assert read.headers["etag"] == 'W/"1"'
    assert (
        a.http.get(f"/Observation/{obs['id']}", headers={"if-none-match": 'W/"1"'}).status_code
        == 304
    )

    obs["status"] = "amended"
    stale = put(a, obs, **{"if-match": 'W/"7"'})
    assert stale.status_code == 412 and outcome_of(stale)["issue"][0]["code"] == "conflict"
    updated = put(a, obs, **{"if-match": 'W/"1"', "prefer": "return=minimal"})
    assert updated.status_code == 200 and updated.content == b""
    assert updated.headers["etag"] == 'W/"2"'
    unchanged = put(a, obs, prefer="return=OperationOutcome")
    assert unchanged.status_code == 200 and unchanged.headers["etag"] == 'W/"2"'
    assert outcome_of(unchanged)["issue"][0]["severity"] == "information"

    assert a.http.get(f"/Observation/{obs['id']}/_history/1").json()["status"] == "final"
    assert a.http.get(f"/Observation/{obs['id']}/_history/9").status_code == 404

    deleted = a.http.delete(f"/Observation/{obs['id']}")
    assert deleted.status_code == 200 and outcome_of(deleted)
    gone = a.http.get(f"/Observation/{obs['id']}")
    assert gone.status_code == 410 and outcome_of(gone)["issue"][0]["code"] == "deleted"

    history = a.http.get(f"/Observation/{obs['id']}/_history").json()
    assert history["type"] == "history" and history["total"] == 3
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    assert history["link"][0]["url"] == f"{a.fhir}/Observation/{obs['id']}/_history"
    typed = a.http.get("/Observation/_history", params={"_count": "50"}).json()
    assert {e["fullUrl"] for e in typed["entry"]} >= {f"{a.fhir}/Observation/{obs['id']}"}


def test_update_as_create_and_body_id_mismatch(world: World) -> None:
    a = world.a
    patient_id, _ = new_patient(a, "Babara_Rice")
    body = {**observation(patient_id), "id": "bmi-by-client"}
    made = put(a, body)
    assert made.status_code == 201
    assert made.headers["location"] == f"{a.fhir}/Observation/bmi-by-client/_history/1"
    mismatch = a.http.put(
        "/Observation/another-id", content=orjson.dumps(body), headers={"content-type": FHIR_JSON}
    )
    assert mismatch.status_code == 400 and outcome_of(mismatch)


def test_conditional_create(world: World) -> None:
    a = world.a
    organization = example("organization-example-f001-burgers.json")
    identifier = organization["identifier"][0]
    condition = f"identifier={identifier['system']}|{identifier['value']}"
    first = post(a, organization, **{"if-none-exist": condition})
    assert first.status_code == 201
    again = post(a, organization, **{"if-none-exist": condition})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    by_id = post(a, organization, **{"if-none-exist": f"_id={first.json()['id']}"})
    assert by_id.status_code == 200
    other = dict(organization, name="Twin")
    twin = post(a, other)  # a second Organization with the same identifier
    assert twin.status_code == 201
    several = post(a, organization, **{"if-none-exist": condition})
    assert several.status_code == 412 and outcome_of(several)
    # A patient's record by _id: the index finds it.
    patient_id, _ = new_patient(a, "Berneice_Little")
    existing = post(a, {"resourceType": "Patient"}, **{"if-none-exist": f"_id={patient_id}"})
    assert existing.status_code == 200 and existing.json()["id"] == patient_id
    # A patient's record by identifier: the search index finds it (what the caller may read).
    patient, _ = synthea_patient("Yi_Weissnat")
    mrn = next(
        i for i in patient["identifier"] if i.get("type", {}).get("text") == "Medical Record Number"
    )
    condition = f"identifier={mrn['system']}|{mrn['value']}"
    first = post(a, patient, **{"if-none-exist": condition})
    assert first.status_code == 201 and first.headers["careledger-claim-code"]
    again = post(a, patient, **{"if-none-exist": condition})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert "careledger-claim-code" not in again.headers  # enrolled once, its code given once
    with a.client(scopes="system/Patient.cr") as no_search:
        refused = no_search.post(
            "Patient",
            content=orjson.dumps(patient),
            headers={"content-type": FHIR_JSON, "if-none-exist": condition},
        )
        assert refused.status_code == 403 and outcome_of(refused)


def test_refusals_as_operation_outcomes(world: World) -> None:
    a = world.a
    patient_id, _ = new_patient(a, "Brent_Beer")

    def status(response: httpx.Response) -> int:
        outcome_of(response)
        return response.status_code

    raw = {"content-type": FHIR_JSON}
    assert status(a.http.post("/Observation", content=b"{not json", headers=raw)) == 400
    assert status(a.http.post("/Observation", content=b"[1]", headers=raw)) == 400
    assert (
        status(a.http.post("/Observation", content=b"{}", headers={"content-type": "text/xml"}))
        == 415
    )
    assert status(a.http.get(f"/Patient/{patient_id}", params={"_format": "xml"})) == 406
    assert (
        status(a.http.get(f"/Patient/{patient_id}", headers={"accept": "application/fhir+xml"}))
        == 406
    )
    assert status(a.http.get("/Nonsense/1")) == 404
    assert status(a.http.get("/Observation/not-there")) == 404
    assert status(post(a, example("auditevent-example.json"))) == 405
    assert status(a.http.patch(f"/Patient/{patient_id}", content=b"[]")) == 405
    with a.client(scopes="system/Observation.rs") as reader:
        scoped = reader.post(
            "Observation", content=orjson.dumps(observation(patient_id)), headers=raw
        )
        assert status(scoped) == 403
        assert reader.get(f"Patient/{patient_id}").status_code == 403

    invalid = {**observation(patient_id), "status": 42, "valueQuantity": {"value": "x"}}
    refused = post(a, invalid)
    assert status(refused) == 422
    locations = {e for issue in refused.json()["issue"] for e in issue["expression"]}
    assert {"Observation.status", "Observation.valueQuantity.value"} <= locations
    orphan = example("observation-example-bmi.json")
    orphan.pop("subject")
    assert status(post(a, orphan)) == 422
    unknown = post(a, observation("nobody"))
    assert status(unknown) == 422
    assert unknown.json()["issue"][0]["expression"] == ["Observation.subject"]


def test_bodies_over_the_limit_are_cut_off(world: World) -> None:
    a = world.a
    big = (
        b'{"resourceType": "Observation", "note": ['
        + b'{"text": "xxxxxxxx"},' * (MAX_RESOURCE_BYTES // 20)
        + b'{"text": "end"}]}'
    )
    declared = a.http.post("/Observation", content=big, headers={"content-type": FHIR_JSON})
    assert declared.status_code == 413 and outcome_of(declared)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    chunked = a.http.post("/Observation", content=chunks(), headers={"content-type": FHIR_JSON})
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and outcome_of(chunked)


def wait_for(condition: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_no_consent_is_403_and_audited_erased_is_410(world: World) -> None:
    """A second organisation that the patient granted reads for treatment only: its read
    for treatment is served; its read for research is refused by the node (403) and that
    refusal is in the patient's access log. A record the patient erased is 410."""
    a, b = world.a, world.b
    patient_id, claim = new_patient(a, "Carlene_Schamberger")
    obs = post(a, observation(patient_id)).json()
    patient = claimed_keys(claim)
    ConsentClient(world.node.url, patient).grant(world.org_b.did, purposes=["TREAT"])
    # What B's chain follower does once the grant is on chain: index the granted record.
    located = a.index.locate("Observation", obs["id"])
    assert located is not None
    b.index.put([(located, obs)])

    allowed = b.http.get(f"/Observation/{obs['id']}")
    assert allowed.status_code == 200 and allowed.json() == obs
    with b.client(purpose="HRESCH") as researcher:
        refused = researcher.get(f"Observation/{obs['id']}")
    assert refused.status_code == 403 and outcome_of(refused)["issue"][0]["code"] == "forbidden"

    with AuditClient(world.node.url, patient) as audit:
        denied = wait_for(
            lambda: [
                e.entry
                for e in audit.log(verify=False)
                if e.entry.reader == world.org_b.did and not e.entry.allowed
            ],
            "the refused read in the patient's log",
        )
    assert denied[0].purpose == "HRESCH" and denied[0].outcome == "denied"

    with RecordsClient(world.node.url, patient) as own:
        own.erase([own.ref(patient.did, "Observation", obs["id"])])
    # B's index still lists it (B runs no follower here: the node's answer is what counts).
    erased = b.http.get(f"/Observation/{obs['id']}")
    assert erased.status_code == 410 and outcome_of(erased)["issue"][0]["code"] == "deleted"
    assert put(b, {**obs, "status": "amended"}).status_code == 410
    assert b.http.get(f"/Observation/{obs['id']}/_history").status_code == 410


def test_a_version_the_chain_holds_already_is_409(world: World) -> None:
    """Another gateway of the same organisation wrote Observation/shared-id; this one does
    not know it yet and writes it as new: the chain refuses a second version 1 (409)."""
    a = world.a
    patient_id, _ = new_patient(a, "Chau_Anderson")
    body = {**observation(patient_id), "id": "shared-id"}
    assert put(a, body).status_code == 201
    second = world.node.data_dir.parent / "gw-a2"
    with served_here(world.node.url, world.node.organisation(), second) as a2:
        row = a.index.locate("Patient", patient_id)
        assert row is not None
        a2.index.put([(row, None)])
        conflict = put(a2, {**body, "status": "amended"})
        assert (
            conflict.status_code == 409 and outcome_of(conflict)["issue"][0]["code"] == "conflict"
        )
        assert a2.index.locate("Observation", "shared-id") is None  # nothing indexed


def test_careledger_gateway_alone_in_front_of_a_remote_node(world: World, tmp_path: Path) -> None:
    """`careledger gateway --node URL --as ORGKEY`: organisation B's gateway as its own
    process, talking to A's node over HTTP; a Patient and a record written through it."""
    key_file = tmp_path / "org-b.json"
    world.org_b.save(key_file)
    data = tmp_path / "gw"
    port = free_port()
    command = [
        *careledger_command(), "gateway", "--node", world.node.url, "--as", str(key_file),
        "--data-dir", str(data), "--port", str(port),
    ]  # fmt: skip
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/fhir/metadata"), "the gateway to listen")
        assert httpx.get(url + "/fhir/Patient/x").status_code == 401  # no token
        db = GatewayDb.open(data / "gateway.sqlite", SCHEMAS)
        try:
            served = Served(url + "/fhir", httpx.Client(), RecordIndex(db), data / "claims",
                            ClientRegistry(db))  # fmt: skip
            with served.client() as http:
                served.http = http
                patient_id, claim = new_patient(served, "Claudie_Walsh")
                obs = post(served, observation(patient_id))
                assert obs.status_code == 201
                read = http.get(f"Observation/{obs.json()['id']}")
                assert read.status_code == 200 and read.json() == obs.json()
        finally:
            db.close()
        assert claim.package.exists() and claim.did.startswith("did:")
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_careledger_gateway_refuses_a_node_that_does_not_answer(
    world: World, tmp_path: Path
) -> None:
    key_file = tmp_path / "org.json"
    world.org_b.save(key_file)
    nowhere = f"http://127.0.0.1:{free_port()}"
    command = [
        *careledger_command(), "gateway", "--node", nowhere, "--as", str(key_file),
        "--data-dir", str(tmp_path / "gw"), "--port", str(free_port()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no CareLedger node answers" in done.stderr
