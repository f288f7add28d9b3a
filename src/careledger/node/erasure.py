"""Erasure on this node: delete the blobs of records their patients erased.

`BlobEraser.on_commit` is an application commit listener. For every committed
`records.erased` event it deletes the listed blobs (ciphertext and wrapped keys, one file per
record version) durably. `sweep_erased` repeats that at start-up, for a node that crashed
between the commit and the deletions.
"""

from __future__ import annotations

import orjson

from careledger.chain.app import Application, CommittedBlock
from careledger.chain.modules.records.events import RecordsErased
from careledger.storage.blobstore import BlobStore


class BlobEraser:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def on_commit(self, block: CommittedBlock) -> None:
        """Delete the blobs of records erased in this block (an Application commit listener)."""
        for result in block.tx_results:
            for erased in RecordsErased.all_in(result.events):
                for digest in erased.blob_hashes:
                    self.store.delete(digest)


def sweep_erased(store: BlobStore, app: Application) -> int:
    """Delete stored blobs whose records are erased (a crash may have skipped on_commit)."""
    removed = 0
    for digest in list(store):
        found = app.query("records/blob", orjson.dumps({"hash": digest}))
        if found.code == 0 and orjson.loads(found.value)["erased_at"]:
            removed += store.delete(digest)
    return removed
