"""Keeps the index current with the chain: what the organisation may read is indexed, what it
may no longer read is forgotten.

One pass (`sync_once`), every `interval` seconds in a thread that `Gateway.start()` starts:

1. The read grants in force now to the organisation and to each of its practitioners
   (`consent/granted?grantee=...&at=now`, asked as that identity). A grant has a period and
   no event fires when it ends, so every pass asks again: an expired grant simply is no
   longer listed, nor a revoked one.
2. For each patient the index holds or a grant names: the patient's records on chain
   (`records/records`, asked as the organisation).
   - A row stays only while the organisation wrote the record's latest version (it reads
     what it wrote) or an active grant covers the record (its scope; its name, when the
     grant names records): a revoked or expired grant's records leave the index, unless
     another grant still covers them. A patient whose records the chain no longer lists to
     the organisation leaves it entirely.
   - An erased record leaves the index.
   - A record with a newer version on chain (written by the patient, or by another
     organisation for a record this one started) is read again and re-indexed.
   - A record a grant covers that the index does not hold yet is read by its name: the
     chain lists names (keyed hashes of type and id), and the record's wrapped data key says
     its type and id (wrap v2, docs/crypto.md 6.1; design change 28), checked against the
     patient's naming key that the grant wrapped to the organisation.

Every read goes through the node as the identity whose grant covers the record, with that
grant's purpose: audited like any other access.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from careledger.gateway.index.reading import read_named, read_readable
from careledger.gateway.index.store import Located
from careledger.gateway.principal import Principal
from careledger.gateway.smart.scopes import parse_scopes
from careledger.wallet.node_client import NodeError
from careledger.wallet.records import RecordsError

if TYPE_CHECKING:
    from careledger.gateway.context import Gateway

log = logging.getLogger(__name__)

SYNC_ENV = "CARELEDGER_GATEWAY_SYNC"
DEFAULT_INTERVAL = 5.0
FOLLOWER_CLIENT = "careledger-gateway-follower"
ALL_SCOPES = parse_scopes("system/*.rs")
AUTHOR_PURPOSE = "TREAT"


@dataclass(frozen=True)
class Cover:
    """One active read grant, as the follower uses it: who reads under it, for what."""

    reader: str
    purpose: str
    scopes: frozenset[str]
    records: frozenset[str] | None  # None: every record of its scopes

    def covers(self, located: Located) -> bool:
        in_scope = located.scope in self.scopes
        return in_scope and (self.records is None or located.record in self.records)


@dataclass
class SyncReport:
    indexed: int = 0  # records (re)indexed
    forgotten: int = 0  # records dropped (grant ended, erased, no longer listed)
    unknown: int = 0  # records a grant covers that did not open (refused, or altered)
    errors: list[str] = field(default_factory=list)


class Follower:
    def __init__(self, gateway: Gateway, interval: float | None = None) -> None:
        self.gateway = gateway
        self.interval = interval if interval is not None else _interval_from_env()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time (the thread's, or a test's)

    # --- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the passes (none when the interval is 0: $CARELEDGER_GATEWAY_SYNC=0)."""
        if self._thread is not None or self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="gateway-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                report = self.sync_once()
            except Exception:  # the node may be starting or away: try again next time
                log.exception("gateway follower: a pass failed")
                continue
            for error in report.errors:
                log.warning("gateway follower: %s", error)

    # --- one pass --------------------------------------------------------------------------

    def sync_once(self) -> SyncReport:
        with self._lock:
            report = SyncReport()
            covers = self._covers(int(time.time()), report)
            for patient in sorted(self.gateway.index.patients() | covers.keys()):
                try:
                    self._sync_patient(patient, covers.get(patient, []), report)
                except (RecordsError, NodeError) as exc:
                    report.errors.append(f"{patient}: {exc}")
            return report

    def _covers(self, now: int, report: SyncReport) -> dict[str, list[Cover]]:
        """The active read grants to the organisation or its practitioners, by patient. Any
        failure but a practitioner unknown to the chain ends the pass (forgetting on a
        partial answer would drop what is still granted)."""
        organisation = self.gateway.organisation.did
        found: dict[str, list[Cover]] = {}
        for reader in [organisation, *(k.did for k in self.gateway.practitioner_keys())]:
            client = self.gateway.records_for(_principal(reader, AUTHOR_PURPOSE))
            try:
                grants = client.node.query("consent/granted", grantee=reader, at=str(now))
            except NodeError as exc:
                if reader == organisation or exc.status not in (401, 403, 404):
                    raise
                report.errors.append(f"practitioner {reader} skipped: {exc}")  # not registered
                continue
            for grant in grants:
                cover = _cover_of(grant, reader, organisation, now)
                if cover is not None:
                    found.setdefault(str(grant["patient"]), []).append(cover)
        return found

    def _sync_patient(self, patient: str, covers: Sequence[Cover], report: SyncReport) -> None:
        index = self.gateway.index
        organisation = self.gateway.organisation.did
        indexed = {row.record: row for row in index.of_patient(patient)}
        chain = self._chain_records(patient)
        if chain is None:  # the chain no longer lists them to us: nothing is ours to keep
            report.forgotten += index.forget_patient(patient)
            return
        gone = [name for name in indexed if name not in chain or chain[name]["erased_at"]]
        current = {}
        for name, row in indexed.items():
            if name in gone:
                continue
            latest = chain[name]["latest"]
            row = _with_chain_state(row, chain[name])
            if row.author_org == organisation or any(c.covers(row) for c in covers):
                current[name] = (row, latest)
            else:
                gone.append(name)
        erased = [name for name in gone if name in chain and chain[name]["erased_at"]]
        report.forgotten += index.forget_records(patient, gone, erased)
        stale = [row for row, latest in current.values() if _is_newer(row, latest, indexed)]
        self._index(stale, covers, report)
        self._discover(patient, chain, covers, report)

    def _chain_records(self, patient: str) -> dict[str, dict[str, Any]] | None:
        client = self.gateway.records_for(_principal(self.gateway.organisation.did, AUTHOR_PURPOSE))
        try:
            rows = client.records(patient)
        except RecordsError as exc:
            if exc.status in (403, 404):
                return None
            raise
        return {str(row["record"]): row for row in rows}

    def _index(self, rows: Sequence[Located], covers: Sequence[Cover], report: SyncReport) -> None:
        """Read `rows` through the node, each as the identity whose grant covers it (the
        organisation for what it wrote), and index what it could read."""
        by_reader: dict[tuple[str, str], list[Located]] = {}
        for row in rows:
            reader = self._reader_for(row, covers)
            if reader is not None:
                by_reader.setdefault(reader, []).append(row)
        for (did, purpose), batch in by_reader.items():
            client = self.gateway.records_for(_principal(did, purpose))
            read = read_readable(self.gateway.index, client, batch)
            self.gateway.index.put(
                (_stamped(located, resource), resource) for located, resource in read
            )
            report.indexed += len(read)

    def _reader_for(self, row: Located, covers: Sequence[Cover]) -> tuple[str, str] | None:
        if row.author_org == self.gateway.organisation.did:
            return self.gateway.organisation.did, AUTHOR_PURPOSE
        for cover in covers:
            if cover.covers(row):
                return cover.reader, cover.purpose
        return None

    def _discover(
        self,
        patient: str,
        chain: Mapping[str, Mapping[str, Any]],
        covers: Sequence[Cover],
        report: SyncReport,
    ) -> None:
        """Index the patient's covered records the index does not hold, by name: the chain
        lists their names, and each data key's wrap says its record's type and id (wrap v2,
        docs/crypto.md 6.1). Each is read as the identity whose grant covers it; what does
        not open is counted as unknown."""
        if not covers:
            return
        known = {row.record for row in self.gateway.index.of_patient(patient)}
        by_reader: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for name, rec in chain.items():
            latest = rec.get("latest") or {}
            if name in known or rec["erased_at"] or latest.get("tombstone", True):
                continue
            reader = self._reader_for(_new_row(patient, "", "", name, rec), covers)
            if reader is not None:
                by_reader.setdefault(reader, []).append(rec)
        naming_key = self._naming_key(patient, covers) if by_reader else None
        for (did, purpose), records in by_reader.items():
            client = self.gateway.records_for(_principal(did, purpose))
            read, failed = read_named(client, patient, records, naming_key)
            self.gateway.index.put(
                (_stamped(located, resource), resource) for located, resource in read
            )
            report.indexed += len(read)
            report.unknown += failed

    def _naming_key(self, patient: str, covers: Sequence[Cover]) -> bytes | None:
        """The patient's naming key, as a grant wrapped it to the organisation (asked as
        each covered reader: a grant to a practitioner is listed to the practitioner)."""
        for did, purpose in dict.fromkeys((c.reader, c.purpose) for c in covers):
            keyring = self.gateway.records_for(_principal(did, purpose)).keyring
            try:
                return keyring.naming_key(patient)
            except RecordsError:
                continue
        return None


def _cover_of(grant: Mapping[str, Any], reader: str, organisation: str, now: int) -> Cover | None:
    if grant.get("action") != "read" or grant.get("revoked_at"):
        return None
    if not int(grant["start"]) <= now < int(grant["end"]):
        return None
    if grant.get("grantee") not in (reader, organisation) or not grant.get("purposes"):
        return None
    purposes = list(grant["purposes"])
    purpose = AUTHOR_PURPOSE if AUTHOR_PURPOSE in purposes else str(purposes[0])
    # A grant to the organisation is read as the organisation; one to a practitioner, as it.
    who = organisation if grant["grantee"] == organisation else reader
    records = frozenset(grant.get("records") or ()) or None
    return Cover(who, purpose, frozenset(grant.get("scopes") or ()), records)


def _with_chain_state(row: Located, rec: Mapping[str, Any]) -> Located:
    latest = rec.get("latest") or {}
    return Located(
        row.resource_type,
        row.id,
        row.patient,
        row.record,
        row.version,
        row.last_updated,
        row.deleted,
        str(rec.get("scope") or row.scope),
        str(latest.get("org") or ""),
    )


def _is_newer(row: Located, latest: Mapping[str, Any], indexed: Mapping[str, Located]) -> bool:
    return int(latest.get("version", 0)) > indexed[row.record].version


def _new_row(patient: str, kind: str, id_: str, name: str, rec: Mapping[str, Any]) -> Located:
    latest = rec.get("latest") or {}
    return Located(
        kind,
        id_,
        patient,
        name,
        int(rec.get("versions", 1)),
        "",
        False,
        str(rec.get("scope") or ""),
        str(latest.get("org") or ""),
    )


def _stamped(located: Located, resource: Mapping[str, Any]) -> Located:
    meta = resource.get("meta") or {}
    updated = str(meta.get("lastUpdated") or located.last_updated or _now_instant())
    return Located(
        located.resource_type,
        located.id,
        located.patient,
        located.record,
        located.version,
        updated,
        False,
        located.scope,
        located.author_org,
    )


def _now_instant() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _principal(did: str, purpose: str) -> Principal:
    return Principal(FOLLOWER_CLIENT, did, ALL_SCOPES, purpose)


def _interval_from_env() -> float:
    try:
        return float(os.environ.get(SYNC_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
