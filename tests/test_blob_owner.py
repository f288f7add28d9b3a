"""A record blob names the record it belongs to (patient and record name) in its header.

The writer puts the owner there (real embedded node, real HTTP); the reader refuses a blob
whose header names another record, even when its hash matches the anchor and its keys and
ciphertext would open: the header is what nodes check before storing, anchoring or erasing
a blob (docs/crypto.md section 7), so a reader must never accept one that disagrees with it.

The attack (issue 7, attack 5): a registered identity sees a victim's blob hash in the mempool,
anchors that hash under a record of its own, then erases its record, so that every node deletes
the victim's blob. Nodes refuse the anchor; and when a node without that check (or a Byzantine
proposer) lets it into a block anyway, the erasure deletes nothing of the victim's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.envelope import (
    BlobOwner,
    pack_record_blob,
    record_blob_owner,
    unpack_record_blob,
)
from careledger.node.anchor_guard import BlobNamesItsRecord
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise
from careledger.node.erasure import sweep_erased
from careledger.wallet.node_client import NodeError
from careledger.wallet.records import IntegrityError, RecordRef, RecordsClient, Written
from careledger.wallet.scopes import scope_for
from nodeutil import enrol, serve_over_http

OBSERVATION = {
    "resourceType": "Observation",
    "id": "temp-1",
    "status": "final",
    "code": {"text": "Body temperature"},
    "valueQuantity": {"value": 37.2, "unit": "Cel"},
}


@dataclass
class Setup:
    node: Node[SoloProducer]
    clinic: RecordsClient
    patient: RecordsClient
    attacker: RecordsClient
    written: Written


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("blob-owner") / "data"
    organisation = initialise(root)
    node = build_node(root, Solo(0.05))
    with serve_over_http(node.asgi()) as url:
        clinic = RecordsClient(url, organisation)
        patient = enrol(clinic, "blob owner test")
        written = clinic.write(patient.did, OBSERVATION)
        attacker = RecordsClient(url, enrol(clinic, "attacker"))
        yield Setup(node, clinic, RecordsClient(url, patient), attacker, written)
    node.close()


def stored_blob(setup: Setup) -> bytes:
    return setup.node.blob_store.get(setup.written.blob_hash)


def anchor_of(setup: Setup, blob: bytes) -> dict[str, Any]:
    """The record's real anchor, with the blob hash of `blob` (as a lying chain would say)."""
    info = setup.patient.versions(setup.written.ref)
    anchor = dict(next(a for a in info["history"] if a["version"] == setup.written.version))
    anchor["blob_hash"] = hashlib.sha256(blob).hexdigest()
    return anchor


def with_owner(blob: bytes, owner: BlobOwner) -> bytes:
    """The same wrapped keys and ciphertext under another header."""
    parsed = unpack_record_blob(blob)
    return pack_record_blob(owner, parsed.wrapped_keys, parsed.ciphertext)


def test_the_writer_names_the_record_in_the_blob_header(setup: Setup) -> None:
    ref = setup.written.ref
    # The name is keyed: the patient computes the same one from the FHIR type and id.
    keyed = setup.patient.ref(ref.patient, ref.resource_type, ref.resource_id).name
    expected = BlobOwner(ref.patient, keyed)
    assert record_blob_owner(stored_blob(setup)) == expected
    assert setup.patient.read(ref)["valueQuantity"]["value"] == 37.2


def test_the_reader_refuses_a_blob_whose_header_names_another_record(setup: Setup) -> None:
    ref = setup.written.ref
    other = setup.patient.ref(ref.patient, "Observation", "someone-elses-record")
    stranger = RecordRef(
        "did:key:z6MkStrangerPatientOnly", ref.resource_type, ref.resource_id, ref.name
    )
    for liar in (other, stranger):
        forged = with_owner(stored_blob(setup), BlobOwner(liar.patient, liar.name))
        with pytest.raises(IntegrityError, match="names another record"):
            setup.patient.open_blob(ref, anchor_of(setup, forged), forged)
    # The control: the same keys and ciphertext under the right header open.
    honest = with_owner(stored_blob(setup), BlobOwner(ref.patient, ref.name))
    opened = setup.patient.open_blob(ref, anchor_of(setup, honest), honest)
    assert opened.resource()["id"] == "temp-1"


def test_old_format_blobs_are_refused_by_the_reader(setup: Setup) -> None:
    parsed = unpack_record_blob(stored_blob(setup))
    key = parsed.wrapped_keys[0]
    recipient = key.recipient.encode()
    old = b"CLB\x01\x01" + len(recipient).to_bytes(2, "big") + recipient
    old += len(key.wrapped).to_bytes(2, "big") + key.wrapped + parsed.ciphertext
    with pytest.raises(IntegrityError, match="format 1 is not read"):
        setup.patient.open_blob(setup.written.ref, anchor_of(setup, old), old)


# --- the claim-and-erase attack --------------------------------------------------------------


def pending_victim_blob(setup: Setup, resource_id: str) -> tuple[str, bytes]:
    """A blob of a new record of the victim, uploaded and not yet anchored (its hash is what
    an attacker watching the mempool would see)."""
    victim = setup.written.ref.patient
    blob = with_owner(
        stored_blob(setup),
        BlobOwner(victim, setup.clinic.ref(victim, "Observation", resource_id).name),
    )
    (digest,) = setup.clinic.upload([blob])
    return digest, blob


def claim(setup: Setup, digest: str, resource_id: str) -> tuple[RecordRef, bytes]:
    """The attacker's anchor of `digest` as a record of its own (signed, not submitted)."""
    attacker = setup.attacker.did
    ref = setup.attacker.ref(attacker, "Observation", resource_id)
    scope = setup.attacker.scope_keys(attacker)[scope_for("Observation")]
    payload = {
        "patient": attacker,
        "resource_type": "Observation",
        "record": ref.name,
        "version": 1,
        "blob_hash": digest,
        "commitment": "00" * 32,
        "recipients": [scope.recipient],
    }
    return ref, setup.attacker.signer.sign("records/anchor", payload)


def test_a_node_refuses_an_anchor_of_a_blob_that_names_another_record(setup: Setup) -> None:
    digest, _ = pending_victim_blob(setup, "pending-1")
    _, raw = claim(setup, digest, "stolen-1")
    with pytest.raises(NodeError) as refused:
        setup.attacker.node.submit(raw, wait=True)
    assert refused.value.status == 409
    assert (
        f"not record {setup.attacker.ref(setup.attacker.did, 'Observation', 'stolen-1').name}"
        in str(refused.value)
    )
    # Nothing was anchored: the victim's record is still free for its own writer.
    victim = setup.written.ref.patient
    written = setup.clinic.write(victim, {**OBSERVATION, "id": "pending-1"})
    assert written.version == 1


def without_the_anchor_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """This node now behaves as one without the header check (or a Byzantine proposer's)."""
    monkeypatch.setattr(BlobNamesItsRecord, "__call__", lambda self, anchor, blob: None)


def test_an_erasure_of_a_hijacked_anchor_deletes_nothing_of_the_victims(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, _ = pending_victim_blob(setup, "pending-2")
    ref, raw = claim(setup, digest, "stolen-2")
    with monkeypatch.context() as patched:
        without_the_anchor_check(patched)
        assert setup.attacker.node.submit(raw, wait=True)["code"] == 0  # the claim lands
    setup.attacker.erase([ref])
    assert digest in setup.node.blob_store  # the commit listener kept it
    asyncio.run(setup.node.eraser.sweep())
    assert sweep_erased(setup.node.blob_store, setup.node.app) == 0
    assert digest in setup.node.blob_store  # and so did both sweeps


def test_replication_stores_no_copy_whose_header_names_another_record(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, blob = pending_victim_blob(setup, "pending-3")
    _, raw = claim(setup, digest, "stolen-3")
    with monkeypatch.context() as patched:
        without_the_anchor_check(patched)
        assert setup.attacker.node.submit(raw, wait=True)["code"] == 0
    # The chain says the hash anchors the attacker's record; the copy's header disagrees.
    assert setup.node.eraser.storable({digest: blob}) == []
    honest = stored_blob(setup)
    assert setup.node.eraser.storable({setup.written.blob_hash: honest}) == [
        setup.written.blob_hash
    ]
