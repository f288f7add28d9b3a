"""Reading the FHIR datatypes of a Consent: codings, References, dateTimes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from careledger.wallet.fhir_consent.grant import ConsentMappingError
from careledger.wallet.fhir_consent.vocabulary import LAST_FHIR_SECOND, RECORD_NAME_SYSTEM, URI


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


def concept_codes(concept: Any) -> set[tuple[str, str]]:
    """(system, code) of every coding of a CodeableConcept."""
    if not isinstance(concept, Mapping):
        return set()
    return coding_codes(concept.get("coding") or [])


def coding_codes(codings: Iterable[Any]) -> set[tuple[str, str]]:
    return {(str(c.get("system")), str(c.get("code"))) for c in codings if isinstance(c, Mapping)}


def show_codes(codes: set[tuple[str, str]]) -> str:
    return ", ".join(f"{system}#{code}" for system, code in sorted(codes)) or "(none)"


def describe_reference(reference: Mapping[str, Any]) -> str:
    if isinstance(reference.get("reference"), str):
        return str(reference["reference"])
    identifier = reference.get("identifier")
    if isinstance(identifier, Mapping):
        return f"{identifier.get('system')}|{identifier.get('value')}"
    return str(reference.get("display") or "(empty reference)")


def reference_type(reference: Mapping[str, Any]) -> str | None:
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


def date_time_bounds(value: str) -> tuple[Fraction, Fraction]:
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
        return Fraction(LAST_FHIR_SECOND + 1)
    return Fraction(int(after.timestamp()))
