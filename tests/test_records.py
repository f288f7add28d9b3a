"""Records end to end: every Synthea resource written, read back, scanned, tampered, erased.

One embedded node (real SQLite, real blob store, real HTTP server on loopback) holds every
Synthea bundle for the whole module; the writer is the node's organisation, the readers are
the patients whose keys the import wrote.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from blobutil import files_holding, flip_byte, overwrite, raw_bytes
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.envelope import BlobOwner, pack_record_blob, unpack_record_blob
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.requestsig import Audience, authorization
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import DataDir, initialise
from careledger.protocol.signing import RequestSigner
from careledger.storage.blobstore import blob_hash
from careledger.wallet.fhir import BundleIndex
from careledger.wallet.node_client import NodeClient
from careledger.wallet.proofs import ProofError, TrustedHeaders, verify_record_proof
from careledger.wallet.records import (
    Erased,
    ImportSummary,
    IntegrityError,
    RecordsClient,
    RecordsError,
    Written,
    import_bundle,
    stamp,
)
from nodeutil import SHARED_DATA, claimed_keys, enrol, free_port, run_verify

SYNTHEA = SHARED_DATA / "synthea-r4"


@dataclass
class Imported:
    root: Path
    url: str
    node: Node[SoloProducer]
    org: KeyFile
    summary: ImportSummary
    written: list[Written]
    originals: dict[tuple[str, str, str], Any]  # (patient, type, id) -> resource as written
    patients: dict[str, KeyFile]
    server: uvicorn.Server

    def client(self, keyfile: KeyFile) -> RecordsClient:
        # Anyone but the patient states why it reads (the node's consent guard asks).
        purpose = "" if keyfile.kind == "patient" else "TREAT"
        return RecordsClient(NodeClient(self.url), keyfile, purpose=purpose)

    def patient_of(self, written: Written) -> RecordsClient:
        return self.client(self.patients[written.ref.patient])


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    base = tmp_path_factory.mktemp("records")
    root = base / "data"
    org = initialise(root)
    node = build_node(root, Solo(block_interval=0.05))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(node.asgi(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    summary, written, originals = ImportSummary(), [], {}
    with RecordsClient(url, org, workers=2) as client:
        for path in sorted(SYNTHEA.glob("*.json")):
            bundle = orjson.loads(path.read_bytes())
            index = BundleIndex.of(bundle)
            done = import_bundle(client, bundle, base / "patient-keys", summary)
            by_id = {
                (e.resource["resourceType"], e.resource["id"]): index.local_references(e.resource)
                for e in index.entries
            }
            for w in done:
                key = (w.ref.resource_type, w.ref.resource_id)
                originals[(w.ref.patient, *key)] = by_id[key]
            written += done
    patients = {k.did: k for k in map(claimed_keys, summary.claims)}
    yield Imported(root, url, node, org, summary, written, originals, patients, server)
    server.should_exit = True
    thread.join(10)
    node.close()


def test_every_synthea_resource_reads_back_as_written(imported: Imported) -> None:
    total = sum(len(orjson.loads(p.read_bytes())["entry"]) for p in sorted(SYNTHEA.glob("*.json")))
    skipped = imported.summary.skipped
    assert set(skipped) == {"Organization", "Practitioner"}  # directory data, no patient
    assert len(imported.written) + sum(skipped.values()) == total
    assert imported.summary.patients == 39

    by_patient: dict[str, list[Written]] = {}
    for w in imported.written:
        by_patient.setdefault(w.ref.patient, []).append(w)
    for did, writes in by_patient.items():
        resources = imported.client(imported.patients[did]).read_many([w.ref for w in writes])
        for w, resource in zip(writes, resources, strict=True):
            original = imported.originals[(did, w.ref.resource_type, w.ref.resource_id)]
            # As JSON values; the store adds meta.versionId and nothing else.
            assert resource == orjson.loads(orjson.dumps(stamp(original, 1)))
            assert resource["meta"]["versionId"] == "1"


def test_the_writer_reads_what_it_wrote_and_others_cannot(imported: Imported) -> None:
    first = imported.written[0]
    writer = imported.client(imported.org)
    assert writer.read(first.ref)["id"] == first.ref.resource_id
    other_patient = next(k for d, k in imported.patients.items() if d != first.ref.patient)
    with pytest.raises(RecordsError) as denied:
        imported.client(other_patient).read(first.ref)
    assert denied.value.status == 403


def _sensitive_values(resource: Any) -> Iterator[str]:
    for name in resource.get("name", []):
        yield from name.get("given", [])
        if "family" in name:
            yield name["family"]
    for identifier in resource.get("identifier", []):
        if identifier.get("value"):
            yield identifier["value"]
    for address in resource.get("address", []):
        yield from address.get("line", [])
    for telecom in resource.get("telecom", []):
        if telecom.get("value"):
            yield telecom["value"]
    if resource.get("birthDate"):
        yield resource["birthDate"]


def test_no_plaintext_reaches_the_chain_or_the_state(imported: Imported) -> None:
    needles: set[str] = set()
    for (_, resource_type, resource_id), resource in imported.originals.items():
        if resource_type == "Patient":
            needles |= set(_sensitive_values(resource))
            needles.add(resource_id)  # Synthea reuses the Patient id as an identifier
    needles = {n for n in needles if len(n) >= 4}
    assert len(needles) > 39 * 5
    data = DataDir(imported.root)
    files = [p for p in imported.root.iterdir() if p.name.startswith(("state.", "blocks."))]
    assert data.state in files and data.blocks in files
    # Read by another process: closing a file descriptor of an SQLite database in the
    # process that has it open (the embedded node here) drops that process's POSIX locks.
    haystack = b"".join(
        subprocess.run(["cat", str(p)], capture_output=True, check=True).stdout for p in files
    )
    assert len(haystack) > 1_000_000
    found = [n for n in needles if n.encode() in haystack]
    assert found == []


def test_a_flipped_byte_is_detected_on_read_and_by_verify(imported: Imported) -> None:
    victim = imported.written[10]
    store = imported.node.blob_store
    original = flip_byte(store, victim.blob_hash)  # one bit, in the middle of the blob
    altered = raw_bytes(store, victim.blob_hash)
    try:
        with pytest.raises(RecordsError) as on_read:
            imported.patient_of(victim).read(victim.ref)
        assert on_read.value.status == 500 and "corrupted" in str(on_read.value)
        result = run_verify(imported.root)
        assert result.returncode == 1
        assert victim.blob_hash in result.stderr and "does not match" in result.stderr
    finally:
        overwrite(store, victim.blob_hash, original)
    # The client checks too: altered bytes served by a dishonest node are refused.
    patient = imported.patient_of(victim)
    anchor = patient.versions(victim.ref)["history"][0]
    with pytest.raises(IntegrityError, match="does not match its anchor"):
        patient.open_blob(victim.ref, anchor, bytes(altered))


def test_a_ciphertext_moved_onto_another_record_does_not_decrypt(imported: Imported) -> None:
    first = imported.written[20]
    a, b = [
        w
        for w in imported.written
        if w.ref.patient == first.ref.patient and w.ref.resource_type == "Observation"
    ][:2]
    patient = imported.patient_of(a)
    # a's keys and ciphertext under a header naming b: only the crypto binding can refuse it
    parsed = unpack_record_blob(imported.node.blob_store.get(a.blob_hash))
    owner_b = BlobOwner(b.ref.patient, b.ref.name)
    blob_a = pack_record_blob(owner_b, parsed.wrapped_keys, parsed.ciphertext)
    anchor_b = dict(patient.versions(b.ref)["history"][0])
    anchor_b["blob_hash"] = blob_hash(blob_a)  # even with the hash check satisfied
    with pytest.raises(IntegrityError, match=r"does not (unwrap|decrypt)"):
        patient.open_blob(b.ref, anchor_b, blob_a)


def fresh_patient(imported: Imported, count: int) -> tuple[RecordsClient, list[Written]]:
    """A patient of its own with `count` Synthea observations, for a test that changes them
    (so that no other test depends on whether, or in which order, it ran)."""
    writer = imported.client(imported.org)
    patient = enrol(writer, "a patient of one test")
    observations = [
        {k: v for k, v in resource.items() if k != "subject"}
        for (_, kind, _), resource in imported.originals.items()
        if kind == "Observation"
    ][:count]
    written = writer.write_many(patient.did, observations)
    return imported.client(patient), written


def test_erasure_deletes_blobs_and_keys(imported: Imported) -> None:
    patient, mine = fresh_patient(imported, 4)
    did = patient.did
    store = imported.node.blob_store
    # Each blob's last 256 bytes: ciphertext, found in no other blob (its header, naming the
    # patient, is shared with their other records).
    sealed = [store.get(w.blob_hash)[-256:] for w in mine]
    patient.erase([mine[0].ref, mine[1].ref])
    for w, data in zip(mine[:2], sealed, strict=False):
        assert w.blob_hash not in store  # ciphertext and wrapped keys, one blob
        assert files_holding(store.root, data) == []  # punched out of its segment
        with pytest.raises(Erased, match="erased"):
            patient.read(w.ref)
    # The node answers 410 for the blob itself.
    target = f"/blobs/{mine[0].blob_hash}"
    response = httpx.get(imported.url + target, auth=RequestSigner(patient.identity, did))
    assert response.status_code == 410 and "erased" in response.text
    assert patient.read(mine[2].ref)["id"] == mine[2].ref.resource_id  # the rest remains

    patient.erase()  # everything of this patient
    assert not any(w.blob_hash in store for w in mine)
    assert all(files_holding(store.root, data) == [] for data in sealed)
    again = {"resourceType": "Observation", "id": mine[3].ref.resource_id}
    with pytest.raises(RecordsError) as refused:
        imported.client(imported.org).write(
            did, {**again, "status": "final", "code": {"text": "x"}}
        )
    assert refused.value.status == 410


def _key(w: Written) -> tuple[str, str]:
    return w.ref.resource_type, w.ref.resource_id


def test_an_inclusion_proof_verifies_offline_and_fails_for_altered_content(
    imported: Imported,
) -> None:
    target = imported.written[5]
    proof = imported.patient_of(target).proof(target.ref)
    proof = orjson.loads(orjson.dumps(proof))  # as it would be stored and sent
    block = NodeClient(imported.url, imported.org).block(target.height)
    trust = TrustedHeaders({target.height: block["hash"]})  # the hash as the node has it
    verified = verify_record_proof(proof, trust)
    assert verified.ref == target.ref and verified.author == imported.org.did
    assert verified.height == target.height and proof["anchor"]["result"]["code"] == 0
    assert verified.trusted and block["hash"] == verified.header_hash

    altered = orjson.loads(orjson.dumps(proof))
    altered["resource"]["status"] = "entered-in-error"
    with pytest.raises(ProofError, match="commitment"):
        verify_record_proof(altered, trust)
    other = orjson.loads(orjson.dumps(proof))
    other["resource"]["id"] = "another-id"  # the commitment binds the id (names are keyed)
    with pytest.raises(ProofError, match="anchored commitment"):
        verify_record_proof(other, trust)
    other["resource"]["meta"]["versionId"] = "7"
    with pytest.raises(ProofError, match="not the anchored record"):
        verify_record_proof(other, trust)
    moved = orjson.loads(orjson.dumps(proof))
    tx_proof = moved["anchor"]["tx_proof"]
    tx_proof["index"] = (tx_proof["index"] + 1) % max(2, tx_proof["total"])
    with pytest.raises(ProofError, match="different positions"):
        verify_record_proof(moved, trust)


def test_versions_history_and_tombstones(imported: Imported) -> None:
    patient, (target,) = fresh_patient(imported, 1)
    writer = imported.client(imported.org)
    original = writer.read(target.ref)
    second = writer.write(target.ref.patient, {**original, "status": "entered-in-error"})
    assert second.version == 2
    assert patient.read(target.ref)["meta"]["versionId"] == "2"
    assert patient.read(target.ref, version=1)["meta"]["versionId"] == "1"
    deleted = writer.delete(target.ref)
    assert deleted.version == 3
    history = patient.history(target.ref)
    assert [h["meta"]["versionId"] if h else None for h in history] == ["1", "2", None]
    with pytest.raises(RecordsError) as gone:
        patient.read(target.ref)
    assert gone.value.status == 410


def test_bad_input_gets_clear_errors_and_nothing_half_written(imported: Imported) -> None:
    writer = imported.client(imported.org)
    did = imported.written[200].ref.patient
    before = sum(1 for _ in imported.node.blob_store)
    invalid = {
        "resourceType": "Observation",
        "id": "bad-1",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": "not a number"},
    }
    with pytest.raises(RecordsError) as bad_fhir:
        writer.write(did, invalid)
    assert bad_fhir.value.status == 422 and "Observation.valueQuantity.value" in str(bad_fhir.value)
    assert sum(1 for _ in imported.node.blob_store) == before  # nothing uploaded

    with pytest.raises(RecordsError) as unregistered:
        writer.write("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", invalid)
    assert unregistered.value.status == 404

    existing = imported.written[201]
    resource = imported.originals[(did, *_key(existing))]
    naming_key = writer.keyring.naming_key(did)
    job = writer.writer.job(did, resource, writer.scope_keys(did), {}, naming_key)
    prepared = writer.writer.seal_and_upload([job])  # a well-formed version 1 of an existing record
    with pytest.raises(RecordsError) as conflict:
        writer.writer.anchor(prepared)
    assert conflict.value.status == 409 and "version conflict" in str(conflict.value)
    assert writer.read(existing.ref)["meta"]["versionId"] == "1"  # unchanged

    http = httpx.Client(base_url=imported.url)
    ts = time.time_ns() // 1_000_000
    body = b"some ciphertext"
    target = "/blobs/" + "00" * 32
    status = http.get("/status").json()
    audience = Audience(status["chain_id"], status["node_id"])
    header = authorization(writer.identity, writer.did, audience, "PUT", target, body, ts)
    mismatch = http.put(target, content=body, headers={"authorization": header})
    assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == "hash_mismatch"
    assert http.put(target, content=body).status_code == 401  # unsigned
    stale = authorization(
        writer.identity, writer.did, audience, "PUT", target, body, ts - 3_600_000
    )
    assert http.put(target, content=body, headers={"authorization": stale}).status_code == 401
    # An anchor needs its blob on the node:
    payload = dict(prepared[0].payload, blob_hash="ee" * 32, version=2)
    with pytest.raises(RecordsError) as no_blob:
        writer.writer.anchor([type(prepared[0])(prepared[0].ref, 2, b"", payload)])
    assert no_blob.value.status == 404 and "upload it before" in str(no_blob.value)


def test_verify_passes_on_the_whole_directory_with_erasures_and_orphans(
    imported: Imported, tmp_path: Path
) -> None:
    patient, mine = fresh_patient(imported, 3)
    patient.erase([mine[0].ref])
    writer = imported.client(imported.org)
    job = writer.writer.job(
        patient.did,
        {
            "resourceType": "Observation",
            "id": "never-anchored",
            "status": "final",
            "code": {"text": "x"},
        },
        writer.scope_keys(patient.did),
        {},
        writer.keyring.naming_key(patient.did),
    )
    writer.writer.seal_and_upload([job])  # uploaded, never anchored: an orphan
    copy = snapshot(imported, tmp_path / "copy")
    result = run_verify(copy)
    assert result.returncode == 0, result.stderr
    counts = re.search(r"\((\d+) erased; (\d+) never anchored\)", result.stdout)
    assert counts is not None, result.stdout
    # Erased and orphan blobs are counted, not faults (other tests may add their own).
    assert int(counts[1]) >= 1 and int(counts[2]) >= 1


def snapshot(imported: Imported, dest: Path) -> Path:
    """A consistent copy of the node's data directory while it keeps serving: SQLite's online
    backup of the state and block stores, the files copied (the node is idle between tests).
    `careledger verify` is an offline check of a directory nothing writes to."""
    data, copy = DataDir(imported.root), DataDir(dest)
    shutil.copytree(imported.root, dest, ignore=shutil.ignore_patterns("state.*", "blocks.*"))
    for source, target in ((data.state, copy.state), (data.blocks, copy.blocks)):
        with (
            contextlib.closing(sqlite3.connect(source)) as live,
            contextlib.closing(sqlite3.connect(target)) as backup,
        ):
            live.backup(backup)
    return dest
