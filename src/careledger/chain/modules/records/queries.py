"""The records module's queries, answered from committed state."""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.consent import MAX_PERIOD_END, ConsentKeeper
from careledger.chain.modules.consent import MODULE as CONSENT
from careledger.chain.modules.records.keeper import RecordsKeeper
from careledger.chain.state import KV


def versions(kv: KV, params: Payload) -> Any:
    """A record and every one of its versions' anchors: ?patient=<did>&record=<name>."""
    patient, record = params.text("patient", max_len=128), params.text("record", max_len=64)
    params.done()
    keeper = RecordsKeeper(kv)
    found = keeper.record(patient, record)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no record {record} for {patient}")
    return {**found, "patient": patient, "history": keeper.versions(patient, record)}


def records(kv: KV, params: Payload) -> Any:
    """A patient's records (erased ones included, marked), each with its latest anchor."""
    patient = params.text("patient", max_len=128)
    params.done()
    keeper = RecordsKeeper(kv)
    return [
        {**rec, "latest": keeper.version(patient, rec["record"], rec["versions"])}
        for rec in keeper.records_of(patient)
    ]


MAX_BLOBS_QUERY = 5000


def blob(kv: KV, params: Payload) -> Any:
    """The record version a blob anchors, with the record's state: ?hash=<blob hash>."""
    digest = params.text("hash", max_len=64)
    params.done()
    found = _blob(RecordsKeeper(kv), digest)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"blob {digest} anchors no record")
    return found


def blobs(kv: KV, params: Payload) -> Any:
    """`blob` for many hashes at once (JSON {"hashes": [...]}): one answer each, in order,
    null for a hash that anchors no record. The node's batch fetch authorises with it."""
    hashes = params.text_list("hashes", MAX_BLOBS_QUERY, max_len=64, distinct=False)
    params.done()
    keeper = RecordsKeeper(kv)
    return [_blob(keeper, digest) for digest in hashes]


def _blob(keeper: RecordsKeeper, digest: str) -> dict[str, Any] | None:
    found = keeper.blob(digest)
    if found is None:
        return None
    rec = keeper.record(found["patient"], found["record"]) or {}
    anchor = keeper.version(found["patient"], found["record"], found["version"]) or {}
    return {**found, "erased_at": rec.get("erased_at", 0), "author": anchor.get("author", "")}


def scope_keys(kv: KV, params: Payload) -> Any:
    """A patient's published scope public keys, every epoch: ?patient=<did>."""
    patient = params.text("patient", max_len=128)
    params.done()
    return RecordsKeeper(kv).scope_keys(patient)


def read_access(kv: KV, params: Payload) -> Any:
    """May `reader` read these blobs for `purpose` at `at` (unix seconds, the caller's clock:
    the decision is not consensus)? JSON {"reader", "purpose" (a PurposeOfUse code or ""),
    "at", "hashes": [...]}; one answer per hash, in order: {"status": 200 | 403 | 404 | 410,
    "reason", "patient", "record", "version", "scope", "grant"}. The records keeper finds the
    record; `ConsentKeeper.read_decision` decides (the one decision function)."""
    reader = params.text("reader", max_len=128)
    purpose = params.text("purpose", max_len=32, optional=True, min_len=0)
    at = params.integer("at", 0, MAX_PERIOD_END, digits=True)
    hashes = params.text_list("hashes", MAX_BLOBS_QUERY, max_len=64, distinct=False)
    params.done()
    records, consent = RecordsKeeper(kv), ConsentKeeper(kv.sibling(CONSENT))
    return [_access(records, consent, digest, reader, purpose, at) for digest in hashes]


def _access(
    records: RecordsKeeper,
    consent: ConsentKeeper,
    digest: str,
    reader: str,
    purpose: str,
    at: int,
) -> dict[str, Any]:
    found = records.blob(digest)
    if found is None:
        return _answer(404, f"blob {digest} anchors no record")
    patient, record, version = found["patient"], found["record"], found["version"]
    rec = records.record(patient, record) or {}
    scope, org, erased_at = rec.get("scope", ""), rec.get("org", ""), rec.get("erased_at", 0)
    where = {"patient": patient, "record": record, "version": version, "scope": scope}
    if erased_at:
        return _answer(410, f"record {record} was erased at height {erased_at}", **where)
    decision = consent.read_decision(reader, patient, record, scope, org, purpose, at)
    status = 200 if decision.allowed else 403
    return _answer(status, decision.reason, grant=decision.grant, **where)


def _answer(status: int, reason: str, **found: Any) -> dict[str, Any]:
    empty = {"patient": "", "record": "", "version": 0, "scope": "", "grant": ""}
    return {"status": status, "reason": reason, **empty, **found}
