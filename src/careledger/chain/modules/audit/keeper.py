"""The audit module's state: each node's batches and each patient's access log.

Layout under the `audit/` prefix:
  seq/<node did>                      the node's last recorded batch number
  batch/<node did>/<seq, 16 digits>   {node, org, seq, height, tx, count, root}: `tx` the
                                      transaction's hash (hex), `root` the RFC 6962 Merkle
                                      root (hex) of the batch's entry leaves, in order
  log/<patient>/<h>/<t>/<i>           one access entry to the patient's records, short:
                                      {"e": [reader, org, record prefix, version, purpose,
                                      outcome, at], "b": [node, seq, index]}: the patient is
                                      in the key, the height and transaction in the batch row
                                      (`log` answers the full entry and both)
  alert/<patient>/<h>/<t>/<n>         a break-glass alert: {alert, height, tx}

<h>, <t>, <i>, <n> are the height (16 digits), the transaction's index in its block (8), the
entry's index in its batch (4) and the alert's number within its transaction (4), each
*inverted* (10^digits - 1 - value): a prefix scan of a patient's log meets the newest entry
first, so a page of the log costs one index seek and `limit` rows however long the log is.
An entry that names no patient (a read of a blob that anchors no record) is in its batch and
its root but in nobody's log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from careledger.chain.modules.audit.entries import MAX_BATCH_ENTRIES, AccessEntry
from careledger.chain.modules.base import TxContext
from careledger.chain.state import KV
from careledger.crypto.merkle import merkle_root

MODULE = "audit"
HEIGHT_DIGITS, TX_DIGITS, INDEX_DIGITS = 16, 8, 4
SEQ_DIGITS = 16
MAX_LOG_LIMIT = 500
DEFAULT_LOG_LIMIT = 100
# A cursor of the log (`before`, `next`): the position of the last entry of the page.
CURSOR = re.compile(rf"\d{{{HEIGHT_DIGITS}}}/\d{{{TX_DIGITS}}}/\d{{{INDEX_DIGITS}}}")
assert MAX_BATCH_ENTRIES < 10**INDEX_DIGITS


def _inverted(value: int, digits: int) -> str:
    if not 0 <= value < 10**digits:
        raise ValueError(f"{value} does not fit in {digits} digits")
    return f"{10**digits - 1 - value:0{digits}d}"


@dataclass(frozen=True)
class TxPosition:
    """Where the transaction being executed is: its block height, hash (hex), index."""

    height: int
    tx: str
    index: int

    def key(self) -> str:
        return f"{_inverted(self.height, HEIGHT_DIGITS)}/{_inverted(self.index, TX_DIGITS)}"


@dataclass(frozen=True)
class LogPage:
    alerts: list[dict[str, Any]]  # newest first; on the first page only
    entries: list[dict[str, Any]]  # newest first
    next: str  # the cursor of the next page ("" when this is the last)

    def to_json(self) -> dict[str, Any]:
        return {"alerts": self.alerts, "entries": self.entries, "next": self.next}


class AuditKeeper:
    """Reads the audit state; writes it inside a transaction (`AuditKeeper.of(ctx)`)."""

    def __init__(self, kv: KV, position: TxPosition | None = None) -> None:
        self.kv = kv
        self._position = position

    @classmethod
    def of(cls, ctx: TxContext) -> AuditKeeper:
        """The keeper of the transaction being executed (it knows its height and hash)."""
        return cls(ctx.kv(MODULE), TxPosition(ctx.height, ctx.tx_hash, ctx.tx_index))

    @property
    def position(self) -> TxPosition:
        if self._position is None or not self._position.tx:
            raise RuntimeError("the audit state is written only while a block executes")
        return self._position

    # --- batches --------------------------------------------------------------------------

    def last_seq(self, node: str) -> int:
        value = self.kv.get(f"seq/{node}")
        return value if isinstance(value, int) else 0

    def batch(self, node: str, seq: int) -> dict[str, Any] | None:
        value = self.kv.get(f"batch/{node}/{seq:0{SEQ_DIGITS}d}")
        return value if isinstance(value, dict) else None

    def record_batch(
        self, node: str, org: str, seq: int, entries: Sequence[AccessEntry]
    ) -> dict[str, Any]:
        """Record a checked batch (the caller checked sender, sequence and time): the
        node's last seq, the batch row, and each entry in its patient's log."""
        at = self.position
        batch = {
            "node": node,
            "org": org,
            "seq": seq,
            "height": at.height,
            "tx": at.tx,
            "count": len(entries),
            "root": merkle_root([e.leaf() for e in entries]).hex(),
        }
        self.kv.set(f"seq/{node}", seq)
        self.kv.set(f"batch/{node}/{seq:0{SEQ_DIGITS}d}", batch)
        for index, entry in enumerate(entries):
            if entry.patient:
                where = f"{at.key()}/{_inverted(index, INDEX_DIGITS)}"
                self.kv.set(f"log/{entry.patient}/{where}", _short_row(entry, node, seq, index))
        return batch

    # --- alerts ---------------------------------------------------------------------------

    def record_alert(self, patient: str, alert: dict[str, Any]) -> None:
        """Put an alert (a break-glass: the consent module's) on top of the patient's log."""
        at = self.position
        prefix = f"alert/{patient}/{at.key()}/"
        number = sum(1 for _ in self.kv.items(prefix))
        row = {"alert": alert, "height": at.height, "tx": at.tx}
        self.kv.set(f"{prefix}{_inverted(number, INDEX_DIGITS)}", row)

    # --- the patient's log ----------------------------------------------------------------

    def log(self, patient: str, before: str = "", limit: int = DEFAULT_LOG_LIMIT) -> LogPage:
        """A page of the patient's log, newest first: at most `limit` entries older than the
        cursor `before` ("" for the newest), and on the first page the alerts (at most
        `limit`, newest first). `next` is the cursor of the following page."""
        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LOG_LIMIT}")
        if before and not CURSOR.fullmatch(before):
            raise ValueError("not a cursor of the audit log")
        alerts = []
        if not before:
            alerts = [row for _, row in islice(self.kv.items(f"alert/{patient}/"), limit)]
        prefix = f"log/{patient}/"
        rows = list(islice(self.kv.items(prefix, after=before), limit + 1))
        more = len(rows) > limit
        page = rows[:limit]
        cursor = page[-1][0][len(prefix) :] if more else ""
        batches: dict[tuple[str, int], dict[str, Any]] = {}  # one read per batch of the page
        return LogPage(alerts, [self._logged(patient, row, batches) for _, row in page], cursor)

    def _logged(
        self, patient: str, row: dict[str, Any], batches: dict[tuple[str, int], dict[str, Any]]
    ) -> dict[str, Any]:
        """A log row as the query answers it: {entry (full compact JSON), height, tx, node,
        seq, index}."""
        reader, org, record, version, purpose, outcome, at = row["e"]
        node, seq, index = row["b"]
        batch = batches.get((node, seq))
        if batch is None:
            batch = batches[(node, seq)] = self.batch(node, seq) or {"height": 0, "tx": ""}
        entry = AccessEntry(patient, record, version, reader, org, purpose, outcome, at)
        return {
            "entry": entry.to_json(),
            "height": batch["height"],
            "tx": batch["tx"],
            "node": node,
            "seq": seq,
            "index": index,
        }


def _short_row(entry: AccessEntry, node: str, seq: int, index: int) -> dict[str, Any]:
    e = entry
    return {
        "e": [e.reader, e.org, e.record, e.version, e.purpose, e.outcome, e.at],
        "b": [node, seq, index],
    }
