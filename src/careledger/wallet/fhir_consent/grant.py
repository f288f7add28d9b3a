"""What both directions map: a grant (``GrantSpec``), and the error when one side says what the
other cannot (``ConsentMappingError``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from careledger.chain.modules.consent import ACTIONS, PURPOSES
from careledger.wallet.fhir_consent.vocabulary import GRANT_SCOPES, MAX_RECORDS, READ


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
        problems.append(
            f"scopes must be 1 to {len(GRANT_SCOPES)} of {', '.join(GRANT_SCOPES)} (got {unknown})"
        )
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
