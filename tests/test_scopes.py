"""Which scope a FHIR resource goes to: the type table and the sensitivity labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from careledger.crypto.envelope import unpack_record_blob
from careledger.crypto.scopekeys import BROAD_SCOPES, SCOPES, SENSITIVE
from careledger.wallet.records import RecordsClient
from careledger.wallet.scopes import (
    ACT_CODE,
    CONFIDENTIALITY,
    DEFAULT_SCOPE,
    SENSITIVE_CODES,
    scope_for,
    scope_of,
    sensitivity_label,
)
from nodeutil import NodeProcess, enrol

DOC = Path(__file__).resolve().parents[1] / "docs" / "sensitive-data.md"


def labelled(resource_type: str, *codings: dict[str, str]) -> dict[str, Any]:
    return {"resourceType": resource_type, "meta": {"security": list(codings)}}


def test_scope_mapping_covers_synthea_types_and_has_a_default() -> None:
    expected = {
        "Observation": "diagnostics", "DiagnosticReport": "diagnostics",
        "ImagingStudy": "diagnostics", "Condition": "clinical", "Procedure": "clinical",
        "CarePlan": "clinical", "Goal": "clinical", "AllergyIntolerance": "clinical",
        "MedicationRequest": "medications", "Immunization": "medications",
        "Claim": "financial", "ExplanationOfBenefit": "financial",
        "Patient": "administrative", "Encounter": "administrative",
    }  # fmt: skip
    assert {t: scope_for(t) for t in expected} == expected
    assert {t: scope_of({"resourceType": t}) for t in expected} == expected
    assert scope_for("SomeFutureResource") == DEFAULT_SCOPE
    assert DEFAULT_SCOPE in BROAD_SCOPES


def test_scope_names_and_the_broad_scopes() -> None:
    assert SCOPES == (
        "clinical", "diagnostics", "medications", "administrative", "financial", "sensitive"
    )  # fmt: skip
    assert SCOPES[:5] == BROAD_SCOPES
    assert SENSITIVE not in BROAD_SCOPES


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (CONFIDENTIALITY, "R"),
        (CONFIDENTIALITY, "V"),
        (ACT_CODE, "PSY"),
        (ACT_CODE, "ETH"),
        (ACT_CODE, "HIV"),
        (ACT_CODE, "GDIS"),
        (ACT_CODE, "SDV"),
        ("http://hl7.org/fhir/v3/ActCode", "SUD"),
        ("urn:oid:2.16.840.1.113883.5.25", "R"),
    ],
)
def test_a_sensitivity_label_moves_any_type_to_the_sensitive_scope(system: str, code: str) -> None:
    for resource_type in ("Observation", "Condition", "MedicationRequest", "Encounter"):
        resource = labelled(resource_type, {"system": system, "code": code})
        assert scope_of(resource) == SENSITIVE
        assert sensitivity_label(resource) == (system, code)


def test_a_label_without_system_is_read_strictly() -> None:
    assert scope_of(labelled("Observation", {"code": "HIV"})) == SENSITIVE


@pytest.mark.parametrize(
    "coding",
    [
        {"system": CONFIDENTIALITY, "code": "N"},
        {"system": CONFIDENTIALITY, "code": "M"},
        {"system": ACT_CODE, "code": "TREAT"},  # a purpose of use, not a sensitivity
        {"system": "http://example.org/local", "code": "PSY"},  # someone else's PSY
        {"system": CONFIDENTIALITY, "code": "r"},  # codes are case-sensitive
    ],
)
def test_other_labels_leave_the_type_scope(coding: dict[str, str]) -> None:
    assert scope_of(labelled("Observation", coding)) == "diagnostics"


@pytest.mark.parametrize(
    "meta",
    [None, "R", {"security": "R"}, {"security": [None, 3, {"code": 5}]}, {"tag": [{"code": "R"}]}],
)
def test_malformed_or_absent_labels_do_not_break_the_choice(meta: object) -> None:
    assert scope_of({"resourceType": "Observation", "meta": meta}) == "diagnostics"


def test_a_genome_sequence_is_sensitive_by_nature() -> None:
    assert scope_for("MolecularSequence") == SENSITIVE


def test_the_documented_table_is_the_code_table() -> None:
    # The doc is the patient's and the auditor's reference: it must say exactly what the code
    # does, code for code, system for system.
    rows = re.findall(r"^\| `([A-Z]+)` \| (v3-[A-Za-z]+) \|", DOC.read_text(), re.MULTILINE)
    documented: dict[str, set[str]] = {}
    for code, system in rows:
        documented.setdefault(system, set()).add(code)
    expected = {system.rsplit("/", 1)[1]: set(codes) for system, codes in SENSITIVE_CODES.items()}
    assert documented == expected
    by_nature = re.findall(r"^\| `([A-Za-z]+)` \| a ", DOC.read_text(), re.MULTILINE)
    assert all(scope_for(t) == SENSITIVE for t in by_nature) and by_nature


def test_a_labelled_record_is_written_to_the_sensitive_scope(node: NodeProcess) -> None:
    # Through the real write pipeline: the label decides the key the data key is wrapped to,
    # so a broad grant's keys (which never include `sensitive`) cannot open it.
    org = node.organisation()
    clinic = RecordsClient(node.url, org, purpose="TREAT")
    patient = enrol(clinic, "sensitive test")
    labelled_observation = {
        "resourceType": "Observation",
        "id": "psy-1",
        "meta": {"security": [{"system": ACT_CODE, "code": "PSY"}]},
        "status": "final",
        "code": {"text": "depression screening"},
    }
    plain = {**labelled_observation, "id": "plain-1", "meta": {}}
    written = clinic.write_many(patient.did, [labelled_observation, plain])
    blobs = [unpack_record_blob(b) for _, b in clinic.fetch([w.blob_hash for w in written])]
    scopes = [{k.recipient for k in blob.wrapped_keys} - {org.did} for blob in blobs]
    assert scopes == [{"scope/sensitive/1"}, {"scope/diagnostics/1"}]
    assert (
        RecordsClient(node.url, patient).read(written[0].ref)["meta"]["security"][0]["code"]
        == "PSY"
    )
