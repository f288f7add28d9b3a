"""The records module's queries, answered from committed state."""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
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
