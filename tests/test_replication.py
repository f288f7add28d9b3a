"""The blob replicator keeps only blobs whose SHA-256 is the anchored hash.

The replicator asks the chain (a real state machine here) which blobs may be kept; races with
erasure are in tests/test_erasure.py."""

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

from careledger.chain.app import Application
from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.tx import Tx
from careledger.crypto.envelope import BlobOwner, WrappedKey, pack_record_blob
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import (
    Audience,
    check_signature,
    new_node_id,
    parse_authorization,
)
from careledger.node.erasure import BlobEraser
from careledger.node.replication import BlobReplicator
from careledger.protocol.frames import pack_results
from careledger.storage.blobstore import BlobStore
from nodeutil import (
    CHAIN_ID,
    VOUCHER_EXPIRY,
    free_port,
    grant_payload,
    make_app,
    record_name,
    run_block,
)

ORG, PATIENT = Identity.generate(), Identity.generate()
GOOD_ID = "good"
# A record blob whose header names the record that anchors it (PATIENT's Observation "good"):
# what an honest peer serves. Its hash and its header both match, so only what the chain says
# of its record decides whether it is kept.
GOOD = pack_record_blob(
    BlobOwner(PATIENT.did, record_name(PATIENT.did, "Observation", GOOD_ID)),
    [WrappedKey("scope/diagnostics/1", b"wrapped data key")],
    b"the anchored ciphertext",
)
OTHER_ID = "other"
# What a faulty peer serves for any other hash: a well-formed blob whose header names the
# record that wants it (OTHER_ID), so that only the hash check can refuse it.
FORGED = pack_record_blob(
    BlobOwner(PATIENT.did, record_name(PATIENT.did, "Observation", OTHER_ID)),
    [WrappedKey("scope/diagnostics/1", b"wrapped data key")],
    b"something else entirely",
)
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
        check_signature(signed, ORG.signing_public, PEER, "POST", "/replication/fetch", digest)
        hashes = orjson.loads(body)["hashes"]
        return Response(
            pack_results([(200, GOOD if h == sha256_hex(GOOD) else FORGED) for h in hashes])
        )

    port = free_port()
    app = Starlette(
        routes=[Route("/status", status), Route("/replication/fetch", fetch, methods=["POST"])]
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


class Chain:
    """A real state machine with one organisation and one patient, and this node's blobs."""

    def __init__(self, tmp_path: Path) -> None:
        self.org, self.patient = ORG, PATIENT  # GOOD's header names PATIENT's record
        self.app: Application = make_app(tmp_path / "state.sqlite", [self.org])
        self.nonces = {self.org.did: 0, self.patient.did: 0}
        self.store = BlobStore(tmp_path / "blobs")
        self.eraser = BlobEraser(self.store, self.app.query)
        self.app.on_commit(self.eraser.on_commit)
        assert self.block(
            self.patient,
            [
                (
                    "identity/register_patient",
                    {
                        "encryption_key": "11" * 32,
                        "voucher": sign_voucher(
                            self.org, CHAIN_ID, "register_patient", self.patient.did, VOUCHER_EXPIRY
                        ),
                    },
                ),
                (
                    "records/publish_scope_key",
                    scope_key_payload(self.patient, CHAIN_ID, "diagnostics", 1, "22" * 32),
                ),
                ("consent/grant", grant_payload(self.patient.did, self.org.did)),
            ],
        ) == [0, 0, 0]

    def replicator(self, peer: str) -> BlobReplicator:
        keyfile = KeyFile(self.org.did, "organisation", self.org)
        replicator = BlobReplicator(self.store, [peer], keyfile, self.eraser)
        self.app.on_commit(replicator.on_commit)
        return replicator

    def block(self, signer: Identity, txs: list[tuple[str, dict[str, object]]]) -> list[int]:
        raws = []
        for type_, payload in txs:
            self.nonces[signer.did] += 1
            nonce = self.nonces[signer.did]
            raws.append(Tx(CHAIN_ID, type_, signer.did, nonce, payload).sign(signer))
        return run_block(self.app, raws)

    def anchor(self, records: dict[str, str]) -> None:
        """Anchor one Observation per resource id, with that blob hash."""
        p = self.patient.did
        anchors = [
            (
                "records/anchor",
                {
                    "patient": p,
                    "resource_type": "Observation",
                    "record": record_name(p, "Observation", resource_id),
                    "version": 1,
                    "blob_hash": digest,
                    "commitment": "ab" * 32,
                    "recipients": ["scope/diagnostics/1"],
                },
            )
            for resource_id, digest in records.items()
        ]
        assert self.block(self.org, anchors) == [0] * len(records)

    def erase(self, *resource_ids: str) -> None:
        names = [record_name(self.patient.did, "Observation", r) for r in resource_ids]
        assert self.block(self.patient, [("records/erase", {"records": names})]) == [0]


def test_only_blobs_matching_their_anchor_are_stored(tmp_path: Path, peer: str) -> None:
    chain = Chain(tmp_path)
    store = chain.store
    replicator = chain.replicator(peer)
    wanted_good = sha256_hex(GOOD)
    wanted_other = sha256_hex(b"what the chain anchored in second place")
    chain.anchor({GOOD_ID: wanted_good, OTHER_ID: wanted_other})
    assert replicator.wanted == {wanted_good, wanted_other}

    async def one_pass() -> int:
        async with httpx.AsyncClient() as http:
            return await replicator.fetch_wanted(http)

    assert asyncio.run(one_pass()) == 1
    assert list(store) == [wanted_good]
    assert store.get(wanted_good) == GOOD
    assert replicator.wanted == {wanted_other}  # the forged copy was refused; still wanted

    chain.erase(OTHER_ID)
    assert replicator.wanted == set()


def test_a_blob_asked_for_but_missing_is_fetched_on_demand(tmp_path: Path, peer: str) -> None:
    """A node that stopped before fetching a blob gets it the first time a reader asks."""
    chain = Chain(tmp_path)
    store = chain.store
    replicator = chain.replicator(peer)
    chain.anchor({GOOD_ID: sha256_hex(GOOD)})
    replicator.wanted.clear()  # as after a restart: the anchor's block was before it

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
