"""Reading indexed records through the node, leaving out what it refuses.

Search pages and the chain follower read the same way: each record's latest anchor from the
chain (`records/versions`, answered only to parties of the patient's consent), the blobs in
one fetch (the node decides consent per blob for the stated purpose and audits each read),
each blob checked against its anchor and opened. A record the node refuses, or that is
erased, deleted or does not open, is not returned; an erased one leaves the index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from careledger.gateway.index.store import Located, RecordIndex
from careledger.wallet.reading import checked_resource
from careledger.wallet.records import RecordRef, RecordsClient, RecordsError

log = logging.getLogger(__name__)

# Up to this many records of one patient on a page: one `records/versions` query each; more:
# one `records/records` query for all of the patient's records.
PER_RECORD_QUERIES = 2


def read_readable(
    index: RecordIndex, client: RecordsClient, items: Sequence[Located]
) -> list[tuple[Located, dict[str, Any]]]:
    """The latest version of each record the node lets `client` read, in order: each
    record's anchor from the chain, the blobs in one audited fetch, each checked and opened.
    Refused, erased, deleted or altered records are left out (erased ones leave the index)."""
    anchored: list[tuple[Located, RecordRef, dict[str, Any]]] = []
    erased: list[Located] = []
    states = _chain_states(client, items)
    for located in items:
        ref = RecordRef(located.patient, located.resource_type, located.id, located.record)
        state = states.get((located.patient, located.record))
        if state is None:
            continue  # not a party of the patient's consent (403), or gone (404)
        if state["erased_at"]:
            erased.append(located)
            continue
        if not state["latest"]["tombstone"]:
            anchored.append((located, ref, state["latest"]))
    for located in erased:
        index.forget_records(located.patient, [located.record])
    if not anchored:
        return []
    fetched = client.fetch([anchor["blob_hash"] for _, _, anchor in anchored])
    readable = []
    for (located, ref, anchor), (status, blob) in zip(anchored, fetched, strict=True):
        if status != 200:
            continue  # the node refused it (consent) or it is gone: never in the answer
        try:
            resource = client.open_blob(ref, anchor, blob).resource()
        except RecordsError as exc:
            log.warning("search: %s/%s does not open: %s", ref.resource_type, ref.resource_id, exc)
            continue
        current = replace(
            located,
            version=int(anchor["version"]),
            author_org=str(anchor.get("org") or ""),
            deleted=False,
        )
        readable.append((current, _as_served(resource, current)))
    return readable


def read_named(
    client: RecordsClient,
    patient: str,
    records: Sequence[Mapping[str, Any]],
    naming_key: bytes | None,
) -> tuple[list[tuple[Located, dict[str, Any]]], int]:
    """The latest version of records known only by their names (`records/records` rows),
    in one audited fetch: each opened by name (its type and id learnt from the data key's
    wrap, the name checked against `naming_key`). What it read, and how many did not open
    or were refused (logged)."""
    if not records:
        return [], 0
    fetched = client.fetch([rec["latest"]["blob_hash"] for rec in records])
    readable, failed = [], 0
    for rec, (status, blob) in zip(records, fetched, strict=True):
        latest = rec["latest"]
        try:
            if status != 200:
                raise RecordsError(blob.decode(errors="replace"), status)
            ref, opened = client.reader.open_named(patient, rec, latest, blob, naming_key)
            resource = checked_resource(ref, opened)
        except RecordsError as exc:
            log.warning("follower: record %s does not open: %s", rec["record"], exc)
            failed += 1
            continue
        located = Located(
            ref.resource_type,
            ref.resource_id,
            patient,
            ref.name,
            int(latest["version"]),
            "",
            False,
            str(rec.get("scope") or ""),
            str(latest.get("org") or ""),
        )
        readable.append((located, _as_served(resource, located)))
    return readable, failed


def _chain_states(
    client: RecordsClient, items: Sequence[Located]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each record's state on chain ({erased_at, latest: its latest anchor}), by (patient,
    record): one `records/records` query for a patient with several records on the page,
    else `records/versions` for the one. A refused or failed query leaves its records out."""
    by_patient: dict[str, list[Located]] = {}
    for located in items:
        by_patient.setdefault(located.patient, []).append(located)
    states: dict[tuple[str, str], dict[str, Any]] = {}
    for patient, located_list in by_patient.items():
        try:
            if len(located_list) > PER_RECORD_QUERIES:
                wanted = {located.record for located in located_list}
                for rec in client.records(patient):
                    if rec["record"] in wanted:
                        states[(patient, str(rec["record"]))] = rec
                continue
            for located in located_list:
                ref = RecordRef(patient, located.resource_type, located.id, located.record)
                info = client.versions(ref)
                latest = max(info["history"], key=lambda anchor: int(anchor["version"]))
                states[(patient, located.record)] = {**info, "latest": latest}
        except RecordsError:
            continue
    return states


def _as_served(resource: dict[str, Any], located: Located) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(located.version)
    meta.setdefault("lastUpdated", located.last_updated)
    return {**resource, "id": located.id, "meta": meta}
