"""One `Resources.write_many`: every write checked first (type, scopes, id, FHIR validity,
whose record it is, If-Match), nothing written until all pass; then the directory's writes in
one SQLite transaction and every patient's records through one write pipeline, patients the
batch creates enrolled just before their first record.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from careledger.crypto.scopekeys import ScopePublic
from careledger.gateway.directory import DirectoryWrite
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.patients import Enrolled, enrol_patient, find_patient, patient_id_of
from careledger.gateway.principal import Principal
from careledger.gateway.resource_types import (
    DIRECTORY_TYPES,
)
from careledger.gateway.stored import (
    CREATE,
    DELETE,
    UPDATE,
    Current,
    Plan,
    Stored,
    Write,
    about_write,
    check_id,
    check_type,
    from_record,
    ref_of,
    refuse_erased,
    same_content,
    served,
    stamped,
    tombstone,
)
from careledger.wallet.fhir import validate_resource
from careledger.wallet.records import RecordRef, Written
from careledger.wallet.sealing import Job

if TYPE_CHECKING:
    from careledger.gateway.resources import Resources


class WriteBatch:
    """One write_many: its checks, then its writes, all stamped with the same instant."""

    def __init__(self, resources: Resources, principal: Principal, when: str) -> None:
        self.resources = resources
        self.gateway = resources.gateway
        self.principal = principal
        self.when = when
        self.client = resources._client(principal)
        self.scope_keys: dict[str, dict[str, ScopePublic]] = {}
        self.new_patients: dict[str, Plan] = {}  # Patient id -> its create in this batch
        self.enrolled: dict[str, Enrolled] = {}  # Patient id -> enrolment made here
        self.written: dict[int, Written] = {}  # id(plan) -> what the chain took

    # --- checks --------------------------------------------------------------------------

    def plan(self, writes: Sequence[Write]) -> list[Plan]:
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

    def _check(self, write: Write) -> Plan:
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
        plan = Plan(write, resource_id, version, resource, created=current is None)
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

    def _check_if_match(self, write: Write, current: Current | None) -> None:
        if write.if_match is None:
            return
        if current is None or current.version != write.if_match:
            now = f"version {current.version}" if current else "no version"
            raise FhirError(
                412,
                f"If-Match names version {write.if_match}; "
                f"{write.resource_type}/{write.resource_id} is at {now}",
            )

    def _check_delete(self, write: Write) -> Plan:
        kind, resource_id = write.resource_type, str(write.resource_id)
        current = self._current(kind, resource_id)
        if current is None:
            raise FhirError(404, f"{kind}/{resource_id} is not known here")
        self._check_if_match(write, current)
        plan = Plan(write, resource_id, current.version + 1, None)
        if current.deleted:
            when = current.last_updated
            plan.unchanged = Stored(
                tombstone(kind, resource_id, current.version, when), current.version, when, True
            )
        return plan

    def _current(self, kind: str, resource_id: str) -> Current | None:
        """The resource's current version as the gateway knows it (None: no such resource).
        For a record, the chain's count wins over the index's (another writer may have
        added a version)."""
        if kind in DIRECTORY_TYPES:
            entry = self.resources.directory.latest(kind, resource_id)
            if entry is None:
                return None
            return Current(entry.version, entry.deleted, entry.last_updated, None, entry)
        located = self.gateway.index.locate(kind, resource_id)
        if located is None:
            refuse_erased(self.gateway, kind, resource_id)  # no new resource in its place
            return None
        info = self.client.versions(ref_of(located))
        if info["erased_at"]:
            raise FhirError(410, f"{kind}/{resource_id} was erased by its patient")
        history = info["history"]
        deleted = bool(history[-1]["tombstone"]) if history else located.deleted
        return Current(int(info["versions"]), deleted, located.last_updated, located, None)

    def _unchanged(
        self, kind: str, resource_id: str, resource: dict[str, Any], current: Current
    ) -> Stored | None:
        """The current version as served, if `resource` would change nothing."""
        if current.entry is not None:
            before = current.entry.resource or {}
            return served(current.entry) if same_content(before, resource) else None
        assert current.located is not None
        stored = self.client.read(ref_of(current.located))
        if not same_content(stored, resource):
            return None
        return from_record(stored, current.located, current.version)

    def _place(self, plan: Plan) -> None:
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

    def _check_same_patient(self, plan: Plan, located: Located) -> None:
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

    def write_directory(self, plans: Sequence[Plan]) -> None:
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

    def write_records(self, plans: Sequence[Plan]) -> None:
        """Every record write through one pipeline, grouped by patient; each chunk indexed
        as soon as the chain took it."""
        ordered = self._by_patient(
            [p for p in plans if not p.directory and p.resource is not None and not p.unchanged]
        )
        if not ordered:
            return
        in_pipeline: list[Plan] = []

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

    def _by_patient(self, plans: list[Plan]) -> list[Plan]:
        """New patients' Patient first, then each patient's records together."""

        def key(plan: Plan) -> tuple[str, int]:
            group = plan.pending or plan.patient or ""
            first = 0 if plan.write.resource_type == "Patient" else 1
            return (("0" if plan.pending else "1") + group, first)

        return sorted(plans, key=key)

    def _job(self, plan: Plan) -> Job:
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

    def _located(self, plan: Plan, written: Written) -> Located:
        return Located(
            plan.write.resource_type,
            plan.resource_id,
            written.ref.patient,
            written.ref.name,
            written.version,
            self.when,
            False,
        )

    def delete_records(self, plans: Sequence[Plan]) -> None:
        for plan in plans:
            if plan.resource is not None or plan.unchanged is not None:
                continue
            if plan.directory:
                continue  # written with the directory's other writes
            kind = plan.write.resource_type
            assert plan.patient is not None and plan.record is not None
            ref = RecordRef(plan.patient, kind, plan.resource_id, plan.record)
            # The version the checks planned (If-Match held for the one before it): a writer
            # who got there first makes the chain refuse this one, not a version after it.
            written = self.client.delete(ref, plan.version)
            located = Located(
                kind, plan.resource_id, plan.patient, plan.record, written.version, self.when, True
            )
            self.gateway.index.put([(located, None)])

    def result(self, plan: Plan) -> Stored:
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
