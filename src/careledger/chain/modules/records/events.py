"""The records module's events: what a committed block tells the node and the wallet."""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.modules.base import TypedEvent


@dataclass(frozen=True)
class RecordAnchored(TypedEvent):
    """A record version was anchored (`blob_hash` empty for a tombstone)."""

    TYPE = "records.anchored"
    patient: str
    record: str
    version: str
    blob_hash: str
    author: str


@dataclass(frozen=True)
class ScopeKeyPublished(TypedEvent):
    TYPE = "records.scope_key"
    patient: str
    scope: str
    epoch: str


@dataclass(frozen=True)
class RecordsErased(TypedEvent):
    """The patient erased these records; every node deletes these blobs."""

    TYPE = "records.erased"
    patient: str
    records: tuple[str, ...]
    blob_hashes: tuple[str, ...]
