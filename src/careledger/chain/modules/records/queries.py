"""The records module's queries, answered from committed state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.consent import MAX_PERIOD_END, ConsentKeeper, DecisionMemo
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
    "reason", "patient", "record", "version", "scope", "grant", "basis" (Decision.basis: "patient",
    "author", "grant", "delegate", "emergency"; "" when denied)}. The records keeper finds the
    record version; `ConsentKeeper.read_decision` decides (the one decision function), told
    the organisation that version's author wrote for (the author organisation reads what it
    wrote, not a later version the patient or anyone else wrote).

    Bounded work: the records are decided patient by patient with one DecisionMemo, so each
    of a patient's grant lists is read once per query, not once per hash (1,000 grants and
    5,000 hashes: 1,000 grant reads instead of 5,000,000; BENCHMARKS.md, issue 8)."""
    reader = params.text("reader", max_len=128)
    purpose = params.text("purpose", max_len=32, optional=True, min_len=0)
    at = params.integer("at", 0, MAX_PERIOD_END, digits=True)
    hashes = params.text_list("hashes", MAX_BLOBS_QUERY, max_len=64, distinct=False)
    params.done()
    records, consent = RecordsKeeper(kv), ConsentKeeper(kv.sibling(CONSENT))
    found = [_locate(records, digest) for digest in hashes]
    memo = DecisionMemo()
    for where in sorted((w for w in found if isinstance(w, _Found)), key=lambda w: w.patient):
        where.decide(consent, reader, purpose, at, memo)
    return [where.answer if isinstance(where, _Found) else where for where in found]


@dataclass
class _Found:
    """A hash's record, to be decided."""

    patient: str
    record: str
    version: int
    scope: str
    author_org: str  # the organisation the version's author wrote it for ("": the patient)
    answer: dict[str, Any] = field(default_factory=dict)

    def decide(
        self, consent: ConsentKeeper, reader: str, purpose: str, at: int, memo: DecisionMemo
    ) -> None:
        decision = consent.read_decision(
            reader, self.patient, self.record, self.scope, self.author_org, purpose, at, memo
        )
        status = 200 if decision.allowed else 403
        self.answer = _answer(
            status, decision.reason, grant=decision.grant, basis=decision.basis, **self._where()
        )

    def _where(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "record": self.record,
            "version": self.version,
            "scope": self.scope,
        }


def _locate(records: RecordsKeeper, digest: str) -> _Found | dict[str, Any]:
    """The record a hash anchors, or the final answer when there is nothing to decide."""
    found = records.blob(digest)
    if found is None:
        return _answer(404, f"blob {digest} anchors no record")
    patient, record, version = found["patient"], found["record"], found["version"]
    rec = records.record(patient, record) or {}
    anchor = records.version(patient, record, version) or {}
    located = _Found(patient, record, version, rec.get("scope", ""), anchor.get("org", ""))
    if rec.get("erased_at", 0):
        return _answer(
            410, f"record {record} was erased at height {rec['erased_at']}", **located._where()
        )
    return located


def _answer(status: int, reason: str, **found: Any) -> dict[str, Any]:
    empty = {"patient": "", "record": "", "version": 0, "scope": "", "grant": "", "basis": ""}
    return {"status": status, "reason": reason, **empty, **found}
