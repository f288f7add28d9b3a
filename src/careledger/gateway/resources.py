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

from collections.abc import Mapping, Sequence
from typing import Any

from careledger.gateway.context import Gateway
from careledger.gateway.directory import Directory, Entry
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.patients import find_patient
from careledger.gateway.principal import Principal
from careledger.gateway.resource_types import (
    DIRECTORY_TYPES,
)
from careledger.gateway.search import find
from careledger.gateway.stored import (
    CREATE,
    DELETE,
    MAX_TYPE_HISTORY,
    UPDATE,
    Stored,
    Write,
    check_id,
    check_type,
    from_record,
    instant_now,
    live,
    ref_of,
    refuse_erased,
    served,
    tombstone,
)
from careledger.gateway.write_batch import WriteBatch
from careledger.wallet.records import RecordsClient, RecordsError


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
            return live(served(self._directory_latest(resource_type, resource_id)))
        located = self._locate(resource_type, resource_id)
        if located.deleted:
            raise FhirError(410, f"{resource_type}/{resource_id} was deleted")
        resource = self._client(principal, located.patient).read(ref_of(located))
        return from_record(resource, located)

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
            return live(served(entry))
        located = self._locate(resource_type, resource_id)
        resource = self._client(principal, located.patient).read(ref_of(located), version)
        return from_record(resource, located)

    def history(self, principal: Principal, resource_type: str, resource_id: str) -> list[Stored]:
        """Every version, newest first (a deletion as a tombstone, deleted=True)."""
        self._check_read(principal, resource_type, resource_id)
        if resource_type in DIRECTORY_TYPES:
            self._directory_latest(resource_type, resource_id)
            return [served(entry) for entry in self.directory.history(resource_type, resource_id)]
        located = self._locate(resource_type, resource_id)
        versions = self._client(principal, located.patient).history(ref_of(located))
        times = self._version_times(resource_type, resource_id)
        answer: list[Stored] = []
        for number, resource in enumerate(versions, start=1):
            when = times.get(number, located.last_updated)
            if resource is None:
                answer.append(
                    Stored(tombstone(resource_type, resource_id, number, when), number, when, True)
                )
            else:
                answer.append(from_record(resource, located, number))
        return answer[::-1]

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
            return [served(entry) for entry in entries]
        answer: list[Stored] = []
        for located, number, deleted, when in self._type_versions(resource_type, since, count):
            if deleted:
                answer.append(
                    Stored(tombstone(resource_type, located.id, number, when), number, when, True)
                )
                continue
            try:
                resource = self._client(principal, located.patient).read(ref_of(located), number)
            except RecordsError as exc:
                if exc.status in (403, 404, 410):
                    continue  # refused (and audited by the node), gone, or erased
                raise
            answer.append(from_record(resource, located, number))
        return answer

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
        return self._write_one(principal, write)

    def delete(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        if_match: int | None = None,
    ) -> Stored:
        """A tombstone version (history stays readable); deleting a deleted resource again
        changes nothing."""
        return self._write_one(principal, Write(DELETE, resource_type, None, resource_id, if_match))

    def _write_one(self, principal: Principal, write: Write) -> Stored:
        """One update or delete; with If-Match, a race lost to another writer is 412."""
        try:
            return self.write_many(principal, [write])[0]
        except (FhirError, RecordsError) as exc:
            if write.if_match is None or exc.status != 409:
                raise
            # Another request committed the next version between our check and our write:
            # the version If-Match named is stale now, which FHIR answers 412 (not 409).
            raise FhirError(
                412,
                f"If-Match names version {write.if_match}; {write.resource_type}/"
                f"{write.resource_id} was changed by another request meanwhile",
            ) from None

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
            candidates = {criteria["_id"]} if self.live(resource_type, criteria["_id"]) else set()
        if "identifier" in criteria:
            found_ids = set(self._by_identifier(resource_type, criteria["identifier"]))
            candidates = found_ids if candidates is None else candidates & found_ids
        return sorted(candidates or ())

    def live(self, resource_type: str, resource_id: str) -> bool:
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
        batch = WriteBatch(self, principal, instant_now())
        plans = batch.plan(writes)
        batch.write_directory(plans)
        batch.write_records(plans)
        batch.delete_records(plans)
        return [batch.result(plan) for plan in plans]

    # --- helpers -------------------------------------------------------------------------

    def _client(self, principal: Principal, patient: str | None = None) -> RecordsClient:
        """The records client the principal reads `patient`'s records with (an emergency one
        during its break-glass of that patient: Gateway.records_for)."""
        return self.gateway.records_for(principal, patient)

    def _check_read(self, principal: Principal, resource_type: str, resource_id: str) -> None:
        principal.require(resource_type, "r")
        check_type(resource_type)
        check_id(resource_id)

    def _locate(self, resource_type: str, resource_id: str) -> Located:
        located = self.gateway.index.locate(resource_type, resource_id)
        if located is None:
            refuse_erased(self.gateway, resource_type, resource_id)
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
