"""Which access scope a FHIR resource belongs to: policy, kept out of crypto.

    scope_of(resource)        the scope a record is encrypted to (what writers use)
    scope_for(resource_type)  the scope of a resource type by the type table alone

A resource whose `meta.security` carries a confidentiality or sensitivity code of the table
below goes to the `sensitive` scope whatever its type; otherwise its type decides. A broad
grant ("all") never covers `sensitive`: a patient must name it. The codes, their systems and
why each is sensitive: docs/sensitive-data.md (keep the two in step; a test compares them).

The scope of a record is fixed by its first version (the chain refuses a later version in
another scope), so a label must be on the first version to move a record to `sensitive`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careledger.crypto.scopekeys import (
    ADMINISTRATIVE,
    CLINICAL,
    DIAGNOSTICS,
    FINANCIAL,
    MEDICATIONS,
    SENSITIVE,
)

# Unknown or unlisted types fall into the clinical scope: the broad scope patients grant most
# carefully, so that a type missing from the table is never over-shared.
DEFAULT_SCOPE = CLINICAL

# One scope per FHIR resource category (https://hl7.org/fhir/R4/resourcelist.html), coarse on
# purpose: a grant names scopes, and a patient must be able to understand the list.
_SCOPE_OF_TYPE: dict[str, str] = {
    **dict.fromkeys(
        (
            "AllergyIntolerance", "Condition", "Procedure", "FamilyMemberHistory",
            "ClinicalImpression", "DetectedIssue", "AdverseEvent", "CarePlan", "CareTeam",
            "Goal", "ServiceRequest", "NutritionOrder", "VisionPrescription", "RiskAssessment",
            "RequestGroup", "Communication", "CommunicationRequest", "DeviceRequest",
            "DeviceUseStatement", "Flag", "Composition", "DocumentReference",
            "DocumentManifest", "QuestionnaireResponse", "Consent",
        ),
        CLINICAL,
    ),
    **dict.fromkeys(
        (
            "Observation", "DiagnosticReport", "ImagingStudy", "Media", "Specimen",
            "BodyStructure",
        ),
        DIAGNOSTICS,
    ),
    **dict.fromkeys(
        (
            "MedicationRequest", "MedicationAdministration", "MedicationDispense",
            "MedicationStatement", "Medication", "Immunization", "ImmunizationEvaluation",
            "ImmunizationRecommendation",
        ),
        MEDICATIONS,
    ),
    **dict.fromkeys(
        (
            "Patient", "RelatedPerson", "Person", "Encounter", "EpisodeOfCare", "Appointment",
            "AppointmentResponse", "Schedule", "Slot", "Device", "Task", "Provenance",
            "AuditEvent",
        ),
        ADMINISTRATIVE,
    ),
    **dict.fromkeys(
        (
            "Claim", "ClaimResponse", "ExplanationOfBenefit", "Coverage",
            "CoverageEligibilityRequest", "CoverageEligibilityResponse", "EnrollmentRequest",
            "EnrollmentResponse", "Account", "ChargeItem", "Invoice", "PaymentNotice",
            "PaymentReconciliation",
        ),
        FINANCIAL,
    ),
    # Sensitive by nature: a genome sequence is genetic information (GDIS) whether or not
    # the writer labelled it, and it identifies the patient and their relatives.
    "MolecularSequence": SENSITIVE,
}  # fmt: skip

# --- security labels that make a record sensitive ---------------------------------------

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# The same code systems under the names earlier FHIR versions and HL7 v3 used for them: a
# label copied from an older system must not slip past.
_SYSTEM_ALIASES = {
    CONFIDENTIALITY: CONFIDENTIALITY,
    "http://hl7.org/fhir/v3/Confidentiality": CONFIDENTIALITY,
    "urn:oid:2.16.840.1.113883.5.25": CONFIDENTIALITY,
    ACT_CODE: ACT_CODE,
    "http://hl7.org/fhir/v3/ActCode": ACT_CODE,
    "urn:oid:2.16.840.1.113883.5.4": ACT_CODE,
}

# Confidentiality codes above "normal" (v3-Confidentiality: U, L, M, N, R, V).
SENSITIVE_CONFIDENTIALITY = frozenset({"R", "V"})
# The value set v3-ActInformationSensitivityPolicy (codes of v3-ActCode), all of it.
SENSITIVE_ACT_CODES = frozenset(
    {
        "BH", "COGN", "DVD", "EMOTDIS", "ETH", "ETHUD", "GDIS", "HIV", "IDS", "MH", "MST",
        "OPIOIDUD", "PREGNANT", "PSY", "PSYTHPN", "SCA", "SDV", "SEX", "SICKLE", "SPI", "STD",
        "SUD", "TBOO", "VIO",
    }
)  # fmt: skip
SENSITIVE_CODES: Mapping[str, frozenset[str]] = {
    CONFIDENTIALITY: SENSITIVE_CONFIDENTIALITY,
    ACT_CODE: SENSITIVE_ACT_CODES,
}


def scope_for(resource_type: str) -> str:
    """The access scope of a resource type by the type table (DEFAULT_SCOPE when unlisted)."""
    return _SCOPE_OF_TYPE.get(resource_type, DEFAULT_SCOPE)


def scope_of(resource: Mapping[str, Any]) -> str:
    """The access scope a resource is written to: `sensitive` if a security label says so,
    else its type's scope."""
    if sensitivity_label(resource) is not None:
        return SENSITIVE
    return scope_for(str(resource.get("resourceType", "")))


def sensitivity_label(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first (system, code) of `meta.security` that makes the resource sensitive, if any.

    A coding without a system whose code is in the table counts too: an ambiguous label is
    treated as the stricter reading, since a record wrongly kept out of a broad grant costs
    the patient one more grant, and one wrongly in it cannot be taken back.
    """
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, Mapping) else None
    if not isinstance(labels, list):
        return None
    for label in labels:
        if isinstance(label, Mapping) and _is_sensitive(label.get("system"), label.get("code")):
            return str(label.get("system") or ""), str(label["code"])
    return None


def _is_sensitive(system: object, code: object) -> bool:
    if not isinstance(code, str):
        return False
    if system is None or system == "":
        return any(code in codes for codes in SENSITIVE_CODES.values())
    canonical = _SYSTEM_ALIASES.get(str(system))
    return canonical is not None and code in SENSITIVE_CODES[canonical]
