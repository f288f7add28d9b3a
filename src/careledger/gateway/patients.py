"""Whose record a resource is, and enrolling the patients the gateway creates.

Every resource of a patient-record type belongs to one patient: a Patient to itself, any
other to the patient its `subject`, `patient` or `beneficiary` reference names
(`Patient/{id}`, also as an absolute URL of this server). The Patient resource's index row
holds the patient's did, so that reference finds whose keys the record is encrypted to.

A Patient created through the gateway is a person with no CareLedger identity yet: the
gateway enrols them for a claim (wallet/enrolment.py) with the organisation's voucher, stores
the claim package (encrypted under its one-time code) in `Gateway.claims_dir`, and hands the
code back once, to the caller, never storing it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from careledger.crypto.claim import write_claim_package
from careledger.crypto.privatefs import make_private_dir
from careledger.crypto.scopekeys import ScopePublic
from careledger.gateway.context import Gateway
from careledger.gateway.outcome import FhirError
from careledger.wallet import enrolment
from careledger.wallet.fhir import PATIENT_REFERENCE_FIELDS
from careledger.wallet.node_client import NodeClient

_PATIENT_REFERENCE = re.compile(r"(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[0-9]+)?")


def referenced_patient(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, reference) by which a resource names its patient, if it names one."""
    for name in PATIENT_REFERENCE_FIELDS:
        value = resource.get(name)
        if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
            return name, str(value["reference"])
    return None


def patient_id_of(resource: Mapping[str, Any]) -> str:
    """The id of the Patient a (non-Patient) resource names: 422 when it names none."""
    resource_type = str(resource.get("resourceType"))
    found = referenced_patient(resource)
    if found is None:
        fields = ", ".join(PATIENT_REFERENCE_FIELDS)
        raise FhirError(
            422,
            f"a {resource_type} is a patient's record: it must name its patient",
            issues=[(resource_type, f"one of {fields} must reference Patient/{{id}}")],
        )
    name, reference = found
    match = _PATIENT_REFERENCE.fullmatch(reference)
    if match is None:
        raise FhirError(
            422,
            f"{resource_type}.{name} must reference a Patient",
            issues=[(f"{resource_type}.{name}.reference", f"{reference!r} is not Patient/{{id}}")],
        )
    return match.group(1)


def find_patient(gateway: Gateway, resource: Mapping[str, Any]) -> str:
    """The did of the patient a resource belongs to: 404 for a Patient the gateway does not
    know, 422 for a resource that names no patient or one the gateway does not know."""
    resource_type = str(resource.get("resourceType"))
    if resource_type == "Patient":
        did = gateway.index.patient_did(str(resource.get("id")))
        if did is None:
            raise FhirError(404, f"Patient/{resource.get('id')} is not known here")
        return did
    patient_id = patient_id_of(resource)
    did = gateway.index.patient_did(patient_id)
    if did is None:
        field_name = (referenced_patient(resource) or ("subject", ""))[0]
        raise FhirError(
            422,
            f"{resource_type} names Patient/{patient_id}, which is not known here",
            issues=[(f"{resource_type}.{field_name}", f"Patient/{patient_id} not found")],
        )
    return did


@dataclass(frozen=True)
class Enrolled:
    """A patient the gateway enrolled for a claim: what writing their records needs, and
    the code to give out once (not in repr)."""

    did: str
    scope_keys: dict[str, ScopePublic]
    naming_key: bytes = field(repr=False)
    package: Path
    code: str = field(repr=False)


def enrol_patient(
    gateway: Gateway, node: NodeClient, patient: Mapping[str, Any], wait: bool
) -> Enrolled:
    """Enrol the person a new Patient resource describes, with the organisation's voucher
    (the organisation is the member that vouches, whoever the caller acts as), relayed by
    `node` (the caller's signed client). `wait` False: the enrolment's transactions are
    admitted, not committed, when this returns (the caller's anchors follow them)."""
    organisation = gateway.organisation
    enrolled = enrolment.enrol_for_claim(
        node, organisation.identity, organisation.did, display_name(patient), wait
    )
    make_private_dir(gateway.claims_dir)
    package = gateway.claim_package_of(enrolled.did)
    write_claim_package(package, enrolled.package)
    return Enrolled(enrolled.did, enrolled.scope_keys, enrolled.naming_key, package, enrolled.code)


def display_name(patient: Mapping[str, Any]) -> str:
    """The patient's name, kept only inside the claim package (encrypted under its code)."""
    names = patient.get("name")
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    given = first.get("given")
    given_text = " ".join(g for g in given if isinstance(g, str)) if isinstance(given, list) else ""
    return f"{given_text} {first.get('family') or ''}".strip()
