"""The conditions of a Consent's permits read as the fields of one grant: grantee, action,
purposes, named records, period and scopes, each refused when a grant cannot say it exactly."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from careledger.chain.modules.consent import PURPOSES
from careledger.crypto.scopekeys import SENSITIVE
from careledger.wallet.fhir_consent.fhir_values import (
    coding_codes,
    concept_codes,
    date_time_bounds,
    describe_reference,
    reference_type,
    show_codes,
)
from careledger.wallet.fhir_consent.vocabulary import (
    ACT_REASON,
    ACTION_CODES,
    CONSENT_ACTION,
    DELEGATE,
    DELEGATE_ROLES,
    GRANT_SCOPES,
    GRANTEE_TYPES,
    MAX_RECORDS,
    PARTICIPATION_TYPE,
    READ,
    RECIPIENT_ROLES,
    RECORD_TYPES,
    RESOURCE_TYPES,
    ROLE_CODE,
    SCOPE_SYSTEM,
    SENSITIVE_LABELS,
    URI,
    ScopeOfType,
    types_of_scope,
)

ResolveParty = Callable[[Mapping[str, Any]], str | None]
ResolveRecord = Callable[[Mapping[str, Any]], str | None]
_SHOWN_MISSING_TYPES = 5


@dataclass
class Permit:
    """One permit rule with the conditions of its ancestors: element -> (path, value)."""

    path: str
    conditions: dict[str, tuple[str, Any]]
    exceptions: list[tuple[str, Mapping[str, Any]]]


@dataclass
class ConditionReader:
    """Collects every reason a Consent is refused (``problems``) while reading its parts."""

    resolve_actor: ResolveParty
    resolve_record: ResolveRecord
    scope_of_type: ScopeOfType
    widen_to_scopes: bool
    problems: list[str] = field(default_factory=list)

    def refuse(self, reason: str) -> None:
        self.problems.append(reason)

    def _did(self, reference: Any, what: str) -> str | None:
        if not isinstance(reference, Mapping):
            self.refuse(f"no {what}")
            return None
        did = self.resolve_actor(reference)
        if did is None:
            self.refuse(
                f"{what} {describe_reference(reference)} names no did (an identifier with "
                f"system {URI} and a did value; pass resolve_actor to resolve local references)"
            )
        return did

    # the grant's fields

    def _grantee(self, actors: list[Mapping[str, Any]]) -> tuple[str | None, str]:
        grantees: list[tuple[Mapping[str, Any], str]] = []
        for actor in actors:
            kind = self._actor_kind(actor)
            if kind is not None:
                grantees.append((actor["reference"], kind))
        if len(grantees) != 1:
            named = ", ".join(describe_reference(reference) for reference, _ in grantees)
            self.refuse(
                f"{len(grantees)} grantees{f' ({named})' if named else ''}: a grant names "
                "exactly one actor with a recipient role (v3-ParticipationType PRCP or IRCP) or "
                "a power of attorney (v3-RoleCode HPOWATT, POWATT or DPOWATT)"
            )
            return None, ""
        reference, kind = grantees[0]
        did = self._did(reference, "actor")
        resource_type = reference_type(reference)
        allowed = GRANTEE_TYPES[DELEGATE if kind == DELEGATE else READ]
        if resource_type is not None and resource_type not in allowed:
            self.refuse(
                f"actor {describe_reference(reference)} is a {resource_type}: "
                + (
                    "a delegate is a person, a practitioner or an organisation"
                    if kind == DELEGATE
                    else "read and write grants go to an organisation or a practitioner"
                )
            )
        return did, kind

    def _actor_kind(self, actor: Mapping[str, Any]) -> str | None:
        """``recipient`` or ``delegate`` for a grantee role; refuses restricting roles."""
        roles = concept_codes(actor.get("role"))
        who = describe_reference(actor.get("reference") or {})
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
            self.refuse(f"actor {who} with role {show_codes(roles)}: not a grantee role")
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
        codes = {code for system, code in concept_codes(concept) if system == CONSENT_ACTION}
        if not codes:
            self.refuse(f"action {show_codes(concept_codes(concept))}: not a consentaction code")
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
                    f"data {describe_reference(reference)} with meaning {meaning}: it covers "
                    "records linked to or written by that resource, which the ledger cannot "
                    "enumerate (only meaning instance maps)"
                )
                continue
            name = self.resolve_record(reference)
            if name is None:
                self.refuse(
                    f"data {describe_reference(reference)} does not resolve to a record name"
                )
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
        start = max(0, math.ceil(date_time_bounds(start_text)[0])) if start_text else 0
        end = math.floor(date_time_bounds(end_text)[1])
        if end <= start:
            self.refuse(f"period {start_text}..{end_text} ends before it starts or before 1970")
        return {"start": start, "end": end}

    def _scopes(self, permits: list[Permit]) -> list[str]:
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
            more = (
                f" and {len(missing) - _SHOWN_MISSING_TYPES} more"
                if len(missing) > _SHOWN_MISSING_TYPES
                else ""
            )
            self.refuse(
                f"{path}.class names part of scope {scope} (not {shown}{more}): a grant covers "
                "whole scopes, so the grant would allow more than the Consent"
            )
            return False
        return True

    def _exceptions(self, permit: Permit, scopes: list[str]) -> None:
        """Nested rules of a permit: only a deny of sensitive labels under a broad permit
        maps (the ledger keeps sensitive records out of broad scopes anyway)."""
        for path, rule in permit.exceptions:
            labels = coding_codes(rule.get("securityLabel") or [])
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
