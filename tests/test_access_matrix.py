"""Issue 8's access matrix, cell by cell, against a real `careledger up` process.

Every read goes through the records SDK as its reader would: the node's consent guard
decides (policy), and the reader's own keys decide whether the ciphertext opens (keys). Every
write goes through the SDK too, and the chain decides. The actors:

  A   the organisation that enrolled the patient and writes its records (write consent)
  B   an organisation with a read grant (broad scopes, treatment), practitioners b1 and b2
  C   an organisation whose grant names only its practitioner c1 (c2 is not named)
  D   an organisation whose grant the patient revoked
  E   an organisation with a grant that has expired
  F   an organisation with no grant at all
  X   an organisation with read and write grants, then voted out of the consortium
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from accessutil import Consortium
from careledger.crypto.envelope import unpack_record_blob
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import BROAD_SCOPES, UnwrapError, unwrap_data_key
from careledger.wallet.consent import ConsentClient
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from careledger.wallet.records import RecordRef, RecordsClient, RecordsError, Written
from nodeutil import NodeProcess, enrol, free_port

OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "body weight"},
    "valueQuantity": {"value": 72.5, "unit": "kg"},
}
CONDITION = {
    "resourceType": "Condition",
    "subject": {"reference": "Patient/p-1"},
    "code": {"text": "asthma"},
}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# A record with a sensitivity label (mental health): the sensitive scope, whatever its type.
SENSITIVE = {
    **OBSERVATION,
    "meta": {
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
    },
    "code": {"text": "depression screening"},
}
MARKER = "matrix-marker-7f3a"  # plaintext that must never be on the node's disk


@dataclass
class World:
    node: NodeProcess
    members: dict[str, KeyFile]
    staff: dict[str, KeyFile]
    patient: KeyFile
    records: dict[str, Written]
    grants: dict[str, str]

    def reader(self, who: str, purpose: str = "TREAT") -> RecordsClient:
        """`who` reads: a member organisation, or a practitioner through its organisation's
        keys (as its gateway would)."""
        if who in self.members:
            return RecordsClient(self.node.url, self.members[who], purpose=purpose)
        org = self.members[who[0].upper()]
        return RecordsClient(self.node.url, self.staff[who], purpose=purpose, organisation=org)


def admit(consortium: Consortium, members: dict[str, KeyFile], name: str) -> KeyFile:
    """A new member: sponsored by the founder, then voted in by every member needed."""
    applicant = consortium.applicant(name)
    for voter in members.values():
        consortium.send(
            voter, "identity/approve_membership", {"action": "admit", "subject": applicant.did}
        )
        if any(m["did"] == applicant.did for m in consortium.client.query("identity/members")):
            return applicant
    raise AssertionError(f"{name} was not admitted")


def expel(node: NodeProcess, members: dict[str, KeyFile], name: str) -> None:
    """Vote `name` out: two thirds of the other members, and at least two of them. Each voter
    signs with a fresh signer (the clinic's client has numbered A's transactions since)."""
    subject = members[name].did
    for voter in (m for n, m in members.items() if n != name):
        client = NodeClient(node.url, voter)
        Signer(client, voter.did, voter.identity).send(
            "identity/approve_membership", {"action": "remove", "subject": subject}
        )
        if all(m["did"] != subject for m in client.query("identity/members")):
            return
    raise AssertionError(f"{name} was not removed")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = NodeProcess(tmp_path_factory.mktemp("matrix") / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        yield build_world(node)
    finally:
        node.stop()


def build_world(node: NodeProcess) -> World:
    founder = node.organisation()
    consortium = Consortium(node.url, founder)
    members = {"A": founder}
    for name in "BCDEFX":
        members[name] = admit(consortium, members, f"Org {name}")
    staff = {
        who: consortium.practitioner(members[who[0].upper()], who)
        for who in ("a1", "b1", "b2", "c1", "c2", "x1")
    }
    clinic = RecordsClient(node.url, founder, purpose="TREAT")
    patient = enrol(clinic, "matrix patient")
    records = {
        "observation": clinic.write(
            patient.did, {**OBSERVATION, "id": "obs-1", "note": [{"text": MARKER}]}
        ),
        "condition": clinic.write(patient.did, {**CONDITION, "id": "cond-1"}),
        "sensitive": clinic.write(patient.did, {**SENSITIVE, "id": "psy-1"}),
    }
    consent = ConsentClient(node.url, patient)
    now = int(time.time())
    grants = {
        "B": consent.grant(members["B"].did, scopes=BROAD_SCOPES, purposes=("TREAT",)),
        "c1": consent.grant(staff["c1"].did, scopes=BROAD_SCOPES, purposes=("TREAT",)),
        "D": consent.grant(members["D"].did, scopes=BROAD_SCOPES, purposes=("TREAT",)),
        "E": consent.grant(members["E"].did, scopes=BROAD_SCOPES, end=now + 3),
        "X": consent.grant(members["X"].did, scopes=BROAD_SCOPES, purposes=("TREAT",)),
        "Xw": consent.grant(members["X"].did, action="write", scopes=BROAD_SCOPES, purposes=()),
    }
    consent.revoke(grants["D"])
    expel(node, members, "X")
    time.sleep(max(0.0, now + 4 - time.time()))  # E's grant has ended
    return World(node, members, staff, patient, records, grants)


def reads(
    world: World, who: str, record: str = "observation", purpose: str = "TREAT"
) -> dict[str, Any]:
    return world.reader(who, purpose).read(world.records[record].ref)


def blob_refusal(world: World, who: str, record: str = "observation") -> str:
    """The consent guard's answer to `who` fetching the record's blob directly."""
    ((status, message),) = world.reader(who).fetch([world.records[record].blob_hash])
    assert status == 403, (status, message[:80])
    return message.decode()


def refused(world: World, who: str, record: str = "observation", purpose: str = "TREAT") -> str:
    with pytest.raises(RecordsError) as denied:
        reads(world, who, record, purpose)
    assert denied.value.status == 403, denied.value
    return str(denied.value)


# --- reads -----------------------------------------------------------------------------------


def test_the_patient_reads_everything_with_no_purpose(world: World) -> None:
    mine = RecordsClient(world.node.url, world.patient)
    for name, written in world.records.items():
        assert mine.read(written.ref)["id"] == written.ref.resource_id, name


def test_the_writing_organisations_practitioner_reads_for_a_purpose(world: World) -> None:
    assert reads(world, "a1")["valueQuantity"]["value"] == 72.5
    assert "no purpose stated" in refused(world, "a1", purpose="")


def test_a_granted_organisation_and_its_practitioners_read_for_the_granted_purpose(
    world: World,
) -> None:
    assert reads(world, "B")["note"][0]["text"] == MARKER
    assert reads(world, "b1", "condition")["code"]["text"] == "asthma"
    assert "HRESCH" in refused(world, "b2", purpose="HRESCH")  # the wrong purpose


def test_a_broad_grant_never_reads_the_sensitive_scope(world: World) -> None:
    reason = refused(world, "B", "sensitive")
    assert "sensitive" in reason
    # Nor could B open it with what it holds: its grant wrapped no sensitive key.
    reader = world.reader("B")
    assert reader.keyring.scope_pair(world.patient.did, "sensitive", 1) is None


def test_a_practitioner_level_grant_serves_only_the_named_practitioner(world: World) -> None:
    assert reads(world, "c1")["id"] == "obs-1"
    assert "names practitioner" in refused(world, "c2")
    assert "names practitioner" in refused(world, "C")


def test_an_organisation_without_a_grant_is_refused_and_holds_no_key(world: World) -> None:
    # Refused before any blob: it may not even list the patient's records (node/query_guard).
    assert "parties of its consent" in refused(world, "F")
    reader = world.reader("F")
    with pytest.raises(RecordsError) as no_name:
        reader.ref(world.patient.did, "Observation", "obs-1")
    assert no_name.value.status == 403
    assert reader.keyring.scope_pair(world.patient.did, "diagnostics", 1) is None


def test_a_revoked_grantee_is_refused(world: World) -> None:
    assert "parties of its consent" in refused(world, "D")  # not even the listing
    assert "revoked" in blob_refusal(world, "D")  # and the blob guard says why


def test_an_expired_grant_is_refused(world: World) -> None:
    assert "parties of its consent" in refused(world, "E")
    assert "expired" in blob_refusal(world, "E")


def test_an_expelled_organisation_can_neither_read_nor_write(world: World) -> None:
    for who in ("X", "x1"):
        with pytest.raises(RecordsError) as denied:
            reads(world, who)
        assert denied.value.status in (401, 403), denied.value  # no longer a member at all
        with pytest.raises((RecordsError, NodeError)) as no_write:
            world.reader(who).write(world.patient.did, {**OBSERVATION, "id": f"from-{who}"})
        assert getattr(no_write.value, "status", 0) in (401, 403), no_write.value


def test_a_revocation_ends_reads_at_its_block_and_keys_for_what_is_written_after(
    world: World,
) -> None:
    consent = ConsentClient(world.node.url, world.patient)
    again = consent.grant(world.members["D"].did, scopes=BROAD_SCOPES, purposes=("TREAT",))
    d_reader = world.reader("D")
    assert d_reader.read(world.records["observation"].ref)["id"] == "obs-1"
    # What D keeps, as an attacker would: every diagnostics key its grant gave it.
    published = consent.published_epochs()["diagnostics"]
    held = [d_reader.keyring.scope_pair(world.patient.did, "diagnostics", e) for e in published]
    assert all(pair is not None for pair in held)

    rotated = consent.revoke(again)  # returns once its block committed
    assert set(rotated) == set(BROAD_SCOPES)
    assert "revoked" in blob_refusal(world, "D")  # from the very next read on
    assert "parties of its consent" in refused(world, "D")

    # Written after the revocation: to the new epoch, which D never received. B, whose grant
    # was made before, received it with the revocation and reads on without the patient
    # doing anything more (a grant covers what is written later).
    late = world.reader("a1").write(world.patient.did, {**OBSERVATION, "id": "obs-late"})
    assert reads_ref(world, "B", late.ref)["id"] == "obs-late"
    label, blob = scope_label_and_blob(world, late)
    assert label == f"scope/diagnostics/{max(published) + 1}"
    record_blob = unpack_record_blob(blob)
    for pair in held:
        for wrapped in record_blob.wrapped_keys:  # none of D's keys opens the new record
            with pytest.raises(UnwrapError):
                unwrap_data_key(wrapped, record_blob.owner, pair)


def reads_ref(world: World, who: str, ref: RecordRef) -> dict[str, Any]:
    return world.reader(who).read(ref)


def scope_label_and_blob(world: World, written: Written) -> tuple[str, bytes]:
    mine = RecordsClient(world.node.url, world.patient)
    anchor = mine.versions(written.ref)["history"][-1]
    (label,) = [r for r in anchor["recipients"] if r.startswith("scope/")]
    ((status, blob),) = mine.fetch([written.blob_hash])
    assert status == 200
    return label, blob


# --- writes ----------------------------------------------------------------------------------


def test_an_organisation_without_write_consent_cannot_add_a_record(world: World) -> None:
    writer = world.reader("B")
    before = len(RecordsClient(world.node.url, world.patient).records())
    with pytest.raises(RecordsError) as refused_write:
        writer.write(world.patient.did, {**OBSERVATION, "id": "from-b"})
    assert refused_write.value.status == 403 and "no write consent" in str(refused_write.value)
    assert len(RecordsClient(world.node.url, world.patient).records()) == before


def test_a_version_of_another_organisations_record_is_refused(world: World) -> None:
    b = world.reader("B")
    with pytest.raises(RecordsError) as refused_version:
        b.write(world.patient.did, {**CONDITION, "id": "cond-1", "note": [{"text": "overwrite"}]})
    assert refused_version.value.status in (403, 409)
    assert reads(world, "a1", "condition").get("note") is None


def test_the_writing_organisation_adds_versions_and_the_patient_too(world: World) -> None:
    clinic = world.reader("a1")
    second = clinic.write(world.patient.did, {**CONDITION, "id": "cond-2"})
    assert second.version == 1
    mine = RecordsClient(world.node.url, world.patient)
    third = mine.write(
        world.patient.did, {**CONDITION, "id": "cond-2", "clinicalStatus": {"text": "resolved"}}
    )
    assert third.version == 2


# --- the node operator -------------------------------------------------------------------------


def test_the_node_operator_sees_no_plaintext_and_cannot_link_an_ehr_id(world: World) -> None:
    files = [p for p in world.node.data_dir.rglob("*") if p.is_file() and "keys" not in p.parts]
    everything = b"".join(p.read_bytes() for p in files)
    assert MARKER.encode() not in everything and b"depression screening" not in everything
    # The record names on the chain are keyed: the unkeyed hash of the EHR id is nowhere, and
    # guessing the name needs the patient's naming key.
    ref = world.records["observation"].ref
    for guess in (b"obs-1", _unkeyed(ref).encode()):
        assert guess not in everything
    assert record_name(bytes(32), "Observation", "obs-1") != ref.name


def _unkeyed(ref: RecordRef) -> str:
    from nodeutil import record_name as unkeyed_name

    return unkeyed_name(ref.patient, ref.resource_type, ref.resource_id)


# --- a delegate's grants (run last: it gives F a grant, then revokes it) -----------------------


def test_revoking_a_delegation_through_the_wallet_takes_the_delegates_grants_along(
    world: World,
) -> None:
    """The patient names practitioner c2 guardian (clinical); the guardian grants F reads for
    its whole delegation; the patient revokes the guardianship with the wallet. The chain
    revokes F's grant with it, and the wallet's new epoch is not offered to F (a key share to
    a grant revoked in the same submission would fail the revocation)."""
    consent = ConsentClient(world.node.url, world.patient)
    delegation = consent.grant(
        world.staff["c2"].did, action="delegate", scopes=("clinical",), purposes=()
    )
    period = consent.grant_detail(delegation)
    guardian = world.staff["c2"]
    by_guardian = {
        "id": "6d" * 16,
        "patient": world.patient.did,
        "grantee": world.members["F"].did,
        "action": "read",
        "scopes": ["clinical"],
        "purposes": ["TREAT"],
        "start": period["start"],
        "end": period["end"],
    }
    signer = Signer(NodeClient(world.node.url, guardian), guardian.did, guardian.identity)
    signer.send("consent/grant", by_guardian)
    assert consent.grant_detail(by_guardian["id"])["delegation"] == delegation

    assert consent.revoke(delegation) == ["clinical"]
    assert consent.grant_detail(by_guardian["id"])["revoked_at"] > 0
    assert consent.grant_detail(delegation)["revoked_at"] > 0
