"""The audit module's transaction payloads: parsed, validated, typed.

`audit/record_batch` carries a compact batch of access entries (entries.py holds the format:
the same codec the node encodes with and the wallet decodes with). Everything that can be
checked without the state is checked here, before a block.
"""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.audit.entries import AccessEntry, BadBatch, decode_batch
from careledger.chain.modules.base import Payload


@dataclass(frozen=True)
class RecordBatch:
    node: str  # the node that served the reads; must be the sender
    seq: int  # this node's batch number: 1, 2, ...
    time: int  # unix seconds: the batch's base time (its earliest entry's)
    entries: tuple[AccessEntry, ...]  # compact, in the batch's order

    @classmethod
    def parse(cls, p: Payload) -> RecordBatch:
        payload = p.whole()
        try:
            entries = decode_batch(payload)
        except BadBatch as exc:
            raise TxFailure(Code.BAD_BATCH, f"audit batch: {exc}") from None
        return cls(str(payload["node"]), int(payload["seq"]), int(payload["time"]), tuple(entries))

    @property
    def last_at(self) -> int:
        return max(e.at for e in self.entries)
