"""What the service layer (resources.py) and its batch writer (write_batch.py) share: a
version as served (`Stored`), a write asked for (`Write`) and checked (`Plan`), and the
small rules every path applies (types, ids, stamps, no-op updates, tombstones).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from careledger.gateway.context import Gateway
from careledger.gateway.directory import Entry
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError, mark_entry
from careledger.gateway.resource_types import (
    DIRECTORY_TYPES,
    NOT_STORED,
    RESOURCE_TYPES,
    VIEW_TYPES,
)
from careledger.wallet.fhir import InvalidResource
from careledger.wallet.records import RecordRef, RecordsError

ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR's id datatype
CREATE, UPDATE, DELETE = "create", "update", "delete"
MAX_TYPE_HISTORY = 1000
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Stored:
    """One version as served."""

    resource: dict[str, Any]  # id, meta.versionId, meta.lastUpdated set
    version: int
    last_updated: str  # FHIR instant
    deleted: bool = False
    created: bool = False  # this call created the resource
    claim_code: str | None = field(default=None, repr=False)  # a Patient the gateway enrolled


@dataclass(frozen=True)
class Write:
    """One write of a batch. `action`: create (a new resource; `resource_id` the id the
    client named, else a new uuid4), update (of `resource_id`; creates it if absent) or
    delete (`resource` None). `if_match`: the version an update or delete expects."""

    action: str
    resource_type: str
    resource: Mapping[str, Any] | None = None
    resource_id: str | None = None
    if_match: int | None = None


def instant_now() -> str:
    """Now as a FHIR instant: UTC, milliseconds, Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_type(resource_type: str, writing: bool = False) -> None:
    """404 for a type the gateway does not serve, 405 for a write to a read-only view."""
    if resource_type not in RESOURCE_TYPES or resource_type in NOT_STORED:
        raise FhirError(404, f"unknown resource type {resource_type!r}", code="not-supported")
    if writing and resource_type in VIEW_TYPES:
        raise FhirError(
            405,
            f"{resource_type} is a read-only view of what the chain holds",
            headers={"allow": "GET"},
        )


def check_id(resource_id: str) -> None:
    if not ID.fullmatch(resource_id):
        raise FhirError(400, f"{resource_id!r} is not a FHIR id ([A-Za-z0-9-.], 1 to 64)")


def stamped(
    resource: Mapping[str, Any], resource_id: str, version: int, when: str
) -> dict[str, Any]:
    """The resource as stored: its id, meta.versionId and meta.lastUpdated set."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = when
    return {**resource, "id": resource_id, "meta": meta}


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal but for meta.versionId and meta.lastUpdated (a no-op update)."""
    return _without_version(a) == _without_version(b)


def _without_version(resource: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items()}
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    rest = {k: v for k, v in resource.items() if k != "meta"}
    return {**rest, "meta": meta} if meta else rest


def tombstone(resource_type: str, resource_id: str, version: int, when: str) -> dict[str, Any]:
    """What history shows of a deletion."""
    return {
        "resourceType": resource_type,
        "id": resource_id,
        "meta": {"versionId": str(version), "lastUpdated": when},
    }


@dataclass
class Plan:
    """A checked write, ready to go: what to store, where, as which version."""

    write: Write
    resource_id: str
    version: int  # the version this write makes (for a no-op: the current one)
    resource: dict[str, Any] | None  # stamped; None for a delete
    created: bool = False
    patient: str | None = None  # the patient's did, if enrolled already
    pending: str | None = None  # else: the id of the Patient this batch creates for it
    record: str | None = None  # the record's on-chain name, once known
    unchanged: Stored | None = None  # a no-op: served as is

    @property
    def directory(self) -> bool:
        return self.write.resource_type in DIRECTORY_TYPES


def about_write(index: int, check: Callable[[_T], _R], item: _T) -> _R:
    """`check(item)`; a refusal notes the write it is about (`outcome.mark_entry`), so that
    a bundle's OperationOutcome names its entry."""
    try:
        return check(item)
    except (FhirError, InvalidResource, RecordsError) as exc:
        mark_entry(exc, index)
        raise


@dataclass(frozen=True)
class Current:
    version: int
    deleted: bool
    last_updated: str
    located: Located | None  # a record's
    entry: Entry | None  # a directory resource's


def refuse_erased(gateway: Gateway, resource_type: str, resource_id: str) -> None:
    """410 for a resource the follower forgot because its patient erased it."""
    if gateway.index.was_erased(resource_type, resource_id):
        raise FhirError(410, f"{resource_type}/{resource_id} was erased by its patient")


def ref_of(located: Located) -> RecordRef:
    return RecordRef(located.patient, located.resource_type, located.id, located.record)


def from_record(resource: dict[str, Any], located: Located, version: int | None = None) -> Stored:
    meta = resource.get("meta") or {}
    number = version or int(meta.get("versionId") or located.version)
    when = str(meta.get("lastUpdated") or located.last_updated)
    if "lastUpdated" not in meta:  # written by another writer than a gateway
        resource = {**resource, "meta": {**meta, "lastUpdated": when}}
    return Stored(resource, number, when)


def served(entry: Entry) -> Stored:
    if entry.resource is None:
        return Stored(
            tombstone(entry.resource_type, entry.id, entry.version, entry.last_updated),
            entry.version,
            entry.last_updated,
            deleted=True,
        )
    return Stored(entry.resource, entry.version, entry.last_updated)


def live(stored: Stored) -> Stored:
    if stored.deleted:
        kind = stored.resource["resourceType"]
        raise FhirError(410, f"{kind}/{stored.resource['id']} was deleted")
    return stored
