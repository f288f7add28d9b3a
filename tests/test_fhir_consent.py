"""Grants to and from FHIR R4 Consent (wallet/fhir_consent/), on the R4 specification's own
Consent examples and on round trips; each refusal that guards against a wider grant is an
attack row of docs/security/fhirconsent.md."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careledger.wallet.fhir import validate_resource
from careledger.wallet.fhir_consent import (
    ACT_REASON,
    CONFIDENTIALITY,
    GRANT_SCOPES,
    PURPOSES,
    RECORD_NAME_SYSTEM,
    RECORD_TYPES,
    RESOURCE_TYPES,
    SCOPE_SYSTEM,
    ConsentMappingError,
    GrantSpec,
    consent_from_grant,
    did_of_reference,
    grant_from_consent,
    types_of_scope,
)
from careledger.wallet.scopes import SENSITIVE_CODES, scope_for
from nodeutil import SHARED_DATA

EXAMPLES = SHARED_DATA / "fhir-r4-examples"
PATIENT = "did:key:z6MkPatient"
ORG = "did:key:z6MkGoodHealthClinic"
NURSE = "did:key:z6MkFictiveNurse"
PRACTITIONER_13 = "did:key:z6MkPractitioner13"
GUARDIAN = "did:key:z6MkGuardian"
START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
END = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
RECORD_A, RECORD_B = "a" * 64, "b" * 64
LAST_FHIR_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())

# The local references of the R4 examples, as a deployment would resolve them to dids.
LOCAL_DIDS = {
    "Patient/f001": PATIENT,
    "Patient/72": PATIENT,
    "Patient/xcda": PATIENT,
    "Patient/example": "did:key:z6MkExamplePatient",
    "Organization/f001": ORG,
    "Practitioner/f204": NURSE,
    "Practitioner/13": PRACTITIONER_13,
    "Practitioner/xcda-author": "did:key:z6MkAuthor",
    "RelatedPerson/peter": GUARDIAN,
}


def resolve_local(reference: Mapping[str, Any]) -> str | None:
    return LOCAL_DIDS.get(str(reference.get("reference"))) or did_of_reference(reference)


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return loaded


def refusal(consent: Mapping[str, Any], **options: Any) -> tuple[str, ...]:
    options.setdefault("resolve_actor", resolve_local)
    with pytest.raises(ConsentMappingError) as raised:
        grant_from_consent(consent, **options)
    return raised.value.reasons


def assert_reasons(reasons: tuple[str, ...], expected: list[str]) -> None:
    """Exactly these reasons, in this order (each given by its distinctive beginning)."""
    assert len(reasons) == len(expected), reasons
    for reason, beginning in zip(reasons, expected, strict=True):
        assert reason.startswith(beginning), (reason, beginning)


def grant(**changes: Any) -> GrantSpec:
    fields: dict[str, Any] = {
        "patient": PATIENT,
        "grantee": ORG,
        "action": "read",
        "scopes": ("clinical", "diagnostics"),
        "purposes": ("TREAT",),
        "start": START,
        "end": END,
    }
    return GrantSpec(**(fields | changes))


# --- the R4 examples: what the mapping does with each ------------------------------------

UNTYPED_ROOT = "provision has no type and no nested permit: R4 leaves an untyped root rule"
OPTOUT = "policyRule OPTOUT: the base policy shares everything"
NO_GRANTEE = "0 grantees: a grant names exactly one actor"

EXPECTED_REFUSALS = {
    "consent-example.json": [UNTYPED_ROOT],
    "consent-example-Emergency.json": [
        OPTOUT,
        "provision.provision[0] is a deny rule: the ledger has no deny rules",
        "no nested rule is a permit",
    ],
    "consent-example-Out.json": [OPTOUT, UNTYPED_ROOT],
    "consent-example-grantor.json": [OPTOUT, UNTYPED_ROOT],
    "consent-example-notAuthor.json": [UNTYPED_ROOT],
    "consent-example-notOrg.json": ["provision is a deny rule: the ledger has no deny"],
    "consent-example-notThem.json": [UNTYPED_ROOT],
    "consent-example-notThis.json": [UNTYPED_ROOT],
    "consent-example-notTime.json": [UNTYPED_ROOT],
    "consent-example-pkb.json": [
        OPTOUT,
        "nested rules without a type (R4 requires one): provision.provision[0], "
        + ", ".join(f"provision.provision[{i}]" for i in range(1, 11)),
    ],
    "consent-example-signature.json": [
        "provision.provision[0].code: a rule on codes inside records",
        "actor Practitioner/xcda-author with role AUT (author): the rule is about records that "
        "party wrote",
        "no action: R4 reads a rule without action as every action",
        "provision.provision[0].class urn:ietf:bcp:13#application/hl7-cda+xml: not a FHIR R4B "
        "resource type",
    ],
    "consent-example-smartonfhir.json": [
        NO_GRANTEE,
        "provision.provision[0].class names part of scope medications (not Immunization, "
        "ImmunizationEvaluation, ImmunizationRecommendation, Medication, "
        "MedicationAdministration and 2 more)",
        "no purpose: R4 reads a rule without purpose as every purpose",
    ],
}


def test_every_consent_example_is_covered() -> None:
    found = {path.name for path in EXAMPLES.glob("consent-example*.json")}
    assert found == set(EXPECTED_REFUSALS)


@pytest.mark.parametrize("name", sorted(EXPECTED_REFUSALS))
def test_consent_example_is_refused_for_exactly_these_reasons(name: str) -> None:
    assert_reasons(refusal(example(name)), EXPECTED_REFUSALS[name])


def test_the_examples_local_references_name_no_did_without_a_resolver() -> None:
    reasons = refusal(example("consent-example-notOrg.json"), resolve_actor=did_of_reference)
    assert reasons[0].startswith("patient Patient/f001 names no did (an identifier with system")


def test_smartonfhir_maps_once_it_names_a_grantee_and_a_purpose_and_accepts_whole_scopes() -> None:
    consent = example("consent-example-smartonfhir.json")
    consent["provision"]["actor"] = [recipient("Organization/f001")]
    consent["provision"]["purpose"] = [{"system": ACT_REASON, "code": "PATRQT"}]
    assert_reasons(refusal(consent), ["provision.provision[0].class names part of scope"])

    spec = grant_from_consent(consent, resolve_actor=resolve_local, widen_to_scopes=True)

    first = int(datetime(2016, 6, 23, 7, 2, 33, tzinfo=UTC).timestamp())
    assert spec == GrantSpec(
        patient=PATIENT,
        grantee=ORG,
        action="read",
        scopes=("medications",),
        purposes=("PATRQT",),
        start=first,
        end=first + 30 * 60 + 1,  # FHIR's end includes its whole last second
    )


def test_not_them_as_an_explicit_permit_is_a_practitioner_level_grant() -> None:
    consent = example("consent-example-notThem.json")
    rule = consent["provision"]
    rule |= {
        "type": "permit",
        "action": rule["action"][:1],  # access only
        "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
        "class": [{"system": RESOURCE_TYPES, "code": t} for t in types_of_scope("diagnostics")],
    }

    spec = grant_from_consent(consent, resolve_actor=resolve_local)

    assert spec == grant(grantee=NURSE, scopes=("diagnostics",), start=START, end=END)


# --- round trips --------------------------------------------------------------------------


ROUND_TRIPS = {
    "read": grant(),
    "read, every purpose": grant(purposes=PURPOSES),
    "write": grant(action="write", scopes=("clinical", "medications"), purposes=()),
    "write with a purpose": grant(action="write", purposes=("TREAT",)),
    "delegate": grant(action="delegate", grantee=GUARDIAN, scopes=("clinical",), purposes=()),
    "sensitive only": grant(scopes=("sensitive",), purposes=("TREAT", "ETREAT")),
    "broad and sensitive": grant(scopes=("diagnostics", "sensitive")),
    "every scope": grant(
        scopes=(
            "clinical",
            "diagnostics",
            "medications",
            "administrative",
            "financial",
            "sensitive",
        )
    ),
    "record-level": grant(records=(RECORD_B, RECORD_A), scopes=("diagnostics",)),
    "from 1970": grant(start=0, end=1),
    "until the last second FHIR can write": grant(end=LAST_FHIR_SECOND + 1),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_grant_to_consent_to_grant(name: str) -> None:
    spec = ROUND_TRIPS[name]
    consent = consent_from_grant(spec)

    validate_resource(consent)  # a valid R4 (R4B model) Consent
    assert grant_from_consent(consent) == spec


def test_a_stored_grant_maps_with_its_id_grantor_and_grantee_kind() -> None:
    stored = grant(grantee=NURSE).payload() | {
        "id": "0123456789abcdef0123456789abcdef",
        "org": ORG,
        "grantor": GUARDIAN,
        "height": 12,
        "revoked_at": 0,
    }
    consent = consent_from_grant(stored)

    assert consent["id"] == stored["id"]
    assert consent["status"] == "active"
    assert consent["provision"]["actor"][0]["reference"] == {
        "identifier": {"system": "urn:ietf:rfc:3986", "value": NURSE},
        "type": "Practitioner",
    }
    assert consent["performer"] == [
        {"identifier": {"system": "urn:ietf:rfc:3986", "value": GUARDIAN}}
    ]
    assert grant_from_consent(consent) == grant(grantee=NURSE)
    org_grant = consent_from_grant(grant().payload() | {"org": ORG})
    assert org_grant["provision"]["actor"][0]["reference"]["type"] == "Organization"


def test_a_revoked_grant_is_an_inactive_consent_which_grants_nothing() -> None:
    consent = consent_from_grant(grant().payload() | {"revoked_at": 7})

    assert consent["status"] == "inactive"
    assert_reasons(refusal(consent), ["status inactive: only an active Consent is a grant"])


def test_the_consent_states_each_part_of_the_grant() -> None:
    consent = consent_from_grant(grant(scopes=("medications", "sensitive"), records=(RECORD_A,)))
    rule = consent["provision"]

    assert "type" not in rule  # R4: no type on the root rule
    assert consent["policyRule"]["coding"][0]["code"] == "OPTIN"
    assert rule["actor"][0]["role"]["coding"][0]["code"] == "PRCP"
    assert rule["action"][0]["coding"][0]["code"] == "access"
    assert rule["purpose"] == [{"system": ACT_REASON, "code": "TREAT"}]
    assert rule["period"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-12-31T23:59:59Z"}
    assert rule["data"] == [
        {
            "meaning": "instance",
            "reference": {"identifier": {"system": RECORD_NAME_SYSTEM, "value": RECORD_A}},
        }
    ]
    broad, sensitive = rule["provision"]
    assert [c["code"] for c in broad["class"]] == sorted(types_of_scope("medications"))
    assert {"system": CONFIDENTIALITY, "code": "R"} in [
        label for deny in broad["provision"] for label in deny["securityLabel"]
    ]
    assert all(deny["type"] == "deny" for deny in broad["provision"])
    assert sensitive["type"] == "permit"
    assert sensitive["class"][0]["system"] == SCOPE_SYSTEM
    assert sensitive["class"][0]["code"] == "sensitive"


def test_write_and_delegate_use_their_codes() -> None:
    write = consent_from_grant(grant(action="write"))["provision"]
    delegate = consent_from_grant(grant(action="delegate", grantee=GUARDIAN))["provision"]

    assert write["action"][0]["coding"][0]["code"] == "correct"
    assert delegate["actor"][0]["role"]["coding"][0]["code"] == "HPOWATT"
    assert "action" not in delegate  # a delegate may do all the patient may


def test_record_types_are_the_r4b_resources() -> None:
    from fhir.resources.R4B import fhirtypes, get_fhir_model_class
    from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel

    resources = set()
    for name in dir(fhirtypes):
        if not name.endswith("Type") or name in ("ResourceType", "DomainResourceType"):
            continue
        try:
            model = get_fhir_model_class(name[: -len("Type")])
        except ValueError:
            continue
        if issubclass(model, FHIRResourceModel) and model.__resource_type__ == name[:-4]:
            resources.add(name[:-4])
    assert set(RECORD_TYPES) == resources
    assert len(RECORD_TYPES) == len(set(RECORD_TYPES))


def test_each_record_type_is_in_exactly_one_scope() -> None:
    from careledger.wallet.fhir_consent import BROAD_SCOPES, GRANT_SCOPES

    covered = [t for scope in GRANT_SCOPES for t in types_of_scope(scope)]
    assert sorted(covered) == sorted(RECORD_TYPES)
    # Sensitive by nature (genetics), whatever its labels: never in a broad scope.
    assert types_of_scope("sensitive") == ["MolecularSequence"]
    assert all("MolecularSequence" not in types_of_scope(s) for s in BROAD_SCOPES)
    assert types_of_scope("medications", scope_for) == types_of_scope("medications")


# --- what cannot be expressed: each refused, never dropped -------------------------------


def recipient(reference: str) -> dict[str, Any]:
    role = {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}
    return {"role": {"coding": [role]}, "reference": {"reference": reference}}


def read_consent(**changes: Any) -> dict[str, Any]:
    consent = consent_from_grant(grant(**changes))
    return copy.deepcopy(consent)


def test_a_deny_nested_in_a_permit_is_refused_not_dropped() -> None:
    consent = read_consent()
    withheld = {"type": "deny", "class": [{"system": RESOURCE_TYPES, "code": "Observation"}]}
    denies = consent["provision"]["provision"][0]["provision"]
    denies.append(withheld)

    reasons = refusal(consent)

    nested = f"provision.provision[0].provision[{len(denies) - 1}]"
    assert_reasons(reasons, [f"{nested} is a deny rule nested in a permit"])
    assert "would allow what it withholds" in reasons[0]


def test_a_deny_of_a_purpose_beside_the_permits_is_refused() -> None:
    consent = read_consent()
    consent["provision"]["provision"].append(
        {"type": "deny", "purpose": [{"system": ACT_REASON, "code": "TREAT"}]}
    )

    assert_reasons(refusal(consent), ["provision.provision[1] is a deny rule"])


def test_an_untyped_root_naming_a_practitioner_is_not_read_as_a_permit() -> None:
    # consent-example-notThem withholds everything from the nurse; an OPTIN reading of its
    # untyped root would make it a grant to her.
    consent = example("consent-example-notThem.json")
    consent["provision"]["purpose"] = [{"system": ACT_REASON, "code": "TREAT"}]

    assert_reasons(refusal(consent), [UNTYPED_ROOT])


def test_a_class_naming_part_of_a_scope_is_refused_unless_widening_is_accepted() -> None:
    consent = read_consent(scopes=("diagnostics",))
    permit = consent["provision"]["provision"][0]
    permit["class"] = [c for c in permit["class"] if c["code"] == "Observation"]

    assert_reasons(
        refusal(consent), ["provision.provision[0].class names part of scope diagnostics"]
    )
    wider = grant_from_consent(consent, widen_to_scopes=True)
    assert wider.scopes == ("diagnostics",)


def test_a_permit_without_class_is_refused_because_it_would_cover_sensitive_records() -> None:
    consent = read_consent()
    del consent["provision"]["provision"][0]["class"]

    assert_reasons(refusal(consent), ["provision.provision[0] has no class: R4 reads it as every"])


def test_a_permit_by_security_label_is_refused() -> None:
    # R4 reads "permit R" as everything up to R: no scope is that.
    consent = read_consent(scopes=("sensitive",))
    sensitive = consent["provision"]["provision"][0]
    sensitive["securityLabel"] = [{"system": CONFIDENTIALITY, "code": "R"}]

    assert_reasons(refusal(consent), ["provision.provision[0].securityLabel: a permit by security"])


def test_withholding_part_of_the_sensitive_scope_is_refused() -> None:
    consent = read_consent(scopes=("sensitive",))
    psy = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
    consent["provision"]["provision"][0]["provision"] = [{"type": "deny", "securityLabel": [psy]}]

    assert_reasons(
        refusal(consent), ["provision.provision[0].provision[0] withholds some sensitive"]
    )


def test_a_deny_of_normal_confidentiality_inside_a_broad_permit_is_refused() -> None:
    # A deny of N withholds N and everything above it: the ledger's exclusion of sensitive
    # labels does not do that, so it is not one of the denies a broad permit may carry.
    consent = read_consent()
    normal = {"type": "deny", "securityLabel": [{"system": CONFIDENTIALITY, "code": "N"}]}
    consent["provision"]["provision"][0]["provision"] = [normal]

    assert_reasons(refusal(consent), ["provision.provision[0].provision[0] is a deny rule nested"])


def test_a_broad_permit_withholds_exactly_the_ledgers_sensitive_labels() -> None:
    # The exclusions are the table that decides a record's scope (wallet/scopes.py), so the
    # Consent states no more and no less than what the ledger keeps out of a broad scope.
    broad = consent_from_grant(grant())["provision"]["provision"][0]
    withheld = {
        (label["system"], label["code"])
        for deny in broad["provision"]
        for label in deny["securityLabel"]
    }
    ledger = {(system, code) for system, codes in SENSITIVE_CODES.items() for code in codes}

    # R4: a deny of R withholds R and everything above it, V.
    assert withheld | {(CONFIDENTIALITY, "V")} == ledger
    for system, code in sorted(ledger):  # a deny of any one of them maps too
        consent = read_consent()
        label = {"system": system, "code": code}
        consent["provision"]["provision"][0]["provision"] = [
            {"type": "deny", "securityLabel": [label]}
        ]
        assert grant_from_consent(consent) == grant()


def test_a_modifier_extension_is_refused() -> None:
    consent = read_consent()
    consent["provision"]["modifierExtension"] = [
        {"url": "http://example.org/only-on-weekdays", "valueBoolean": True}
    ]

    assert_reasons(refusal(consent), ["Consent.provision has a modifierExtension"])


def test_other_scopes_statuses_and_policies_are_refused() -> None:
    consent = read_consent()
    consent["status"] = "proposed"
    consent["scope"]["coding"][0]["code"] = "research"
    consent["policyRule"]["coding"][0]["code"] = "OPTOUT"

    assert_reasons(
        refusal(consent),
        [
            "status proposed",
            "scope http://terminology.hl7.org/CodeSystem/consentscope#research",
            OPTOUT,
        ],
    )
    del consent["policyRule"]
    consent["policy"] = [{"uri": "https://example.org/policy"}]
    assert refusal(consent)[2].startswith("no policyRule: the base policy is only in referenced")


def test_two_actions_are_two_grants_and_other_actions_are_refused() -> None:
    consent = read_consent()
    rule = consent["provision"]
    access = rule["action"][0]
    correct = copy.deepcopy(access)
    correct["coding"][0]["code"] = "correct"
    rule["action"] = [access, correct]
    assert_reasons(refusal(consent), ["actions access, correct: read and write are two grants"])

    correct["coding"][0]["code"] = "disclose"
    assert_reasons(refusal(consent), ["action disclose: the ledger grants access (read)"])


def test_grantees_the_model_cannot_name_are_refused() -> None:
    two = read_consent()
    two["provision"]["actor"].append(recipient("Practitioner/f204"))
    assert_reasons(
        refusal(two),
        ["2 grantees (urn:ietf:rfc:3986|did:key:z6MkGoodHealthClinic, Practitioner/f204)"],
    )

    person = read_consent()
    person["provision"]["actor"] = [recipient("Patient/example")]
    assert_reasons(
        refusal(person), ["actor Patient/example is a Patient: read and write grants go"]
    )

    custodian = read_consent()
    custodian["provision"]["actor"][0]["role"]["coding"][0]["code"] = "CST"
    assert_reasons(
        refusal(custodian),
        ["actor urn:ietf:rfc:3986|did:key:z6MkGoodHealthClinic with role CST", NO_GRANTEE],
    )

    unresolved = read_consent()
    unresolved["provision"]["actor"] = [recipient("Organization/elsewhere")]
    assert_reasons(refusal(unresolved), ["actor Organization/elsewhere names no did"])


def test_a_delegate_may_be_a_person_but_not_a_limited_power_of_attorney() -> None:
    consent = consent_from_grant(grant(action="delegate", grantee=GUARDIAN, purposes=()))
    consent["provision"]["actor"][0]["reference"]["type"] = "RelatedPerson"
    assert grant_from_consent(consent).action == "delegate"

    consent["provision"]["action"] = [
        {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}
            ]
        }
    ]
    assert_reasons(refusal(consent), ["a power of attorney limited to actions access"])


def test_purposes_outside_the_table_are_refused() -> None:
    consent = read_consent()
    consent["provision"]["purpose"] = [
        {"system": ACT_REASON, "code": "HMARKT"},
        {"system": "http://example.org/purposes", "code": "TREAT"},
    ]

    assert_reasons(
        refusal(consent),
        [f"purpose {ACT_REASON}#HMARKT: not one of", "purpose http://example.org/purposes#TREAT"],
    )


def test_no_period_end_is_refused_and_a_start_before_1970_is_read_as_1970() -> None:
    consent = read_consent()
    del consent["provision"]["period"]["end"]
    assert_reasons(refusal(consent), ["no period end: a grant ends"])

    consent["provision"]["period"] = {"start": "1964-01-01", "end": "2026-12-31"}
    assert grant_from_consent(consent) == grant(start=0, end=END)


def test_period_bounds_are_rounded_inwards() -> None:
    consent = read_consent()
    consent["provision"]["period"] = {
        "start": "2026-01-01T00:00:00.250Z",
        "end": "2026-12-31T23:59:59.998Z",
    }
    spec = grant_from_consent(consent)
    assert (spec.start, spec.end) == (START + 1, END - 1)

    consent["provision"]["period"] = {"start": "2026", "end": "2026-12"}
    spec = grant_from_consent(consent)
    assert (spec.start, spec.end) == (START, END)

    consent["provision"]["period"] = {"start": "2026", "end": "9999"}
    assert grant_from_consent(consent).end == LAST_FHIR_SECOND + 1

    consent["provision"]["period"] = {"start": "2026-01-01T02:00:00+02:00", "end": "2026-02"}
    spec = grant_from_consent(consent)
    assert spec.start == START
    assert spec.end == int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())


def test_named_records_map_through_the_record_resolver() -> None:
    consent = read_consent(scopes=("diagnostics",))
    consent["provision"]["data"] = [
        {"meaning": "instance", "reference": {"reference": "Observation/lab-1"}},
    ]
    assert_reasons(refusal(consent), ["data Observation/lab-1 does not resolve to a record name"])

    names = {"Observation/lab-1": RECORD_A}
    spec = grant_from_consent(consent, resolve_record=lambda r: names.get(r.get("reference", "")))
    assert spec.records == (RECORD_A,)

    consent["provision"]["data"][0]["meaning"] = "related"
    assert_reasons(refusal(consent), ["data Observation/lab-1 with meaning related"])


def test_records_on_a_write_grant_are_refused() -> None:
    consent = read_consent(records=(RECORD_A,))
    consent["provision"]["action"][0]["coding"][0]["code"] = "correct"

    assert_reasons(refusal(consent), ["data (named records) on a write grant"])


def test_permits_that_differ_in_purpose_are_refused() -> None:
    consent = read_consent(scopes=("clinical", "sensitive"))
    rule = consent["provision"]
    purposes = rule.pop("purpose")
    rule["provision"][0]["purpose"] = purposes
    rule["provision"][1]["purpose"] = [{"system": ACT_REASON, "code": "HRESCH"}]

    assert_reasons(refusal(consent), ["the permits differ in purpose"])


def test_a_flat_permit_root_maps() -> None:
    consent = read_consent(scopes=("administrative",))
    rule = consent["provision"]
    permit = rule.pop("provision")[0]
    rule |= {"type": "permit", "class": permit["class"], "provision": permit["provision"]}

    assert grant_from_consent(consent) == grant(scopes=("administrative",))


def test_unknown_rule_types_and_invalid_resources_are_refused() -> None:
    consent = read_consent()
    consent["provision"]["provision"][0]["type"] = "maybe"  # fhir.resources lets it through
    assert_reasons(
        refusal(consent),
        ["provision.provision[0] type 'maybe' is neither", "no nested rule is a permit"],
    )

    consent["provision"]["period"]["end"] = "2026-13-01"
    assert_reasons(refusal(consent), ["not a valid FHIR Consent"])
    assert_reasons(refusal({"resourceType": "Patient"}), ["not a FHIR Consent"])


def test_invalid_grants_cannot_be_written_as_consents() -> None:
    with pytest.raises(ConsentMappingError, match="a read grant names its purposes"):
        consent_from_grant(grant().payload() | {"purposes": []})
    with pytest.raises(ConsentMappingError, match="only a read grant may name records"):
        grant(action="write", records=(RECORD_A,))
    with pytest.raises(ConsentMappingError, match="scopes must be 1 to 6"):
        grant(scopes=("everything",))
    with pytest.raises(ConsentMappingError, match="the grantee is the patient"):
        grant(grantee=PATIENT)
    with pytest.raises(ConsentMappingError, match="past the year 9999"):
        consent_from_grant(grant(end=2**40))
    with pytest.raises(ConsentMappingError, match="not a grant"):
        consent_from_grant({"patient": PATIENT})


def test_grant_specs_compare_by_what_they_grant() -> None:
    assert grant(scopes=("diagnostics", "clinical"), purposes=("HRESCH", "TREAT")) == grant(
        scopes=("clinical", "diagnostics"), purposes=("TREAT", "HRESCH")
    )
    assert grant(records=(RECORD_B, RECORD_A)).payload()["records"] == [RECORD_A, RECORD_B]


@st.composite
def grant_specs(draw: st.DrawFn) -> GrantSpec:
    action = draw(st.sampled_from(("read", "write", "delegate")))
    scopes = draw(st.sets(st.sampled_from(GRANT_SCOPES), min_size=1))
    purposes = draw(st.sets(st.sampled_from(PURPOSES), min_size=1 if action == "read" else 0))
    records = draw(st.sets(st.text("0123456789abcdef", min_size=64, max_size=64), max_size=3))
    start = draw(st.integers(0, 2**34))
    end = draw(st.integers(start + 1, LAST_FHIR_SECOND + 1))
    return GrantSpec(
        patient=PATIENT,
        grantee=draw(st.sampled_from((ORG, NURSE, GUARDIAN))),
        action=action,
        scopes=tuple(scopes),
        purposes=tuple(purposes),
        records=tuple(records) if action == "read" else (),
        start=start,
        end=end,
    )


@settings(max_examples=60, deadline=None)
@given(grant_specs())
def test_every_grant_maps_to_a_valid_consent_and_back(spec: GrantSpec) -> None:
    consent = consent_from_grant(spec)

    validate_resource(consent)
    assert grant_from_consent(consent) == spec
