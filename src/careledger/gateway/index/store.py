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
from dataclasses import dataclass, replace
from typing import Any

from careledger.gateway.db import GatewayDb
from careledger.gateway.index import params
from careledger.wallet.scopes import scope_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    patient TEXT NOT NULL,
    record TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    scope TEXT NOT NULL DEFAULT '',
    author_org TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (resource_type, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resources_by_patient ON resources (patient, resource_type);
CREATE INDEX IF NOT EXISTS resources_by_record ON resources (patient, record);
-- An access entry names a record by its first 16 bytes (32 hex): the AuditEvent view finds it.
CREATE INDEX IF NOT EXISTS resources_by_record_prefix ON resources (substr(record, 1, 32));
CREATE TABLE IF NOT EXISTS versions (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (resource_type, id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (resource_type, last_updated);
CREATE INDEX IF NOT EXISTS resources_by_type ON resources (resource_type, deleted);
-- Search parameter values (index/params.py): one row per value, keyed so that both "which
-- resources have this value" and "has this resource this value" are index lookups.
CREATE TABLE IF NOT EXISTS search_token (
    resource_type TEXT NOT NULL,
    name TEXT NOT NULL,
    code TEXT NOT NULL,
    id TEXT NOT NULL,
    system TEXT NOT NULL,
    PRIMARY KEY (resource_type, name, code, id, system)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_token_of ON search_token (resource_type, id);
CREATE TABLE IF NOT EXISTS search_string (
    resource_type TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (resource_type, name, value, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_string_of ON search_string (resource_type, id);
CREATE TABLE IF NOT EXISTS search_date (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    low INTEGER NOT NULL,
    high INTEGER NOT NULL,
    PRIMARY KEY (resource_type, id, name, low, high)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_date_by_low ON search_date (resource_type, name, low);
-- Resources whose record its patient erased: only (type, id), no patient, no value. Their
-- rows above are forgotten; this keeps a later read, update or delete of the id at 410 Gone
-- (not 404, and not a new resource created under the erased one's id).
CREATE TABLE IF NOT EXISTS erased (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (resource_type, id)
) WITHOUT ROWID;
"""
SEARCH_TABLES = ("search_token", "search_string", "search_date")


@dataclass(frozen=True)
class Located:
    resource_type: str
    id: str
    patient: str  # the patient's did
    record: str  # the keyed record name on chain
    version: int  # the latest version
    last_updated: str  # FHIR instant of the latest version
    deleted: bool  # the latest version is a tombstone
    # The record's scope and the organisation its latest version's author wrote for: what
    # search decides readability by before reading ("" : worked out by `put`: the scope
    # from the resource, the author organisation the index's own).
    scope: str = ""
    author_org: str = ""

    @classmethod
    def of(cls, row: Sequence[object]) -> Located:
        """From a row of the index's columns (the first seven alone are enough: scope and
        author organisation then empty)."""
        kind, id_, patient, record, version, updated, deleted, scope, author_org = (
            [*row, "", ""] if len(row) == 7 else row
        )
        return cls(
            str(kind),
            str(id_),
            str(patient),
            str(record),
            int(str(version)),
            str(updated),
            bool(deleted),
            str(scope),
            str(author_org),
        )


_COLUMNS = "resource_type, id, patient, record, version, last_updated, deleted, scope, author_org"


class RecordIndex:
    def __init__(self, db: GatewayDb, organisation: str = "") -> None:
        """`organisation`: the did the gateway acts for (the author organisation of what it
        writes, when a `Located` does not name one)."""
        self.db = db
        self.organisation = organisation
        with db.read() as sql:
            # What the index forgets (an erased record, a patient whose grant ended) is
            # overwritten on disk, not left in free pages (docs/gateway-index.md).
            sql.execute("PRAGMA secure_delete = ON")

    def locate(self, resource_type: str, resource_id: str) -> Located | None:
        with self.db.read() as sql:
            row = sql.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE resource_type = ? AND id = ?",
                (resource_type, resource_id),
            ).fetchone()
        return Located.of(row) if row else None

    def was_erased(self, resource_type: str, resource_id: str) -> bool:
        """Whether the index forgot this resource because its patient erased it."""
        with self.db.read() as sql:
            row = sql.execute(
                "SELECT 1 FROM erased WHERE resource_type = ? AND id = ?",
                (resource_type, resource_id),
            ).fetchone()
        return row is not None

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
        the decrypted resource (None for a tombstone), whose search parameters are indexed.
        Values are extracted before the transaction and written in one statement per table
        (an import puts thousands at once)."""
        rows = _Rows()
        items = list(items)
        with self.db.read() as sql:
            previous = [_previous(sql, entry) for entry, _ in items]
        for (entry, resource), known in zip(items, previous, strict=True):
            if known is not None and (known[1], known[2]) != (entry.patient, entry.record):
                # Another record (of another patient, or another writer's) under an id the
                # index has: never take the id over (`Patient/<id>` would name another
                # patient, and writes for it would go into that patient's record).
                continue
            scope = known[0] if known is not None else None
            rows.add(self._completed(entry, resource, scope), resource, replacing=known is not None)
        with self.db.write() as sql:
            rows.write(sql)

    def _completed(
        self, entry: Located, resource: Mapping[str, Any] | None, previous: str | None
    ) -> Located:
        """The entry with its scope (a record keeps the scope of its version 1) and author
        organisation (the gateway's own, unless named)."""
        scope = entry.scope or previous or (scope_of(resource) if resource is not None else "")
        return replace(entry, scope=scope, author_org=entry.author_org or self.organisation)

    def of_patient(self, did: str) -> list[Located]:
        with self.db.read() as sql:
            rows = sql.execute(
                f"SELECT {_COLUMNS} FROM resources WHERE patient = ? ORDER BY resource_type, id",
                (did,),
            ).fetchall()
        return [Located.of(row) for row in rows]

    def patients(self) -> set[str]:
        """Every patient the index holds a record of."""
        with self.db.read() as sql:
            rows = sql.execute("SELECT DISTINCT patient FROM resources").fetchall()
        return {str(row[0]) for row in rows}

    def references_of(self, patient: str) -> set[tuple[str, str]]:
        """(type, id) of every resource the patient's indexed resources refer to."""
        with self.db.read() as sql:
            rows = sql.execute(
                "SELECT DISTINCT t.system, t.code FROM resources r JOIN search_token t "
                "ON t.resource_type = r.resource_type AND t.id = r.id "
                "WHERE r.patient = ? AND t.name = ?",
                (patient, params.REFERENCES),
            ).fetchall()
        return {(str(kind), str(id_)) for kind, id_ in rows}

    def forget_records(
        self, patient: str, records: Iterable[str], erased: Iterable[str] = ()
    ) -> int:
        """Drop these records of a patient (no longer readable): rows and history. Those
        named in `erased` (the patient erased them) leave a marker: `was_erased`. How many
        went."""
        gone = 0
        erased = set(erased)
        with self.db.write() as sql:
            for record in records:
                found = sql.execute(
                    "SELECT resource_type, id FROM resources WHERE patient = ? AND record = ?",
                    (patient, record),
                ).fetchone()
                if found is not None:
                    _forget(sql, str(found[0]), str(found[1]))
                    if record in erased:
                        sql.execute(
                            "INSERT OR IGNORE INTO erased (resource_type, id) VALUES (?, ?)",
                            (str(found[0]), str(found[1])),
                        )
                    gone += 1
        if gone:
            self._scrub()
        return gone

    def forget_patient(self, patient: str) -> int:
        """Drop every record of a patient (the organisation's grant ended)."""
        with self.db.write() as sql:
            rows = sql.execute(
                "SELECT resource_type, id FROM resources WHERE patient = ?", (patient,)
            ).fetchall()
            for kind, id_ in rows:
                _forget(sql, str(kind), str(id_))
        if rows:
            self._scrub()
        return len(rows)

    def _scrub(self) -> None:
        """Copy the write-ahead log into the database and empty it: the log still holds the
        pages as they were before a forget (secure_delete zeroes them in the database)."""
        with self.db.read() as sql:
            sql.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _previous(sql: sqlite3.Connection, entry: Located) -> tuple[str, str, str] | None:
    """The scope ("" if none yet), patient and record the index holds for this resource;
    None if it holds no row of it."""
    row = sql.execute(
        "SELECT scope, patient, record FROM resources WHERE resource_type = ? AND id = ?",
        (entry.resource_type, entry.id),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]))


class _Rows:
    """The rows of many puts, written together."""

    def __init__(self) -> None:
        self.resources: list[tuple[Any, ...]] = []
        self.versions: list[tuple[Any, ...]] = []
        self.stale: list[tuple[str, str]] = []  # (type, id) whose old search values go
        self.tokens: list[tuple[str, ...]] = []
        self.strings: list[tuple[str, ...]] = []
        self.dates: list[tuple[Any, ...]] = []

    def add(self, entry: Located, resource: Mapping[str, Any] | None, *, replacing: bool) -> None:
        kind, id_ = entry.resource_type, entry.id
        where = (entry.patient, entry.record, entry.version, entry.last_updated)
        self.resources.append(
            (kind, id_, *where, int(entry.deleted), entry.scope, entry.author_org)
        )
        self.versions.append((kind, id_, entry.version, entry.last_updated, int(entry.deleted)))
        if replacing:
            self.stale.append((kind, id_))
        if resource is None or entry.deleted:
            return  # a deleted resource is found by no search
        values = params.extract(resource, entry.last_updated)
        self.tokens += [(kind, name, code, id_, system) for name, system, code in values.tokens]
        self.strings += [(kind, name, value, id_) for name, value in values.strings]
        self.dates += [(kind, id_, name, low, high) for name, low, high in values.dates]

    def write(self, sql: sqlite3.Connection) -> None:
        for table in SEARCH_TABLES:
            sql.executemany(f"DELETE FROM {table} WHERE resource_type = ? AND id = ?", self.stale)
        sql.executemany(
            f"INSERT OR REPLACE INTO resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.resources,
        )
        sql.executemany(
            "INSERT OR REPLACE INTO versions (resource_type, id, version, last_updated, deleted) "
            "VALUES (?, ?, ?, ?, ?)",
            self.versions,
        )
        sql.executemany(
            "INSERT OR IGNORE INTO search_token (resource_type, name, code, id, system) "
            "VALUES (?, ?, ?, ?, ?)",
            self.tokens,
        )
        sql.executemany(
            "INSERT OR IGNORE INTO search_string (resource_type, name, value, id) "
            "VALUES (?, ?, ?, ?)",
            self.strings,
        )
        sql.executemany(
            "INSERT OR IGNORE INTO search_date (resource_type, id, name, low, high) "
            "VALUES (?, ?, ?, ?, ?)",
            self.dates,
        )


def _forget(sql: sqlite3.Connection, resource_type: str, resource_id: str) -> None:
    for table in ("resources", "versions", *SEARCH_TABLES):
        sql.execute(
            f"DELETE FROM {table} WHERE resource_type = ? AND id = ?", (resource_type, resource_id)
        )
