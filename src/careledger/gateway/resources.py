"""The service layer of the FHIR interactions: create, read, vread, update, delete, history.

Routes (interactions.py) and bundles (bundles.py) call `Resources`; it decides nothing about
HTTP. Two kinds of storage behind one interface:
- a patient's record (every type but the directory's and the views'): encrypted to the
  patient's keys and anchored, written and read through the records SDK acting as the
  caller (`Gateway.records_for`), so that the node decides consent and audits each read;
  located through the gateway's index;
- the organisation's directory (directory.py): gateway-local, versioned, never on chain.

Every write of a batch (`write_many`) is checked first, all of them (type, scopes, id,
FHIR validity, whose record it is, If-Match), before anything is written; then the records
of every patient go through one write pipeline (wallet/writing.py), patients created in the
batch enrolled just before their first record. The gateway stamps `meta.lastUpdated` (UTC,
milliseconds); the records SDK stamps `meta.versionId`. An update whose content equals the
current version's (ignoring meta.versionId and meta.lastUpdated) writes no new version.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from careledger.crypto.scopekeys import ScopePublic
from careledger.gateway.context import Gateway
from careledger.gateway.directory import Directory, DirectoryWrite, Entry
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError, mark_entry
from careledger.gateway.patients import Enrolled, enrol_patient, find_patient, patient_id_of
from careledger.gateway.principal import Principal
from careledger.gateway.resource_types import (
    DIRECTORY_TYPES,
    NOT_STORED,
    RESOURCE_TYPES,
    VIEW_TYPES,
)
from careledger.gateway.search import find
from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.records import RecordRef, RecordsClient, RecordsError, Written
from careledger.wallet.sealing import Job

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
class _Plan:
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


class Resources:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.directory = Directory(gateway.db)

    # --- reads ---------------------------------------------------------------------------

    def exists(self, resource_type: str, resource_id: str) -> bool:
        """Whether the gateway knows a resource of the type with this id (even deleted)."""
        if resource_type in DIRECTORY_TYPES:
            return self.directory.latest(resource_type, resource_id) is not None
        return self.gateway.index.locate(resource_type, resource_id) is not None

    def read(self, principal: Principal, resource_type: str, resource_id: str) -> Stored:
        """The current version: 404 unknown, 410 deleted or erased, 403 no consent."""
        self._check_read(principal, resource_type, resource_id)
        if resource_type in DIRECTORY_TYPES:
            return _live(_served(self._directory_latest(resource_type, resource_id)))
        located = self._locate(resource_type, resource_id)
        if located.deleted:
            raise FhirError(410, f"{resource_type}/{resource_id} was deleted")
        resource = self._client(principal).read(_ref(located))
        return _from_record(resource, located)

    def vread(
        self, principal: Principal, resource_type: str, resource_id: str, version: int
    ) -> Stored:
        """One version: 404 if there is no such version, 410 if it is a deletion."""
        self._check_read(principal, resource_type, resource_id)
        if resource_type in DIRECTORY_TYPES:
            self._directory_latest(resource_type, resource_id)
            entry = self.directory.version(resource_type, resource_id, version)
            if entry is None:
                raise FhirError(404, f"{resource_type}/{resource_id} has no version {version}")
            return _live(_served(entry))
        located = self._locate(resource_type, resource_id)
        resource = self._client(principal).read(_ref(located), version)
        return _from_record(resource, located)

    def history(self, principal: Principal, resource_type: str, resource_id: str) -> list[Stored]:
        """Every version, newest first (a deletion as a tombstone, deleted=True)."""
        self._check_read(principal, resource_type, resource_id)
        if resource_type in DIRECTORY_TYPES:
            self._directory_latest(resource_type, resource_id)
            return [_served(entry) for entry in self.directory.history(resource_type, resource_id)]
        located = self._locate(resource_type, resource_id)
        versions = self._client(principal).history(_ref(located))
        times = self._version_times(resource_type, resource_id)
        served = []
        for number, resource in enumerate(versions, start=1):
            when = times.get(number, located.last_updated)
            if resource is None:
                served.append(
                    Stored(tombstone(resource_type, resource_id, number, when), number, when, True)
                )
            else:
                served.append(_from_record(resource, located, number))
        return served[::-1]

    def type_history(
        self,
        principal: Principal,
        resource_type: str,
        since: str | None = None,
        count: int = 100,
    ) -> list[Stored]:
        """The newest versions of any resource of the type (since an instant), newest
        first; versions the caller may no longer read (no consent, erased) are left out."""
        principal.require(resource_type, "r")
        check_type(resource_type)
        count = max(0, min(count, MAX_TYPE_HISTORY))
        if resource_type in DIRECTORY_TYPES:
            entries = self.directory.type_history(resource_type, since, count)
            return [_served(entry) for entry in entries]
        client = self._client(principal)
        served = []
        for located, number, deleted, when in self._type_versions(resource_type, since, count):
            if deleted:
                served.append(
                    Stored(tombstone(resource_type, located.id, number, when), number, when, True)
                )
                continue
            try:
                resource = client.read(_ref(located), number)
            except RecordsError as exc:
                if exc.status in (403, 404, 410):
                    continue  # refused (and audited by the node), gone, or erased
                raise
            served.append(_from_record(resource, located, number))
        return served

    # --- writes --------------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        resource: Mapping[str, Any],
        *,
        resource_id: str | None = None,
    ) -> Stored:
        """A new resource (a new uuid4 id unless `resource_id` names one: 409 if taken)."""
        write = Write(CREATE, str(resource.get("resourceType")), resource, resource_id)
        return self.write_many(principal, [write])[0]

    def update(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        resource: Mapping[str, Any],
        if_match: int | None,
    ) -> Stored:
        """The next version (412 if `if_match` is not the current version); creates the
        resource with this id when absent; no new version when the content is unchanged."""
        write = Write(UPDATE, resource_type, resource, resource_id, if_match)
        return self.write_many(principal, [write])[0]

    def delete(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        if_match: int | None = None,
    ) -> Stored:
        """A tombstone version (history stays readable); deleting a deleted resource again
        changes nothing."""
        return self.write_many(
            principal, [Write(DELETE, resource_type, None, resource_id, if_match)]
        )[0]

    def matching(
        self,
        resource_type: str,
        criteria: Mapping[str, str],
        principal: Principal | None = None,
    ) -> list[str]:
        """Ids of the live resources of a type that match `criteria`, for If-None-Exist and
        conditional references. `_id`, and `identifier` (`system|value`, `|value`, `value`)
        of the directory, are matched here; with the caller's `principal`, any search the
        index serves (gateway/search.py `find`: only what the caller may read), else 400."""
        if principal is not None and (
            resource_type not in DIRECTORY_TYPES or set(criteria) - {"_id", "identifier"}
        ):
            found = find(self.gateway, principal, resource_type, list(criteria.items()))
            return sorted({located.id for located in found})
        unknown = set(criteria) - {"_id", "identifier"}
        if unknown or (resource_type not in DIRECTORY_TYPES and "identifier" in criteria):
            asked = ", ".join(sorted(unknown or {"identifier"}))
            raise FhirError(400, f"conditional match on {resource_type}'s {asked} needs a search")
        candidates: set[str] | None = None
        if "_id" in criteria:
            candidates = {criteria["_id"]} if self._live(resource_type, criteria["_id"]) else set()
        if "identifier" in criteria:
            found_ids = set(self._by_identifier(resource_type, criteria["identifier"]))
            candidates = found_ids if candidates is None else candidates & found_ids
        return sorted(candidates or ())

    def _live(self, resource_type: str, resource_id: str) -> bool:
        if resource_type in DIRECTORY_TYPES:
            entry = self.directory.latest(resource_type, resource_id)
            return entry is not None and not entry.deleted
        located = self.gateway.index.locate(resource_type, resource_id)
        return located is not None and not located.deleted

    def _by_identifier(self, resource_type: str, token: str) -> list[str]:
        system, bar, value = token.partition("|")
        if not bar:
            system, value = "", token
        wanted_system = system if bar else None
        return self.directory.by_identifier(resource_type, wanted_system, value)

    def find_patient(self, resource: Mapping[str, Any]) -> str:
        """The did of the patient a resource belongs to (422 names none or an unknown one;
        404 an unknown Patient)."""
        return find_patient(self.gateway, resource)

    def write_many(self, principal: Principal, writes: Sequence[Write]) -> list[Stored]:
        """Check every write, then write them all: the directory's in one transaction, the
        patients' records through one pipeline, then the deletions. One Stored per write."""
        batch = _Batch(self, principal, instant_now())
        plans = batch.plan(writes)
        batch.write_directory(plans)
        batch.write_records(plans)
        batch.delete_records(plans)
        return [batch.result(plan) for plan in plans]

    # --- helpers -------------------------------------------------------------------------

    def _client(self, principal: Principal) -> RecordsClient:
        return self.gateway.records_for(principal)

    def _check_read(self, principal: Principal, resource_type: str, resource_id: str) -> None:
        principal.require(resource_type, "r")
        check_type(resource_type)
        check_id(resource_id)

    def _locate(self, resource_type: str, resource_id: str) -> Located:
        located = self.gateway.index.locate(resource_type, resource_id)
        if located is None:
            raise FhirError(404, f"{resource_type}/{resource_id} is not known here")
        return located

    def _directory_latest(self, resource_type: str, resource_id: str) -> Entry:
        entry = self.directory.latest(resource_type, resource_id)
        if entry is None:
            raise FhirError(404, f"{resource_type}/{resource_id} is not known here")
        return entry

    def _version_times(self, resource_type: str, resource_id: str) -> dict[int, str]:
        with self.gateway.db.read() as sql:
            rows = sql.execute(
                "SELECT version, last_updated FROM versions WHERE resource_type = ? AND id = ?",
                (resource_type, resource_id),
            ).fetchall()
        return {int(row[0]): str(row[1]) for row in rows}

    def _type_versions(
        self, resource_type: str, since: str | None, count: int
    ) -> list[tuple[Located, int, bool, str]]:
        with self.gateway.db.read() as sql:
            rows = sql.execute(
                "SELECT r.resource_type, r.id, r.patient, r.record, r.version, r.last_updated, "
                "r.deleted, v.version, v.deleted, v.last_updated FROM versions v JOIN resources r "
                "ON r.resource_type = v.resource_type AND r.id = v.id "
                "WHERE v.resource_type = ? AND v.last_updated >= ? "
                "ORDER BY v.last_updated DESC, v.id, v.version DESC LIMIT ?",
                (resource_type, since or "", count),
            ).fetchall()
        return [(Located.of(row[:7]), int(row[7]), bool(row[8]), str(row[9])) for row in rows]


class _Batch:
    """One write_many: its checks, then its writes, all stamped with the same instant."""

    def __init__(self, resources: Resources, principal: Principal, when: str) -> None:
        self.resources = resources
        self.gateway = resources.gateway
        self.principal = principal
        self.when = when
        self.client = resources._client(principal)
        self.scope_keys: dict[str, dict[str, ScopePublic]] = {}
        self.new_patients: dict[str, _Plan] = {}  # Patient id -> its create in this batch
        self.enrolled: dict[str, Enrolled] = {}  # Patient id -> enrolment made here
        self.written: dict[int, Written] = {}  # id(plan) -> what the chain took

    # --- checks --------------------------------------------------------------------------

    def plan(self, writes: Sequence[Write]) -> list[_Plan]:
        plans = [about_write(index, self._check, write) for index, write in enumerate(writes)]
        seen: set[tuple[str, str]] = set()
        for index, plan in enumerate(plans):
            key = (plan.write.resource_type, plan.resource_id)
            if key in seen:
                error = FhirError(400, f"{key[0]}/{key[1]} is written twice in one batch")
                error.entry = index
                raise error
            seen.add(key)
        for plan in plans:
            if plan.resource is not None and plan.write.resource_type == "Patient" and plan.created:
                self.new_patients[plan.resource_id] = plan
        for index, plan in enumerate(plans):
            if not plan.directory and plan.unchanged is None:
                about_write(index, self._place, plan)
        return plans

    def _check(self, write: Write) -> _Plan:
        """Everything about one write that needs no other write of the batch."""
        kind = write.resource_type
        if write.action == DELETE:
            self.principal.require(kind, "d")
            check_type(kind, writing=True)
            check_id(str(write.resource_id))
            return self._check_delete(write)
        if write.action not in (CREATE, UPDATE) or write.resource is None:
            raise FhirError(400, f"unknown write {write.action!r}")
        self.principal.require(kind, "c" if write.action == CREATE else "u")
        check_type(kind, writing=True)
        if write.resource.get("resourceType") != kind:
            raise FhirError(
                400, f"the body is a {write.resource.get('resourceType')}, not a {kind}"
            )
        if write.action == UPDATE:
            self._check_update_id(write)
        resource_id = write.resource_id or str(uuid.uuid4())
        check_id(resource_id)
        current = self._current(kind, resource_id)
        if write.action == CREATE and current is not None:
            raise FhirError(409, f"{kind}/{resource_id} exists already")
        if write.action == UPDATE and current is None:
            self.principal.require(kind, "c")  # update as create
        self._check_if_match(write, current)
        version = (current.version if current else 0) + 1
        resource = stamped(write.resource, resource_id, version, self.when)
        validate_resource(resource)
        plan = _Plan(write, resource_id, version, resource, created=current is None)
        if current is not None and not current.deleted:
            plan.unchanged = self._unchanged(kind, resource_id, resource, current)
        return plan

    def _check_update_id(self, write: Write) -> None:
        body_id = (write.resource or {}).get("id")
        if body_id is None:
            raise FhirError(400, "an update's body must carry the resource's id")
        if body_id != write.resource_id:
            raise FhirError(
                400, f"the body's id {body_id!r} is not the URL's {write.resource_id!r}"
            )

    def _check_if_match(self, write: Write, current: _Current | None) -> None:
        if write.if_match is None:
            return
        if current is None or current.version != write.if_match:
            now = f"version {current.version}" if current else "no version"
            raise FhirError(
                412,
                f"If-Match names version {write.if_match}; "
                f"{write.resource_type}/{write.resource_id} is at {now}",
            )

    def _check_delete(self, write: Write) -> _Plan:
        kind, resource_id = write.resource_type, str(write.resource_id)
        current = self._current(kind, resource_id)
        if current is None:
            raise FhirError(404, f"{kind}/{resource_id} is not known here")
        self._check_if_match(write, current)
        plan = _Plan(write, resource_id, current.version + 1, None)
        if current.deleted:
            when = current.last_updated
            plan.unchanged = Stored(
                tombstone(kind, resource_id, current.version, when), current.version, when, True
            )
        return plan

    def _current(self, kind: str, resource_id: str) -> _Current | None:
        """The resource's current version as the gateway knows it (None: no such resource).
        For a record, the chain's count wins over the index's (another writer may have
        added a version)."""
        if kind in DIRECTORY_TYPES:
            entry = self.resources.directory.latest(kind, resource_id)
            if entry is None:
                return None
            return _Current(entry.version, entry.deleted, entry.last_updated, None, entry)
        located = self.gateway.index.locate(kind, resource_id)
        if located is None:
            return None
        info = self.client.versions(_ref(located))
        if info["erased_at"]:
            raise FhirError(410, f"{kind}/{resource_id} was erased by its patient")
        history = info["history"]
        deleted = bool(history[-1]["tombstone"]) if history else located.deleted
        return _Current(int(info["versions"]), deleted, located.last_updated, located, None)

    def _unchanged(
        self, kind: str, resource_id: str, resource: dict[str, Any], current: _Current
    ) -> Stored | None:
        """The current version as served, if `resource` would change nothing."""
        if current.entry is not None:
            before = current.entry.resource or {}
            return _served(current.entry) if same_content(before, resource) else None
        assert current.located is not None
        stored = self.client.read(_ref(current.located))
        if not same_content(stored, resource):
            return None
        return _from_record(stored, current.located, current.version)

    def _place(self, plan: _Plan) -> None:
        """Whose record a write is, and its on-chain name when the patient exists."""
        kind = plan.write.resource_type
        located = self.gateway.index.locate(kind, plan.resource_id)
        if located is not None:
            plan.patient, plan.record = located.patient, located.record
            if plan.resource is not None and kind != "Patient":
                self._check_same_patient(plan, located)
            return
        assert plan.resource is not None
        if kind == "Patient":
            plan.pending = plan.resource_id  # a new patient: enrolled when written
            return
        patient_id = patient_id_of(plan.resource)
        if patient_id in self.new_patients:
            plan.pending = patient_id
            return
        plan.patient = find_patient(self.gateway, plan.resource)
        plan.record = self.client.ref(plan.patient, kind, plan.resource_id).name
        self._keys_of(plan.patient)

    def _check_same_patient(self, plan: _Plan, located: Located) -> None:
        assert plan.resource is not None
        patient_id = patient_id_of(plan.resource)
        if self.gateway.index.patient_did(patient_id) != located.patient:
            kind = plan.write.resource_type
            raise FhirError(
                422,
                f"{kind}/{plan.resource_id} is a record of another patient: "
                "a record cannot move to another patient",
                issues=[(kind, f"names Patient/{patient_id}")],
            )

    def _keys_of(self, patient: str) -> dict[str, ScopePublic]:
        keys = self.scope_keys.get(patient)
        if keys is None:
            keys = self.scope_keys[patient] = self.client.scope_keys(patient)
        return keys

    # --- writes --------------------------------------------------------------------------

    def write_directory(self, plans: Sequence[_Plan]) -> None:
        """The directory's writes and deletions, in one transaction."""
        writes = [
            DirectoryWrite(
                plan.write.resource_type, plan.resource_id, plan.version, self.when, plan.resource
            )
            for plan in plans
            if plan.directory and plan.unchanged is None
        ]
        if writes:
            self.resources.directory.put(writes)

    def write_records(self, plans: Sequence[_Plan]) -> None:
        """Every record write through one pipeline, grouped by patient; each chunk indexed
        as soon as the chain took it."""
        ordered = self._by_patient(
            [p for p in plans if not p.directory and p.resource is not None and not p.unchanged]
        )
        if not ordered:
            return
        in_pipeline: list[_Plan] = []

        def jobs() -> Iterator[Job]:
            for plan in ordered:
                in_pipeline.append(plan)
                yield self._job(plan)

        done = 0
        for chunk in self.client.writer.pipelined(jobs()):
            items = []
            for plan, written in zip(in_pipeline[done : done + len(chunk)], chunk, strict=True):
                self.written[id(plan)] = written
                items.append((self._located(plan, written), plan.resource))
            done += len(chunk)
            self.gateway.index.put(items)

    def _by_patient(self, plans: list[_Plan]) -> list[_Plan]:
        """New patients' Patient first, then each patient's records together."""

        def key(plan: _Plan) -> tuple[str, int]:
            group = plan.pending or plan.patient or ""
            first = 0 if plan.write.resource_type == "Patient" else 1
            return (("0" if plan.pending else "1") + group, first)

        return sorted(plans, key=key)

    def _job(self, plan: _Plan) -> Job:
        assert plan.resource is not None
        if plan.pending is not None:
            enrolled = self.enrolled.get(plan.pending)
            if enrolled is None:
                patient_plan = self.new_patients[plan.pending]
                assert patient_plan.resource is not None
                enrolled = enrol_patient(
                    self.gateway, self.client.node, patient_plan.resource, wait=False
                )
                self.enrolled[plan.pending] = enrolled
            plan.patient = enrolled.did
            keys, naming_key = enrolled.scope_keys, enrolled.naming_key
        else:
            assert plan.patient is not None
            keys = self._keys_of(plan.patient)
            naming_key = self.client.keyring.naming_key(plan.patient)
        latest = {plan.record: plan.version - 1} if plan.record else {}
        job = self.client.writer.job(plan.patient, plan.resource, keys, latest, naming_key)
        # Validated in the checks (every one before anything is written): not again.
        job = dataclasses.replace(job, validated=True)
        plan.record = job.record
        if job.version != plan.version:  # a fresh name, and the version we planned
            raise FhirError(409, f"{plan.write.resource_type}/{plan.resource_id}: version race")
        return job

    def _located(self, plan: _Plan, written: Written) -> Located:
        return Located(
            plan.write.resource_type,
            plan.resource_id,
            written.ref.patient,
            written.ref.name,
            written.version,
            self.when,
            False,
        )

    def delete_records(self, plans: Sequence[_Plan]) -> None:
        for plan in plans:
            if plan.resource is not None or plan.unchanged is not None:
                continue
            if plan.directory:
                continue  # written with the directory's other writes
            kind = plan.write.resource_type
            assert plan.patient is not None and plan.record is not None
            ref = RecordRef(plan.patient, kind, plan.resource_id, plan.record)
            written = self.client.delete(ref)
            plan.version = written.version
            located = Located(
                kind, plan.resource_id, plan.patient, plan.record, written.version, self.when, True
            )
            self.gateway.index.put([(located, None)])

    def result(self, plan: _Plan) -> Stored:
        if plan.unchanged is not None:
            return plan.unchanged
        kind = plan.write.resource_type
        if plan.resource is None:
            return Stored(
                tombstone(kind, plan.resource_id, plan.version, self.when),
                plan.version,
                self.when,
                deleted=True,
            )
        written = self.written.get(id(plan))
        version = written.version if written else plan.version
        enrolled = self.enrolled.get(plan.resource_id) if kind == "Patient" else None
        return Stored(
            plan.resource,
            version,
            self.when,
            created=plan.created,
            claim_code=enrolled.code if enrolled else None,
        )


def about_write(index: int, check: Callable[[_T], _R], item: _T) -> _R:
    """`check(item)`; a refusal notes the write it is about (`outcome.mark_entry`), so that
    a bundle's OperationOutcome names its entry."""
    try:
        return check(item)
    except (FhirError, InvalidResource, RecordsError) as exc:
        mark_entry(exc, index)
        raise


@dataclass(frozen=True)
class _Current:
    version: int
    deleted: bool
    last_updated: str
    located: Located | None  # a record's
    entry: Entry | None  # a directory resource's


def _ref(located: Located) -> RecordRef:
    return RecordRef(located.patient, located.resource_type, located.id, located.record)


def _from_record(resource: dict[str, Any], located: Located, version: int | None = None) -> Stored:
    meta = resource.get("meta") or {}
    number = version or int(meta.get("versionId") or located.version)
    when = str(meta.get("lastUpdated") or located.last_updated)
    if "lastUpdated" not in meta:  # written by another writer than a gateway
        resource = {**resource, "meta": {**meta, "lastUpdated": when}}
    return Stored(resource, number, when)


def _served(entry: Entry) -> Stored:
    if entry.resource is None:
        return Stored(
            tombstone(entry.resource_type, entry.id, entry.version, entry.last_updated),
            entry.version,
            entry.last_updated,
            deleted=True,
        )
    return Stored(entry.resource, entry.version, entry.last_updated)


def _live(stored: Stored) -> Stored:
    if stored.deleted:
        kind = stored.resource["resourceType"]
        raise FhirError(410, f"{kind}/{stored.resource['id']} was deleted")
    return stored
