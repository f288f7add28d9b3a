"""The organisation's directory: who and where (DIRECTORY_TYPES), kept in gateway.sqlite.

Organization, Practitioner, PractitionerRole, Location, HealthcareService, Endpoint and
Medication hold no patient's data: they are neither encrypted to a patient nor anchored on
the chain, but kept here, shared by every client of the organisation, with versions (history,
vread, If-Match) as any FHIR resource. Each version's identifiers are indexed so that a
conditional reference (`Practitioner?identifier=system|value`) and `If-None-Exist` find the
resource they name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from careledger.gateway.db import GatewayDb

SCHEMA = """
CREATE TABLE IF NOT EXISTS directory (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    resource BLOB,
    PRIMARY KEY (resource_type, id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS directory_by_time ON directory (resource_type, last_updated);
CREATE TABLE IF NOT EXISTS directory_identifiers (
    resource_type TEXT NOT NULL,
    system TEXT NOT NULL,
    value TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (resource_type, system, value, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS directory_identifiers_by_id
    ON directory_identifiers (resource_type, id);
"""


@dataclass(frozen=True)
class Entry:
    """One version of a directory resource (`resource` None: a deletion)."""

    resource_type: str
    id: str
    version: int
    last_updated: str
    resource: dict[str, Any] | None

    @property
    def deleted(self) -> bool:
        return self.resource is None


@dataclass(frozen=True)
class DirectoryWrite:
    """A new version to store: the resource (stamped), or None to delete."""

    resource_type: str
    id: str
    version: int
    last_updated: str
    resource: Mapping[str, Any] | None


class Directory:
    def __init__(self, db: GatewayDb) -> None:
        self.db = db

    def latest(self, resource_type: str, resource_id: str) -> Entry | None:
        with self.db.read() as sql:
            row = sql.execute(
                f"SELECT {_COLUMNS} FROM directory WHERE resource_type = ? AND id = ? "
                "ORDER BY version DESC LIMIT 1",
                (resource_type, resource_id),
            ).fetchone()
        return _entry(row) if row else None

    def version(self, resource_type: str, resource_id: str, version: int) -> Entry | None:
        with self.db.read() as sql:
            row = sql.execute(
                f"SELECT {_COLUMNS} FROM directory WHERE resource_type = ? AND id = ? "
                "AND version = ?",
                (resource_type, resource_id, version),
            ).fetchone()
        return _entry(row) if row else None

    def history(self, resource_type: str, resource_id: str) -> list[Entry]:
        """Every version, newest first."""
        with self.db.read() as sql:
            rows = sql.execute(
                f"SELECT {_COLUMNS} FROM directory WHERE resource_type = ? AND id = ? "
                "ORDER BY version DESC",
                (resource_type, resource_id),
            ).fetchall()
        return [_entry(row) for row in rows]

    def type_history(self, resource_type: str, since: str | None, count: int) -> list[Entry]:
        """The newest `count` versions of any resource of the type (since an instant)."""
        with self.db.read() as sql:
            rows = sql.execute(
                f"SELECT {_COLUMNS} FROM directory WHERE resource_type = ? "
                "AND last_updated >= ? ORDER BY last_updated DESC, id, version DESC LIMIT ?",
                (resource_type, since or "", count),
            ).fetchall()
        return [_entry(row) for row in rows]

    def by_identifier(self, resource_type: str, system: str | None, value: str) -> list[str]:
        """Ids of live resources of the type whose current version has this identifier
        (`system` None: any system, as `identifier=value` means in FHIR search)."""
        query = (
            "SELECT DISTINCT id FROM directory_identifiers WHERE resource_type = ? AND value = ?"
        )
        params: tuple[str, ...] = (resource_type, value)
        if system is not None:
            query += " AND system = ?"
            params += (system,)
        with self.db.read() as sql:
            rows = sql.execute(query + " ORDER BY id", params).fetchall()
        return [str(row[0]) for row in rows]

    def ids(self, resource_type: str) -> list[str]:
        """Ids of the live resources of a type."""
        with self.db.read() as sql:
            rows = sql.execute(
                "SELECT id FROM directory d WHERE resource_type = ? AND resource IS NOT NULL "
                "AND version = (SELECT MAX(version) FROM directory WHERE resource_type = "
                "d.resource_type AND id = d.id) ORDER BY id",
                (resource_type,),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def put(self, writes: Iterable[DirectoryWrite]) -> None:
        """Store new versions atomically; each must be the next of its resource (a version
        already taken is a conflict: sqlite3.IntegrityError, nothing stored)."""
        with self.db.write() as sql:
            for write in writes:
                _put_one(sql, write)


_COLUMNS = "resource_type, id, version, last_updated, resource"


def _entry(row: Any) -> Entry:
    kind, id_, version, updated, blob = row
    resource = orjson.loads(blob) if blob is not None else None
    return Entry(str(kind), str(id_), int(version), str(updated), resource)


def _put_one(sql: sqlite3.Connection, write: DirectoryWrite) -> None:
    blob = orjson.dumps(write.resource) if write.resource is not None else None
    sql.execute(
        f"INSERT INTO directory ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (write.resource_type, write.id, write.version, write.last_updated, blob),
    )
    sql.execute(
        "DELETE FROM directory_identifiers WHERE resource_type = ? AND id = ?",
        (write.resource_type, write.id),
    )
    for system, value in identifiers_of(write.resource or {}):
        sql.execute(
            "INSERT OR IGNORE INTO directory_identifiers (resource_type, system, value, id) "
            "VALUES (?, ?, ?, ?)",
            (write.resource_type, system, value, write.id),
        )


def identifiers_of(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of each identifier of a resource ("" for a missing system)."""
    found = []
    identifiers = resource.get("identifier")
    if isinstance(identifiers, Mapping):  # a few types have a single identifier
        identifiers = [identifiers]
    for identifier in identifiers if isinstance(identifiers, list) else ():
        if isinstance(identifier, Mapping) and isinstance(identifier.get("value"), str):
            found.append((str(identifier.get("system") or ""), str(identifier["value"])))
    return found
