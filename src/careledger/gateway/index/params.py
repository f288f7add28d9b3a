"""The search parameter values of a FHIR resource, as the index stores them.

Each resource type has a table of the search parameters the gateway supports
(`PARAMETERS[type][name] -> Param`), taken from the FHIR R4 definitions for the types Synthea
writes and the common clinical ones. A parameter is one of four kinds:

    token      (system, code) pairs: CodeableConcept codings, Coding, Identifier
               (system|value), code strings (system "")
    string     normalised text: accents stripped, case folded (FHIR string search matches
               case- and accent-insensitively, by prefix)
    date       a [low, high] range in epoch milliseconds: "2020" is the whole year, a Period
               its start to its end (an open end is unbounded)
    reference  the Patient the record belongs to: answered from the index's patient column
               (every record of a patient is filed under the patient's did), not from here

Every type also has `_id`, `_lastUpdated` (from the index row), `identifier` and, for a
patient's records other than Patient itself, `patient` and `subject`. `extract` walks a
resource along each parameter's element paths; a path step that is a list fans out, and a
choice element `x[x]` is tried with each of its date-like types.

References of the resource (`Type/id`, relative) are kept as tokens of the hidden parameter
`_ref` (system = type, code = id): the follower names a patient's records it has not opened
yet from them (index/follower.py).
"""

from __future__ import annotations

import contextlib
import functools
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

TOKEN, STRING, DATE, REFERENCE = "token", "string", "date", "reference"
REFERENCES = "_ref"  # hidden: every relative reference of the resource
MIN_INSTANT = -(2**62)  # an open start of a Period
MAX_INSTANT = 2**62  # an open end


@dataclass(frozen=True)
class Param:
    kind: str
    paths: tuple[str, ...] = ()


def _p(kind: str, *paths: str) -> Param:
    return Param(kind, paths)


_DATE_CHOICES = ("DateTime", "Period", "Instant", "Date")

# Parameters of every type (patient and subject are added for a patient's records).
COMMON: dict[str, Param] = {
    "_id": _p(TOKEN),  # from the index row
    "_lastUpdated": _p(DATE),  # from the index row
    "identifier": _p(TOKEN, "identifier"),
}
STATUS = _p(TOKEN, "status")
PATIENT_PARAMS: dict[str, Param] = {"patient": _p(REFERENCE), "subject": _p(REFERENCE)}

PARAMETERS_OF_TYPE: dict[str, dict[str, Param]] = {
    "Patient": {
        "name": _p(STRING, "name"),
        "family": _p(STRING, "name.family"),
        "given": _p(STRING, "name.given"),
        "birthdate": _p(DATE, "birthDate"),
        "gender": _p(TOKEN, "gender"),
        "active": _p(TOKEN, "active"),
    },
    "Observation": {
        "code": _p(TOKEN, "code"),
        "component-code": _p(TOKEN, "component.code"),
        "combo-code": _p(TOKEN, "code", "component.code"),
        "category": _p(TOKEN, "category"),
        "date": _p(DATE, "effective[x]"),
        "status": STATUS,
    },
    "Condition": {
        "code": _p(TOKEN, "code"),
        "category": _p(TOKEN, "category"),
        "clinical-status": _p(TOKEN, "clinicalStatus"),
        "verification-status": _p(TOKEN, "verificationStatus"),
        "onset-date": _p(DATE, "onset[x]"),
        "recorded-date": _p(DATE, "recordedDate"),
        # Not an R4 parameter of Condition: the gateway's, onset or recorded date.
        "date": _p(DATE, "onset[x]", "recordedDate"),
    },
    "Encounter": {
        "date": _p(DATE, "period"),
        "type": _p(TOKEN, "type"),
        "class": _p(TOKEN, "class"),
        "status": STATUS,
    },
    "Procedure": {
        "code": _p(TOKEN, "code"),
        "category": _p(TOKEN, "category"),
        "date": _p(DATE, "performed[x]"),
        "status": STATUS,
    },
    "Immunization": {
        "vaccine-code": _p(TOKEN, "vaccineCode"),
        "date": _p(DATE, "occurrence[x]"),
        "status": STATUS,
    },
    "MedicationRequest": {
        "code": _p(TOKEN, "medicationCodeableConcept"),
        "category": _p(TOKEN, "category"),
        "intent": _p(TOKEN, "intent"),
        "authoredon": _p(DATE, "authoredOn"),
        "date": _p(DATE, "authoredOn"),
        "status": STATUS,
    },
    "MedicationAdministration": {
        "code": _p(TOKEN, "medicationCodeableConcept"),
        "effective-time": _p(DATE, "effective[x]"),
        "status": STATUS,
    },
    "MedicationStatement": {
        "code": _p(TOKEN, "medicationCodeableConcept"),
        "category": _p(TOKEN, "category"),
        "effective": _p(DATE, "effective[x]"),
        "status": STATUS,
    },
    "DiagnosticReport": {
        "code": _p(TOKEN, "code"),
        "category": _p(TOKEN, "category"),
        "date": _p(DATE, "effective[x]"),
        "status": STATUS,
    },
    "AllergyIntolerance": {
        "code": _p(TOKEN, "code"),
        "category": _p(TOKEN, "category"),
        "type": _p(TOKEN, "type"),
        "criticality": _p(TOKEN, "criticality"),
        "clinical-status": _p(TOKEN, "clinicalStatus"),
        "date": _p(DATE, "recordedDate"),
        "onset": _p(DATE, "reaction.onset"),
    },
    "CarePlan": {
        "category": _p(TOKEN, "category"),
        "intent": _p(TOKEN, "intent"),
        "date": _p(DATE, "period"),
        "status": STATUS,
    },
    "CareTeam": {"category": _p(TOKEN, "category"), "date": _p(DATE, "period"), "status": STATUS},
    "Goal": {
        "category": _p(TOKEN, "category"),
        "lifecycle-status": _p(TOKEN, "lifecycleStatus"),
        "start-date": _p(DATE, "start[x]"),
        "target-date": _p(DATE, "target.due[x]"),
    },
    "Claim": {"created": _p(DATE, "created"), "use": _p(TOKEN, "use"), "status": STATUS},
    "ExplanationOfBenefit": {"created": _p(DATE, "created"), "status": STATUS},
    "ImagingStudy": {
        "started": _p(DATE, "started"),
        "modality": _p(TOKEN, "series.modality"),
        "status": STATUS,
    },
    "DocumentReference": {
        "type": _p(TOKEN, "type"),
        "category": _p(TOKEN, "category"),
        "date": _p(DATE, "date"),
        "period": _p(DATE, "context.period"),
        "status": STATUS,
    },
    "ServiceRequest": {
        "code": _p(TOKEN, "code"),
        "category": _p(TOKEN, "category"),
        "authored": _p(DATE, "authoredOn"),
        "status": STATUS,
    },
    "Device": {"type": _p(TOKEN, "type"), "status": STATUS},
    "FamilyMemberHistory": {
        "code": _p(TOKEN, "condition.code"),
        "date": _p(DATE, "date"),
        "status": STATUS,
    },
}

# The directory's types (no patient's data; searched in the gateway's directory table).
DIRECTORY_PARAMETERS: dict[str, dict[str, Param]] = {
    "Organization": {"name": _p(STRING, "name", "alias"), "type": _p(TOKEN, "type")},
    "Practitioner": {
        "name": _p(STRING, "name"),
        "family": _p(STRING, "name.family"),
        "given": _p(STRING, "name.given"),
        "gender": _p(TOKEN, "gender"),
    },
    "PractitionerRole": {"role": _p(TOKEN, "code"), "specialty": _p(TOKEN, "specialty")},
    "Location": {
        "name": _p(STRING, "name", "alias"),
        "type": _p(TOKEN, "type"),
        "status": STATUS,
    },
    "HealthcareService": {"name": _p(STRING, "name"), "service-type": _p(TOKEN, "type")},
    "Endpoint": {"name": _p(STRING, "name"), "connection-type": _p(TOKEN, "connectionType")},
    "Medication": {"code": _p(TOKEN, "code")},
}

# The parameters a sort may name, and the one the index sorts by for each.
SORTABLE = frozenset({"date", "_lastUpdated"})


@functools.lru_cache(maxsize=1024)
def parameters_of(resource_type: str) -> dict[str, Param]:
    """Every search parameter the gateway supports on `resource_type`."""
    if resource_type in DIRECTORY_PARAMETERS:
        return {**COMMON, **DIRECTORY_PARAMETERS[resource_type]}
    found = {**COMMON, **PARAMETERS_OF_TYPE.get(resource_type, {"status": STATUS})}
    if resource_type != "Patient":
        found.update(PATIENT_PARAMS)
    return found


# --- values ------------------------------------------------------------------------------


@dataclass
class Values:
    """A resource's search values, by parameter name."""

    tokens: set[tuple[str, str, str]] = field(default_factory=set)  # (name, system, code)
    strings: set[tuple[str, str]] = field(default_factory=set)  # (name, normalised value)
    dates: set[tuple[str, int, int]] = field(default_factory=set)  # (name, low, high)


def extract(resource: Mapping[str, Any], last_updated: str = "") -> Values:
    """The search parameter values of `resource` (and `_lastUpdated` from the index row)."""
    resource_type = str(resource.get("resourceType", ""))
    values = Values()
    for name, param in parameters_of(resource_type).items():
        for path in param.paths:
            for value in _walk(resource, path):
                _add(values, name, param.kind, value)
    if last_updated:
        with contextlib.suppress(ValueError):
            values.dates.add(("_lastUpdated", *date_range(last_updated)))
    for target in _references(resource):
        kind, _, target_id = target.partition("/")
        values.tokens.add((REFERENCES, kind, target_id))
    return values


def _add(values: Values, name: str, kind: str, value: Any) -> None:
    if kind == TOKEN:
        values.tokens.update((name, system, code) for system, code in tokens_of(value))
    elif kind == STRING:
        values.strings.update((name, text) for text in strings_of(value))
    elif kind == DATE:
        found = dates_of(value)
        if found is not None:
            values.dates.add((name, *found))


def _walk(value: Any, path: str) -> Iterator[Any]:
    """The values at a dotted element path (lists fan out; `x[x]` tries each date type)."""
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, path)
        return
    if not path:
        yield value
        return
    if not isinstance(value, Mapping):
        return
    step, _, rest = path.partition(".")
    if step.endswith("[x]"):
        stem = step[:-3]
        for suffix in _DATE_CHOICES:
            if stem + suffix in value:
                yield from _walk(value[stem + suffix], rest)
        return
    if step in value:
        yield from _walk(value[step], rest)


def tokens_of(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, Mapping):
        if isinstance(value.get("coding"), list):  # CodeableConcept
            for coding in value["coding"]:
                yield from tokens_of(coding)
        elif isinstance(value.get("code"), str):  # Coding
            yield str(value.get("system", "")), value["code"]
        elif isinstance(value.get("value"), str):  # Identifier
            yield str(value.get("system", "")), value["value"]


def strings_of(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield normalise(value)
    elif isinstance(value, Mapping):  # HumanName (name), Address: every part
        for part in ("text", "family", "given", "prefix", "suffix"):
            found = value.get(part)
            for text in found if isinstance(found, list) else [found]:
                if isinstance(text, str):
                    yield normalise(text)


# Latin letters with a stroke or ligatures, which Unicode does not decompose into a base
# letter and a mark: searched as their base letters, as people type them.
_UNDECOMPOSED = str.maketrans(
    {"ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l", "ħ": "h", "\u0131": "i"}
    | {"æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th"}
)


def normalise(text: str) -> str:
    """Accents stripped, case folded: what FHIR string search compares ("Søren" is found
    by "soren", "José" by "jose", "Straße" by "strasse")."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSED))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def dates_of(value: Any) -> tuple[int, int] | None:
    try:
        if isinstance(value, str):
            return date_range(value)
        if isinstance(value, Mapping) and ("start" in value or "end" in value):
            low = date_range(value["start"])[0] if "start" in value else MIN_INSTANT
            high = date_range(value["end"])[1] if "end" in value else MAX_INSTANT
            return low, high
    except (ValueError, TypeError):
        return None
    return None


_DATE = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.(?P<f>[0-9]{1,9}))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)


def date_range(text: str) -> tuple[int, int]:
    """The [low, high] epoch milliseconds a FHIR date, dateTime or instant covers: its
    precision decides the width ("2020-03" is all of March). Without a zone: UTC.
    ValueError if it is not one."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a FHIR date: {text!r}")
    part = match.groupdict()
    zone = UTC
    if part["tz"] and part["tz"] != "Z":
        sign = 1 if part["tz"][0] == "+" else -1
        hours, minutes = int(part["tz"][1:3]), int(part["tz"][4:6])
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    year, month, day = int(part["y"]), int(part["m"] or 1), int(part["d"] or 1)
    hour, minute = int(part["H"] or 0), int(part["M"] or 0)
    second = int(part["S"] or 0)
    fraction = part["f"] or ""
    millis = int((fraction + "000")[:3]) if fraction else 0
    start = datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=zone)
    if part["m"] is None:
        end = start.replace(year=year + 1)
    elif part["d"] is None:
        end = start.replace(year=year + month // 12, month=month % 12 + 1)
    elif part["H"] is None:
        end = start + timedelta(days=1)
    elif part["S"] is None:
        end = start + timedelta(minutes=1)
    elif not fraction:
        end = start + timedelta(seconds=1)
    else:
        end = start + timedelta(milliseconds=1)
    low = int(start.timestamp() * 1000)
    return low, int(end.timestamp() * 1000) - 1


# A relative reference as orjson writes it (no spaces; ids are [A-Za-z0-9-.]{1,64}).
_REFERENCE_JSON = re.compile(rb'"reference":"([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})"')


def _references(resource: Mapping[str, Any]) -> Iterator[str]:
    """Every relative `Type/id` reference in a resource (urn:uuid and absolute ones skipped;
    the gateway rewrites a bundle's references to relative ones), found in its JSON text:
    a regular expression over orjson's bytes is ten times faster than walking the tree."""
    for match in _REFERENCE_JSON.finditer(orjson.dumps(resource)):
        yield match.group(1).decode()
