"""Whose record a stored blob is: its header names the patient and the record it belongs to.

A blob's hash is public once its anchor is in a mempool, so anyone could anchor the same hash
under a record of their own and then erase it. Every node therefore checks the owner the
blob's header names (`crypto.envelope.record_blob_owner`) against the record that wants it,
before it anchors (`anchor_guard.py`), stores a fetched copy (`replication.py`) or deletes
one for an erasure (`erasure.py`). A copy whose header names another record is refused.
"""

from __future__ import annotations

from careledger.crypto.envelope import (
    OWNER_HEADER_BYTES,
    BlobOwner,
    MalformedBlob,
    record_blob_owner,
)
from careledger.storage.blobstore import BlobNotFound, BlobStore


def owner_of(blob: bytes) -> BlobOwner | None:
    """The record the blob's header names; None when it is not a record blob."""
    try:
        return record_blob_owner(blob)
    except MalformedBlob:
        return None


def stored_owner(store: BlobStore, digest: str) -> BlobOwner | None:
    """The owner named by a stored blob's header; None when absent or not a record blob."""
    try:
        return owner_of(store.head(digest, OWNER_HEADER_BYTES))
    except BlobNotFound:
        return None


def names(owner: BlobOwner | None, patient: str, record: str) -> bool:
    return owner is not None and (owner.patient, owner.record) == (patient, record)
