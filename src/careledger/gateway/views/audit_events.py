"""AuditEvent: the access entries of this organisation's reads, proven on chain.

The node receipts every read (gateway/receipts.py keeps them); this view asks the node where
the receipted entries went, checks them against their batch (`wallet/audit.check_receipt`)
and maps each with `to_audit_event` (BALP read). A refused read (403) is an entry like any
other, outcome 4. id = `<32 hex of the batch transaction>-<index>`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson

from careledger.gateway import receipts
from careledger.gateway.context import Gateway
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.views.base import MAX_COUNT, Patients, only
from careledger.protocol.receipts import BadReceipt
from careledger.wallet.audit import (
    DID_SYSTEM,
    OUTCOME_CODES,
    NotAudited,
    Receipted,
    check_receipt,
    to_audit_event,
)
from careledger.wallet.evidence import ProofError
from careledger.wallet.node_client import NodeClient, NodeError

RESOLVE_PER_REQUEST = 32  # receipts proven per AuditEvent request (each costs chain reads)
RECEIPT_PATIENCE = 300.0  # seconds a receipt may stay unproven before it counts as failed
_AUDIT_ID = re.compile(r"[0-9a-f]{32}-[0-9]{1,6}")


class AuditEventView:
    kind = "AuditEvent"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.patients = Patients(gateway)
        self._readers: dict[str, NodeClient] = {}
        self._resolving = threading.Lock()

    def search(self, principal: Principal, params: Mapping[str, str]) -> list[dict[str, Any]]:
        only(params, {"patient", "outcome", "_id"}, self.kind)
        self.resolve_receipts()
        clauses, values = [], []
        if "patient" in params:
            clauses.append("patient = ?")
            values.append(self.patients.did(params["patient"]))
        if "_id" in params:
            clauses.append("id = ?")
            values.append(params["_id"])
        if "outcome" in params:  # FHIR codes (0, 4, 8) -> the entries' outcomes
            wanted = params["outcome"].split(",")
            names = sorted(name for name, code in OUTCOME_CODES.items() if code in wanted)
            clauses.append(f"outcome IN ({', '.join('?' * len(names)) or 'NULL'})")
            values += names
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.gateway.audit_db.read() as sql:
            rows = sql.execute(
                f"SELECT event FROM audit_events {where} ORDER BY at DESC, id LIMIT ?",
                (*values, MAX_COUNT),
            ).fetchall()
        return [self._with_references(orjson.loads(row[0])) for row in rows]

    def read(self, principal: Principal, resource_id: str) -> dict[str, Any]:
        if _AUDIT_ID.fullmatch(resource_id):
            self.resolve_receipts()
            with self.gateway.audit_db.read() as sql:
                row = sql.execute(
                    "SELECT event FROM audit_events WHERE id = ?", (resource_id,)
                ).fetchone()
            if row is not None:
                return self._with_references(orjson.loads(row[0]))
        raise FhirError(404, f"no AuditEvent/{resource_id}")

    def _with_references(self, event: dict[str, Any]) -> dict[str, Any]:
        """A stored event with its patient (and record) as FHIR references where known."""
        for entity in event.get("entity", []):
            identifier = entity.get("what", {}).get("identifier", {})
            if identifier.get("system") == DID_SYSTEM:
                patient_id = self.gateway.index.patient_id(str(identifier["value"]))
                if patient_id is not None:
                    entity["what"]["reference"] = f"Patient/{patient_id}"
        return event

    def resolve_receipts(self, limit: int = RESOLVE_PER_REQUEST) -> None:
        """Prove the entries of pending receipts on chain and keep them as AuditEvents."""
        with self._resolving:
            for kept in receipts.pending_receipts(self.gateway.audit_db, limit):
                self._resolve(kept)

    def _resolve(self, kept: receipts.KeptReceipt) -> None:
        node = self._reader_node(kept.reader)
        receipt = kept.receipt
        try:
            located = node.get(
                "/audit/entries", first=str(receipt.first), count=str(receipt.entries)
            )
            committed = all(row.get("committed") for row in located["entries"])
            if not committed:
                if time.time() - kept.received > RECEIPT_PATIENCE:
                    receipts.settle_receipt(
                        self.gateway.audit_db, kept, receipts.FAILED, "not on chain"
                    )
                return
            proven = check_receipt(Receipted(receipt, kept.request), node, grace=0)
        except BadReceipt as exc:  # not the node's signature for this read: never will be
            receipts.settle_receipt(self.gateway.audit_db, kept, receipts.FAILED, str(exc)[:500])
            return
        except (NodeError, NotAudited, ProofError) as exc:
            # Perhaps not yet (the block that proves the batch is not in, the node is busy):
            # asked again next time, until the receipt is older than RECEIPT_PATIENCE.
            if time.time() - kept.received > RECEIPT_PATIENCE:
                receipts.settle_receipt(
                    self.gateway.audit_db, kept, receipts.FAILED, str(exc)[:500]
                )
            return
        with self.gateway.audit_db.write() as sql:
            for access in proven:
                event = to_audit_event(access)
                event["id"] = f"{access.tx[:32]}-{access.index}"
                sql.execute(
                    "INSERT OR REPLACE INTO audit_events (id, patient, at, outcome, event) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        event["id"],
                        access.entry.patient,
                        access.entry.at,
                        access.entry.outcome,
                        orjson.dumps(event).decode(),
                    ),
                )
            sql.execute(
                "UPDATE audit_receipts SET state = ? WHERE node = ? AND first = ?",
                (receipts.PROVEN, receipt.node, receipt.first),
            )

    def _reader_node(self, reader: str) -> NodeClient:
        node = self._readers.get(reader)
        if node is None:
            node = self._readers[reader] = self.gateway.node.signed_as(self.gateway.key_of(reader))
        return node
