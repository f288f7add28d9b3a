"""A record blob names the record it belongs to (patient and record name) in its header.

The writer puts the owner there (real embedded node, real HTTP); the reader refuses a blob
whose header names another record, even when its hash matches the anchor and its keys and
ciphertext would open: the header is what nodes check before storing, anchoring or erasing
a blob (docs/crypto.md section 7), so a reader must never accept one that disagrees with it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from careledger.chain.modules.records.keeper import record_name
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.envelope import (
    BlobOwner,
    pack_record_blob,
    record_blob_owner,
    unpack_record_blob,
)
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise
from careledger.wallet.records import IntegrityError, RecordRef, RecordsClient, Written
from nodeutil import free_port

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
    patient: RecordsClient
    written: Written


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("blob-owner") / "data"
    organisation = initialise(root)
    node = build_node(root, Solo(0.05))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(node.asgi(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    with RecordsClient(url, organisation) as clinic:
        enrolment = clinic.enrol_patient("blob owner test")
        written = clinic.write(enrolment.keyfile.did, OBSERVATION)
    yield Setup(node, RecordsClient(url, enrolment.keyfile), written)
    server.should_exit = True
    thread.join(10)
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
    expected = BlobOwner(ref.patient, record_name(ref.patient, ref.resource_type, ref.resource_id))
    assert record_blob_owner(stored_blob(setup)) == expected
    assert setup.patient.read(ref)["valueQuantity"]["value"] == 37.2


def test_the_reader_refuses_a_blob_whose_header_names_another_record(setup: Setup) -> None:
    ref = setup.written.ref
    other = RecordRef(ref.patient, "Observation", "someone-elses-record")
    stranger = RecordRef("did:key:z6MkStrangerPatientOnly", ref.resource_type, ref.resource_id)
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
