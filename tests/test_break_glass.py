"""Break-glass against a real `careledger up` process: the patient's escrow, a practitioner
breaking the glass through the SDK and reading, and `POST /break-glass/share` refusing.

The consortium has three members, A (the node's own organisation, which enrolled the patient
and writes its records), B and C, so k = 2. A solo node holds only A's organisation key and
releases only A's share; the other members' releases are simulated with their organisation
keys through the very function the route runs (`node/break_glass.release_share`), asking the
same node's committed state over its API. The real k-of-n across several nodes, each
releasing its own share, is the network test's (tests/network).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from accessutil import Consortium
from careledger.chain.tx import tx_hash
from careledger.crypto.escrow import EmergencyBundle
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.break_glass import release_share
from careledger.node.errors import ApiError
from careledger.wallet.break_glass import (
    EmergencyClient,
    EmergencyKeys,
    NotEnoughShares,
    break_glass,
    collect_shares,
    emergency_keys,
    ended_unrotated,
    submit_break_glass,
)
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from careledger.wallet.records import RecordsClient, RecordsError, Written
from nodeutil import NodeProcess, enrol, free_port, practitioner_payload

REASON = "unconscious in A&E, no consent obtainable"
RECORDS = {
    "condition": {  # clinical
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p-1"},
        "code": {"text": "asthma"},
    },
    "observation": {  # diagnostics
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "body weight"},
        "valueQuantity": {"value": 72.5, "unit": "kg"},
    },
    "medication": {  # medications
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"text": "salbutamol"},
        "subject": {"reference": "Patient/p-1"},
    },
    "encounter": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}},
    "sensitive": {  # a mental health label: the sensitive scope
        "resourceType": "Observation",
        "status": "final",
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
            ]
        },
        "code": {"text": "depression screening"},
    },
}


@dataclass
class World:
    node: NodeProcess
    consortium: Consortium
    members: dict[str, KeyFile]
    staff: dict[str, list[KeyFile]]  # practitioners registered up front, used once each
    patient: KeyFile
    records: dict[str, Written]
    expelled: dict[str, KeyFile] = field(default_factory=dict)

    def practitioner(self, org: str = "C") -> KeyFile:
        """A practitioner of `org` that has not broken the glass yet (one break-glass runs
        per practitioner and patient). All are registered up front, each transaction of the
        organisations signed by a fresh signer that numbers from the node's nonce: the
        clinic's records client numbers the founder's writes on its own."""
        return self.staff[org].pop()

    def client(self, keyfile: KeyFile) -> NodeClient:
        return NodeClient(self.node.url, keyfile)

    def released_by(self, org: str, requester: KeyFile, glass_id: str) -> dict[str, Any]:
        """Member `org`'s release, as its node's route would answer, on this node's state
        (an expelled member's too: it keeps its key file; it asks as the requester)."""
        organisation = self.members.get(org) or self.expelled[org]
        asker = self.client(requester)

        async def ask(path: str, params: dict[str, str]) -> Any:
            try:
                return asker.query(path, **params)
            except NodeError as exc:
                if exc.status == 404:
                    return None
                raise

        answer = release_share(ask, organisation, requester.did, glass_id, int(time.time()))
        return asyncio.run(answer)


def vote(url: str, voter: KeyFile, action: str, subject: str) -> None:
    """One membership vote, signed with a fresh signer: it numbers from the node's nonce, so
    no other signer of `voter` may have a transaction in flight (every send here waits)."""
    Signer(NodeClient(url, voter), voter.did, voter.identity).send(
        "identity/approve_membership", {"action": action, "subject": subject}
    )


def practitioner(url: str, org: KeyFile, name: str) -> KeyFile:
    """A practitioner registered by `org` (a fresh signer, as for votes)."""
    client = NodeClient(url, org)
    ident = Identity.generate()
    payload = practitioner_payload(str(client.status()["chain_id"]), org.did, ident, name)
    Signer(client, org.did, org.identity).send("identity/register_practitioner", payload)
    return KeyFile(ident.did, "practitioner", ident, name)


def members_now(url: str, asker: KeyFile) -> list[str]:
    return [m["did"] for m in NodeClient(url, asker).query("identity/members")]


def admit(consortium: Consortium, members: dict[str, KeyFile], name: str) -> KeyFile:
    applicant = consortium.applicant(name)
    for voter in list(members.values()):
        vote(consortium.url, voter, "admit", applicant.did)
        if applicant.did in members_now(consortium.url, voter):
            return applicant
    raise AssertionError(f"{name} was not admitted")


def expel(world: World, name: str) -> None:
    world.expelled[name] = world.members.pop(name)
    subject = world.expelled[name].did
    for voter in list(world.members.values()):
        vote(world.node.url, voter, "remove", subject)
        if subject not in members_now(world.node.url, voter):
            return
    raise AssertionError(f"{name} was not removed")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = NodeProcess(tmp_path_factory.mktemp("glass") / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        founder = node.organisation()
        consortium = Consortium(node.url, founder)
        members = {"A": founder}
        for name in "BC":
            members[name] = admit(consortium, members, f"Org {name}")
        staff = {
            org: [practitioner(node.url, members[org], f"Dr. {org}{i}") for i in range(n)]
            for org, n in (("A", 2), ("B", 2), ("C", 14))
        }
        clinic = RecordsClient(node.url, founder, purpose="TREAT")
        patient = enrol(clinic, "glass patient")
        records = {
            name: clinic.write(patient.did, {**resource, "id": f"{name}-1"})
            for name, resource in RECORDS.items()
        }
        EmergencyClient(node.url, patient).open()  # the default scopes, k = 2 of 3
        yield World(node, consortium, members, staff, patient, records)
    finally:
        node.stop()


def broken(world: World, practitioner: KeyFile, **kwargs: Any) -> dict[str, Any]:
    client = world.client(practitioner)
    return submit_break_glass(client, practitioner, world.patient.did, REASON, **kwargs)


def keys_from(world: World, practitioner: KeyFile, glass: dict[str, Any]) -> EmergencyKeys:
    """A's share from the node's route, B's through the same release function."""
    client = world.client(practitioner)
    answers, refusals = collect_shares(client, practitioner, glass["id"], [world.node.url])
    assert refusals == {}
    answers.append(world.released_by("B", practitioner, glass["id"]))
    return emergency_keys(client, practitioner, glass, answers)


def post_share(world: World, caller: KeyFile, body: Any) -> httpx.Response:
    client = world.client(caller)
    assert client.auth is not None
    return client.http.post("/break-glass/share", json=body, auth=client.auth)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


# --- the patient's escrow --------------------------------------------------------------------


def test_the_escrow_is_split_among_the_current_members(world: World) -> None:
    escrow = EmergencyClient(world.node.url, world.patient).escrow()
    assert escrow is not None
    assert escrow["scopes"] == ["clinical", "medications", "diagnostics"]
    assert escrow["members"] == sorted(m.did for m in world.members.values())
    assert escrow["members"] == escrow["current_members"]
    assert (escrow["threshold"], escrow["sensitive"]) == (2, False)
    assert EmergencyClient(world.node.url, world.patient).needs_reescrow() == ""


# --- breaking the glass and reading ----------------------------------------------------------


def test_a_practitioner_breaks_the_glass_and_reads_exactly_the_opened_scopes(world: World) -> None:
    doctor = world.practitioner("C")
    glass = broken(world, doctor)
    assert glass["scopes"] == ["clinical", "medications", "diagnostics"]
    keys = keys_from(world, doctor, glass)
    patient = world.patient.did
    with RecordsClient(world.node.url, doctor, purpose="ETREAT", keyring=keys) as reader:
        for name in ("condition", "observation", "medication"):
            ref = reader.ref(patient, RECORDS[name]["resourceType"], f"{name}-1")
            assert ref == world.records[name].ref
            assert reader.read(ref)["id"] == f"{name}-1"
        # Neither an unopened scope nor the sensitive one: the node refuses the blob, and
        # the keys the break-glass gave do not hold their scope keys either.
        for name, scope in (("encounter", "administrative"), ("sensitive", "sensitive")):
            with pytest.raises(RecordsError) as refused:
                reader.read(world.records[name].ref)
            assert refused.value.status == 403
            assert f"not scope {scope}" in str(refused.value)
            assert keys.scope_pair(patient, scope, 1) is None
    # Another purpose than emergency treatment is refused.
    with RecordsClient(world.node.url, doctor, purpose="TREAT", keyring=keys) as reader:
        with pytest.raises(RecordsError) as refused:
            reader.read(world.records["condition"].ref)
        assert refused.value.status == 403


def test_fewer_than_k_released_shares_give_nothing(world: World) -> None:
    doctor = world.practitioner("C")
    # The SDK asks A's node only: one share of the two needed.
    with pytest.raises(NotEnoughShares) as short:
        break_glass(world.node.url, doctor, world.patient.did, REASON, nodes=[world.node.url])
    assert (short.value.released, short.value.needed) == (1, 2)
    assert "1 of the 2 shares needed were released" in str(short.value)
    # A member node that does not answer counts as refusing, and is named.
    other = world.practitioner("C")
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NotEnoughShares) as short:
        break_glass(world.node.url, other, world.patient.did, REASON, nodes=[world.node.url, down])
    assert short.value.released == 1 and down in short.value.refusals
    # A's share twice is still one share; B's alone is one too.
    third = world.practitioner("C")
    glass = broken(world, third, scopes=["clinical"])
    client = world.client(third)
    answers, _ = collect_shares(client, third, glass["id"], [world.node.url, world.node.url])
    assert len(answers) == 2
    with pytest.raises(NotEnoughShares):
        emergency_keys(client, third, glass, answers)
    with pytest.raises(NotEnoughShares):
        emergency_keys(client, third, glass, [world.released_by("B", third, glass["id"])])


def test_the_alert_is_committed_before_any_share_is_released(world: World) -> None:
    doctor = world.practitioner("C")
    client = world.client(doctor)
    signer = Signer(client, doctor.did, doctor.identity)
    payload = {
        "patient": world.patient.did,
        "reason": REASON,
        "scopes": ["clinical"],
        "seconds": 600,
    }
    raw = signer.sign("consent/break_glass", payload)
    glass_id = tx_hash(raw).hex()[:32]
    # Signed, not yet submitted: no member's node releases anything for it.
    status, code, _ = error_of(post_share(world, doctor, {"id": glass_id}))
    assert (status, code) == (404, "not_found")
    result = client.submit(raw, wait=True)
    assert result["code"] == 0, result
    released = post_share(world, doctor, {"id": glass_id})
    assert released.status_code == 200, released.text
    # Whatever the node released, it released for a committed break-glass, and the
    # patient's alert is in the very transaction that committed it.
    patient = world.client(world.patient)
    glass = patient.query("consent/break_glass", id=glass_id)
    assert glass["height"] == result["height"]
    alerts = patient.query("audit/log", patient=world.patient.did)["alerts"]
    mine = [a for a in alerts if a["alert"]["id"] == glass_id]
    assert [a["height"] for a in mine] == [result["height"]]
    assert mine[0]["alert"]["reason"] == REASON


# --- the route's refusals --------------------------------------------------------------------


def test_the_share_goes_only_to_the_requester(world: World) -> None:
    doctor = world.practitioner("C")
    glass = broken(world, doctor, scopes=["clinical"])
    for other in (world.practitioner("C"), world.patient, world.members["B"]):
        status, code, message = error_of(post_share(world, other, {"id": glass["id"]}))
        assert (status, code) == (403, "forbidden")
        assert "only the practitioner who broke glass" in message
    assert post_share(world, doctor, {"id": glass["id"]}).status_code == 200
    # Nor may another practitioner or patient read who broke the glass for whom.
    for other in (
        world.practitioner("C"),
        enrol(RecordsClient(world.node.url, world.members["A"])),
    ):
        with pytest.raises(NodeError) as refused:
            world.client(other).query("consent/break_glass", id=glass["id"])
        assert refused.value.status == 403
    for allowed in (doctor, world.patient, world.members["B"]):
        assert world.client(allowed).query("consent/break_glass", id=glass["id"]) == glass


def test_a_malformed_or_unknown_request_is_refused(world: World) -> None:
    doctor = world.practitioner("C")
    for body in ({"id": "xyz"}, {"id": "00" * 16, "more": 1}, ["00" * 16], {}):
        status, code, _ = error_of(post_share(world, doctor, body))
        assert (status, code) == (400, "malformed")
    status, code, message = error_of(post_share(world, doctor, {"id": "00" * 16}))
    assert (status, code) == (404, "not_found")
    assert message == f"no committed break-glass {'00' * 16} on this node"
    unsigned = httpx.post(world.node.url + "/break-glass/share", json={"id": "00" * 16})
    assert unsigned.status_code == 401


def test_no_share_after_the_time_limit_and_no_read_either(world: World) -> None:
    doctor = world.practitioner("C")
    # Long enough for the shares to be collected first on a slow machine (1 s was not).
    glass = broken(world, doctor, scopes=["clinical"], seconds=5)
    keys = keys_from(world, doctor, glass)
    time.sleep(max(0.0, glass["until"] + 0.5 - time.time()))
    status, code, message = error_of(post_share(world, doctor, {"id": glass["id"]}))
    assert (status, code) == (410, "expired")
    assert message == f"break-glass {glass['id']} ended at {glass['until']}"
    # The keys it got still exist on the requester's side, but the node serves nothing now.
    with RecordsClient(world.node.url, doctor, purpose="ETREAT", keyring=keys) as reader:
        with pytest.raises(RecordsError) as refused:
            reader.read(world.records["condition"].ref)
        assert refused.value.status == 403


def test_the_chain_refuses_a_bad_break_glass_with_its_reason(world: World) -> None:
    doctor = world.practitioner("C")
    client = world.client(doctor)
    patient = world.patient.did
    cases = [
        ({"reason": " "}, "a break-glass states its reason"),
        ({"scopes": ["financial"]}, "scope(s) financial not opened to emergency access"),
        ({"scopes": ["sensitive"]}, "did not open the sensitive scope to emergency access"),
        ({"seconds": 7200}, "a break-glass lasts 1 to 3600 seconds, not 7200"),
    ]
    for change, message in cases:
        payload = {"patient": patient, "reason": REASON, "scopes": ["clinical"], "seconds": 60}
        with pytest.raises(RecordsError) as refused:
            submit_break_glass(client, doctor, **{**payload, **change})  # type: ignore[arg-type]
        assert message in str(refused.value), refused.value
    nurse = world.members["B"]
    with pytest.raises(RecordsError, match="an organisation cannot break the glass"):
        submit_break_glass(world.client(nurse), nurse, patient, REASON)


def test_the_patient_sees_its_break_glasses_and_rotates_after_they_end(world: World) -> None:
    doctor = world.practitioner("B")
    glass = broken(world, doctor, scopes=["medications"], seconds=1)
    emergency = EmergencyClient(world.node.url, world.patient)
    listed = emergency.break_glasses()
    assert glass["id"] in [g["id"] for g in listed]
    assert listed[0]["reason"] == REASON
    time.sleep(max(0.0, glass["until"] + 0.5 - time.time()))
    ended = emergency.ended_unrotated()
    assert glass["id"] in [g["id"] for g in ended]
    rotated = emergency.rotate_after(ended)
    assert rotated == ["clinical", "diagnostics", "medications"]
    assert emergency.ended_unrotated() == []
    assert emergency.needs_reescrow() == ""  # re-escrowed with the new epochs
    escrow = emergency.escrow()
    assert escrow is not None and set(escrow["epochs"].values()) == {2}
    # Others may not list the patient's break-glasses.
    with pytest.raises(NodeError) as refused:
        world.client(doctor).query("consent/break_glasses", patient=world.patient.did)
    assert refused.value.status == 403


# --- membership changes (last: they change the consortium) -----------------------------------


def test_membership_changes_no_share_for_a_newcomer_none_from_an_expelled_member(
    world: World,
) -> None:
    emergency = EmergencyClient(world.node.url, world.patient)
    world.members["D"] = admit(world.consortium, world.members, "Org D")
    changed = "the members of the consortium changed since the escrow was made"
    assert emergency.needs_reescrow() == changed
    # The escrow among A, B and C still opens with two of them; D holds no share of it.
    doctor = world.practitioner("C")
    glass = broken(world, doctor, scopes=["clinical"])
    with pytest.raises(ApiError) as newcomer:
        world.released_by("D", doctor, glass["id"])
    assert (newcomer.value.status, newcomer.value.code) == (403, "no_share")
    assert keys_from(world, doctor, glass).scopes == ("clinical",)
    # The patient re-escrows among the four (k = 3): the older escrow's shares go no more.
    emergency.reescrow()
    assert emergency.needs_reescrow() == ""
    status, code, _ = error_of(post_share(world, doctor, {"id": glass["id"]}))
    assert (status, code) == (410, "superseded")
    # D is expelled. It keeps its key file and its share of the new escrow: it releases
    # nothing, and A and B alone are two of the three needed.
    surgeon = world.practitioner("A")
    second = broken(world, surgeon, scopes=["clinical"])
    expel(world, "D")
    with pytest.raises(ApiError) as expelled:
        world.released_by("D", surgeon, second["id"])
    assert (expelled.value.status, expelled.value.code) == (403, "not_member")
    client = world.client(surgeon)
    answers, _ = collect_shares(client, surgeon, second["id"], [world.node.url])
    answers.append(world.released_by("B", surgeon, second["id"]))
    with pytest.raises(NotEnoughShares):
        emergency_keys(client, surgeon, second, answers)
    answers.append(world.released_by("C", surgeon, second["id"]))
    keys = emergency_keys(client, surgeon, second, answers)
    with RecordsClient(world.node.url, surgeon, purpose="ETREAT", keyring=keys) as reader:
        assert reader.read(world.records["condition"].ref)["id"] == "condition-1"
    assert emergency.needs_reescrow() == changed


# --- without a node ----------------------------------------------------------------------------


def test_ended_unrotated_lists_the_ended_break_glasses_a_rotation_has_not_covered() -> None:
    glasses = [
        {"id": "running", "until": 200, "epochs": {"clinical": 2}},
        {"id": "rotated", "until": 100, "epochs": {"clinical": 1}},
        {"id": "partly", "until": 100, "epochs": {"clinical": 1, "medications": 2}},
    ]
    current = {"clinical": 2, "medications": 2}
    assert [g["id"] for g in ended_unrotated(glasses, current, now=150)] == ["partly"]
    assert [g["id"] for g in ended_unrotated(glasses, current, now=200)] == ["running", "partly"]
    assert ended_unrotated(glasses, {"clinical": 3, "medications": 3}, now=500) == []


def test_emergency_keys_show_no_key_and_open_only_their_patient_and_scopes() -> None:
    ident = Identity.generate()
    patient = KeyFile(ident.did, "patient", ident)
    pairs = tuple(patient.scope_key(s, 1) for s in ("clinical", "diagnostics"))
    bundle = EmergencyBundle(patient.did, patient.naming_key, pairs)
    keys = EmergencyKeys(patient.did, "ab" * 16, ("clinical",), 100, bundle)
    assert patient.naming_key.hex() not in repr(keys)
    assert all(p.private_bytes().hex() not in repr(keys) for p in pairs)
    assert keys.scope_pair(patient.did, "clinical", 1) == pairs[0]
    assert keys.scope_pair(patient.did, "diagnostics", 1) is None  # escrowed, not broken into
    assert keys.scope_pair(Identity.generate().did, "clinical", 1) is None
    with pytest.raises(RecordsError, match="is for"):
        keys.naming_key(Identity.generate().did)
