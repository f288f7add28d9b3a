"""Enrolments (identity/enrol_patients, identity/register_enrolled_patient) on the real state
machine (real SQLite): a member's word for many patients, each registering once, itself.

Every attack is performed against the real application, in the mempool and forced into a
block, as in test_identity.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from careledger.chain.codes import Code
from careledger.chain.modules.identity.enrolments import MAX_ENROLMENT_DIDS
from careledger.chain.tx import Tx
from careledger.crypto import keys
from careledger.crypto.keys import Identity, did_from_ed25519
from careledger.protocol.errors import http_status
from careledger.wallet.custody import new_patient_keys
from careledger.wallet.enrolment import enrol_patients, register_patient
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.records import RecordsClient
from nodeutil import CHAIN_ID, NodeProcess, make_app, run_block
from test_identity import Chain, refused_everywhere

ENROL = "identity/enrol_patients"
REGISTER = "identity/register_enrolled_patient"


def registration(patient: Identity, enrolled_by: str) -> dict[str, Any]:
    return {"encryption_key": patient.encryption_public.hex(), "enrolled_by": enrolled_by}


def enrolment_rows(chain: Chain) -> list[bytes]:
    return sorted(k for k in chain.rows() if k.startswith(b"identity/enrolled/"))


def test_a_member_enrols_many_and_each_registers_itself_once(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    org = chain.members[0]
    patients = [Identity.generate() for _ in range(3)]
    assert chain.run(chain.tx(org, ENROL, {"dids": [p.did for p in patients]})) == [Code.OK]
    assert len(enrolment_rows(chain)) == 3
    registrations = [chain.tx(p, REGISTER, registration(p, org.did)) for p in patients]
    assert chain.run(*registrations) == [Code.OK] * 3
    for patient in patients:
        found = chain.query("identity/identity", did=patient.did)
        assert (found["kind"], found["enrolled_by"]) == ("patient", org.did)
    assert enrolment_rows(chain) == []  # each enrolment registered one identity and went
    again = chain.tx(patients[0], REGISTER, registration(patients[0], org.did))
    assert chain.run(again) == [Code.CONFLICT]  # already registered


def test_only_a_member_that_may_act_enrols(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    org, patient, doctor = chain.members[0], Identity.generate(), Identity.generate()
    registered = Identity.generate()
    setup = [chain.register_practitioner(org, doctor), chain.register_patient(registered)]
    assert chain.run(*setup) == [Code.OK, Code.OK]
    assert chain.app.check_tx(chain.tx(doctor, ENROL, {"dids": [patient.did]})).code == (
        Code.UNAUTHORISED  # a practitioner is not a member
    )
    assert chain.run(chain.tx(doctor, ENROL, {"dids": [patient.did]})) == [Code.UNAUTHORISED]
    assert chain.run(chain.tx(registered, ENROL, {"dids": [patient.did]})) == [Code.UNAUTHORISED]
    stranger = Identity.generate()
    refused_everywhere(
        chain, chain.tx(stranger, ENROL, {"dids": [patient.did]}), Code.UNKNOWN_SENDER
    )
    assert enrolment_rows(chain) == []


def test_a_batch_is_all_or_nothing_and_bounded(tmp_path: Path) -> None:
    """A registered did in the list refuses the whole batch (no row written); the list is at
    most MAX_ENROLMENT_DIDS distinct did:keys, refused before it reaches a block."""
    chain = Chain(tmp_path)
    org, registered, fresh = chain.members[0], Identity.generate(), Identity.generate()
    assert chain.run(chain.register_patient(registered)) == [Code.OK]
    mixed = chain.tx(org, ENROL, {"dids": [fresh.did, registered.did]})
    assert chain.run(mixed) == [Code.CONFLICT]
    assert enrolment_rows(chain) == []
    too_many = [Identity.generate().did for _ in range(MAX_ENROLMENT_DIDS + 1)]
    for dids in (too_many, [], [fresh.did, fresh.did], ["did:web:example.org"], "not a list"):
        raw = chain.tx(org, ENROL, {"dids": dids})
        assert chain.app.check_tx(raw).code == Code.INVALID_PAYLOAD
    assert chain.run(chain.tx(org, ENROL, {"dids": [fresh.did]})) == [Code.OK]


def test_an_enrolment_serves_its_did_and_member_only(tmp_path: Path) -> None:
    """Naming a member that did not enrol the did, or registering another did with an
    enrolment seen on chain, is refused in the mempool and in a block, and writes nothing."""
    chain = Chain(tmp_path)
    org, other_org = chain.members[0], chain.members[1]
    patient, thief = Identity.generate(), Identity.generate()
    assert chain.run(chain.tx(org, ENROL, {"dids": [patient.did]})) == [Code.OK]
    for who, named in [(patient, other_org.did), (thief, org.did), (patient, patient.did)]:
        raw = chain.tx(who, REGISTER, registration(who, named))
        refused_everywhere(chain, raw, Code.UNAUTHORISED)
    signed_by_thief = chain.tx(thief, REGISTER, registration(patient, org.did), did=patient.did)
    refused_everywhere(chain, signed_by_thief, Code.BAD_SIGNATURE)
    assert len(enrolment_rows(chain)) == 1
    assert chain.run(chain.tx(patient, REGISTER, registration(patient, org.did))) == [Code.OK]


def test_each_member_enrols_apart_and_a_removed_ones_enrolment_serves_no_one(
    tmp_path: Path,
) -> None:
    """Two members enrolling one did do not collide (rows keyed by member); after a member is
    voted out its enrolments authorise nothing, while another member's still do."""
    chain = Chain(tmp_path)
    a, b, c, _ = chain.members
    patient, other = Identity.generate(), Identity.generate()
    both = [chain.tx(a, ENROL, {"dids": [patient.did, other.did]})]
    both.append(chain.tx(b, ENROL, {"dids": [patient.did]}))
    assert chain.run(*both) == [Code.OK, Code.OK]
    assert chain.run(chain.vote(b, "remove", a.did), chain.vote(c, "remove", a.did)) == [0, 0]
    assert a.did not in {m["did"] for m in chain.query("identity/members")}
    refused_everywhere(
        chain, chain.tx(other, REGISTER, registration(other, a.did)), Code.UNAUTHORISED
    )
    assert chain.run(chain.tx(patient, REGISTER, registration(patient, b.did))) == [Code.OK]
    assert chain.query("identity/identity", did=patient.did)["enrolled_by"] == b.did


def test_the_mempool_admits_registrations_behind_their_enrolment(tmp_path: Path) -> None:
    """A hospital sends an enrolment and its patients' registrations at once: the mempool
    view holds the enrolment, so they are admitted behind it, and a second registration
    of the same did is refused there already."""
    chain = Chain(tmp_path)
    org, patient = chain.members[0], Identity.generate()
    enrol = chain.tx(org, ENROL, {"dids": [patient.did]})
    register = chain.tx(patient, REGISTER, registration(patient, org.did))
    assert chain.app.check_tx(register).code == Code.UNAUTHORISED  # not before it
    assert [chain.app.check_tx(enrol).code, chain.app.check_tx(register).code] == [0, 0]
    twice = chain.tx(patient, REGISTER, registration(patient, org.did))
    assert chain.app.check_tx(twice).code == Code.CONFLICT
    assert chain.run(enrol, register) == [Code.OK, Code.OK]
    after = chain.tx(patient, REGISTER, registration(patient, org.did))
    assert chain.app.check_tx(after).code == Code.CONFLICT


def test_a_hospital_enrols_its_patients_and_each_registers_from_its_own_device(
    node: NodeProcess,
) -> None:
    """Through a real node (`careledger up`) and the wallet: the organisation enrols 501
    dids (two transactions: MAX_ENROLMENT_DIDS to one), two of the patients register from
    their own device naming it (an unregistered did may POST its own registration), publish
    their scope keys and grant it write consent; the clinic then writes a record for one.
    A stranger naming the organisation is refused with the chain's code."""
    org = node.organisation()
    clinic = RecordsClient(node.url, org, purpose="TREAT")
    patients = [new_patient_keys()[0] for _ in range(2)]
    dids = [p.did for p in patients] + [Identity.generate().did for _ in range(499)]
    enrol_patients(clinic.node, org.identity, org.did, dids)

    def enrolled(did: str) -> bool:
        return bool(clinic.node.query("identity/enrolment", did=did, org=org.did)["enrolled"])

    assert all(enrolled(did) for did in (dids[0], dids[1], dids[-1]))
    for patient in patients:
        own_device = NodeClient(node.url)
        register_patient(own_device, patient, None, org.did, org.identity.encryption_public)
        assert clinic.node.query("identity/identity", did=patient.did)["enrolled_by"] == org.did
        assert not enrolled(patient.did)  # used: it registers no one again
    assert enrolled(dids[-1])
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "HbA1c"}}
    written = clinic.write(patients[0].did, observation)
    assert clinic.read(written.ref)["code"] == {"text": "HbA1c"}
    stranger = new_patient_keys()[0]
    with pytest.raises(NodeError) as refused:
        register_patient(
            NodeClient(node.url), stranger, None, org.did, org.identity.encryption_public
        )
    assert (refused.value.status, refused.value.code) == (
        http_status(Code.UNAUTHORISED),
        "unauthorised",
    )


def test_a_strangers_list_of_dids_is_refused_without_decoding_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_tx parses a payload before it looks at the sender, so anyone (any peer gossiping
    to the mempool) may have every node check 500 dids of an enrolment it may not send: that
    check must not cost a base58 decoding a did (about 3 us each, some 40 signature
    verifications a transaction), only a comparison of the string."""
    chain = Chain(tmp_path)
    dids = [did_from_ed25519(os.urandom(32)) for _ in range(MAX_ENROLMENT_DIDS)]
    raw = chain.tx(Identity.generate(), ENROL, {"dids": dids})
    decoded: list[str] = []
    original = keys._b58decode

    def counted(text: str) -> bytes:
        decoded.append(text)
        return original(text)

    monkeypatch.setattr(keys, "_b58decode", counted)
    assert chain.app.check_tx(raw).code == Code.UNKNOWN_SENDER
    assert decoded == []


def test_the_query_says_an_enrolment_waits_only_while_its_did_is_unregistered(
    tmp_path: Path,
) -> None:
    """A did enrolled by two members, or enrolled and then registered by a voucher, leaves
    rows that will never register anyone (a registered did registers no more): the query
    must not answer that they wait. Its inputs are dids, as everywhere else."""
    chain = Chain(tmp_path)
    a, b = chain.members[0], chain.members[1]
    patient, by_voucher = Identity.generate(), Identity.generate()
    enrolments = [chain.tx(a, ENROL, {"dids": [patient.did, by_voucher.did]})]
    enrolments.append(chain.tx(b, ENROL, {"dids": [patient.did]}))
    assert chain.run(*enrolments) == [Code.OK, Code.OK]
    registrations = [chain.tx(patient, REGISTER, registration(patient, b.did))]
    registrations.append(chain.register_patient(by_voucher))
    assert chain.run(*registrations) == [Code.OK, Code.OK]
    assert len(enrolment_rows(chain)) == 2  # a's two rows: harmless, and never waiting
    for did in (patient.did, by_voucher.did):
        assert chain.query("identity/enrolment", did=did, org=a.did)["enrolled"] is False
    bad = chain.app.query("identity/enrolment", b'{"did": "did:key:z", "org": "x"}')
    assert bad.code != Code.OK


def test_a_version_6_chain_knows_no_enrolment_until_its_planned_upgrade(tmp_path: Path) -> None:
    """This software runs version 6 for a chain started under it (a consortium whose nodes
    upgrade on a planned height): enrolments are unknown types there, refused in the
    mempool and in a block with nothing written, and accepted from the plan's block on."""
    members = [Identity.generate() for _ in range(4)]
    app = make_app(tmp_path / "s.sqlite", members, rules_version=6)
    nonces: dict[str, int] = {}

    def tx(who: Identity, type_: str, payload: dict[str, Any]) -> bytes:
        nonces[who.did] = nonces.get(who.did, 0) + 1
        return Tx(CHAIN_ID, type_, who.did, nonces[who.did], payload).sign(who)

    a, b, c, _ = members
    patient = Identity.generate()
    early = tx(a, ENROL, {"dids": [patient.did]})
    assert app.check_tx(early).code == Code.UNKNOWN_TYPE
    before = dict(app.store.all_rows())
    assert run_block(app, [early]) == [Code.UNKNOWN_TYPE]
    assert dict(app.store.all_rows()).keys() == before.keys()
    plan = {"name": "enrolments", "height": app.info().last_height + 1 + 25, "version": 7}
    votes = [tx(a, "upgrade/propose", plan)]
    votes += [tx(v, "upgrade/approve", plan) for v in (b, c)]
    assert run_block(app, votes) == [Code.OK] * 3
    while app.info().last_height < plan["height"] - 1:
        run_block(app, [])
    enrol = tx(a, ENROL, {"dids": [patient.did]})
    register = tx(patient, REGISTER, registration(patient, a.did))
    assert app.check_tx(enrol).code == Code.UNKNOWN_TYPE  # version 6 until the plan's block
    assert app.rules_version == 6
    assert run_block(app, [enrol, register]) == [Code.OK, Code.OK]  # the plan's block: 7
    assert app.rules_version == 7
