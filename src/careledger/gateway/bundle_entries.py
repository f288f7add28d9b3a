"""A batch or transaction Bundle's entries as the gateway parses them, their processing order,
and the answers: each entry's response, a refusal naming its entry, the response Bundle."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from careledger.gateway.outcome import (
    FhirError,
    entry_of,
    from_invalid_resource,
    from_records_error,
)
from careledger.wallet.fhir import InvalidResource
from careledger.wallet.refs import RecordsError

METHODS = ("DELETE", "POST", "PUT", "GET")  # processing order


@dataclass
class Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None = None  # the target: named, assigned or matched
    version: int | None = None  # a GET of one version
    condition: dict[str, str] | None = None  # a conditional PUT/DELETE/GET's query
    if_none_exist: dict[str, str] | None = None
    if_match: int | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    existing: bool = False  # ifNoneExist matched: nothing to write
    derived: bool = False  # a client's Provenance: the chain's own stands for it
    skip: bool = False  # a conditional DELETE that matched nothing
    answer: dict[str, Any] | None = None  # its response entry, once known

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


def is_write(entry: Entry) -> bool:
    return entry.method in ("POST", "PUT", "DELETE") and not (
        entry.existing or entry.skip or entry.derived
    )


def in_order(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (METHODS.index(e.method), e.index))


def matches_criteria(
    resource: Mapping[str, Any], resource_id: str, criteria: Mapping[str, str]
) -> bool:
    """Whether a resource of this Bundle meets `_id` and `identifier` criteria (token
    search: `system|value`, `|value` for no system, `value` for any system)."""
    if not set(criteria) <= {"_id", "identifier"}:
        return False
    if "_id" in criteria and criteria["_id"] != resource_id:
        return False
    if "identifier" in criteria:
        token = criteria["identifier"]
        system, _, value = token.partition("|") if "|" in token else (None, "", token)
        identifiers = resource.get("identifier") or []
        return any(
            isinstance(i, dict)
            and i.get("value") == value
            and (system is None or (i.get("system") or "") == system)
            for i in identifiers
        )
    return True


def fatal(index: int, step: Callable[..., Any], *args: Any) -> Any:
    """`step(*args)`; a refusal fails the transaction, naming entry `index`."""
    try:
        return step(*args)
    except (FhirError, InvalidResource, RecordsError) as exc:
        error = as_fhir_error(exc)
        error.entry = index
        raise named(error, None) from None


def as_fhir_error(exc: Exception) -> FhirError:
    """A refusal as a FhirError, still naming the write it is about."""
    if isinstance(exc, FhirError):
        return exc
    if isinstance(exc, InvalidResource):
        error = from_invalid_resource(exc)
    else:
        assert isinstance(exc, RecordsError)
        error = from_records_error(exc)
    error.entry = entry_of(exc)
    return error


def named(error: FhirError, entry: Entry | None) -> FhirError:
    """The transaction's refusal: the entry's own status, its index in the diagnostics and
    in each issue's expression."""
    index = entry.index if entry is not None else error.entry
    if index is None:
        return error
    where = f"Bundle.entry[{index}]"
    issues = [(in_entry(where, loc), msg) for loc, msg in error.issues]
    refused = FhirError(
        error.status,
        f"transaction failed at entry {index}: {error.diagnostics}; nothing was written",
        code=error.code,
        issues=issues or [(where, error.diagnostics)],
        headers=error.headers,
    )
    refused.entry = index
    return refused


def in_entry(where: str, location: str) -> str:
    """A resource's location (`Observation.subject`) as the entry's (`Bundle.entry[3]
    .resource.subject`)."""
    _, dot, rest = location.partition(".")
    return f"{where}.resource.{rest}" if dot else f"{where}.resource"


def refusal(error: FhirError) -> dict[str, Any]:
    return {"response": {"status": status_text(error.status), "outcome": error.outcome()}}


def status_text(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def response_bundle(kind: str, entries: list[Entry]) -> dict[str, Any]:
    ordered = sorted(entries, key=lambda e: e.index)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": kind,
        "entry": [e.answer for e in ordered],
    }
