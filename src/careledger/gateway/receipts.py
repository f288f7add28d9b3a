"""The node's audit receipts for the gateway's reads, kept so they can become AuditEvents.

Every blob read the gateway makes (as the organisation or one of its practitioners) is
answered with the node's signed receipt (`protocol/receipts.py`), served or refused alike:
the wallet SDK checks it and hands it here (`RecordsApi.on_receipt`, set by
`Gateway.records_for`). A receipt names journal entries, not their content; the AuditEvent
view (`gateway/views/`) later asks the node where they went (`GET /audit/entries`, to the
reader only), proves them on chain (`wallet/audit.check_receipt`) and keeps the entries it
proved as AuditEvents (table `audit_events`). So the view shows what the chain holds, each
entry checked against the batch that carries it, not the gateway's own account of its reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from careledger.gateway.db import GatewayDb
from careledger.protocol.receipts import AuditReceipt

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_receipts (
    node TEXT NOT NULL,
    first INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    digest TEXT NOT NULL,
    signature TEXT NOT NULL,
    request TEXT NOT NULL,
    reader TEXT NOT NULL,
    received REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    problem TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (node, first)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_receipts_pending ON audit_receipts (state, received);
CREATE TABLE IF NOT EXISTS audit_events (
    id TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    event TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_events_by_patient ON audit_events (patient, at);
CREATE INDEX IF NOT EXISTS audit_events_by_time ON audit_events (at);
"""

PENDING, PROVEN, FAILED = "pending", "proven", "failed"


@dataclass(frozen=True)
class KeptReceipt:
    receipt: AuditReceipt
    request: str  # hex SHA-256 of the read request's signature
    reader: str  # the did the gateway read as
    received: float  # unix seconds


def keep_receipt(db: GatewayDb, reader: str, receipt: AuditReceipt, request: str) -> None:
    """Note a read's receipt (called by the SDK for every checked receipt)."""
    if receipt.entries == 0:
        return
    with db.write() as sql:
        sql.execute(
            "INSERT OR IGNORE INTO audit_receipts (node, first, entries, digest, signature, "
            "request, reader, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                receipt.node,
                receipt.first,
                receipt.entries,
                receipt.digest,
                receipt.signature.hex(),
                request,
                reader,
                time.time(),
            ),
        )


def pending_receipts(db: GatewayDb, limit: int) -> list[KeptReceipt]:
    """Receipts whose entries are not proven yet, newest first (a denied read just made is
    what a caller looks for)."""
    with db.read() as sql:
        rows = sql.execute(
            "SELECT node, first, entries, digest, signature, request, reader, received "
            "FROM audit_receipts WHERE state = ? ORDER BY received DESC LIMIT ?",
            (PENDING, limit),
        ).fetchall()
    return [
        KeptReceipt(
            AuditReceipt(str(node), int(entries), int(first), str(digest), bytes.fromhex(sig)),
            str(request),
            str(reader),
            float(received),
        )
        for node, first, entries, digest, sig, request, reader, received in rows
    ]


def settle_receipt(db: GatewayDb, kept: KeptReceipt, state: str, problem: str = "") -> None:
    with db.write() as sql:
        sql.execute(
            "UPDATE audit_receipts SET state = ?, problem = ? WHERE node = ? AND first = ?",
            (state, problem, kept.receipt.node, kept.receipt.first),
        )


def receipt_states(db: GatewayDb) -> dict[str, int]:
    """How many receipts are pending, proven, failed (for tests and operators)."""
    with db.read() as sql:
        rows = sql.execute("SELECT state, count(*) FROM audit_receipts GROUP BY state").fetchall()
    return {str(state): int(count) for state, count in rows}
