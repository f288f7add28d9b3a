"""`_summary` and `_elements`: a client asks for less of each resource a search returns (FHIR
R4 search result parameters, which HAPI FHIR serves and clients such as fhirpy send).

    _summary=true    the elements FHIR marks as summary elements (the models' own flags)
    _summary=text    text, id, meta and the resource's required top-level elements
    _summary=data    everything but the narrative text
    _summary=false   everything (the default); `count` is the search's, not this module's
    _elements=a,b    id, meta and the named top-level elements

A resource returned with less than it has carries the SUBSETTED tag in `meta.tag`, as the
specification requires, so nobody mistakes it for the whole resource (or writes it back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from careledger.gateway.outcome import FhirError
from careledger.wallet.fhir import model_class

SUMMARIES = frozenset({"true", "text", "data", "false"})
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
MAX_ELEMENTS = 50
_ELEMENT = re.compile(r"[a-z][A-Za-z0-9]{0,63}")
_ALWAYS = ("resourceType", "id", "meta")


@dataclass(frozen=True)
class Shape:
    summary: str = "false"
    elements: frozenset[str] = frozenset()

    @property
    def whole(self) -> bool:
        return self.summary == "false" and not self.elements


def parse_elements(value: str) -> frozenset[str]:
    names = [name.strip() for name in value.split(",")]
    if not 0 < len(names) <= MAX_ELEMENTS or not all(_ELEMENT.fullmatch(n) for n in names):
        raise FhirError(400, f"_elements: 1 to {MAX_ELEMENTS} top-level element names")
    return frozenset(names)


def parse_summary(value: str) -> str:
    if value not in SUMMARIES:
        raise FhirError(400, f"_summary={value!r}: one of count, true, text, data, false")
    return value


def shaped(resource: dict[str, Any], shape: Shape) -> dict[str, Any]:
    """The resource as the shape asks (the resource itself when whole)."""
    if shape.whole:
        return resource
    kind = str(resource.get("resourceType"))
    if shape.elements:
        kept = {k: v for k, v in resource.items() if k in shape.elements or k in _ALWAYS}
    elif shape.summary == "true":
        summary = _summary_elements(kind)
        kept = {k: v for k, v in resource.items() if k in summary or k in _ALWAYS}
    elif shape.summary == "text":
        required = _required_elements(kind)
        kept = {k: v for k, v in resource.items() if k in required or k in (*_ALWAYS, "text")}
    else:  # data
        kept = {k: v for k, v in resource.items() if k != "text"}
    if kept.keys() == resource.keys():
        return resource
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    return {**kept, "meta": meta}


@lru_cache(maxsize=256)
def _summary_elements(resource_type: str) -> frozenset[str]:
    return frozenset(
        str(field.alias or name)
        for name, field in model_class(resource_type).model_fields.items()
        if (field.json_schema_extra or {}).get("summary_element_property")
    )


@lru_cache(maxsize=256)
def _required_elements(resource_type: str) -> frozenset[str]:
    return frozenset(
        str(field.alias or name)
        for name, field in model_class(resource_type).model_fields.items()
        if (field.json_schema_extra or {}).get("element_required")
    )
