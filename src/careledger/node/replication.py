"""Blob replication between the nodes of a network.

A writer uploads a record's blob to one node and submits the anchor there (`node/anchor_guard.py`
makes sure of that order). Every other node learns of the record when the anchor's block
commits: this listener notes each anchored blob it lacks, and a background task fetches it
from the peers' `POST /replication/fetch` route, signed as this node's organisation (a route
for member organisations only: their nodes hold every ciphertext anyway, never the keys; it is
not a read, and the reader routes, which consent decides, do not serve an organisation every
blob). With a CA bundle configured, peers are reached over TLS and verified against it
(node/tls.py). A fetched blob is kept only if its SHA-256 is the hash the chain anchored, so
a faulty or malicious peer can delay a copy but never plant a wrong one.

Erasure wins every race with a fetch (docs/records.md, "Erasure"). The records module is asked
(through `BlobEraser.unwanted`) before a peer is asked, right before a fetched blob is stored,
and again right after: a blob erased, or anchoring no record, is dropped from the wanted set,
never requested and never kept. The check after the write closes the race with the erase's
commit: the application commits the erase's state before it tells the eraser, so either that
check sees the erase (and deletes the new file), or the erase committed after the file was in
place (and the eraser's listener deletes it). A peer's 410 is not stored and not trusted: the
blob stays wanted until this node's own chain erases it.

The wanted set lives in memory. A blob still missing when a node stopped is wanted again the
first time someone asks this node for it (`want`, called by the blob routes on a miss), so
the gap closes on demand rather than by a sweep over every anchor at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

import httpx
import orjson

from careledger.chain.app import CommittedBlock
from careledger.chain.modules.records.events import RecordAnchored, RecordsErased
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keyfile import KeyFile
from careledger.node.blobs import REPLICATION_FETCH
from careledger.node.erasure import BlobEraser, ChainQueryFailed
from careledger.protocol.frames import MAX_FETCH, unpack_results
from careledger.protocol.signing import RequestSigner
from careledger.storage.blobstore import BlobStore, BlobStoreError

log = logging.getLogger(__name__)

FETCH_PATH = REPLICATION_FETCH


class BlobReplicator:
    def __init__(
        self,
        store: BlobStore,
        peers: Sequence[str],
        organisation: KeyFile,
        eraser: BlobEraser,
        *,
        retry_interval: float = 0.5,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify`: what peers' TLS certificates are verified with (node/tls.py
        `TlsSettings.client_context`: the consortium's bundle when one is configured)."""
        self.store = store
        self.peers = [p.rstrip("/") for p in peers]
        self.organisation = organisation
        self.eraser = eraser  # the chain's word on what may be kept, and who deletes
        self._auth = {p: RequestSigner(organisation.identity, organisation.did) for p in self.peers}
        self.retry_interval = retry_interval
        self.verify = verify
        self._refusals: dict[str, str] = {}  # peer -> the TLS failure last logged for it
        self.wanted: set[str] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def status(self) -> dict[str, object]:
        """For the node's public `/status`: how many anchored blobs this node still lacks."""
        return {"replication": {"backlog": len(self.wanted), "peers": len(self.peers)}}

    def want(self, digest: str) -> None:
        """Fetch this anchored blob from the peers; safe to call from any thread."""
        self.wanted.add(digest)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def on_commit(self, block: CommittedBlock) -> None:
        """An application commit listener: note anchored blobs this node lacks."""
        for result in block.tx_results:
            for anchored in RecordAnchored.all_in(result.events):
                if anchored.blob_hash and anchored.blob_hash not in self.store:
                    self.wanted.add(anchored.blob_hash)
            for erased in RecordsErased.all_in(result.events):
                self.wanted.difference_update(erased.blob_hashes)
        if self.wanted:
            self._wake.set()

    async def run(self) -> None:
        """Fetch what is wanted until cancelled; retry what no peer could give yet."""
        self._loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=30, verify=self.verify) as http:
            while True:
                if not self.wanted:
                    await self._wake.wait()
                self._wake.clear()
                await self.fetch_wanted(http)
                if self.wanted:
                    await asyncio.sleep(self.retry_interval)

    async def fetch_wanted(self, http: httpx.AsyncClient) -> int:
        """One pass over the peers; returns how many blobs were stored."""
        stored = 0
        for peer in self.peers:
            try:
                wanted = self._still_wanted(sorted(self.wanted)[:MAX_FETCH])
                if not wanted:
                    break
                stored += await self._fetch_from(http, peer, wanted)
                self._refusals.pop(peer, None)
            except httpx.ConnectError as exc:
                self._connect_failed(peer, exc)
            except (httpx.HTTPError, ValueError) as exc:
                log.info("blob fetch from %s failed: %s", peer, exc)
            except (ChainQueryFailed, BlobStoreError, OSError) as exc:
                log.warning("fetched blobs not stored (retried later): %s", exc)
        return stored

    def _connect_failed(self, peer: str, exc: httpx.ConnectError) -> None:
        """Log a peer refused by TLS (untrusted, expired or misnamed certificate, or no TLS)
        once per distinct reason, since it is retried every pass; other connection failures
        as any failed fetch."""
        refused = _tls_failure(exc)
        if refused is None:
            log.info("blob fetch from %s failed: %s", peer, exc)
        elif self._refusals.get(peer) != refused:
            self._refusals[peer] = refused
            log.warning("blob peer %s refused: TLS verification failed: %s", peer, refused)

    def _still_wanted(self, digests: list[str]) -> list[str]:
        """`digests` less those the chain erased or never anchored (dropped for good)."""
        unwanted = self._unwanted(digests)
        return [d for d in digests if d not in unwanted]

    def _unwanted(self, digests: list[str]) -> set[str]:
        unwanted = self.eraser.unwanted(digests)
        self.wanted.difference_update(unwanted)
        return unwanted

    async def _fetch_from(self, http: httpx.AsyncClient, peer: str, wanted: list[str]) -> int:
        body = orjson.dumps({"hashes": wanted})
        response = await http.post(peer + FETCH_PATH, content=body, auth=self._auth[peer])
        response.raise_for_status()
        good = {
            digest: blob
            for digest, (status, blob) in zip(wanted, unpack_results(response.content), strict=True)
            if status == 200 and sha256_hex(blob) == digest
        }
        return await self._store_if_wanted(good) if good else 0

    async def _store_if_wanted(self, fetched: dict[str, bytes]) -> int:
        """Store fetched blobs the chain still wants; how many stayed on disk."""
        # The erase may have committed while the request was in flight; and a copy whose
        # header names another record than its anchor's is never stored.
        keep = self.eraser.storable(fetched)
        self.wanted.difference_update(set(fetched) - set(keep))
        try:
            if keep:
                await asyncio.to_thread(self.store.put_many, [fetched[d] for d in keep])
        finally:
            # ...or while they were being written, its listener finding nothing to delete yet.
            late = self._unwanted(keep)
            self.eraser.erase(late)
        self.wanted.difference_update(keep)
        return len(keep) - len(late)


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS verification or handshake failure under an httpx connection error, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        if isinstance(seen, ssl.SSLError):
            return seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
