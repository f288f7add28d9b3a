"""The records module's pre-submit checks (`node/pipeline.py`): no anchor without its blob.

A `records/anchor` is refused at this node's API (404, nothing enters the mempool) unless its
blob is already stored here: a writer uploads first, then anchors, so every anchored blob has
at least one copy the moment its anchor commits. A blob uploaded but never anchored (an
*orphan*: the writer crashed, or its anchor was refused) is not a record: no query lists it,
no route serves it, and it expires (`node/erasure.py`): an anchor for a blob uploaded more
than ANCHORABLE_AGE ago is refused too, so that it never races the orphan sweep.

More checks of anchors register beside this one in `register_records_checks`, in the order
they should run (cheapest first).
"""

from __future__ import annotations

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.records import MODULE
from careledger.chain.modules.records.messages import Anchor
from careledger.chain.tx import SignedTx
from careledger.node.erasure import anchorable
from careledger.node.ownership import names, stored_owner
from careledger.node.pipeline import Refusal, SubmitPipeline
from careledger.storage.blobstore import BlobStore

ANCHOR = f"{MODULE}/anchor"


def register_records_checks(pipeline: SubmitPipeline, store: BlobStore) -> None:
    """The records module's checks, in the order they run."""
    pipeline.register(ANCHOR, BlobStoredHere(store))
    pipeline.register(ANCHOR, BlobNamesItsRecord(store))  # reads a blob that exists


def parse_anchor(stx: SignedTx) -> Anchor | None:
    """The anchor this transaction carries; None for a payload the chain will refuse anyway
    (the driver's check_tx then answers with the precise error)."""
    try:
        return Anchor.parse(Payload(stx.tx.payload))
    except TxFailure:
        return None


class BlobStoredHere:
    """Refuses an anchor (not a tombstone) whose blob this node does not hold."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store

    def __call__(self, stx: SignedTx) -> Refusal | None:
        anchor = parse_anchor(stx)
        if anchor is None or anchor.tombstone or anchorable(self._store, anchor.blob_hash):
            return None
        return Refusal(
            Code.NOT_FOUND,
            f"blob {anchor.blob_hash} is not stored on this node, or was stored too long ago"
            " (orphans expire): upload it before its anchor",
        )


class BlobNamesItsRecord:
    """Refuses an anchor whose blob's header names another patient or record: a blob hash
    seen in a mempool cannot be claimed by anchoring it under a record of one's own."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store

    def __call__(self, stx: SignedTx) -> Refusal | None:
        anchor = parse_anchor(stx)
        if anchor is None or anchor.tombstone:
            return None
        owner = stored_owner(self._store, anchor.blob_hash)
        if names(owner, anchor.patient, anchor.record):
            return None
        named = "no record" if owner is None else f"record {owner.record} of {owner.patient}"
        return Refusal(
            Code.CONFLICT,
            f"blob {anchor.blob_hash} names {named} in its header, not record {anchor.record}"
            f" of {anchor.patient}",
        )
