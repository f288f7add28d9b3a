"""FHIR validation (fhir.resources R4B) and Synthea bundle helpers, on the real data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import ScopePublic
from careledger.wallet.fhir import (
    BundleIndex,
    InvalidResource,
    patient_reference,
    validate_resource,
)
from careledger.wallet.sealing import Job, prepare
from nodeutil import SHARED_DATA

DATA = SHARED_DATA
SYNTHEA = DATA / "synthea-r4"
R4_ONLY_TYPES = {
    "MedicinalProduct", "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "SubstanceSpecification", "EffectEvidenceSynthesis",
    "RiskEvidenceSynthesis", "Evidence",
}  # fmt: skip


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def test_every_synthea_resource_validates() -> None:
    resources = [
        entry["resource"]
        for path in sorted(SYNTHEA.glob("*.json"))
        for entry in load(path)["entry"]
    ]
    started = time.perf_counter()
    for resource in resources:
        validate_resource(resource)
    rate = len(resources) / (time.perf_counter() - started)
    print(f"\nvalidated {len(resources)} Synthea resources at {rate:.0f}/s")


def test_r4_examples_validate_except_r4_only_types() -> None:
    failures = {}
    paths = sorted((DATA / "fhir-r4-examples").glob("*.json"))
    for path in paths:
        resource = load(path)
        try:
            validate_resource(resource)
        except InvalidResource as exc:
            failures[path.name] = (resource.get("resourceType"), str(exc))
    assert len(paths) - len(failures) >= 705
    assert {kind for kind, _ in failures.values()} <= R4_ONLY_TYPES, failures


def test_field_errors_name_the_path() -> None:
    bad = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": 1}]},
        "component": [{"code": {"text": "x"}, "valueQuantity": {"value": "not-a-number"}}],
        "colour": "blue",
    }
    with pytest.raises(InvalidResource) as caught:
        validate_resource(bad)
    paths = {error.path for error in caught.value.errors}
    assert "Observation.code.coding[0].system" in paths
    assert "Observation.component[0].valueQuantity.value" in paths
    assert "Observation.colour" in paths
    assert "Observation.component[0].valueQuantity.value" in str(caught.value)
    assert "not-a-number" in str(caught.value)


def test_missing_required_field_is_named() -> None:
    with pytest.raises(InvalidResource) as caught:
        validate_resource({"resourceType": "Observation", "status": "final"})
    assert any(e.path == "Observation.code" for e in caught.value.errors), caught.value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"resourceType": "Observatoin"}, "unknown resource type 'Observatoin'"),
        ({"resourceType": "HumanName"}, "unknown resource type 'HumanName'"),
        ({"status": "final"}, "resourceType is missing"),
        ({"resourceType": 7}, "resourceType is missing"),
        ([1, 2], "JSON object"),
    ],
)
def test_not_a_resource(value: Any, message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        validate_resource(value)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "contained": [{"resourceType": 5}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "R4.5.0"}]},
        {"resourceType": "Patient", "extension": [{"url": "x", "valueUrl": 7}]},
        {"resourceType": "Patient", "extension": [{"url": "x", "valueUrl": {"a": 1}}]},
    ],
)
def test_values_that_crash_the_models_are_refused_not_raised(resource: Any) -> None:
    # fhir_core's validators raise TypeError/KeyError/AttributeError on these: a writer
    # must get a clear refusal (422), not a crash in the sealing pool or a 500.
    with pytest.raises(InvalidResource, match="invalid Patient"):
        validate_resource(resource)


def nested_extensions(depth: int) -> bytes:
    text = '{"url":"x","valueString":"y"}'
    for _ in range(depth):
        text = '{"url":"x","extension":[' + text + "]}"
    return ('{"resourceType":"Patient","id":"p","extension":[' + text + "]}").encode()


@pytest.mark.parametrize("depth", [200, 400, 500])
def test_a_resource_nested_past_the_recursion_limit_is_refused(depth: int) -> None:
    # JSON that orjson still parses (up to 1,024 levels) but deeper than Python's recursion
    # (the models raised RecursionError from 200 levels of extensions): a clear refusal, or
    # acceptance of valid FHIR when the check gets through, never an unhandled error.
    try:
        validate_resource(orjson.loads(nested_extensions(depth)))
    except InvalidResource as exc:
        assert "nested too deeply" in str(exc)


@pytest.mark.parametrize("depth", [20, 200, 400])
def test_a_record_nested_deeper_than_a_record_may_be_is_refused_in_the_pool(depth: int) -> None:
    # Valid FHIR or not, a record deeper than canonical JSON's MAX_DEPTH cannot be sealed:
    # prepare answers an error (the batch is refused, 422, nothing written), not an exception
    # that breaks the sealing pool's batch.
    me, scope = Identity.generate(), Identity.generate()
    public = ScopePublic("clinical", 1, scope.encryption_public)
    job = Job(nested_extensions(depth), me.did, "00" * 32, 1, public, me.did, me.encryption_public)
    answer = prepare(job)
    assert isinstance(answer, str) and answer.startswith("Patient/p: "), answer


def test_each_synthea_bundle_splits_into_one_patient_and_shared_entries() -> None:
    for path in sorted(SYNTHEA.glob("[A-Z]*.json")):
        index = BundleIndex.of(load(path))
        patients, unowned = index.split_by_patient()
        assert len(patients) == 1, path.name
        assert {e.resource["resourceType"] for e in unowned} <= {"Organization", "Practitioner"}
        assert 1 + len(patients[0].entries) + len(unowned) == len(index.entries)
        patient_id = patients[0].patient.resource["id"]
        for entry in patients[0].entries:
            reference = patient_reference(entry.resource)
            assert reference is not None and reference.endswith(patient_id)


def test_references_resolve_in_every_form() -> None:
    path = next(SYNTHEA.glob("Jesus_Alvarez_*.json"))
    index = BundleIndex.of(load(path))
    patient = next(e for e in index.entries if e.resource["resourceType"] == "Patient")
    pid = patient.resource["id"]
    for reference in (f"urn:uuid:{pid}", f"Patient/{pid}", f"Patient/{pid}/_history/3",
                      f"https://example.org/fhir/Patient/{pid}"):  # fmt: skip
        assert index.resolve(reference) is patient
    assert index.resolve("Patient/unknown") is None
    observation = {"resourceType": "Observation", "subject": {"reference": "Group/1"}}
    assert index.patient_of(observation) is None


def test_local_references_rewrite_urn_uuids() -> None:
    path = next(SYNTHEA.glob("Jesus_Alvarez_*.json"))
    index = BundleIndex.of(load(path))
    encounter = next(e for e in index.entries if e.resource["resourceType"] == "Encounter")
    rewritten = index.local_references(encounter.resource)
    assert rewritten["subject"]["reference"].startswith("Patient/")
    assert "urn:uuid:" not in orjson.dumps(rewritten).decode()
    assert encounter.resource["subject"]["reference"].startswith("urn:uuid:")  # not mutated
    validate_resource(rewritten)
