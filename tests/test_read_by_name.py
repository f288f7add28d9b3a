"""Reading a patient's records knowing only their on-chain names (design change 28).

A record's name is a keyed hash of its type and id, and the chain lists names, never ids.
With data-key wrap v2 (docs/crypto.md 6.1) the wrap is bound to the record's owner (patient,
name) and recipient, and carries the type, id and version inside: the patient, and a grantee
with the scope keys it was granted, open every record they may read from the names alone.
Against a real `careledger up` process; the attacks are written by a crafted writer (the
clinic's own identity, which has write consent) and anchored for real, so the reader meets
them exactly as the chain and the node serve them.
"""

from __future__ import annotations

import hashlib
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from accessutil import Consortium
from careledger.crypto.envelope import (
    BlobOwner,
    RecordBinding,
    WrappedKey,
    pack_record_blob,
    seal_record,
    unpack_record_blob,
)
from careledger.crypto.hashing import sha256_hex
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import wrap_data_key, wrap_to_scope
from careledger.wallet.consent import ConsentClient
from careledger.wallet.records import IntegrityError, RecordRef, RecordsClient, RecordsError
from careledger.wallet.scopes import scope_of
from careledger.wallet.sealing import Prepared, stamp
from nodeutil import NodeProcess, careledger_command, enrol, free_port

OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "Body weight"},
    "valueQuantity": {"value": 70.5, "unit": "kg"},
}
CONDITION = {
    "resourceType": "Condition",
    "code": {"text": "Hypertension"},
    "subject": {"reference": "Patient/p"},
}
MEDICATION = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {"text": "Lisinopril"},
    "subject": {"reference": "Patient/p"},
}
SENSITIVE = {
    **CONDITION,
    "code": {"text": "Depression"},
    "meta": {
        "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
        ]
    },
}


@dataclass
class World:
    node: NodeProcess
    clinic: RecordsClient  # the enrolling organisation: it writes, with write consent
    patient: KeyFile
    grantee: KeyFile  # another member organisation, granted diagnostics and medications
    stranger: KeyFile  # a member organisation with no grant
    expected: dict[tuple[str, str], dict[str, Any]]  # (type, id) -> the resource as written

    def reader(self, who: KeyFile, purpose: str = "") -> RecordsClient:
        return RecordsClient(self.node.url, who, purpose=purpose)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = NodeProcess(tmp_path_factory.mktemp("by-name") / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        founder = node.organisation()
        consortium = Consortium(node.url, founder)
        grantee = consortium.admit_member("Granted Clinic")
        stranger = consortium.admit_member("Stranger Clinic")  # the founder's vote ...
        vote = {"action": "admit", "subject": stranger.did}
        consortium.send(grantee, "identity/approve_membership", vote)  # ... and two thirds
        clinic = RecordsClient(node.url, founder, purpose="TREAT")
        patient = enrol(clinic, "by-name patient")
        resources = [
            {**OBSERVATION, "id": "obs-1"},
            {**OBSERVATION, "id": "obs-2", "valueQuantity": {"value": 71.0, "unit": "kg"}},
            {**CONDITION, "id": "cond-1"},
            {**MEDICATION, "id": "med-1"},
            {**SENSITIVE, "id": "psy-1"},
        ]
        written = clinic.write_many(patient.did, resources)
        own = RecordsClient(node.url, patient).write(patient.did, {**OBSERVATION, "id": "self-1"})
        expected = {}
        for w in [*written, own]:
            resource = (RecordsClient(node.url, patient)).read(w.ref)
            expected[(w.ref.resource_type, w.ref.resource_id)] = resource
        ConsentClient(node.url, patient).grant(
            grantee.did, scopes=("diagnostics", "medications"), purposes=("TREAT",)
        )
        yield World(node, clinic, patient, grantee, stranger, expected)
    finally:
        node.stop()


def chain_names(world: World) -> set[str]:
    return {rec["record"] for rec in world.clinic.records(world.patient.did)}


# --- what the patient and a grantee read, from names only ------------------------------------


def test_the_patient_reads_every_record_without_knowing_any_id(world: World) -> None:
    patient = world.reader(world.patient)
    found = patient.read_all()
    assert {(ref.resource_type, ref.resource_id) for ref, _ in found} == set(world.expected)
    for ref, resource in found:
        assert resource == world.expected[(ref.resource_type, ref.resource_id)]
        assert ref.name == record_name(world.patient.naming_key, ref.resource_type, ref.resource_id)
    assert {ref.name for ref, _ in found} == chain_names(world)
    # One record by its name alone, as the portal's timeline and explorer have it.
    name = next(ref.name for ref, _ in found if ref.resource_id == "cond-1")
    ref, resource = patient.read_name(world.patient.did, name)
    assert (ref.resource_type, ref.resource_id, resource["code"]["text"]) == (
        "Condition",
        "cond-1",
        "Hypertension",
    )


def test_a_grantee_reads_what_its_scope_keys_open_and_nothing_else(world: World) -> None:
    grantee = world.reader(world.grantee, purpose="TREAT")
    found = grantee.read_all(world.patient.did)
    ids = {ref.resource_id for ref, _ in found}
    assert ids == {"obs-1", "obs-2", "self-1", "med-1"}  # diagnostics and medications
    for ref, resource in found:
        assert resource == world.expected[(ref.resource_type, ref.resource_id)]
    # The control: the grantee sees the other names on the chain, and opens none of them.
    assert len(chain_names(world)) == len(world.expected) > len(ids)


def test_a_member_without_a_grant_reads_nothing(world: World) -> None:
    stranger = world.reader(world.stranger, purpose="TREAT")
    with pytest.raises(RecordsError) as refused:
        stranger.read_all(world.patient.did)
    assert refused.value.status == 403  # not a party of the patient's consent


def test_records_export_writes_a_collection_bundle_of_everything(
    world: World, tmp_path: Path
) -> None:
    key = tmp_path / "patient.json"
    world.patient.save(key)
    out = tmp_path / "export.json"
    command = [*careledger_command(), "records", "export", "--as", str(key)]
    command += ["--out", str(out), "--node", world.node.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # health data: the owner's only
    bundle = orjson.loads(out.read_bytes())
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "collection")
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert {(r["resourceType"], r["id"]): r for r in resources} == world.expected
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwritten


# --- attacks by a crafted writer ---------------------------------------------------------------


def crafted_write(
    world: World,
    resource: dict[str, Any],
    *,
    wrap_id: str | None = None,
    name_id: str | None = None,
    wraps: list[WrappedKey] | None = None,
    ciphertext_and_commitment: tuple[bytes, str] | None = None,
    magic: bytes = b"",
) -> RecordRef:
    """Seal `resource` as the clinic would, then lie as asked: the id inside the wraps
    (`wrap_id`), the id the record is named by (`name_id`), the wraps and ciphertext
    themselves (copied from another record), or the blob format (`magic`). Uploaded and
    anchored for real; the ref of the record as anchored."""
    clinic, patient = world.clinic, world.patient.did
    naming_key = clinic.keyring.naming_key(patient)
    resource = stamp(resource, 1)
    kind, real_id = resource["resourceType"], resource["id"]
    binding = RecordBinding(patient, kind, real_id, 1)
    sealed = seal_record(resource, binding)
    told = RecordBinding(patient, kind, wrap_id or real_id, 1)
    name = record_name(naming_key, kind, name_id or wrap_id or real_id)
    scope = clinic.scope_keys(patient)[scope_of(resource)]
    if wraps is None:
        wraps = [
            wrap_to_scope(sealed.data_key, told, name, scope),
            wrap_data_key(
                sealed.data_key, told, name, clinic.did, clinic.identity.encryption_public
            ),
        ]
    ciphertext, commitment = ciphertext_and_commitment or (
        sealed.ciphertext,
        sealed.commitment.hex(),
    )
    blob = pack_record_blob(BlobOwner(patient, name), wraps, ciphertext)
    if magic:
        blob = magic + blob[len(magic) :]
    payload = {
        "patient": patient,
        "resource_type": kind,
        "record": name,
        "version": 1,
        "blob_hash": sha256_hex(blob),
        "commitment": commitment,
        "recipients": [w.recipient for w in wraps],
    }
    ref = RecordRef(patient, kind, name_id or wrap_id or real_id, name)
    clinic.upload([blob])
    clinic.writer.anchor([Prepared(ref, 1, blob, payload)])
    return ref


def failures_of_read_all(world: World) -> dict[str, RecordsError]:
    failures: dict[str, RecordsError] = {}
    world.reader(world.patient).read_all(on_failure=lambda n, e: failures.__setitem__(n, e))
    return failures


def test_a_wrap_copied_into_another_records_blob_does_not_open(world: World) -> None:
    """The clinic copies record obs-1's wraps and ciphertext into a blob of a new record: the
    wraps are bound to obs-1's name, so they open for no other record."""
    patient = world.reader(world.patient)
    source = patient.ref(world.patient.did, "Observation", "obs-1")
    latest = patient.versions(source)["history"][-1]
    [(status, blob)] = patient.fetch([latest["blob_hash"]])
    assert status == 200
    parsed = unpack_record_blob(blob)
    ref = crafted_write(
        world,
        {**OBSERVATION, "id": "copy-1"},
        wraps=list(parsed.wrapped_keys),
        ciphertext_and_commitment=(parsed.ciphertext, latest["commitment"]),
    )
    with pytest.raises(IntegrityError, match="does not unwrap"):
        patient.read_name(world.patient.did, ref.name)
    assert "does not unwrap" in str(failures_of_read_all(world)[ref.name])
    # The control: the same wraps still open their own record.
    assert patient.read(source)["id"] == "obs-1"


def test_a_wrap_naming_another_id_than_the_ciphertext_is_caught_by_the_aad(world: World) -> None:
    """The clinic seals the record as id real-1 but says fake-1 in the wraps (and names the
    record by fake-1): the wrap opens and names fake-1, but the ciphertext's associated
    data binds real-1, so decryption fails: the reader never shows a record under an id it
    was not sealed under."""
    ref = crafted_write(world, {**OBSERVATION, "id": "real-1"}, wrap_id="fake-1")
    patient = world.reader(world.patient)
    with pytest.raises(IntegrityError, match="does not decrypt"):
        patient.read_name(world.patient.did, ref.name)
    with pytest.raises(IntegrityError, match="does not decrypt"):
        patient.read(ref)  # by its (claimed) ref too
    assert "does not decrypt" in str(failures_of_read_all(world)[ref.name])
    grantee = world.reader(world.grantee, purpose="TREAT")
    failed: list[str] = []
    grantee.read_all(world.patient.did, lambda name, _: failed.append(name))
    assert ref.name in failed


def test_a_record_named_for_another_id_is_caught_by_the_naming_key(world: World) -> None:
    """Wraps and ciphertext agree on id named-1, but the record is anchored under the name
    of other-1: a reader holding the naming key sees that the name is not the HMAC of the
    type and id it opened."""
    ref = crafted_write(world, {**OBSERVATION, "id": "named-1"}, name_id="other-1")
    patient = world.reader(world.patient)
    with pytest.raises(IntegrityError, match="name is not that of its type and id"):
        patient.read_name(world.patient.did, ref.name)
    assert "name is not" in str(failures_of_read_all(world)[ref.name])


def test_a_format_2_blob_is_refused_by_name(world: World) -> None:
    """A blob of the old format (wrapped to the FHIR id): the node refuses to anchor it, and
    a reader served one (a lying node and chain) refuses it naming its format."""
    with pytest.raises(RecordsError) as refused:
        crafted_write(world, {**OBSERVATION, "id": "old-format"}, magic=b"CLB\x02")
    assert "names no record" in str(refused.value)  # the node's anchor guard
    patient = world.reader(world.patient)
    source = patient.ref(world.patient.did, "Observation", "obs-2")
    info = patient.versions(source)
    anchor = dict(info["history"][-1])
    [(_, blob)] = patient.fetch([anchor["blob_hash"]])
    old = b"CLB\x02" + blob[4:]
    anchor["blob_hash"] = hashlib.sha256(old).hexdigest()
    with pytest.raises(IntegrityError, match="format 2 is not read"):
        patient.open_blob(source, anchor, old)
    with pytest.raises(IntegrityError, match="format 2 is not read"):
        patient.reader.open_named(world.patient.did, info, anchor, old)
