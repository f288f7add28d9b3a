"""Erasure reaches every copy of a blob (issue 7, item 7).

- Orphans (uploaded, never anchored) expire after ORPHAN_TTL; `careledger verify` fails on
  one older than ORPHAN_BOUND and counts younger ones.
- A replication fetch that completes after the erase commits stores nothing, whether the
  erase commits while the answer is on the wire or while the blob is being written.
- A peer's 410 is never stored, and a blob this node's chain erased is never asked for again.
- A deletion the disk refuses is retried until it succeeds, without restarting the node.
- A put in progress when its blob is erased leaves nothing (the erase waits for it, then
  removes it); a killed writer's partial copy goes with its blob (tests/test_blobstore.py).

Real parts throughout: blob segments on disk, SQLite state machines fed real blocks, HTTP on
loopback, `careledger up` processes. The only seams are pause points (a held HTTP answer, a
store that waits before writing, a killed writer) that fix the order of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from blobutil import backdate, files_holding
from careledger.chain.app import Application, BlockContext
from careledger.chain.codes import Code
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.envelope import BlobOwner, WrappedKey, pack_record_blob
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keyfile import KeyFile
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import DataDir, initialise
from careledger.node.erasure import ANCHORABLE_AGE, ORPHAN_BOUND, ORPHAN_TTL, BlobEraser
from careledger.node.replication import BlobReplicator
from careledger.protocol.frames import unpack_results
from careledger.protocol.signing import RequestSigner
from careledger.storage.blobstore import BlobStore
from careledger.wallet.records import RecordsClient, RecordsError, Written
from nodeutil import NodeProcess, enrol, free_port, record_name, run_verify, serve_over_http

OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "heart rate"},
    "valueQuantity": {"value": 72, "unit": "/min"},
}


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def copies_of(store: BlobStore, digest: str) -> list[str]:
    """The blob as the store names it, and any file named after it (the per-file layout's
    blob or temporary). Its raw bytes in the segments: `blobutil.files_holding`."""
    named = [p.name for p in store.root.rglob("*") if digest in p.name]
    return (["indexed"] if digest in store else []) + named


# --- the blob store: partial copies and age ------------------------------------------------


def test_a_put_in_progress_when_its_blob_is_erased_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The put holds the store's write lock from its write to its index commit; an erase
    arriving meanwhile waits for it and then removes the blob: the erasure always wins.
    (A writer killed before its commit: tests/test_blobstore.py.)"""
    store = BlobStore(tmp_path / "blobs")
    data = b"fetched while the patient erased it" * 50
    digest = sha256_hex(data)
    writing, release = threading.Event(), threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync_pausing_the_put(fd: int) -> None:
        if threading.current_thread().name == "put":
            writing.set()  # the bytes are in the segment, not yet indexed
            release.wait(60)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync_pausing_the_put)
    put = threading.Thread(target=store.put, args=(data,), name="put")
    put.start()
    assert writing.wait(60)
    erase = threading.Thread(target=store.delete, args=(digest,))
    erase.start()
    release.set()
    put.join(60)
    erase.join(60)
    assert copies_of(store, digest) == []
    assert files_holding(store.root, data) == []


def test_an_orphan_expires_by_age_and_storing_it_again_restarts_its_clock(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    old, retried = store.put(b"uploaded, never anchored"), store.put(b"uploaded, then again")
    for digest in (old, retried):
        backdate(store, digest, ORPHAN_TTL + 60)
    store.put(b"uploaded, then again")  # the writer retries its upload before anchoring
    cutoff = time.time() - ORPHAN_TTL
    assert store.expire(old, cutoff) is True
    assert store.expire(retried, cutoff) is False
    assert old not in store and retried in store


# --- a node process: orphans expire, verify reports them ------------------------------------


def write_record(url: str, org: KeyFile) -> tuple[Written, KeyFile]:
    """A real record: a new patient enrolled by `org`, one Observation written for them."""
    with RecordsClient(url, org) as writer:
        patient = enrol(writer)
        return writer.write(patient.did, OBSERVATION), patient


def test_old_orphans_fail_verify_and_a_node_deletes_them_young_ones_are_counted(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path / "data", free_port())
    node.start("--block-interval", "0.05")
    blobs = BlobStore(DataDir(node.data_dir).blobs)
    try:
        org = KeyFile.load(DataDir(node.data_dir).organisation_key)
        record, _ = write_record(node.url, org)
        with RecordsClient(node.url, org) as writer:
            old, young = writer.upload([b"an orphan: uploaded", b"another, never anchored"])
    finally:
        node.stop()
    for digest in (old, record.blob_hash):  # an anchored blob may be as old as it likes
        backdate(blobs, digest, ORPHAN_BOUND + 60)

    found = run_verify(node.data_dir)
    assert found.returncode == 1
    assert f"blob {old} was never anchored" in found.stderr

    node.start("--block-interval", "0.05")  # its sweep runs at start
    try:
        wait_until(lambda: old not in blobs)
    finally:
        node.stop()
    assert young in blobs and record.blob_hash in blobs
    passed = run_verify(node.data_dir)
    assert passed.returncode == 0, passed.stderr
    assert "1 never anchored" in passed.stdout


def test_an_erased_blob_uploaded_again_is_refused_and_nothing_of_its_batch_is_stored(
    node: NodeProcess,
) -> None:
    """Uploading an erased blob again would put its wrapped keys back on disk until the
    next sweep (5 min), and again after it: the upload routes refuse it with 410."""
    blobs = BlobStore(DataDir(node.data_dir).blobs)
    org = node.organisation()
    record, patient = write_record(node.url, org)
    erased_blob = blobs.get(record.blob_hash)  # what anyone who fetched it kept
    with RecordsClient(node.url, patient) as owner:
        owner.erase([record.ref])
    wait_until(lambda: record.blob_hash not in blobs)
    innocent = b"another blob of the same batch, stored otherwise"

    with RecordsClient(node.url, org) as uploader:
        for batch in ([erased_blob], [innocent, erased_blob]):
            with pytest.raises(RecordsError) as refused:
                uploader.upload(batch)
            assert refused.value.status == 410 and "erased" in str(refused.value)
    signed = httpx.Client(base_url=node.url, auth=RequestSigner(org.identity, org.did))
    put = signed.put(f"/blobs/{record.blob_hash}", content=erased_blob)
    assert put.status_code == 410 and put.json()["error"]["code"] == "erased"

    assert copies_of(blobs, record.blob_hash) == []  # not on disk, not even in part
    assert sha256_hex(innocent) not in blobs  # the batch was refused whole
    with RecordsClient(node.url, org) as uploader:  # the node keeps serving uploads
        assert uploader.upload([innocent]) == [sha256_hex(innocent)]


def test_an_anchor_for_a_blob_stored_too_long_ago_is_refused_until_it_is_uploaded_again(
    tmp_path: Path,
) -> None:
    """Otherwise the orphan sweep could delete a blob whose anchor is still in the mempool."""
    root = tmp_path / "data"
    org = initialise(root)
    node = build_node(root, Solo())
    guard = node.driver  # the pre-submit pipeline, then the producer
    patient = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    record = record_name(patient, "Observation", "late")
    # A record blob whose header names this record, so that only its age can refuse it.
    sealed = pack_record_blob(
        BlobOwner(patient, record),
        [WrappedKey("scope/diagnostics/1", b"wrapped data key")],
        b"sealed and uploaded, the anchor came late",
    )
    digest = node.blob_store.put(sealed)
    backdate(node.blob_store, digest, ANCHORABLE_AGE + 60)
    payload = {
        "patient": patient,
        "resource_type": "Observation",
        "record": record,
        "version": 1,
        "blob_hash": digest,
        "commitment": "ab" * 32,
        "recipients": ["scope/diagnostics/1"],
    }
    anchor = Tx(node.app.chain_id, "records/anchor", org.did, 1, payload).sign(org.identity)
    try:
        refused = asyncio.run(guard.submit(anchor, wait=False))
        assert refused.check_code == Code.NOT_FOUND and "too long ago" in refused.check_log
        node.blob_store.put(sealed)  # uploading again restarts the blob's clock
        admitted = asyncio.run(guard.submit(anchor, wait=False))
        assert admitted.check_code == Code.OK, admitted.check_log
    finally:
        node.close()


# --- a node process: a deletion the disk refuses is retried ---------------------------------


@contextlib.contextmanager
def immutable(segment: Path) -> Iterator[None]:
    """`chattr +i`: nobody, root included, may write to (or punch a hole in) `segment`."""
    made = subprocess.run(["chattr", "+i", str(segment)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.decode().strip()}")
    try:
        with pytest.raises(PermissionError):
            segment.open("r+b").close()
        yield
    finally:
        subprocess.run(["chattr", "-i", str(segment)], check=True)


def test_a_deletion_the_disk_refuses_is_retried_until_it_succeeds_without_a_restart(
    node: NodeProcess,
) -> None:
    org = KeyFile.load(DataDir(node.data_dir).organisation_key)
    record, patient = write_record(node.url, org)
    blobs = BlobStore(DataDir(node.data_dir).blobs)
    sealed = blobs.get(record.blob_hash)
    log = node.data_dir.parent / f"node-{node.port}.log"
    assert node.process is not None
    pid = node.process.pid
    with immutable(blobs.locate(record.blob_hash).path):
        with RecordsClient(node.url, patient) as owner:
            erased = owner.erase([record.ref])  # returns once the erase has committed
        assert erased["code"] == 0
        assert record.blob_hash in blobs  # the listener's deletion failed; the chain went on
        wait_until(lambda: f"could not delete erased blob {record.blob_hash}" in log.read_text())
        assert blobs.get(record.blob_hash) == sealed  # the retries keep failing meanwhile
        with RecordsClient(node.url, org) as writer:  # the node keeps serving meanwhile
            assert enrol(writer).did
    wait_until(lambda: record.blob_hash not in blobs)  # a retry succeeds once the disk allows
    assert files_holding(blobs.root, sealed) == []  # and the bytes are gone from the segment
    assert node.process.pid == pid and node.process.poll() is None  # no restart


# --- replication: erasure wins every race with a fetch ---------------------------------------


class Tap:
    """ASGI middleware in front of a real node: notes each `POST /replication/fetch` and the status
    it answered for each hash, and can hold an answer (already made) until released."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: list[list[int]] = []
        self.answered = threading.Event()
        self.hold: threading.Event | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/replication/fetch":
            await self.app(scope, receive, send)
            return
        messages: list[dict[str, Any]] = []

        async def keep(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        self.answers.append([status for status, _ in unpack_results(body)])
        self.answered.set()
        if self.hold is not None:
            await asyncio.to_thread(self.hold.wait, 60)
        for message in messages:
            await send(message)


@dataclass
class Peer:
    """An embedded node serving HTTP on loopback: where records are written and erased."""

    node: Node[SoloProducer]
    org: KeyFile
    url: str
    tap: Tap

    def erase(self, patient: KeyFile, record: Written) -> int:
        """The patient erases the record here; the height of the block that did it."""
        with RecordsClient(self.url, patient) as owner:
            return int(owner.erase([record.ref])["height"])


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    root = tmp_path / "peer"
    org = initialise(root)
    node = build_node(root, Solo(0.02))
    tap = Tap(node.asgi())
    try:
        with serve_over_http(tap) as url:
            try:
                yield Peer(node, org, url, tap)
            finally:
                if tap.hold is not None:
                    tap.hold.set()  # a held answer must not keep the server from stopping
    finally:
        node.close()


class WatchedStore(BlobStore):
    """The real blob store, noting every blob a put was asked to write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def put_many(self, blobs: Iterable[bytes]) -> list[str]:
        blobs = list(blobs)
        self.written += [sha256_hex(b) for b in blobs]
        return super().put_many(blobs)


class PausingStore(BlobStore):
    """The real blob store, paused before a put writes until the test lets it go."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.entered = threading.Event()
        self.go = threading.Event()

    def put_many(self, blobs: Iterable[bytes]) -> list[str]:
        self.entered.set()
        self.go.wait(60)
        return super().put_many(blobs)


@dataclass
class Follower:
    """Another node of the peer's chain: its own state machine (real SQLite) committing the
    peer's blocks, its own blob store, eraser and replicator (fetching from the peer)."""

    peer: Peer
    app: Application
    store: BlobStore
    eraser: BlobEraser = field(init=False)
    replicator: BlobReplicator = field(init=False)

    def __post_init__(self) -> None:
        self.app.init_chain(self.peer.node.data.load_genesis())
        self.eraser = BlobEraser(self.store, self.app.query)
        self.replicator = BlobReplicator(self.store, [self.peer.url], self.peer.org, self.eraser)
        for listener in (self.eraser.on_commit, self.replicator.on_commit):
            self.app.on_commit(listener)

    def commit_up_to(self, height: int) -> None:
        blocks = self.peer.node.consensus.blocks
        while (next_height := self.app.info().last_height + 1) <= height:
            header = blocks.header(next_height)
            assert header is not None
            txs = [t.raw for t in blocks.block_txs(next_height)]
            self.app.finalize_block(BlockContext(next_height, header.time_ns), txs)
            self.app.commit()

    async def fetch_once(self) -> int:
        async with httpx.AsyncClient(timeout=60) as http:
            return await self.replicator.fetch_wanted(http)


def follower(peer: Peer, root: Path, store: BlobStore | None = None) -> Follower:
    root.mkdir(parents=True, exist_ok=True)
    app = Application(StateStore(root / "state.sqlite"))
    return Follower(peer, app, store or BlobStore(root / "blobs"))


def test_a_fetch_answered_before_the_erase_commits_stores_nothing(
    peer: Peer, tmp_path: Path
) -> None:
    record, patient = write_record(peer.url, peer.org)
    store = WatchedStore(tmp_path / "other" / "blobs")
    other = follower(peer, tmp_path / "other", store)
    other.commit_up_to(record.height)
    assert other.replicator.wanted == {record.blob_hash}
    peer.tap.hold = threading.Event()

    async def race() -> int:
        fetching = asyncio.create_task(other.fetch_once())
        await asyncio.to_thread(peer.tap.answered.wait, 60)  # the blob is on its way...
        erased_at = await asyncio.to_thread(peer.erase, patient, record)
        other.commit_up_to(erased_at)  # ...when the erase commits here: nothing to delete yet
        assert peer.tap.hold is not None
        peer.tap.hold.set()
        return await fetching

    assert asyncio.run(race()) == 0
    assert peer.tap.answers == [[200]]  # the peer did send the blob
    assert store.written == []  # refused before writing, not written and deleted after
    assert copies_of(other.store, record.blob_hash) == []
    assert other.replicator.wanted == set()


def test_a_blob_erased_while_the_fetched_copy_is_written_is_deleted(
    peer: Peer, tmp_path: Path
) -> None:
    record, patient = write_record(peer.url, peer.org)
    store = PausingStore(tmp_path / "other" / "blobs")
    other = follower(peer, tmp_path / "other", store)
    other.commit_up_to(record.height)

    async def race() -> int:
        fetching = asyncio.create_task(other.fetch_once())
        await asyncio.to_thread(store.entered.wait, 60)  # checked, about to be written...
        erased_at = await asyncio.to_thread(peer.erase, patient, record)
        other.commit_up_to(erased_at)  # ...when the erase commits: its listener finds nothing
        store.go.set()
        return await fetching

    assert asyncio.run(race()) == 0
    assert peer.tap.answers == [[200]]
    assert copies_of(store, record.blob_hash) == []


def test_a_blob_erased_on_the_peer_is_answered_410_and_never_asked_for_again(
    peer: Peer, tmp_path: Path
) -> None:
    record, patient = write_record(peer.url, peer.org)
    erased_at = peer.erase(patient, record)
    lagging = follower(peer, tmp_path / "other")
    lagging.commit_up_to(record.height)  # it has the anchor, not yet the erase
    assert asyncio.run(lagging.fetch_once()) == 0
    assert peer.tap.answers == [[410]]
    assert record.blob_hash in lagging.replicator.wanted  # a peer's word is not the chain's

    lagging.commit_up_to(erased_at)
    assert lagging.replicator.wanted == set()
    lagging.replicator.want(record.blob_hash)  # a reader here misses it, as the routes do
    assert asyncio.run(lagging.fetch_once()) == 0
    assert peer.tap.answers == [[410]]  # never asked again
    assert copies_of(lagging.store, record.blob_hash) == []


def test_the_sweep_deletes_an_erased_blob_stored_again_and_old_orphans_only(
    peer: Peer, tmp_path: Path
) -> None:
    record, patient = write_record(peer.url, peer.org)
    sealed = peer.node.blob_store.get(record.blob_hash)
    erased_at = peer.erase(patient, record)
    other = follower(peer, tmp_path / "other")
    other.commit_up_to(erased_at)
    other.store.put(sealed)  # written after the erase by some other path (a client's upload)
    old_orphan = other.store.put(b"uploaded, never anchored, long ago")
    young_orphan = other.store.put(b"uploaded a moment ago")
    backdate(other.store, old_orphan, ORPHAN_TTL + 60)

    report = asyncio.run(other.eraser.sweep())
    assert (report.erased, report.expired, report.orphans) == (1, 1, 1)
    assert copies_of(other.store, record.blob_hash) == []
    assert old_orphan not in other.store and young_orphan in other.store
