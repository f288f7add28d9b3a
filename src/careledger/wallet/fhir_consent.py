"""Consent grants to and from FHIR R4 ``Consent`` (docs/consent-fhir.md).

A grant is one permit: a patient lets one grantee (an organisation, one practitioner, or for a
delegation any identity) read or write the records of some scopes, or of some named records,
for some purposes, from ``start`` until ``end`` (unix seconds, end exclusive). The ledger shares
nothing without a grant, so it has no deny rules: a patient withdraws by revoking a grant.

``consent_from_grant`` writes a grant as a Consent of this shape (R4 says the root rule carries
no ``type`` and every nested rule does; the root holds what every nested rule shares):

    policyRule OPTIN                          nothing is shared unless a rule permits it
    provision                                 who, which action, why, when, which records
      period, actor, action, purpose, data
      provision[] type permit, class [resource types of the granted broad scopes]
        provision[] type deny, securityLabel  sensitive-labelled records are never in a broad scope
      provision[] type permit, class [urn:careledger:scope#sensitive]

``grant_from_consent`` reads that shape back, and the flat one (a root rule of type permit),
and refuses with ``ConsentMappingError`` (every reason found) whatever a grant cannot say
exactly. Nothing is dropped silently: a dropped deny or restriction would widen access.

Pure: no network, no clock, no chain state. The code tables below are this mapping's own (the
consent module of the chain owns the rules; chain/modules/consent exports PURPOSES/ACTIONS).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from careledger.crypto.scopekeys import SCOPES
from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.scopes import scope_for

# --- the ledger's vocabulary ---------------------------------------------------------------

READ, WRITE, DELEGATE = "read", "write", "delegate"
ACTIONS = (READ, WRITE, DELEGATE)
# FHIR v3 PurposeOfUse codes (CodeSystem v3-ActReason) a read grant may name.
PURPOSES = (
    "TREAT", "ETREAT", "HPAYMT", "HOPERAT", "HRESCH", "PUBHLTH", "PATRQT", "COVERAGE", "HLEGAL",
)  # fmt: skip
SENSITIVE = "sensitive"
# Every scope a grant may name, broad ones first (tolerates SCOPES with or without sensitive).
GRANT_SCOPES = tuple(dict.fromkeys((*SCOPES, SENSITIVE)))
BROAD_SCOPES = tuple(scope for scope in GRANT_SCOPES if scope != SENSITIVE)
MAX_RECORDS = 100

# --- code systems --------------------------------------------------------------------------

URI = "urn:ietf:rfc:3986"  # Identifier.system whose value is a URI: here a did
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
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

# Security labels that put a record in the sensitive scope whatever its type (the ledger's
# table is docs/sensitive-data.md, owned by wallet/scopes.py; this copy is what the mapping
# writes as the exclusions of a broad permit and accepts as such). A deny of confidentiality R
# covers R and V (R4: a label in a deny applies to everything at least as sensitive).
SENSITIVE_CONFIDENTIALITY = ("R", "V")
SENSITIVE_ACT_CODES = (
    "PSY", "PSYTHPN", "ETH", "ETHUD", "SUD", "SDV", "SEX", "HIV", "GDIS", "STD", "SICKLE",
    "TBOOZ",
)  # fmt: skip
SENSITIVE_LABELS = frozenset(
    {(CONFIDENTIALITY, code) for code in SENSITIVE_CONFIDENTIALITY}
    | {(ACT_CODE, code) for code in SENSITIVE_ACT_CODES}
)
_EXCLUSION_LABELS = ((CONFIDENTIALITY, "R"), *((ACT_CODE, c) for c in SENSITIVE_ACT_CODES))

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
_LAST_FHIR_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
_SHOWN_MISSING_TYPES = 5

ResolveParty = Callable[[Mapping[str, Any]], str | None]
ResolveRecord = Callable[[Mapping[str, Any]], str | None]
ScopeOfType = Callable[[str], str]


class ConsentMappingError(ValueError):
    """What a grant or a Consent says that the other cannot; ``reasons`` lists each part."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self.reasons = tuple(dict.fromkeys(reasons))
        super().__init__("; ".join(self.reasons) or "cannot map this consent")


@dataclass(frozen=True, kw_only=True)
class GrantSpec:
    """The parts of a ``consent/grant`` payload that a FHIR Consent carries.

    Scopes and purposes are kept in the order of their tables and records sorted, so two
    specs that grant the same thing are equal. Invalid values raise ConsentMappingError.
    """

    patient: str
    grantee: str
    action: str
    scopes: tuple[str, ...]
    records: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()
    start: int
    end: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", _in_table_order(self.scopes, GRANT_SCOPES))
        object.__setattr__(self, "purposes", _in_table_order(self.purposes, PURPOSES))
        object.__setattr__(self, "records", tuple(sorted(set(self.records))))
        problems = _grant_problems(self)
        if problems:
            raise ConsentMappingError(problems)

    def payload(self) -> dict[str, Any]:
        """The ``consent/grant`` payload fields it determines (no id, keys or naming key)."""
        payload: dict[str, Any] = {
            "patient": self.patient,
            "grantee": self.grantee,
            "action": self.action,
            "scopes": list(self.scopes),
            "start": self.start,
            "end": self.end,
        }
        if self.records:
            payload["records"] = list(self.records)
        if self.purposes:
            payload["purposes"] = list(self.purposes)
        return payload


def _in_table_order(values: Iterable[str], table: Sequence[str]) -> tuple[str, ...]:
    unique = set(values)
    return tuple(v for v in table if v in unique) + tuple(sorted(unique - set(table)))


def _grant_problems(spec: GrantSpec) -> list[str]:
    problems = []
    for name in ("patient", "grantee"):
        value = getattr(spec, name)
        if not (isinstance(value, str) and value.startswith("did:")):
            problems.append(f"{name} {value!r} is not a did")
    if spec.patient == spec.grantee:
        problems.append("the grantee is the patient: a patient needs no grant")
    if spec.action not in ACTIONS:
        problems.append(f"action {spec.action!r} is not one of {', '.join(ACTIONS)}")
    unknown = [s for s in spec.scopes if s not in GRANT_SCOPES]
    if unknown or not spec.scopes:
        problems.append(f"scopes must be 1 to 6 of {', '.join(GRANT_SCOPES)} (got {unknown})")
    unknown = [p for p in spec.purposes if p not in PURPOSES]
    if unknown:
        problems.append(f"purposes {unknown} are not among {', '.join(PURPOSES)}")
    if spec.action == READ and not spec.purposes:
        problems.append("a read grant names its purposes")
    if spec.records and spec.action != READ:
        problems.append("only a read grant may name records")
    if len(spec.records) > MAX_RECORDS:
        problems.append(f"{len(spec.records)} records: a grant names at most {MAX_RECORDS}")
    if not (isinstance(spec.start, int) and isinstance(spec.end, int)):
        problems.append("start and end are whole unix seconds")
    elif not (0 <= spec.start < spec.end):
        problems.append(f"period {spec.start}..{spec.end} is inverted or starts before 1970")
    return problems


# --- grant -> Consent ----------------------------------------------------------------------


def consent_from_grant(
    grant: Mapping[str, Any] | GrantSpec, *, scope_of_type: ScopeOfType = scope_for
) -> dict[str, Any]:
    """A FHIR R4 Consent (a dict that validates with fhir.resources) stating ``grant``.

    ``grant`` is a GrantSpec, a ``consent/grant`` payload, or a stored grant (``consent/grant``
    query): its ``id`` becomes the Consent id, ``revoked_at`` > 0 makes it inactive, ``grantor``
    its performer, and ``org`` tells an organisation grantee (org == grantee) from a
    practitioner. ConsentMappingError when the grant is invalid or its end is past year 9999.
    """
    spec = grant if isinstance(grant, GrantSpec) else _spec_of(grant)
    stored: Mapping[str, Any] = {} if isinstance(grant, GrantSpec) else grant
    if spec.end - 1 > _LAST_FHIR_SECOND:
        raise ConsentMappingError([f"end {spec.end} is past the year 9999 a FHIR date can hold"])
    consent: dict[str, Any] = {"resourceType": "Consent"}
    if _is_fhir_id(stored.get("id")):
        consent["id"] = stored["id"]
    revoked = bool(stored.get("revoked_at"))
    consent |= {
        "text": {"status": "generated", "div": _narrative(spec, revoked)},
        "status": "inactive" if revoked else "active",
        "scope": _concept(CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
        "category": [_concept(LOINC, "59284-0", "Patient Consent")],
        "patient": _party(spec.patient, "Patient"),
        "dateTime": _instant(spec.start),
        "performer": [_performer(spec, stored.get("grantor"))],
        "policyRule": _concept(ACT_CODE, "OPTIN", "opt-in"),
        "provision": _root_rule(spec, _grantee_type(spec, stored), scope_of_type),
    }
    _check_valid(consent)
    return consent


def _spec_of(grant: Mapping[str, Any]) -> GrantSpec:
    try:
        return GrantSpec(
            patient=grant["patient"],
            grantee=grant["grantee"],
            action=grant["action"],
            scopes=tuple(grant["scopes"]),
            records=tuple(grant.get("records") or ()),
            purposes=tuple(grant.get("purposes") or ()),
            start=_integer(grant["start"]),
            end=_integer(grant["end"]),
        )
    except (KeyError, TypeError) as exc:
        raise ConsentMappingError([f"not a grant: {exc!r}"]) from None


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected unix seconds, got {value!r}")
    return value


def _is_fhir_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", value) is not None


def _grantee_type(spec: GrantSpec, stored: Mapping[str, Any]) -> str | None:
    """Organization or Practitioner from a stored grant's ``org``; None when unknown."""
    org = stored.get("org")
    if not isinstance(org, str) or not org:
        return None
    return "Organization" if org == spec.grantee else "Practitioner"


def _performer(spec: GrantSpec, grantor: Any) -> dict[str, Any]:
    """Who agreed: the grantor (the patient or a delegate) of a stored grant, else the patient."""
    if isinstance(grantor, str) and grantor and grantor != spec.patient:
        return _party(grantor, None)
    return _party(spec.patient, "Patient")


def _root_rule(spec: GrantSpec, grantee_type: str | None, scope_of_type: ScopeOfType) -> Any:
    rule: dict[str, Any] = {
        "period": {"start": _instant(spec.start), "end": _instant(spec.end - 1)},
        "actor": [_actor(spec, grantee_type)],
    }
    if spec.action in ACTION_CODES:
        rule["action"] = [_concept(CONSENT_ACTION, ACTION_CODES[spec.action])]
    if spec.purposes:
        rule["purpose"] = [_coding(ACT_REASON, purpose) for purpose in spec.purposes]
    if spec.records:
        rule["data"] = [
            {"meaning": "instance", "reference": {"identifier": _identifier(RECORD_NAME_SYSTEM, r)}}
            for r in spec.records
        ]
    rule["provision"] = _data_rules(spec.scopes, scope_of_type)
    return rule


def _actor(spec: GrantSpec, grantee_type: str | None) -> dict[str, Any]:
    if spec.action == DELEGATE:
        role = _concept(ROLE_CODE, "HPOWATT", "healthcare power of attorney")
    else:
        role = _concept(PARTICIPATION_TYPE, "PRCP", "primary information recipient")
    return {"role": role, "reference": _party(spec.grantee, grantee_type)}


def _data_rules(scopes: Sequence[str], scope_of_type: ScopeOfType) -> list[dict[str, Any]]:
    """One permit for the broad scopes (by resource type, sensitive labels excluded), one for
    the sensitive scope (by the ledger's scope code: no FHIR label means exactly that scope)."""
    rules = []
    broad = [scope for scope in scopes if scope != SENSITIVE]
    if broad:
        types = sorted(t for scope in broad for t in types_of_scope(scope, scope_of_type))
        rules.append(
            {
                "type": "permit",
                "class": [_coding(RESOURCE_TYPES, t) for t in types],
                "provision": [
                    {"type": "deny", "securityLabel": [_coding(system, code)]}
                    for system, code in _EXCLUSION_LABELS
                ],
            }
        )
    if SENSITIVE in scopes:
        label = "sensitive records: labelled R, V or with a sensitivity code, of any type"
        rules.append({"type": "permit", "class": [_coding(SCOPE_SYSTEM, SENSITIVE, label)]})
    return rules


def types_of_scope(scope: str, scope_of_type: ScopeOfType = scope_for) -> list[str]:
    """Every record type whose records (unlabelled) are in ``scope``."""
    return [t for t in RECORD_TYPES if scope_of_type(t) == scope]


def _narrative(spec: GrantSpec, revoked: bool) -> str:
    what = {READ: "may read", WRITE: "may add records to", DELEGATE: "may act for the patient on"}
    text = (
        f"{'Revoked: ' if revoked else ''}{spec.grantee} {what.get(spec.action, spec.action)} "
        f"the {', '.join(spec.scopes)} records of {spec.patient}"
        + (f" ({len(spec.records)} named records only)" if spec.records else "")
        + (f" for {', '.join(spec.purposes)}" if spec.purposes else "")
        + f", from {_instant(spec.start)} through {_instant(spec.end - 1)}."
    )
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(text)}</p></div>'


def _instant(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _identifier(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


def _party(did: str, resource_type: str | None) -> dict[str, Any]:
    reference: dict[str, Any] = {"identifier": _identifier(URI, did)}
    if resource_type:
        reference["type"] = resource_type
    return reference


def _check_valid(consent: Mapping[str, Any]) -> None:
    try:
        validate_resource(consent)
    except InvalidResource as exc:  # a bug of this module, never the caller's input
        raise AssertionError(f"consent_from_grant wrote an invalid Consent: {exc}") from exc


# --- Consent -> grant ----------------------------------------------------------------------


def did_of_reference(reference: Mapping[str, Any]) -> str | None:
    """The did a Reference names: ``identifier`` {system urn:ietf:rfc:3986, value did:...}, or
    a ``reference`` that is a did. Local references (``Patient/f001``) name none."""
    identifier = reference.get("identifier")
    if isinstance(identifier, Mapping) and identifier.get("system") == URI:
        value = identifier.get("value")
        if isinstance(value, str) and value.startswith("did:"):
            return value
    literal = reference.get("reference")
    return literal if isinstance(literal, str) and literal.startswith("did:") else None


def record_of_reference(reference: Mapping[str, Any]) -> str | None:
    """The record name a data Reference names by identifier {RECORD_NAME_SYSTEM, name}."""
    identifier = reference.get("identifier")
    if isinstance(identifier, Mapping) and identifier.get("system") == RECORD_NAME_SYSTEM:
        value = identifier.get("value")
        return value if isinstance(value, str) and value else None
    return None


def grant_from_consent(
    resource: Mapping[str, Any],
    *,
    resolve_actor: ResolveParty = did_of_reference,
    resolve_record: ResolveRecord = record_of_reference,
    scope_of_type: ScopeOfType = scope_for,
    widen_to_scopes: bool = False,
) -> GrantSpec:
    """The grant a FHIR Consent states, or ConsentMappingError with every reason it cannot be.

    ``resolve_actor`` turns a Reference (patient, actor) into a did or None (default: only
    identifier-based references to dids); ``resolve_record`` turns a ``provision.data``
    Reference into a record name or None. A class listing resource types maps to the scopes
    holding them only when it lists every type of each such scope (``types_of_scope``): a grant
    covers whole scopes. ``widen_to_scopes=True`` accepts the wider grant instead.
    """
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Consent":
        raise ConsentMappingError(["not a FHIR Consent (resourceType must be 'Consent')"])
    try:
        validate_resource(resource)
    except InvalidResource as exc:
        raise ConsentMappingError([f"not a valid FHIR Consent: {exc}"]) from None
    reader = _ConsentReader(resolve_actor, resolve_record, scope_of_type, widen_to_scopes)
    return reader.read(resource)


@dataclass
class _Permit:
    """One permit rule with the conditions of its ancestors: element -> (path, value)."""

    path: str
    conditions: dict[str, tuple[str, Any]]
    exceptions: list[tuple[str, Mapping[str, Any]]]


# Conditions every permit of one Consent must share (they make one grant), and those a rule
# may hold that a grant cannot express.
_SHARED = ("actor", "action", "purpose", "period", "data")
_UNSUPPORTED = {
    "code": "a rule on codes inside records: the ledger cannot read records to apply it",
    "dataPeriod": "a rule on when the data was recorded: a grant covers records by scope, "
    "whenever they were written",
    "securityLabel": "a permit by security label: the sensitive scope is granted whole, and R4 "
    "reads a confidentiality label in a permit as a high-water mark (R permits everything up "
    "to R), which no scope matches",
}
_CONDITIONS = (*_SHARED, "class", *_UNSUPPORTED)


@dataclass
class _ConsentReader:
    resolve_actor: ResolveParty
    resolve_record: ResolveRecord
    scope_of_type: ScopeOfType
    widen_to_scopes: bool
    problems: list[str] = field(default_factory=list)

    def refuse(self, reason: str) -> None:
        self.problems.append(reason)

    def read(self, consent: Mapping[str, Any]) -> GrantSpec:
        self._no_modifier_extensions(consent, "Consent")
        self._header(consent)
        patient = self._did(consent.get("patient"), "patient")
        fields = self._fields(self._permits(consent.get("provision")))
        if self.problems or patient is None or fields is None:
            raise ConsentMappingError(self.problems)
        return GrantSpec(patient=patient, **fields)

    # the Consent as a whole

    def _no_modifier_extensions(self, value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            if value.get("modifierExtension"):
                self.refuse(
                    f"{path} has a modifierExtension: it changes what the Consent means in a "
                    "way this mapping does not know"
                )
            for key, item in value.items():
                self._no_modifier_extensions(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._no_modifier_extensions(item, f"{path}[{index}]")

    def _header(self, consent: Mapping[str, Any]) -> None:
        status = consent.get("status")
        if status != "active":
            self.refuse(f"status {status}: only an active Consent is a grant")
        scopes = _codes(consent.get("scope"))
        if (CONSENT_SCOPE, "patient-privacy") not in scopes:
            self.refuse(
                f"scope {_show(scopes)}: only patient-privacy Consents grant access to records "
                "(research, treatment and advance-directive Consents do not)"
            )
        rules = _codes(consent.get("policyRule"))
        if (ACT_CODE, "OPTIN") in rules:
            return
        if (ACT_CODE, "OPTOUT") in rules:
            self.refuse(
                "policyRule OPTOUT: the base policy shares everything the rules do not "
                "withhold; the ledger shares nothing without a grant, so it cannot hold that "
                "base, and the rules alone would mean the opposite"
            )
        elif not rules:
            self.refuse(
                "no policyRule: the base policy is only in referenced documents, which this "
                "mapping cannot read"
            )
        else:
            self.refuse(f"policyRule {_show(rules)}: only OPTIN (nothing shared unless permitted)")

    def _did(self, reference: Any, what: str) -> str | None:
        if not isinstance(reference, Mapping):
            self.refuse(f"no {what}")
            return None
        did = self.resolve_actor(reference)
        if did is None:
            self.refuse(
                f"{what} {_describe(reference)} names no did (an identifier with system {URI} "
                "and a did value; pass resolve_actor to resolve local references)"
            )
        return did

    # the rules

    def _permits(self, root: Any) -> list[_Permit]:
        if not isinstance(root, Mapping):
            self.refuse("no provision: the Consent permits nothing")
            return []
        kind = root.get("type")
        if kind == "permit":
            return [self._permit(root, "provision", None)]
        if kind == "deny":
            self.refuse(
                "provision is a deny rule: the ledger has no deny, it shares nothing without "
                "a grant (withdraw a grant by revoking it)"
            )
            return []
        if kind is not None:
            self.refuse(f"provision type {kind!r} is neither permit nor deny")
            return []
        return self._nested_permits(root)

    def _nested_permits(self, root: Mapping[str, Any]) -> list[_Permit]:
        nested = root.get("provision") or []
        if not nested:
            self.refuse(
                "provision has no type and no nested permit: R4 leaves an untyped root rule to "
                "the policy, and R4's own examples use that shape both to permit "
                "(consent-example) and to withhold (consent-example-notThem, -notTime); a grant "
                "needs an explicit permit"
            )
            return []
        untyped = [f"provision.provision[{i}]" for i, r in enumerate(nested) if not r.get("type")]
        if untyped:
            self.refuse(f"nested rules without a type (R4 requires one): {', '.join(untyped)}")
        permits = []
        for index, rule in enumerate(nested):
            path = f"provision.provision[{index}]"
            if rule.get("type") == "permit":
                permits.append(self._permit(rule, path, root))
            elif rule.get("type") == "deny":
                self.refuse(
                    f"{path} is a deny rule: the ledger has no deny rules, and a grant made "
                    "without it would allow what it withholds"
                )
            elif rule.get("type"):
                self.refuse(f"{path} type {rule['type']!r} is neither permit nor deny")
        if not permits and not untyped:
            self.refuse("no nested rule is a permit: the Consent permits nothing")
        return permits

    def _permit(
        self, rule: Mapping[str, Any], path: str, parent: Mapping[str, Any] | None
    ) -> _Permit:
        conditions: dict[str, tuple[str, Any]] = {}
        for level, level_path in ((parent, "provision"), (rule, path)):
            for name in _CONDITIONS:
                if level is None or level.get(name) in (None, []):
                    continue
                if name == "actor" and name in conditions:  # each actor is its own condition
                    conditions[name] = (level_path, [*conditions[name][1], *level[name]])
                    continue
                if name in conditions:
                    self.refuse(
                        f"{name} on both provision and {path}: a grant is one rule, and this "
                        "mapping does not intersect conditions"
                    )
                conditions[name] = (level_path, level[name])
        exceptions = [
            (f"{path}.provision[{i}]", sub) for i, sub in enumerate(rule.get("provision") or [])
        ]
        return _Permit(path, conditions, exceptions)

    # the grant

    def _fields(self, permits: list[_Permit]) -> dict[str, Any] | None:
        if not permits:
            return None
        for permit in permits:
            for name, reason in _UNSUPPORTED.items():
                if name in permit.conditions:
                    self.refuse(f"{permit.conditions[name][0]}.{name}: {reason}")
        shared = self._shared_conditions(permits)
        grantee, kind = self._grantee(shared.get("actor", []))
        action = self._action(shared.get("action", []), kind)
        scopes = self._scopes(permits)
        fields = {
            "grantee": grantee,
            "action": action,
            "scopes": tuple(scopes),
            "purposes": self._purposes(shared.get("purpose", []), action),
            "records": self._records(shared.get("data", []), action),
            **self._period(shared.get("period")),
        }
        return None if None in fields.values() else fields

    def _shared_conditions(self, permits: list[_Permit]) -> dict[str, Any]:
        shared: dict[str, Any] = {}
        for name in _SHARED:
            values = [p.conditions.get(name, (None, None))[1] for p in permits]
            if any(value != values[0] for value in values):
                self.refuse(
                    f"the permits differ in {name}: each would be its own grant (write one "
                    "Consent per grant)"
                )
            if values[0] is not None:
                shared[name] = values[0]
        return shared

    def _grantee(self, actors: list[Mapping[str, Any]]) -> tuple[str | None, str]:
        grantees: list[tuple[Mapping[str, Any], str]] = []
        for actor in actors:
            kind = self._actor_kind(actor)
            if kind is not None:
                grantees.append((actor["reference"], kind))
        if len(grantees) != 1:
            named = ", ".join(_describe(reference) for reference, _ in grantees)
            self.refuse(
                f"{len(grantees)} grantees{f' ({named})' if named else ''}: a grant names "
                "exactly one actor with a recipient role (v3-ParticipationType PRCP or IRCP) or "
                "a power of attorney (v3-RoleCode HPOWATT, POWATT or DPOWATT)"
            )
            return None, ""
        reference, kind = grantees[0]
        did = self._did(reference, "actor")
        resource_type = _reference_type(reference)
        allowed = GRANTEE_TYPES[DELEGATE if kind == DELEGATE else READ]
        if resource_type is not None and resource_type not in allowed:
            self.refuse(
                f"actor {_describe(reference)} is a {resource_type}: "
                + (
                    "a delegate is a person, a practitioner or an organisation"
                    if kind == DELEGATE
                    else "read and write grants go to an organisation or a practitioner"
                )
            )
        return did, kind

    def _actor_kind(self, actor: Mapping[str, Any]) -> str | None:
        """``recipient`` or ``delegate`` for a grantee role; refuses restricting roles."""
        roles = _codes(actor.get("role"))
        who = _describe(actor.get("reference") or {})
        if roles & {(PARTICIPATION_TYPE, code) for code in RECIPIENT_ROLES}:
            return "recipient"
        if roles & {(ROLE_CODE, code) for code in DELEGATE_ROLES}:
            return DELEGATE
        if (PARTICIPATION_TYPE, "CST") in roles:
            self.refuse(
                f"actor {who} with role CST (custodian): the rule is about the records that "
                "party holds, and a grant cannot be limited to one custodian's records"
            )
        elif (PARTICIPATION_TYPE, "AUT") in roles:
            self.refuse(
                f"actor {who} with role AUT (author): the rule is about records that party "
                "wrote, and a grant cannot be limited to one author's records"
            )
        else:
            self.refuse(f"actor {who} with role {_show(roles)}: not a grantee role")
        return None

    def _action(self, concepts: list[Mapping[str, Any]], kind: str) -> str | None:
        codes = {code for concept in concepts for code in self._action_codes(concept)}
        if kind == DELEGATE:
            if concepts:
                self.refuse(
                    f"a power of attorney limited to actions {', '.join(sorted(codes))}: a "
                    "delegate may do all the patient may (read, grant, revoke)"
                )
            return DELEGATE
        if not concepts:
            self.refuse(
                "no action: R4 reads a rule without action as every action; a grant is read "
                "(access) or write (correct)"
            )
            return None
        by_code = {code: action for action, code in ACTION_CODES.items()}
        unknown = sorted(codes - set(by_code))
        if unknown:
            self.refuse(
                f"action {', '.join(unknown)}: the ledger grants access (read) and correct "
                "(write) only"
            )
        elif len(codes) > 1:
            self.refuse(
                f"actions {', '.join(sorted(codes))}: read and write are two grants (write one "
                "Consent per grant)"
            )
        return by_code[codes.pop()] if len(codes) == 1 and not unknown else None

    def _action_codes(self, concept: Mapping[str, Any]) -> set[str]:
        codes = {code for system, code in _codes(concept) if system == CONSENT_ACTION}
        if not codes:
            self.refuse(f"action {_show(_codes(concept))}: not a consentaction code")
        return codes

    def _purposes(self, codings: list[Mapping[str, Any]], action: str | None) -> tuple[str, ...]:
        purposes = []
        for coding in codings:
            system, code = coding.get("system"), coding.get("code")
            if system == ACT_REASON and code in PURPOSES:
                purposes.append(str(code))
            else:
                self.refuse(
                    f"purpose {system}#{code}: not one of the ledger's purposes "
                    f"(v3-ActReason {', '.join(PURPOSES)})"
                )
        if action == READ and not codings:
            self.refuse(
                "no purpose: R4 reads a rule without purpose as every purpose; a read grant "
                "names its purposes"
            )
        return tuple(purposes)

    def _records(self, data: list[Mapping[str, Any]], action: str | None) -> tuple[str, ...]:
        if data and action not in (READ, None):
            self.refuse(f"data (named records) on a {action} grant: only read grants name records")
        names = []
        for item in data:
            reference = item.get("reference") or {}
            meaning = item.get("meaning")
            if meaning != "instance":
                self.refuse(
                    f"data {_describe(reference)} with meaning {meaning}: it covers records "
                    "linked to or written by that resource, which the ledger cannot enumerate "
                    "(only meaning instance maps)"
                )
                continue
            name = self.resolve_record(reference)
            if name is None:
                self.refuse(f"data {_describe(reference)} does not resolve to a record name")
            else:
                names.append(name)
        if len(names) > MAX_RECORDS:
            self.refuse(f"{len(names)} records: a grant names at most {MAX_RECORDS}")
        return tuple(names)

    def _period(self, period: Mapping[str, Any] | None) -> dict[str, int | None]:
        start_text = (period or {}).get("start")
        end_text = (period or {}).get("end")
        if not end_text:
            self.refuse("no period end: a grant ends (the Consent would hold forever)")
            return {"start": None, "end": None}
        # Round inwards: the first whole second at or after the start, and the end bound (FHIR
        # includes every instant matching `end` at its precision; a grant's end is exclusive).
        start = max(0, math.ceil(_bounds(start_text)[0])) if start_text else 0
        end = math.floor(_bounds(end_text)[1])
        if end <= start:
            self.refuse(f"period {start_text}..{end_text} ends before it starts or before 1970")
        return {"start": start, "end": end}

    def _scopes(self, permits: list[_Permit]) -> list[str]:
        scopes: list[str] = []
        for permit in permits:
            path, codings = permit.conditions.get("class", (permit.path, []))
            granted = self._class_scopes(path, codings)
            self._exceptions(permit, granted)
            scopes += [scope for scope in granted if scope not in scopes]
        return scopes

    def _class_scopes(self, path: str, codings: list[Mapping[str, Any]]) -> list[str]:
        if not codings:
            self.refuse(
                f"{path} has no class: R4 reads it as every kind of data, sensitive records "
                "included; a grant names its scopes (resource types, or the scope code "
                f"{SCOPE_SYSTEM}#sensitive)"
            )
            return []
        scopes, types = [], set()
        for coding in codings:
            system, code = coding.get("system"), str(coding.get("code"))
            if system == RESOURCE_TYPES and code in RECORD_TYPES:
                types.add(code)
            elif system == SCOPE_SYSTEM and code in GRANT_SCOPES:
                scopes.append(code)
            else:
                self.refuse(
                    f"{path}.class {system}#{code}: not a FHIR R4B resource type nor a ledger scope"
                )
        for scope in dict.fromkeys(self.scope_of_type(t) for t in sorted(types)):
            if self._covers_whole(path, scope, types):
                scopes.append(scope)
        return list(dict.fromkeys(scopes))

    def _covers_whole(self, path: str, scope: str, types: set[str]) -> bool:
        missing = [t for t in types_of_scope(scope, self.scope_of_type) if t not in types]
        if missing and not self.widen_to_scopes:
            shown = ", ".join(missing[:_SHOWN_MISSING_TYPES])
            more = f" and {len(missing) - _SHOWN_MISSING_TYPES} more" if len(missing) > 5 else ""
            self.refuse(
                f"{path}.class names part of scope {scope} (not {shown}{more}): a grant covers "
                "whole scopes, so the grant would allow more than the Consent"
            )
            return False
        return True

    def _exceptions(self, permit: _Permit, scopes: list[str]) -> None:
        """Nested rules of a permit: only a deny of sensitive labels under a broad permit
        maps (the ledger keeps sensitive records out of broad scopes anyway)."""
        for path, rule in permit.exceptions:
            labels = _codes_of(rule.get("securityLabel") or [])
            only_labels = not (set(rule) - {"id", "extension", "type", "securityLabel"})
            excludes_sensitive = bool(labels) and labels <= SENSITIVE_LABELS
            if rule.get("type") == "deny" and only_labels and excludes_sensitive:
                if SENSITIVE in scopes:
                    self.refuse(
                        f"{path} withholds some sensitive labels from a permit of the sensitive "
                        "scope: that scope is granted whole"
                    )
                continue
            self.refuse(
                f"{path} is a {rule.get('type') or 'untyped'} rule nested in a permit: the "
                "ledger has no exceptions inside a grant, and a grant made without it would "
                "allow what it withholds"
            )


# --- small readers -------------------------------------------------------------------------


def _codes(concept: Any) -> set[tuple[str, str]]:
    """(system, code) of every coding of a CodeableConcept."""
    if not isinstance(concept, Mapping):
        return set()
    return _codes_of(concept.get("coding") or [])


def _codes_of(codings: Iterable[Any]) -> set[tuple[str, str]]:
    return {(str(c.get("system")), str(c.get("code"))) for c in codings if isinstance(c, Mapping)}


def _show(codes: set[tuple[str, str]]) -> str:
    return ", ".join(f"{system}#{code}" for system, code in sorted(codes)) or "(none)"


def _describe(reference: Mapping[str, Any]) -> str:
    if isinstance(reference.get("reference"), str):
        return str(reference["reference"])
    identifier = reference.get("identifier")
    if isinstance(identifier, Mapping):
        return f"{identifier.get('system')}|{identifier.get('value')}"
    return str(reference.get("display") or "(empty reference)")


def _reference_type(reference: Mapping[str, Any]) -> str | None:
    """The resource type a Reference points to: ``type``, else the ``Type/id`` of a literal
    (relative or absolute URL); None when it says nothing."""
    if isinstance(reference.get("type"), str):
        return str(reference["type"])
    literal = reference.get("reference")
    if isinstance(literal, str) and not literal.startswith(("did:", "urn:", "#")):
        parts = literal.split("/_history/", 1)[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
    return None


_DATE_TIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2}))?)?)?"
)


def _bounds(value: str) -> tuple[Fraction, Fraction]:
    """The instants (unix seconds, exact) a FHIR dateTime covers: [first, end) at its
    precision. A date without a time is read as a UTC day (FHIR gives it no zone)."""
    match = _DATE_TIME.fullmatch(value)
    if match is None:  # fhir.resources validated the format: unreachable for valid Consents
        raise ConsentMappingError([f"not a FHIR dateTime: {value!r}"])
    year, month, day = int(match["year"]), int(match["month"] or 1), int(match["day"] or 1)
    if match["time"] is None:
        first = datetime(year, month, day, tzinfo=UTC)
        return Fraction(int(first.timestamp())), _after(
            first, bool(match["month"]), bool(match["day"])
        )
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    moment = datetime.fromisoformat(f"{value[:10]}T{match['time']}{zone}")
    fraction = match["fraction"] or ""
    start = Fraction(int(moment.timestamp())) + (Fraction(fraction) if fraction else 0)
    return start, start + Fraction(1, 10 ** max(0, len(fraction) - 1))


def _after(first: datetime, has_month: bool, has_day: bool) -> Fraction:
    """The first second after the year, month or day starting at ``first``."""
    try:
        if has_day:
            after = first + timedelta(days=1)
        elif has_month:
            after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        else:
            after = first.replace(year=first.year + 1)
    except (ValueError, OverflowError):  # past 9999-12-31: the last FHIR second is the end
        return Fraction(_LAST_FHIR_SECOND + 1)
    return Fraction(int(after.timestamp()))
