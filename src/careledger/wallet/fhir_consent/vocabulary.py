"""The words both directions of the mapping share: the FHIR code systems a Consent uses, every
resource type a record may have, and the names this mapping derives from the ledger's tables.

The ledger's tables are not copied here: actions, purposes and the record limit belong to the
chain's consent module, scopes to crypto/scopekeys.py, sensitive labels and the type -> scope
table to wallet/scopes.py; import them from there."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from careledger.chain.modules.consent import ACTIONS, MAX_GRANT_RECORDS
from careledger.crypto.scopekeys import SCOPES
from careledger.wallet.scopes import (
    ACT_CODE,
    CONFIDENTIALITY,
    SENSITIVE_ACT_CODES,
    SENSITIVE_CODES,
    scope_for,
)

# --- the ledger's vocabulary ---------------------------------------------------------------

# Unpacked so that an action added to the chain fails here, loudly, until the mapping knows it.
READ, WRITE, DELEGATE = ACTIONS
# Every scope a grant may name, broad ones first (the order GrantSpec keeps them in).
GRANT_SCOPES = SCOPES
MAX_RECORDS = MAX_GRANT_RECORDS

# --- code systems --------------------------------------------------------------------------

URI = "urn:ietf:rfc:3986"  # Identifier.system whose value is a URI: here a did
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
LOINC = "http://loinc.org"
# The ledger's own systems: a scope (class) and a record name (the keyed, opaque on-chain name).
SCOPE_SYSTEM = "urn:careledger:scope"
RECORD_NAME_SYSTEM = "urn:careledger:record-name"

# consentaction code of each grant action (delegation has none: see DELEGATE_ROLES).
ACTION_CODES = {READ: "access", WRITE: "correct"}
RECIPIENT_ROLES = ("PRCP", "IRCP")  # v3-ParticipationType: (primary) information recipient
# v3-RoleCode powers of attorney that act for the patient in everything (SPOWATT, a special
# power, is limited, so it is not a delegation).
DELEGATE_ROLES = ("HPOWATT", "POWATT", "DPOWATT")
PERSON_TYPES = ("Patient", "RelatedPerson", "Person")
PRACTITIONER_TYPES = ("Practitioner", "PractitionerRole")
GRANTEE_TYPES = {  # what a Reference.type may be for the grantee of each action
    READ: ("Organization", *PRACTITIONER_TYPES),
    WRITE: ("Organization", *PRACTITIONER_TYPES),
    DELEGATE: ("Organization", *PRACTITIONER_TYPES, *PERSON_TYPES),
}

# The security labels that put a record in the sensitive scope whatever its type: the ledger's
# own table (wallet/scopes.py, docs/sensitive-data.md), under its canonical systems. A broad
# permit is written with a deny of each, and a deny of any of them is accepted under one.
SENSITIVE_LABELS = frozenset(
    (system, code) for system, codes in SENSITIVE_CODES.items() for code in codes
)
# R4 applies a confidentiality label in a deny to everything at least as sensitive, so the one
# deny of R withholds both sensitive confidentiality codes, R and V.
EXCLUSION_LABELS = ((CONFIDENTIALITY, "R"), *((ACT_CODE, c) for c in sorted(SENSITIVE_ACT_CODES)))

# Every resource type a record may have: the FHIR R4B resources (records validate with R4B),
# without the abstract Resource and DomainResource. A scope is the set of these types that
# `scope_of_type` puts in it (unlisted types fall in clinical), so a class list is read against
# all of them. tests/test_fhir_consent.py checks this list against fhir.resources.
RECORD_TYPES = (
    "Account", "ActivityDefinition", "AdministrableProductDefinition", "AdverseEvent",
    "AllergyIntolerance", "Appointment", "AppointmentResponse", "AuditEvent", "Basic", "Binary",
    "BiologicallyDerivedProduct", "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan",
    "CareTeam", "CatalogEntry", "ChargeItem", "ChargeItemDefinition", "Citation", "Claim",
    "ClaimResponse", "ClinicalImpression", "ClinicalUseDefinition", "CodeSystem",
    "Communication", "CommunicationRequest", "CompartmentDefinition", "Composition",
    "ConceptMap", "Condition", "Consent", "Contract", "Coverage", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition",
    "DeviceMetric", "DeviceRequest", "DeviceUseStatement", "DiagnosticReport",
    "DocumentManifest", "DocumentReference", "Encounter", "Endpoint", "EnrollmentRequest",
    "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceReport",
    "EvidenceVariable", "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag",
    "Goal", "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService", "ImagingStudy",
    "Immunization", "ImmunizationEvaluation", "ImmunizationRecommendation",
    "ImplementationGuide", "Ingredient", "InsurancePlan", "Invoice", "Library", "Linkage", "List",
    "Location", "ManufacturedItemDefinition", "Measure", "MeasureReport", "Media", "Medication",
    "MedicationAdministration", "MedicationDispense", "MedicationKnowledge",
    "MedicationRequest", "MedicationStatement", "MedicinalProductDefinition",
    "MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder",
    "NutritionProduct", "Observation", "ObservationDefinition", "OperationDefinition",
    "OperationOutcome", "Organization", "OrganizationAffiliation", "PackagedProductDefinition",
    "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation", "Person",
    "PlanDefinition", "Practitioner", "PractitionerRole", "Procedure", "Provenance",
    "Questionnaire", "QuestionnaireResponse", "RegulatedAuthorization", "RelatedPerson",
    "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
    "ResearchSubject", "RiskAssessment", "Schedule", "SearchParameter", "ServiceRequest", "Slot",
    "Specimen", "SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription",
    "SubscriptionStatus", "SubscriptionTopic", "Substance", "SubstanceDefinition",
    "SupplyDelivery", "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport",
    "TestScript", "ValueSet", "VerificationResult", "VisionPrescription",
)  # fmt: skip

# The last second a FHIR dateTime can write (four-digit years).
LAST_FHIR_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())

ScopeOfType = Callable[[str], str]


def types_of_scope(scope: str, scope_of_type: ScopeOfType = scope_for) -> list[str]:
    """Every record type whose records (unlabelled) are in ``scope``."""
    return [t for t in RECORD_TYPES if scope_of_type(t) == scope]
