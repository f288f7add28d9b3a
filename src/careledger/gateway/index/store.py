"""Where each FHIR resource the organisation can read lives on the chain.

A row per logical resource: (type, id) -> patient did, keyed record name, latest version,
lastUpdated and whether that version is a tombstone; a row per version for history. The
Patient resource's row names the patient's did, which is how `Observation?subject=Patient/x`
and a create naming `Patient/x` find whose record they are.

Rows come from what the gateway writes and from what the chain follower reads of records
granted to the organisation; they go when a grant ends or the patient erases (the follower).
Nothing here is the record itself: reads fetch the ciphertext through the node, which decides
consent and audits the access.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from careledger.gateway.db import GatewayDb

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    patient TEXT NOT NULL,
    record TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (resource_type, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resources_by_patient ON resources (patient, resource_type);
CREATE INDEX IF NOT EXISTS resources_by_record ON resources (patient, record);
CREATE TABLE IF NOT EXISTS versions (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (resource_type, id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (resource_type, last_updated);
"""


@dataclass(frozen=True)
class Located:
    resource_type: str
    id: str
    patient: str  # the patient's did
    record: str  # the keyed record name on chain
    version: int  # the latest version
    last_updated: str  # FHIR instant of the latest version
    deleted: bool  # the latest version is a tombstone

    @classmethod
    def of(cls, row: Sequence[object]) -> Located:
        kind, id_, patient, record, version, updated, deleted = row
        return cls(
            str(kind),
            str(id_),
            str(patient),
            str(record),
            int(str(version)),
            str(updated),
            bool(deleted),
        )


_COLUMNS = "resource_type, id, patient, record, version, last_updated, deleted"


class RecordIndex:
    def __init__(self, db: GatewayDb) -> None:
        self.db = db

    def locate(self, resource_type: str, resource_id: str) -> Located | None:
        with self.db.read() as sql:
            row = sql.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE resource_type = ? AND id = ?",
                (resource_type, resource_id),
            ).fetchone()
        return Located.of(row) if row else None

    def patient_did(self, patient_id: str) -> str | None:
        """The did of the patient whose Patient resource has this id."""
        found = self.locate("Patient", patient_id)
        return found.patient if found is not None else None

    def patient_id(self, did: str) -> str | None:
        """The id of the patient's Patient resource, if the index holds one."""
        with self.db.read() as sql:
            row = sql.execute(
                "SELECT id FROM resources WHERE patient = ? AND resource_type = 'Patient' "
                "ORDER BY id LIMIT 1",
                (did,),
            ).fetchone()
        return str(row[0]) if row else None

    def put(self, items: Iterable[tuple[Located, Mapping[str, Any] | None]]) -> None:
        """Record new latest versions (and their history rows), atomically. Each comes with
        the decrypted resource (None for a tombstone), whose search parameters are indexed."""
        with self.db.write() as sql:
            for entry, _resource in items:
                _put_one(sql, entry)

    def of_patient(self, did: str) -> list[Located]:
        with self.db.read() as sql:
            rows = sql.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE patient = ? ORDER BY resource_type, id",
                (did,),
            ).fetchall()
        return [Located.of(row) for row in rows]

    def forget_records(self, patient: str, records: Iterable[str]) -> int:
        """Drop these records of a patient (erased): rows and history. How many went."""
        gone = 0
        with self.db.write() as sql:
            for record in records:
                found = sql.execute(
                    "SELECT resource_type, id FROM resources WHERE patient = ? AND record = ?",
                    (patient, record),
                ).fetchone()
                if found is not None:
                    _forget(sql, str(found[0]), str(found[1]))
                    gone += 1
        return gone

    def forget_patient(self, patient: str) -> int:
        """Drop every record of a patient (the organisation's grant ended)."""
        with self.db.write() as sql:
            rows = sql.execute(
                "SELECT resource_type, id FROM resources WHERE patient = ?", (patient,)
            ).fetchall()
            for kind, id_ in rows:
                _forget(sql, str(kind), str(id_))
        return len(rows)


def _put_one(sql: sqlite3.Connection, entry: Located) -> None:
    sql.execute(
        f"INSERT OR REPLACE INTO resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            entry.resource_type,
            entry.id,
            entry.patient,
            entry.record,
            entry.version,
            entry.last_updated,
            int(entry.deleted),
        ),
    )
    sql.execute(
        "INSERT OR REPLACE INTO versions (resource_type, id, version, last_updated, deleted) "
        "VALUES (?, ?, ?, ?, ?)",
        (entry.resource_type, entry.id, entry.version, entry.last_updated, int(entry.deleted)),
    )


def _forget(sql: sqlite3.Connection, resource_type: str, resource_id: str) -> None:
    for table in ("resources", "versions"):
        sql.execute(
            f"DELETE FROM {table} WHERE resource_type = ? AND id = ?", (resource_type, resource_id)
        )
