"""A FHIR R4 ``Consent`` read as a grant, refused with every reason it cannot be one
(docs/consent-fhir.md, Reading a Consent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.fhir_consent.conditions import (
    ConditionReader,
    Permit,
    ResolveParty,
    ResolveRecord,
)
from careledger.wallet.fhir_consent.fhir_values import (
    concept_codes,
    did_of_reference,
    record_of_reference,
    show_codes,
)
from careledger.wallet.fhir_consent.grant import ConsentMappingError, GrantSpec
from careledger.wallet.fhir_consent.vocabulary import CONSENT_SCOPE, ScopeOfType
from careledger.wallet.scopes import ACT_CODE, scope_for


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


class _ConsentReader(ConditionReader):
    """The Consent as a whole, its rules, and the permits they make."""

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
        scopes = concept_codes(consent.get("scope"))
        if (CONSENT_SCOPE, "patient-privacy") not in scopes:
            self.refuse(
                f"scope {show_codes(scopes)}: only patient-privacy Consents grant access to "
                "records (research, treatment and advance-directive Consents do not)"
            )
        rules = concept_codes(consent.get("policyRule"))
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
            self.refuse(
                f"policyRule {show_codes(rules)}: only OPTIN (nothing shared unless permitted)"
            )

    # the rules

    def _permits(self, root: Any) -> list[Permit]:
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

    def _nested_permits(self, root: Mapping[str, Any]) -> list[Permit]:
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
    ) -> Permit:
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
        return Permit(path, conditions, exceptions)

    # the grant

    def _fields(self, permits: list[Permit]) -> dict[str, Any] | None:
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

    def _shared_conditions(self, permits: list[Permit]) -> dict[str, Any]:
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
