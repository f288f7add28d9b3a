"""The records module's pre-submit checks (`node/pipeline.py`): no anchor without its blob.

A `records/anchor` (or each anchor of a `records/anchor_batch`) is refused at this node's API
(nothing enters the mempool) unless its blob is already stored here: a writer uploads first,
then anchors, so every anchored blob has at least one copy the moment its anchor commits. A
blob uploaded but never anchored (an *orphan*: the writer crashed, or its anchor was refused)
is not a record: no query lists it, no route serves it, and it expires (`node/erasure.py`):
an anchor for a blob uploaded more than ANCHORABLE_AGE ago is refused too, so that it never
races the orphan sweep. A batch is refused whole when any of its anchors is.

The payload is parsed once per transaction and each blob opened once (its header and its age
from the same file); the checks then run on each anchor in the order they are listed in
`ANCHOR_CHECKS` (cheapest first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.records import MODULE
from careledger.chain.modules.records.messages import Anchor, AnchorBatch
from careledger.chain.tx import SignedTx
from careledger.crypto.envelope import OWNER_HEADER_BYTES, BlobOwner
from careledger.node.erasure import young_enough_to_anchor
from careledger.node.ownership import names, owner_of
from careledger.node.pipeline import Refusal, SubmitPipeline
from careledger.storage.blobstore import BlobNotFound, BlobStore

ANCHOR = f"{MODULE}/anchor"
ANCHOR_BATCH = f"{MODULE}/anchor_batch"


@dataclass(frozen=True)
class StoredBlob:
    """What the checks need of an anchor's blob as stored here (None fields: not stored)."""

    stored_at: float | None
    owner: BlobOwner | None


class AnchorCheck(Protocol):
    def __call__(self, anchor: Anchor, blob: StoredBlob) -> Refusal | None: ...


def register_records_checks(pipeline: SubmitPipeline, store: BlobStore) -> None:
    """The records module's checks, for single anchors and batches alike."""
    checks = AnchorsChecked(store, (BlobStoredHere(), BlobNamesItsRecord()))
    pipeline.register(ANCHOR, checks)
    pipeline.register(ANCHOR_BATCH, checks)


def anchors_of(stx: SignedTx) -> Sequence[Anchor] | None:
    """The anchors this transaction carries; None for a payload the chain will refuse anyway
    (the driver's check_tx then answers with the precise error)."""
    try:
        if stx.tx.type == ANCHOR_BATCH:
            return AnchorBatch.parse(Payload(stx.tx.payload)).anchors
        return (Anchor.parse(Payload(stx.tx.payload)),)
    except TxFailure:
        return None


class AnchorsChecked:
    """Runs `checks` on every anchor (not a tombstone) of a transaction; the first refusal
    refuses the transaction, naming the anchor's place in a batch."""

    def __init__(self, store: BlobStore, checks: Sequence[AnchorCheck]) -> None:
        self._store = store
        self._checks = checks

    def __call__(self, stx: SignedTx) -> Refusal | None:
        anchors = anchors_of(stx)
        if anchors is None:
            return None
        for index, anchor in enumerate(anchors):
            if anchor.tombstone:
                continue
            blob = self._stored(anchor.blob_hash)
            for check in self._checks:
                refused = check(anchor, blob)
                if refused is not None:
                    where = f"anchor {index} of {len(anchors)}: " if len(anchors) > 1 else ""
                    return Refusal(refused.code, where + refused.log)
        return None

    def _stored(self, digest: str) -> StoredBlob:
        try:
            header, stored_at = self._store.head_and_stored_at(digest, OWNER_HEADER_BYTES)
        except BlobNotFound:
            return StoredBlob(None, None)
        return StoredBlob(stored_at, owner_of(header))


class BlobStoredHere:
    """Refuses an anchor whose blob this node does not hold, or has held too long."""

    def __call__(self, anchor: Anchor, blob: StoredBlob) -> Refusal | None:
        if blob.stored_at is not None and young_enough_to_anchor(blob.stored_at):
            return None
        return Refusal(
            Code.NOT_FOUND,
            f"blob {anchor.blob_hash} is not stored on this node, or was stored too long ago"
            " (orphans expire): upload it before its anchor",
        )


class BlobNamesItsRecord:
    """Refuses an anchor whose blob's header names another patient or record: a blob hash
    seen in a mempool cannot be claimed by anchoring it under a record of one's own."""

    def __call__(self, anchor: Anchor, blob: StoredBlob) -> Refusal | None:
        if names(blob.owner, anchor.patient, anchor.record):
            return None
        owner = blob.owner
        named = "no record" if owner is None else f"record {owner.record} of {owner.patient}"
        return Refusal(
            Code.CONFLICT,
            f"blob {anchor.blob_hash} names {named} in its header, not record {anchor.record}"
            f" of {anchor.patient}",
        )
