"""The audit module's queries, answered from committed state (bounded work each).

The node answers `audit/log` to the patient only, `audit/batch` and `audit/last_seq` to
members and nodes (node/query_guard.py).
"""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.audit.entries import MAX_SEQ
from careledger.chain.modules.audit.keeper import (
    CURSOR,
    DEFAULT_LOG_LIMIT,
    MAX_LOG_LIMIT,
    AuditKeeper,
)
from careledger.chain.modules.base import Payload
from careledger.chain.state import KV


def log(kv: KV, params: Payload) -> Any:
    """The patient's access log, newest first, break-glass alerts on the first page:
    ?patient=<did>[&limit=1..500, default 100][&before=<the previous page's next>] ->
    {"alerts": [{alert, height, tx}], "entries": [{entry, height, tx, node, seq, index}],
    "next": cursor or ""}."""
    patient = params.did("patient")
    limit = (
        params.integer("limit", 1, MAX_LOG_LIMIT, digits=True)
        if params.has("limit")
        else DEFAULT_LOG_LIMIT
    )
    before = params.text("before", max_len=64, optional=True)
    params.done()
    if before and not CURSOR.fullmatch(before):
        raise TxFailure(Code.MALFORMED, "'before' is not a cursor of the audit log ('next')")
    return AuditKeeper(kv).log(patient, before, limit).to_json()


def batch(kv: KV, params: Payload) -> Any:
    """One recorded batch: ?node=<did>&seq=<n> -> {node, org, seq, height, tx, count, root}."""
    node = params.did("node")
    seq = params.integer("seq", 1, MAX_SEQ, digits=True)
    params.done()
    found = AuditKeeper(kv).batch(node, seq)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no batch {seq} of node {node}")
    return found


def last_seq(kv: KV, params: Payload) -> Any:
    """The number of a node's last recorded batch (0 for none): ?node=<did> -> {"seq": n}."""
    node = params.did("node")
    params.done()
    return {"seq": AuditKeeper(kv).last_seq(node)}
