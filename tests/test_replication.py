"""The blob replicator keeps only blobs whose SHA-256 is the anchored hash."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from careledger.chain.app import CommittedBlock, TxResult
from careledger.chain.modules.base import Event
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import (
    Audience,
    check_signature,
    new_node_id,
    parse_authorization,
)
from careledger.node.replication import BlobReplicator
from careledger.protocol.frames import pack_results
from careledger.storage.blobstore import BlobStore
from nodeutil import free_port

GOOD = b"the anchored ciphertext"
FORGED = b"something else entirely"
ORG = Identity.generate()
PEER = Audience("test-chain", new_node_id())


@pytest.fixture
def peer() -> Iterator[str]:
    """A real HTTP peer whose fetch route serves GOOD under its hash and FORGED for any other,
    to requests signed by ORG for this peer."""

    async def status(request: Request) -> Response:
        return JSONResponse({"chain_id": PEER.chain_id, "node_id": PEER.node_id})

    async def fetch(request: Request) -> Response:
        body = await request.body()
        signed = parse_authorization(request.headers["authorization"])
        assert signed.did == ORG.did
        digest = hashlib.sha256(body).digest()
        check_signature(signed, ORG.signing_public, PEER, "POST", "/blobs/fetch", digest)
        hashes = orjson.loads(body)["hashes"]
        return Response(
            pack_results([(200, GOOD if h == sha256_hex(GOOD) else FORGED) for h in hashes])
        )

    port = free_port()
    app = Starlette(
        routes=[Route("/status", status), Route("/blobs/fetch", fetch, methods=["POST"])]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/status")
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(5)


def anchored(*digests: str) -> CommittedBlock:
    events = tuple(Event("records.anchored", {"blob_hash": d}) for d in digests)
    return CommittedBlock(1, 0, [b"tx"], [TxResult(0, events=events)])


def test_only_blobs_matching_their_anchor_are_stored(tmp_path: Path, peer: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    replicator = BlobReplicator(store, [peer], KeyFile(ORG.did, "organisation", ORG))
    wanted_good = sha256_hex(GOOD)
    wanted_other = sha256_hex(b"what the chain anchored in second place")
    replicator.on_commit(anchored(wanted_good, wanted_other))
    assert replicator.wanted == {wanted_good, wanted_other}

    async def one_pass() -> int:
        async with httpx.AsyncClient() as http:
            return await replicator.fetch_wanted(http)

    assert asyncio.run(one_pass()) == 1
    assert list(store) == [wanted_good]
    assert store.get(wanted_good) == GOOD
    assert replicator.wanted == {wanted_other}  # the forged copy was refused; still wanted

    erased = Event("records.erased", {"blob_hashes": wanted_other})
    replicator.on_commit(CommittedBlock(2, 0, [b"tx"], [TxResult(0, events=(erased,))]))
    assert replicator.wanted == set()


def test_a_blob_asked_for_but_missing_is_fetched_on_demand(tmp_path: Path, peer: str) -> None:
    """A node that stopped before fetching a blob gets it the first time a reader asks."""
    store = BlobStore(tmp_path / "blobs")
    replicator = BlobReplicator(store, [peer], KeyFile(ORG.did, "organisation", ORG))

    async def scenario() -> None:
        running = asyncio.create_task(replicator.run())
        await asyncio.sleep(0.05)
        # The blob routes call want() from a worker thread when a read misses.
        await asyncio.to_thread(replicator.want, sha256_hex(GOOD))
        for _ in range(100):
            if sha256_hex(GOOD) in store:
                break
            await asyncio.sleep(0.05)
        running.cancel()

    asyncio.run(scenario())
    assert store.get(sha256_hex(GOOD)) == GOOD
