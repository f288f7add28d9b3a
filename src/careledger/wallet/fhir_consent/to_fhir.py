"""A grant written as a FHIR R4 ``Consent`` (docs/consent-fhir.md, Field by field)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from careledger.crypto.scopekeys import SENSITIVE
from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.fhir_consent.grant import ConsentMappingError, GrantSpec
from careledger.wallet.fhir_consent.vocabulary import (
    ACT_REASON,
    ACTION_CODES,
    CONSENT_ACTION,
    CONSENT_SCOPE,
    DELEGATE,
    EXCLUSION_LABELS,
    LAST_FHIR_SECOND,
    LOINC,
    PARTICIPATION_TYPE,
    READ,
    RECORD_NAME_SYSTEM,
    RESOURCE_TYPES,
    ROLE_CODE,
    SCOPE_SYSTEM,
    URI,
    WRITE,
    ScopeOfType,
    types_of_scope,
)
from careledger.wallet.scopes import ACT_CODE, scope_for


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
    if spec.end - 1 > LAST_FHIR_SECOND:
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
                    for system, code in EXCLUSION_LABELS
                ],
            }
        )
    if SENSITIVE in scopes:
        label = "sensitive records: labelled R, V or with a sensitivity code, of any type"
        rules.append({"type": "permit", "class": [_coding(SCOPE_SYSTEM, SENSITIVE, label)]})
    return rules


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
