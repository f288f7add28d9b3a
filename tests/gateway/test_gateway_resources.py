"""The service layer of the FHIR interactions (`gateway.resources.Resources`), called directly
on a `Gateway` pointed at a real `careledger up` node: every write a real signed transaction,
every read a real audited fetch. HTTP behaviour is tested in test_gateway_interactions.py."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from accessutil import Consortium
from careledger.gateway.context import Gateway
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.resources import Resources
from careledger.gateway.smart.scopes import parse_scopes
from careledger.gateway.stored import Write
from careledger.wallet.fhir import BundleIndex, InvalidResource
from careledger.wallet.refs import RecordsError
from nodeutil import SHARED_DATA, NodeProcess, free_port

pytestmark = pytest.mark.timeout(300)

SYNTHEA = SHARED_DATA / "synthea-r4"
EXAMPLES = SHARED_DATA / "fhir-r4-examples"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("resources") / "data", free_port())
    proc.start("--block-interval", "0.05")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gateway(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gateway")
    gw = Gateway(node.url, node.organisation(), data, keys_dir=node.data_dir / "keys")
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture(scope="module")
def resources(gateway: Gateway) -> Resources:
    return Resources(gateway)


def principal_of(gateway: Gateway, scopes: str = "system/*.cruds") -> Principal:
    return Principal("test-client", gateway.organisation.did, parse_scopes(scopes), "TREAT")


def synthea_patient(name: str = "Abdul_Koepp") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Synthea patient and its records, bundle references rewritten to Type/id."""
    path = next(SYNTHEA.glob(f"{name}_*.json"))
    index = BundleIndex.of(orjson.loads(path.read_bytes()))
    groups, _ = index.split_by_patient()
    group = groups[0]
    patient = index.local_references(group.patient.resource)
    return patient, [index.local_references(e.resource) for e in group.entries]


def example(name: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return value


def status_of(call: Callable[[], object]) -> int:
    """The status a call is refused with (FhirError, or the records SDK's RecordsError)."""
    try:
        call()
    except (FhirError, RecordsError) as exc:
        return exc.status
    raise AssertionError("no refusal")


def new_patient(resources: Resources, who: Principal) -> str:
    patient, _ = synthea_patient("Alexis_Toy")
    return resources.create(who, patient).resource["id"]


def test_create_patient_enrols_with_claim_code_and_reads_back(
    resources: Resources, gateway: Gateway
) -> None:
    who = principal_of(gateway)
    patient, _ = synthea_patient()
    stored = resources.create(who, patient)
    assert stored.created and stored.version == 1
    assert stored.claim_code and len(stored.claim_code) > 10
    assert stored.resource["id"] != patient["id"]  # the server assigns ids on create
    assert stored.resource["meta"]["lastUpdated"].endswith("Z")
    did = gateway.index.patient_did(stored.resource["id"])
    assert did is not None and did.startswith("did:")
    assert list(gateway.claims_dir.glob("claim-*.json"))
    read = resources.read(who, "Patient", stored.resource["id"])
    assert read.resource == stored.resource
    assert read.version == 1 and read.last_updated == stored.last_updated
    assert stored.claim_code not in repr(stored)


def observation_of(patient_id: str) -> dict[str, Any]:
    resource = example("observation-example-bmi.json")
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    return resource


def test_record_update_versions_history_and_delete(resources: Resources, gateway: Gateway) -> None:
    who = principal_of(gateway)
    patient_id = new_patient(resources, who)
    created = resources.create(who, observation_of(patient_id))
    obs_id = created.resource["id"]
    located = gateway.index.locate("Observation", obs_id)
    assert located is not None and located.patient == gateway.index.patient_did(patient_id)

    changed = copy.deepcopy(created.resource)
    changed["status"] = "amended"
    second = resources.update(who, "Observation", obs_id, changed, if_match=1)
    assert second.version == 2 and not second.created
    assert resources.read(who, "Observation", obs_id).resource["status"] == "amended"
    assert resources.vread(who, "Observation", obs_id, 1).resource["status"] == "final"

    with pytest.raises(FhirError) as stale:
        resources.update(who, "Observation", obs_id, changed, if_match=1)
    assert stale.value.status == 412

    again = resources.update(who, "Observation", obs_id, changed, if_match=None)
    assert again.version == 2  # no-op update: same content, no new version
    assert gateway.index.locate("Observation", obs_id).version == 2  # type: ignore[union-attr]

    deleted = resources.delete(who, "Observation", obs_id)
    assert deleted.deleted and deleted.version == 3
    assert status_of(lambda: resources.read(who, "Observation", obs_id)) == 410
    assert status_of(lambda: resources.vread(who, "Observation", obs_id, 3)) == 410
    assert status_of(lambda: resources.vread(who, "Observation", obs_id, 9)) == 404
    assert resources.delete(who, "Observation", obs_id).version == 3  # deleting again: nothing

    history = resources.history(who, "Observation", obs_id)
    assert [s.version for s in history] == [3, 2, 1]
    assert [s.deleted for s in history] == [True, False, False]
    assert history[2].resource["status"] == "final"
    typed = resources.type_history(who, "Observation")
    assert {(s.resource["id"], s.version) for s in typed} >= {(obs_id, 1), (obs_id, 2), (obs_id, 3)}

    revived = resources.update(who, "Observation", obs_id, changed, if_match=3)
    assert revived.version == 4 and resources.read(who, "Observation", obs_id).version == 4


def test_update_as_create_with_client_id(resources: Resources, gateway: Gateway) -> None:
    who = principal_of(gateway)
    patient_id = new_patient(resources, who)
    body = {**observation_of(patient_id), "id": "client-chosen-1"}
    made = resources.update(who, "Observation", "client-chosen-1", body, if_match=None)
    assert made.created and made.version == 1
    assert resources.read(who, "Observation", "client-chosen-1").resource["id"] == "client-chosen-1"
    with pytest.raises(FhirError) as taken:
        resources.create(who, observation_of(patient_id), resource_id="client-chosen-1")
    assert taken.value.status == 409


def test_refusals_before_anything_is_written(resources: Resources, gateway: Gateway) -> None:
    who = principal_of(gateway)
    patient_id = new_patient(resources, who)
    before = len(gateway.index.of_patient(gateway.index.patient_did(patient_id) or ""))

    invalid = {**observation_of(patient_id), "status": 42}
    with pytest.raises(InvalidResource) as bad:
        resources.create(who, invalid)
    assert any(e.path == "Observation.status" for e in bad.value.errors)
    no_patient = example("observation-example-bmi.json")
    no_patient.pop("subject")
    assert status_of(lambda: resources.create(who, no_patient)) == 422
    assert status_of(lambda: resources.create(who, observation_of("nobody-here"))) == 422
    assert status_of(lambda: resources.create(who, {"resourceType": "Nonsense"})) == 404
    assert status_of(lambda: resources.create(who, example("auditevent-example.json"))) == 405
    assert status_of(lambda: resources.read(who, "Observation", "no-such-id")) == 404
    assert status_of(lambda: resources.read(who, "Observation", "bad id!")) == 400
    read_only = principal_of(gateway, "system/Observation.rs")
    assert status_of(lambda: resources.create(read_only, observation_of(patient_id))) == 403
    # A batch with one bad write writes none of them.
    good = observation_of(patient_id)
    writes = [Write("create", "Observation", good), Write("create", "Observation", invalid)]
    with pytest.raises(InvalidResource):
        resources.write_many(who, writes)
    after = len(gateway.index.of_patient(gateway.index.patient_did(patient_id) or ""))
    assert after == before


def test_directory_resources_are_versioned_and_found_by_identifier(
    resources: Resources, gateway: Gateway
) -> None:
    who = principal_of(gateway)
    practitioner = example("practitioner-example.json")
    stored = resources.create(who, practitioner)
    pid = stored.resource["id"]
    identifier = practitioner["identifier"][0]
    token = f"{identifier['system']}|{identifier['value']}"
    assert resources.matching("Practitioner", {"identifier": token}) == [pid]
    assert resources.matching("Practitioner", {"identifier": identifier["value"]}) == [pid]
    assert resources.matching("Practitioner", {"identifier": "urn:x|other"}) == []
    assert resources.matching("Practitioner", {"_id": pid}) == [pid]
    changed = {**stored.resource, "active": False}
    assert resources.update(who, "Practitioner", pid, changed, if_match=1).version == 2
    assert resources.update(who, "Practitioner", pid, changed, if_match=None).version == 2
    assert resources.vread(who, "Practitioner", pid, 1).resource["active"] is True
    resources.delete(who, "Practitioner", pid)
    assert resources.matching("Practitioner", {"identifier": token}) == []
    with pytest.raises(FhirError) as gone:
        resources.read(who, "Practitioner", pid)
    assert gone.value.status == 410
    assert [s.version for s in resources.history(who, "Practitioner", pid)] == [3, 2, 1]
    # Nothing of the directory is on the chain: no patient, no record.
    assert gateway.index.locate("Practitioner", pid) is None


def test_write_many_a_whole_synthea_patient(resources: Resources, gateway: Gateway) -> None:
    who = principal_of(gateway)
    patient, records = synthea_patient("Brent_Beer")
    writes = [Write("update", "Patient", patient, patient["id"])]
    writes += [Write("update", r["resourceType"], r, r["id"]) for r in records]
    stored = resources.write_many(who, writes)
    assert len(stored) == len(writes) and all(s.created for s in stored)
    assert stored[0].claim_code
    did = gateway.index.patient_did(patient["id"])
    assert did is not None
    assert len(gateway.index.of_patient(did)) == len(writes)
    again = resources.write_many(who, writes)  # sent again whole: nothing new
    assert [s.version for s in again] == [1] * len(writes)
    assert not any(s.created for s in again)
    some = records[len(records) // 2]
    read = resources.read(who, some["resourceType"], some["id"])
    assert {k: v for k, v in read.resource.items() if k != "meta"} == {
        k: v for k, v in some.items() if k != "meta"
    }


def test_a_record_cannot_move_to_another_patient(resources: Resources, gateway: Gateway) -> None:
    """An update that re-points a record at another patient is refused (it is encrypted to
    its patient's keys and named with its patient's naming key): nothing is written."""
    who = principal_of(gateway)
    first, second = new_patient(resources, who), new_patient(resources, who)
    created = resources.create(who, observation_of(first))
    moved = {**created.resource, "subject": {"reference": f"Patient/{second}"}}
    assert status_of(lambda: resources.update(who, "Observation", moved["id"], moved, None)) == 422
    assert resources.read(who, "Observation", moved["id"]).version == 1
    assert resources.read(who, "Observation", moved["id"]).resource["subject"] == {
        "reference": f"Patient/{first}"
    }


def test_a_practitioner_bound_client_enrols_writes_and_reads(
    resources: Resources, gateway: Gateway, node: NodeProcess
) -> None:
    """A client bound to a practitioner: the gateway acts with the practitioner's key (held
    by the organisation), enrols with the organisation's voucher, and the practitioner's
    reads of what it wrote are served (it acts for the author organisation)."""
    doctor = Consortium(node.url, node.organisation()).practitioner(node.organisation())
    assert gateway.keys_dir is not None
    doctor.save(gateway.keys_dir / "practitioner-gateway-test.json")
    who = Principal("doctor-client", doctor.did, parse_scopes("system/*.cruds"), "TREAT")
    patient, _ = synthea_patient("Crysta_Rogahn")
    stored = resources.create(who, patient)
    assert stored.claim_code
    created = resources.create(who, observation_of(stored.resource["id"]))
    assert resources.read(who, "Observation", created.resource["id"]).resource == created.resource
    # The organisation's own clients read it too: the organisation keeps access.
    org = principal_of(gateway)
    assert resources.read(org, "Observation", created.resource["id"]).version == 1
