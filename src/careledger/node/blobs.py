"""The node's blob routes: encrypted record blobs in, out, and erased.

Routes (every one needs a signed request of a registered identity, checked by the API's
authentication middleware before any body is read, `node/auth.py`; each route's body is
capped while it streams, by the limits below):

  PUT  /blobs/{hash}   body: the blob           store one blob; 201 {"hash"}
  POST /blobs          body: frames             store many, one sync pass; {"hashes": [...]}
  GET  /blobs/{hash}                            the blob's bytes
  POST /blobs/fetch    {"hashes": [...]}        many blobs; body: response frames

Upload frames are `u32 length || blob`, repeated. Response frames of a fetch are
`u16 HTTP status || u32 length || blob or UTF-8 error message`, one per hash, in order.

Who may do what:
- Upload: any registered, active identity (patient, practitioner, organisation), within its
  upload quota (`node/upload_quota.py`: bytes and blobs uploaded but not yet anchored; 429
  `quota_exceeded` beyond it). A blob of an erased record is refused (410 `erased`, nothing
  of the upload stored). A blob is written durably (fsynced, renamed, directory
  fsynced) before the answer, so an anchor submitted after it never points at a blob a
  crash could lose.
- Download: the record's patient, the record's author, and any member organisation (an active
  `organisation` identity). Member organisations are allowed because their nodes hold every
  ciphertext anyway (network mode replicates blobs between nodes through this route, signing
  as the node's organisation). Everyone else gets 403; a later consent module narrows this.
  A blob that anchors no record is 404 (uploads are served only once anchored); a blob of an
  erased record is 410 "erased"; a blob whose bytes no longer match their hash is 500
  "corrupted" and is never served.

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

from careledger.chain.app import QueryResult
from careledger.chain.codes import Code
from careledger.chain.modules.records.queries import MAX_BLOBS_QUERY
from careledger.consensus.driver import ConsensusDriver
from careledger.node.auth import ApiRoute, Caller, Perimeter, caller_of
from careledger.node.errors import ApiError
from careledger.node.upload_quota import UploadQuota
from careledger.protocol.frames import (
    MAX_BLOB_BYTES,
    MAX_FETCH,
    MalformedFrames,
    pack_results,
    unpack_frames,
)
from careledger.storage.blobstore import (
    SYNCFS_BATCH,
    BlobCorrupted,
    BlobNotFound,
    BlobStore,
    blob_hash,
)

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # one POST /blobs (a writer's chunk is a few MiB)
FETCH_BODY = 70 * MAX_FETCH + 1024  # {"hashes": [...]}: '"<64 hex>", ' each
# Parallel writers: fsyncs from several threads share journal commits, so a batch of
# blobs syncs in far less than one round trip to the disk each.
WRITE_THREADS = 8


class BlobService:
    def __init__(
        self,
        store: BlobStore,
        driver: ConsensusDriver,
        on_missing: Callable[[str], None] = lambda digest: None,
        quota: UploadQuota | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self._on_missing = on_missing  # network mode: ask the replicator to fetch it
        self.quota = quota if quota is not None else UploadQuota(driver)

    # --- the chain's view -----------------------------------------------------------------

    async def _query(self, path: str, **params: str) -> QueryResult:
        return await self.driver.query(path, orjson.dumps(params))

    async def _readable(self, caller: Caller, digest: str) -> tuple[int, str]:
        """(HTTP status, message) of `caller` reading blob `digest`; 200 when allowed."""
        found = await self._query("records/blob", hash=digest)
        if found.code == Code.NOT_FOUND:
            return 404, f"blob {digest} anchors no record"
        if found.code != 0:
            return 400, found.log
        return _may_read(caller, digest, orjson.loads(found.value))

    async def _readable_many(self, caller: Caller, digests: list[str]) -> list[tuple[int, str]]:
        """`_readable` for many blobs from one query of the chain's state."""
        results = [(400, f"not a blob hash: {d[:80]!r}") for d in digests]
        valid = [i for i, d in enumerate(digests) if _HEX64.fullmatch(d)]
        if not valid:
            return results
        query = orjson.dumps({"hashes": [digests[i] for i in valid]})
        found = await self.driver.query("records/blobs", query)
        if found.code != 0:
            return [(400, found.log)] * len(digests)
        anchors: list[dict[str, Any] | None] = orjson.loads(found.value)
        for i, anchor in zip(valid, anchors, strict=True):
            digest = digests[i]
            results[i] = (
                (404, f"blob {digest} anchors no record")
                if anchor is None
                else _may_read(caller, digest, anchor)
            )
        return results

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
        """Store blobs durably; their hashes. A large batch is one call (two syncfs flushes,
        see BlobStore.put_many); a small one is spread over WRITE_THREADS (per-file fsyncs
        from several threads share journal commits)."""
        if len(blobs) >= WRITE_THREADS * SYNCFS_BATCH:
            return await asyncio.to_thread(self.store.put_many, blobs)
        chunks = [blobs[i::WRITE_THREADS] for i in range(min(WRITE_THREADS, len(blobs)))]
        stored = await asyncio.gather(*(asyncio.to_thread(self.store.put_many, c) for c in chunks))
        by_chunk = [iter(s) for s in stored]
        return [next(by_chunk[i % len(chunks)]) for i in range(len(blobs))]

    async def download(self, request: Request) -> Response:
        caller = caller_of(request)
        digest = _path_hash(request)
        status, message = await self._readable(caller, digest)
        if status == 200:
            status, data = await asyncio.to_thread(self._read, digest)
            if status == 200:
                return Response(data, media_type="application/octet-stream")
            message = data.decode()
        raise ApiError(status, _ERROR_CODES.get(status, "error"), message)

    async def fetch_many(self, request: Request) -> Response:
        caller = caller_of(request)
        try:
            hashes = orjson.loads(await request.body())["hashes"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ApiError(400, "malformed", 'body must be {"hashes": [...]}') from None
        if not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_FETCH:
            raise ApiError(400, "malformed", f"'hashes' must list 1 to {MAX_FETCH} blob hashes")
        digests = [str(digest) for digest in hashes]
        results = [(s, m.encode()) for s, m in await self._readable_many(caller, digests)]
        allowed = [i for i, (status, _) in enumerate(results) if status == 200]
        reads = await asyncio.to_thread(lambda: [self._read(hashes[i]) for i in allowed])
        for i, read in zip(allowed, reads, strict=True):
            results[i] = read
        return Response(pack_results(results), media_type="application/octet-stream")

    def _read(self, digest: str) -> tuple[int, bytes]:
        try:
            return 200, self.store.get(digest)
        except BlobNotFound:
            self._on_missing(digest)
            return 404, f"blob {digest} is anchored but not stored on this node yet".encode()
        except BlobCorrupted:
            log.error("blob %s is corrupted on disk", digest)
            return 500, f"corrupted: blob {digest} no longer matches its hash".encode()


def _may_read(caller: Caller, digest: str, anchor: dict[str, Any]) -> tuple[int, str]:
    if anchor["erased_at"]:
        return 410, f"erased: the record of blob {digest} was erased by its patient"
    allowed = caller.did in (anchor["patient"], anchor["author"])
    if not (allowed or caller.kind == "organisation"):
        return 403, f"{caller.did} may not read this record"
    return 200, ""


_HEX64 = re.compile(r"[0-9a-f]{64}")
_ERROR_CODES = {403: "forbidden", 404: "not_found", 410: "erased", 500: "corrupted"}


def _path_hash(request: Request) -> str:
    digest = str(request.path_params["hash"])
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ApiError(400, "malformed", "a blob hash is 64 lowercase hex characters")
    return digest
