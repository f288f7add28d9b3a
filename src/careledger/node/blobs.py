"""The node's blob routes: encrypted record blobs in, out, and erased.

Routes (every one needs a signed request of a registered identity, checked by the API's
authentication middleware before any body is read, `node/auth.py`; each route's body is
capped while it streams, by the limits below):

  PUT  /blobs/{hash}                 body: the blob       store one blob; 201 {"hash"}
  POST /blobs                        body: frames         store many, one sync pass
  GET  /blobs/{hash}?purpose=CODE                         the blob's bytes
  POST /blobs/fetch?purpose=CODE     {"hashes": [...]}    many blobs; body: response frames
  POST /replication/fetch            {"hashes": [...]}    member nodes: many blobs, frames

Upload frames are `u32 length || blob`, repeated. Response frames of a fetch are
`u16 HTTP status || u32 length || blob or UTF-8 error message`, one per hash, in order. A
fetch's response holds at most MAX_FETCH_RESPONSE bytes of blobs: the blob that would pass it,
and every one after it, answer 413 (fetch them in another request).

Who may do what:
- Upload: any registered, active identity (patient, practitioner, organisation), within its
  upload quota (`node/upload_quota.py`: bytes and blobs uploaded but not yet anchored; 429
  `quota_exceeded` beyond it). A blob of an erased record is refused (410 `erased`, nothing
  of the upload stored). A blob is written durably (its segment synced, then its index
  row committed: `storage/blobstore.py`) before the answer, so an anchor submitted after
  it never points at a blob a crash could lose.
- Read (`GET /blobs/{hash}`, `POST /blobs/fetch`): decided by the consent guard
  (`node/consent_guard.py`) and nowhere else: the patient, and whoever the committed consent
  allows for the purpose the request states (`?purpose=`, covered by the signature). A denied
  blob is 403 `forbidden` with the guard's reason; a blob that anchors no record is 404
  (uploads are served only once anchored); a blob of an erased record is 410 "erased". A fetch
  answers each of these per blob in its frames.
- Audit: every read answer (served or refused, GET or fetch) is preceded by its entries'
  durable write to the node's audit journal and carries the node's receipt, the
  `CareLedger-Audit` header (`node/audit/`, `protocol/receipts.py`); a journal that cannot
  take them refuses the read (503).
- Replication (`POST /replication/fetch`): member organisations only, whose nodes hold every
  ciphertext anyway (network mode copies blobs between nodes through it, signing as the node's
  organisation). Anchored blobs only: 404 and 410 as for reads. Not a read: no consent
  decision, no audit entry; the reader routes do not let an organisation read every blob.
- Any read: a blob whose bytes no longer match their hash is 500 "corrupted" and is never
  served.

Anchors (`node/anchor_guard.py`) and erasure (`node/erasure.py`) live beside this module.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from careledger.chain.modules.records.queries import MAX_BLOBS_QUERY
from careledger.consensus.driver import ConsensusDriver
from careledger.node.auth import ApiRoute, Caller, Perimeter, caller_of
from careledger.node.consent_guard import (
    AccessDecision,
    ConsentGuard,
    require_replication_peer,
    stated_purpose,
)
from careledger.node.errors import ApiError
from careledger.node.upload_quota import UploadQuota
from careledger.protocol.frames import (
    MAX_BLOB_BYTES,
    MAX_FETCH,
    MalformedFrames,
    pack_results,
    unpack_frames,
)
from careledger.protocol.receipts import request_digest
from careledger.storage.blobstore import (
    BlobCorrupted,
    BlobNotFound,
    BlobStore,
    blob_hash,
)

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # one POST /blobs (a writer's chunk is a few MiB)
FETCH_BODY = 70 * MAX_FETCH + 1024  # {"hashes": [...]}: '"<64 hex>", ' each
# Blob bytes in one fetch's response: 5,000 hashes of one 16 MiB blob would be 80 GB otherwise.
MAX_FETCH_RESPONSE = 64 * 1024 * 1024
INLINE_READ_BYTES = 64 * 1024  # a blob at most this big is read on the event loop
REPLICATION_FETCH = "/replication/fetch"


class BlobService:
    def __init__(
        self,
        store: BlobStore,
        driver: ConsensusDriver,
        on_missing: Callable[[str], None] = lambda digest: None,
        quota: UploadQuota | None = None,
        guard: ConsentGuard | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self._on_missing = on_missing  # network mode: ask the replicator to fetch it
        self.quota = quota if quota is not None else UploadQuota(driver)
        self.guard = guard if guard is not None else ConsentGuard(driver)  # decides reads

    # --- routes ---------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            ApiRoute(
                "/blobs",
                self.upload_many,
                methods=["POST"],
                perimeter=Perimeter(MAX_UPLOAD_BYTES),
            ),
            ApiRoute(
                "/blobs/fetch", self.fetch_many, methods=["POST"], perimeter=Perimeter(FETCH_BODY)
            ),
            ApiRoute(
                "/blobs/{hash}",
                self.upload_one,
                methods=["PUT"],
                perimeter=Perimeter(MAX_BLOB_BYTES),
            ),
            ApiRoute("/blobs/{hash}", self.download, methods=["GET"]),
            ApiRoute(
                REPLICATION_FETCH,
                self.replicate,
                methods=["POST"],
                perimeter=Perimeter(FETCH_BODY),
            ),
        ]

    async def upload_one(self, request: Request) -> Response:
        body = await request.body()
        digest = _path_hash(request)
        if not body:
            raise ApiError(400, "malformed", "an empty blob")
        if blob_hash(body) != digest:
            raise ApiError(400, "hash_mismatch", f"the body's SHA-256 is not {digest}")
        await self._refuse_erased([digest])
        await self._within_quota(caller_of(request), [body], self._put_one)
        return JSONResponse({"hash": digest}, status_code=201)

    async def upload_many(self, request: Request) -> Response:
        try:
            blobs = unpack_frames(await request.body())
        except MalformedFrames as exc:
            raise ApiError(400, "malformed", str(exc)) from None
        if not blobs:
            raise ApiError(400, "malformed", "no blob in the upload")
        await self._refuse_erased([blob_hash(b) for b in blobs])
        hashes = await self._within_quota(caller_of(request), blobs, self.put_many)
        return JSONResponse({"hashes": hashes})

    async def _refuse_erased(self, digests: list[str]) -> None:
        """ApiError 410 if any of these blobs anchors an erased record: an erased blob must
        not come back (its wrapped keys would sit on disk until the next sweep, again and
        again). One records/blobs query per MAX_BLOBS_QUERY distinct hashes (a writer's batch
        is one); an erase committing meanwhile is caught by the eraser's sweep."""
        distinct = list(dict.fromkeys(digests))
        for start in range(0, len(distinct), MAX_BLOBS_QUERY):
            chunk = distinct[start : start + MAX_BLOBS_QUERY]
            found = await self.driver.query("records/blobs", orjson.dumps({"hashes": chunk}))
            if found.code != 0:
                raise ApiError(503, "unavailable", f"cannot ask the chain about blobs: {found.log}")
            anchors: list[dict[str, Any] | None] = orjson.loads(found.value)
            for digest, anchor in zip(chunk, anchors, strict=True):
                if anchor is not None and anchor["erased_at"]:
                    raise ApiError(
                        410,
                        "erased",
                        f"erased: blob {digest} belongs to a record its patient erased; "
                        "nothing of this upload was stored",
                    )

    async def _within_quota(
        self,
        caller: Caller,
        blobs: list[bytes],
        put: Callable[[list[bytes]], Awaitable[list[str]]],
    ) -> list[str]:
        """Store blobs with `put` if the caller's upload quota has room for them."""
        sizes = [len(b) for b in blobs]
        reservation = await self.quota.reserve(caller.did, sizes)
        hashes: list[str] = []
        try:
            hashes = await put(blobs)
        finally:  # a failed put settles nothing: its reservation is released
            self.quota.settle(reservation, list(zip(hashes, sizes, strict=False)))
        return hashes

    async def _put_one(self, blobs: list[bytes]) -> list[str]:
        return [await asyncio.to_thread(self.store.put, blobs[0])]

    async def put_many(self, blobs: list[bytes]) -> list[str]:
        """Store blobs durably; their hashes. One call: the store packs a batch into one
        segment write, one sync and one index commit."""
        return await asyncio.to_thread(self.store.put_many, blobs)

    async def download(self, request: Request) -> Response:
        digest = _path_hash(request)
        purpose = stated_purpose(request.query_params)
        decided = await self.guard.decide(
            caller_of(request), purpose, [digest], request=_request_digest(request)
        )
        (decision,) = decided.decisions
        receipt = decided.headers()  # on refusals too: a denied read is audited alike
        if not decision.allowed:
            raise _refused(decision.status, decision.reason, receipt)
        status, data = await self._read_one(digest)
        if status != 200:
            raise _refused(status, data.decode(), receipt)
        return Response(data, media_type="application/octet-stream", headers=receipt)

    async def fetch_many(self, request: Request) -> Response:
        purpose = stated_purpose(request.query_params)
        digests = await _hashes_of(request)
        decided = await self.guard.decide(
            caller_of(request), purpose, digests, request=_request_digest(request)
        )
        answer = await self._answer(_as_results(decided.decisions), digests)
        answer.headers.update(decided.headers())
        return answer

    async def replicate(self, request: Request) -> Response:
        """Member nodes copy anchored blobs (see the module's docstring)."""
        require_replication_peer(caller_of(request))
        if request.query_params:
            raise ApiError(400, "malformed", f"{REPLICATION_FETCH} takes no query parameters")
        digests = await _hashes_of(request)
        return await self._answer(await self._anchored(digests), digests)

    async def _anchored(self, digests: list[str]) -> list[tuple[int, bytes]]:
        """200 for each blob that anchors a live record, else its status and why; one
        records/blobs query (MAX_FETCH is within MAX_BLOBS_QUERY)."""
        results = [(400, f"not a blob hash: {d[:80]!r}".encode()) for d in digests]
        valid = [i for i, d in enumerate(digests) if _HEX64.fullmatch(d)]
        if not valid:
            return results
        query = orjson.dumps({"hashes": [digests[i] for i in valid]})
        found = await self.driver.query("records/blobs", query)
        if found.code != 0:
            raise ApiError(503, "unavailable", f"cannot ask the chain about blobs: {found.log}")
        anchors: list[dict[str, Any] | None] = orjson.loads(found.value)
        for i, anchor in zip(valid, anchors, strict=True):
            results[i] = _anchor_status(digests[i], anchor)
        return results

    async def _answer(self, results: list[tuple[int, bytes]], digests: list[str]) -> Response:
        """Response frames: `results`, with the bytes of each blob marked 200 read from disk."""
        allowed = [i for i, (status, _) in enumerate(results) if status == 200]
        reads = await asyncio.to_thread(self._read_within, [digests[i] for i in allowed])
        for i, read in zip(allowed, reads, strict=True):
            results[i] = read
        return Response(pack_results(results), media_type="application/octet-stream")

    def _read_within(self, digests: list[str]) -> list[tuple[int, bytes]]:
        """Read blobs in order until the response would hold over MAX_FETCH_RESPONSE bytes;
        that blob and the rest answer 413 unread. The first always fits (MAX_BLOB_BYTES)."""
        reads: list[tuple[int, bytes]] = []
        total = 0
        for digest in digests:
            status, data = self._read(digest)
            total += len(data) if status == 200 else 0
            if total > MAX_FETCH_RESPONSE:
                full = _OVER_RESPONSE.encode()
                return reads + [(413, full)] * (len(digests) - len(reads))
            reads.append((status, data))
        return reads

    async def _read_one(self, digest: str) -> tuple[int, bytes]:
        """One blob: a small one read (and re-hashed) on the event loop, where it costs a few
        microseconds against a worker thread's hand-off of tens (BENCHMARKS.md, issue 9); a
        large one in a worker thread."""
        if self.store.size(digest) <= INLINE_READ_BYTES:
            return self._read(digest)
        return await asyncio.to_thread(self._read, digest)

    def _read(self, digest: str) -> tuple[int, bytes]:
        try:
            return 200, self.store.get(digest)
        except BlobNotFound:
            self._on_missing(digest)
            return 404, f"blob {digest} is anchored but not stored on this node yet".encode()
        except BlobCorrupted:
            log.error("blob %s is corrupted on disk", digest)
            return 500, f"corrupted: blob {digest} no longer matches its hash".encode()


def _anchor_status(digest: str, anchor: dict[str, Any] | None) -> tuple[int, bytes]:
    if anchor is None:
        return 404, f"blob {digest} anchors no record".encode()
    if anchor["erased_at"]:
        return 410, f"erased: the record of blob {digest} was erased by its patient".encode()
    return 200, b""


def _as_results(decisions: list[AccessDecision]) -> list[tuple[int, bytes]]:
    return [(d.status, b"" if d.allowed else d.reason.encode()) for d in decisions]


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, _ERROR_CODES.get(status, "error"), message, headers)


def _request_digest(request: Request) -> str:
    """What the read's receipt names: the digest of its signature (the authentication
    middleware verified it before the route ran)."""
    return request_digest(request.headers.get("authorization", ""))


async def _hashes_of(request: Request) -> list[str]:
    """The body's {"hashes": [...]}: 1 to MAX_FETCH strings; ApiError 400 otherwise."""
    try:
        hashes = orjson.loads(await request.body())["hashes"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ApiError(400, "malformed", 'body must be {"hashes": [...]}') from None
    if not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_FETCH:
        raise ApiError(400, "malformed", f"'hashes' must list 1 to {MAX_FETCH} blob hashes")
    return [str(digest) for digest in hashes]


_OVER_RESPONSE = (
    f"over this response's limit of {MAX_FETCH_RESPONSE} bytes of blobs: fetch it in another "
    "request"
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ERROR_CODES = {
    400: "malformed",
    403: "forbidden",
    404: "not_found",
    410: "erased",
    500: "corrupted",
    503: "unavailable",
}


def _path_hash(request: Request) -> str:
    digest = str(request.path_params["hash"])
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ApiError(400, "malformed", "a blob hash is 64 lowercase hex characters")
    return digest
