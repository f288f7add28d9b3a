"""The audit module's events: a batch of access entries recorded, a break-glass raised."""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.modules.base import TypedEvent


@dataclass(frozen=True)
class AccessBatchRecorded(TypedEvent):
    """A node's batch committed: `seq` and `count` in decimal, `root` the Merkle root (hex)
    of its entries' leaves. The node's batcher waits for it; a wallet may too."""

    TYPE = "audit.batch_recorded"
    node: str
    org: str
    seq: str
    count: str
    root: str


@dataclass(frozen=True)
class BreakGlassAlert(TypedEvent):
    """An emergency read opened on a patient's records (emitted by the consent module's
    break_glass, which records the alert with AuditKeeper.record_alert): `until` in unix
    seconds (decimal)."""

    TYPE = "audit.break_glass"
    patient: str
    id: str
    requester: str
    org: str
    scopes: tuple[str, ...]
    until: str
