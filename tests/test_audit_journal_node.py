"""The audit inside one node (in process, real HTTP on loopback): a read is refused, never
served unaudited, when the journal cannot take it; a batch a crash left unsubmitted is
submitted the same at the next start; access entries as FHIR AuditEvents."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from accessutil import Consortium, Record
from careledger.chain.app import QueryResult
from careledger.chain.modules.audit.entries import (
    MAX_BATCH_ENTRIES,
    OUTCOMES,
    AccessEntry,
    BadBatch,
)
from careledger.chain.tx import decode_tx
from careledger.consensus.driver import Admission, Submission
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.audit.batcher import AuditBatcher, BatchDriver
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import DataDir, initialise
from careledger.protocol.receipts import HEADER
from careledger.wallet.audit import AuditClient, LoggedAccess, to_audit_event
from careledger.wallet.fhir import validate_resource
from careledger.wallet.node_client import NodeClient, NodeError
from nodeutil import serve_over_http

pytestmark = pytest.mark.timeout(120)


def test_a_full_journal_refuses_the_read_with_503_and_serves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    founder = initialise(root)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0)
    try:
        with serve_over_http(node.asgi()) as url:
            net = Consortium(url, founder)
            patient = net.patient()
            record = net.write(patient, patient.did)
            reader = net.reader(patient)
            served = reader.get(record.hash)
            assert served.status_code == 200 and HEADER.lower() in served.headers
            node.audit.journal.max_pending = 0  # a journal that cannot take one more entry
            refused = reader.get(record.hash)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert record.blob not in refused.content
            frames = reader.http.post(
                "/blobs/fetch", json={"hashes": [record.hash]}, auth=reader.auth
            )
            assert frames.status_code == 503 and record.blob not in frames.content
            node.audit.journal.max_pending = 10
            assert reader.get(record.hash).content == record.blob  # and it recovers
    finally:
        node.close()
    rows = sqlite3.connect(root / "audit.sqlite").execute("SELECT COUNT(*) FROM entries")
    assert rows.fetchone()[0] == 2  # the two served reads, not the refused ones


def _access(outcome: str, purpose: str = "TREAT", at: int = 1_800_000_000) -> LoggedAccess:
    reader, org, patient, node = (Identity.generate().did for _ in range(4))
    anchored = outcome not in ("not_found", "malformed", "unavailable")
    entry = AccessEntry(
        patient=patient if anchored else "",
        record="ab" * 16 if anchored else "",
        version=1 if anchored else 0,
        reader=reader,
        org=org,
        purpose=purpose,
        outcome=outcome,
        at=at,
    )
    return LoggedAccess(entry, 12, "cd" * 32, node, 3, 0)


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_every_outcome_maps_to_a_valid_fhir_audit_event(outcome: str) -> None:
    access = _access(outcome, "" if outcome == "patient" else "TREAT")
    event = to_audit_event(access)
    validate_resource(event)  # fhir.resources R4B: raises InvalidResource otherwise
    assert (event["type"]["code"], event["subtype"][0]["code"], event["action"]) == (
        "rest",
        "read",
        "R",
    )
    allowed = outcome in OUTCOMES[:5]
    assert event["outcome"] == ("0" if allowed else "8" if outcome == "unavailable" else "4")
    (requestor,) = [a for a in event["agent"] if a["requestor"]]
    assert requestor["who"]["identifier"]["value"] == access.entry.reader
    assert event["recorded"] == "2027-01-15T08:00:00Z"
    if access.entry.patient:
        assert event["entity"][0]["what"]["identifier"]["value"] == access.entry.patient


class _Crash(Exception):
    """The process dies here: after the batch row is written, before the submission."""


class _CrashingDriver:
    """The node's own driver for queries; a submission is where the 'process' dies."""

    def __init__(self, inner: BatchDriver) -> None:
        self.inner = inner

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult:
        return await self.inner.query(path, data)

    async def submit(self, raw: bytes, wait: bool) -> Submission:
        raise _Crash

    async def admit(self, raw: bytes, wait: bool) -> Admission:
        raise _Crash


def read_then_crash_at_the_batch(node: Node[Any], net: Consortium) -> tuple[KeyFile, Record]:
    """A patient reads its own record (journaled; batching is off), then a batcher records
    the read's batch and "dies" before submitting it: the journal holds batch 1 uncommitted."""
    patient = net.patient()
    record = net.write(patient, patient.did)
    assert net.reader(patient).get(record.hash).status_code == 200
    node_key = KeyFile.load(node.data.node_key)
    crashing = AuditBatcher(
        node.audit.journal, _CrashingDriver(node.driver), node_key, net.chain_id
    )
    with pytest.raises(_Crash):
        asyncio.run(crashing.batch_once())
    return patient, record


def test_a_batch_recorded_but_not_submitted_is_resubmitted_the_same(tmp_path: Path) -> None:
    """A crash between writing a batch row and its submission: at the next start the node
    submits that same batch (same seq, same entries), then batches the rest."""
    root = tmp_path / "data"
    founder = initialise(root)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0)
    try:
        with serve_over_http(node.asgi()) as url:
            net = Consortium(url, founder)
            patient, record = read_then_crash_at_the_batch(node, net)
            node_key = KeyFile.load(DataDir(root).node_key)
            (recorded,) = asyncio.run(node.audit.journal.uncommitted())
            assert net.reader(patient).get(record.hash).status_code == 200  # after the batch
    finally:
        node.close()
    assert (recorded.seq, recorded.first, recorded.count) == (1, 1, 1)

    restarted = build_node(root, Solo(block_interval=0.05), audit_interval=0.05)
    try:
        with serve_over_http(restarted.asgi()) as url:
            client = NodeClient(url, founder)
            batch = _wait_for_batch(client, node_key.did, 2)
            first = client.query("audit/batch", node=node_key.did, seq="1")
            on_chain = decode_tx(bytes.fromhex(client.transaction(first["tx"])["tx"]))
            assert on_chain.tx.payload == recorded.payload  # the same batch, re-signed
            assert (first["count"], batch["count"]) == (1, 1)
            log = AuditClient(url, patient).log(verify=True)
            assert [a.entry.outcome for a in log] == ["patient", "patient"]
            assert asyncio.run(restarted.audit.journal.uncommitted()) == []
    finally:
        restarted.close()


def _wait_for_batch(client: NodeClient, node: str, seq: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        try:
            found: dict[str, Any] = client.query("audit/batch", node=node, seq=str(seq))
            return found
        except NodeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_node_without_its_own_key_serves_no_read(tmp_path: Path) -> None:
    """A node whose key file is gone could journal reads but never commit them (nothing signs
    its batches) nor receipt them: it must not serve reads the patient will never see. Every
    read, GET or fetch, is refused with 503 `no_node_key`, no byte of the blob served."""
    root = tmp_path / "data"
    founder = initialise(root)
    DataDir(root).node_key.unlink()  # lost, or a data directory from before node keys
    node = build_node(root, Solo(block_interval=0.05))
    try:
        assert node.audit.batcher is None and "no node key" in node.audit.why_not_batching
        with serve_over_http(node.asgi()) as url:
            assert_every_read_refused(Consortium(url, founder), "no_node_key")
    finally:
        node.close()


def assert_every_read_refused(net: Consortium, code: str) -> None:
    """A patient's read of its own record, GET and fetch: 503 `code`, no byte of the blob
    served, no receipt."""
    patient = net.patient()
    record = net.write(patient, patient.did)
    reader = net.reader(patient)
    refused = reader.get(record.hash)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == code
    assert record.blob not in refused.content and HEADER.lower() not in refused.headers
    frames = reader.http.post("/blobs/fetch", json={"hashes": [record.hash]}, auth=reader.auth)
    assert frames.status_code == 503 and record.blob not in frames.content


def test_a_backlog_of_distinct_parties_is_split_into_batches_the_chain_takes(
    tmp_path: Path,
) -> None:
    """3,000 journaled entries, each of a different reader and organisation (reads of blobs
    that anchor nothing: an entry naming a record must name a real one): no
    batch may hold them all (parties, records and transaction bytes are bounded), so the
    batcher splits them, and the chain takes every batch, in order, none lost."""
    root = tmp_path / "data"
    initialise(root)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0.05)
    journal, batcher = node.audit.journal, node.audit.batcher
    assert batcher is not None
    now = int(time.time())
    asyncio.run(journal.append([_access("not_found", at=now).entry.to_json() for _ in range(3000)]))
    try:
        with serve_over_http(node.asgi()):  # its lifespan runs the batcher
            deadline = time.monotonic() + 60
            while asyncio.run(journal.unbatched(1)) or asyncio.run(journal.uncommitted()):
                assert time.monotonic() < deadline, "the backlog was not committed"
                time.sleep(0.05)
            node_did = batcher.node_key.did
            counts = [
                asyncio.run(_batch(node.driver, node_did, seq))["count"]
                for seq in range(1, asyncio.run(journal.last_batch_seq()) + 1)
            ]
    finally:
        node.close()
    assert sum(counts) == 3000 and len(counts) >= 3  # 6,000 dids: over 64 KiB each third
    assert all(count <= MAX_BATCH_ENTRIES for count in counts)


async def _batch(driver: BatchDriver, node: str, seq: int) -> dict[str, Any]:
    found = await driver.query("audit/batch", orjson.dumps({"node": node, "seq": str(seq)}))
    assert found.code == 0, found.log
    answer: dict[str, Any] = orjson.loads(found.value)
    return answer


def test_a_malformed_journal_entry_is_never_signed_into_a_batch(tmp_path: Path) -> None:
    """The batcher checks a journaled entry once, when it encodes its batch (issue 13 took
    the second and third checks out): an entry the chain would refuse (a reader that is not
    a did, an unknown outcome, a string where a number goes) stops the batch before any
    signature, no batch row is recorded and nothing is submitted."""
    root = tmp_path / "data"
    initialise(root)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0)
    good = _access("not_found", at=int(time.time())).entry.to_json()
    bad_rows = [
        {**good, "reader": "not a did"},
        {**good, "outcome": "peeked"},
        {**good, "at": str(good["at"])},
        {**good, "extra": 1},
    ]
    try:
        batcher = AuditBatcher(
            node.audit.journal,
            _CrashingDriver(node.driver),  # any submission would raise _Crash
            KeyFile.load(node.data.node_key),
            "careledger-test",
        )
        for bad in bad_rows:
            asyncio.run(node.audit.journal.append([good, bad]))
            with pytest.raises(BadBatch):
                asyncio.run(batcher.batch_once())
            assert asyncio.run(node.audit.journal.last_batch_seq()) == 0
            asyncio.run(node.audit.journal.run(lambda db: db.execute("DELETE FROM entries")))
    finally:
        node.close()
