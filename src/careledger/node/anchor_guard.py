"""No anchor without its blob: the node refuses a `records/anchor` whose blob it lacks.

`AnchorGuard` wraps the consensus driver so that a `records/anchor` transaction is refused at
this node's API (404, nothing enters the mempool) unless its blob is already stored here. A
blob uploaded but never anchored (an *orphan*: the writer crashed, or its anchor was
refused) is not a record: no query lists it, no route serves it, and it expires
(`node/erasure.py`): an anchor for a blob uploaded more than ANCHORABLE_AGE ago is refused too.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.app import QueryResult
from careledger.chain.codes import Code, TxFailure
from careledger.chain.tx import decode_tx, tx_hash
from careledger.consensus.driver import Admission, ConsensusDriver, Submission
from careledger.node.erasure import anchorable
from careledger.storage.blobstore import BlobStore


class AnchorGuard:
    """A consensus driver that refuses a records/anchor whose blob this node does not hold."""

    _MARK = b'"type":"records/anchor"'

    def __init__(self, driver: ConsensusDriver, store: BlobStore) -> None:
        self._driver = driver
        self._store = store

    @property
    def chain_id(self) -> str:
        return self._driver.chain_id

    async def submit(self, raw: bytes, wait: bool) -> Submission:
        return await (await self.admit(raw, wait)).outcome()

    async def admit(self, raw: bytes, wait: bool) -> Admission:
        if self._MARK in raw:
            missing = self._missing_blob(raw)
            if missing:
                return Admission(Submission(tx_hash(raw).hex(), int(Code.NOT_FOUND), missing))
        return await self._driver.admit(raw, wait)

    def _missing_blob(self, raw: bytes) -> str:
        try:
            payload = decode_tx(raw).tx.payload
        except TxFailure:
            return ""  # the driver's check_tx gives the precise error
        digest = payload.get("blob_hash")
        if payload.get("tombstone") or not isinstance(digest, str):
            return ""
        if anchorable(self._store, digest):
            return ""
        return (
            f"blob {digest[:64]} is not stored on this node, or was stored too long ago"
            " (orphans expire): upload it before its anchor"
        )

    async def status(self) -> dict[str, Any]:
        return await self._driver.status()

    async def block(self, height: int) -> dict[str, Any] | None:
        return await self._driver.block(height)

    async def transaction(self, tx_hash: bytes) -> dict[str, Any] | None:
        return await self._driver.transaction(tx_hash)

    async def query(self, path: str, data: bytes) -> QueryResult:
        return await self._driver.query(path, data)
