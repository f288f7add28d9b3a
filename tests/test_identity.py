"""The identity module on the real state machine (real SQLite), block by block: who may act.

Membership votes, validators, vouched registration, unknown senders, practitioners' consent,
key rotation and its history. Every attack is performed against the real application.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from careledger.chain.app import Application, BlockContext, FinalizeResult
from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis, GenesisOrganisation
from careledger.chain.modules.base import TxContext
from careledger.chain.modules.identity import IdentityKeeper, rotation_payload
from careledger.chain.modules.identity.vouchers import (
    Voucher,
    check_voucher,
    sign_consent,
    sign_voucher,
    statement_bytes,
)
from careledger.chain.modules.records import handler as records_handler
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.modules.records.messages import Anchor
from careledger.chain.state import KV, Overlay
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity, verify_signature
from careledger.crypto.statements import rotation_statement
from nodeutil import (
    CHAIN_ID,
    VOUCHER_EXPIRY,
    application_payload,
    grant_payload,
    make_app,
    practitioner_payload,
    record_name,
    register_patient_tx,
    run_block,
    run_block_results,
)


def clinical_key(patient: Identity) -> dict[str, Any]:
    """The patient's signed clinical scope key, epoch 1."""
    return scope_key_payload(patient, CHAIN_ID, "clinical", 1, "22" * 32)


class Chain:
    """A state machine with founding members, numbering each sender's nonces."""

    def __init__(self, tmp_path: Path, members: int = 4, validators: bool = False) -> None:
        self.members = [Identity.generate() for _ in range(members)]
        self.validator_keys = [Identity.generate().signing_public.hex() for _ in self.members]
        keys = self.validator_keys if validators else None
        self.app = make_app(tmp_path / "s.sqlite", self.members, validator_keys=keys)
        self._next: dict[str, int] = {}

    def tx(self, who: Identity, type_: str, payload: dict[str, Any], did: str = "") -> bytes:
        sender = did or who.did
        self._next[sender] = self._next.get(sender, 0) + 1
        return Tx(CHAIN_ID, type_, sender, self._next[sender], payload).sign(who)

    def run(self, *txs: bytes) -> list[int]:
        return run_block(self.app, list(txs))

    def finalize(self, *txs: bytes) -> FinalizeResult:
        height = self.app.info().last_height + 1
        result = self.app.finalize_block(BlockContext(height, 1_900_000_000_000_000_000), txs)
        self.app.commit()
        return result

    @property
    def height(self) -> int:
        return self.app.info().last_height

    def query(self, path: str, **params: str) -> Any:
        return query(self.app, path, **params)

    def rows(self) -> dict[bytes, bytes]:
        return dict(self.app.store.all_rows())

    def vote(self, voter: Identity, action: str, subject: str) -> bytes:
        return self.tx(voter, "identity/approve_membership", {"action": action, "subject": subject})

    def register_patient(self, patient: Identity, org: Identity | None = None) -> bytes:
        return register_patient_tx(
            CHAIN_ID, patient, org or self.members[0], nonce=self._bump(patient.did)
        )

    def register_practitioner(self, org: Identity, doctor: Identity) -> bytes:
        return self.tx(
            org, "identity/register_practitioner", practitioner_payload(CHAIN_ID, org.did, doctor)
        )

    def _bump(self, did: str) -> int:
        self._next[did] = self._next.get(did, 0) + 1
        return self._next[did]


def query(app: Application, path: str, **params: str) -> Any:
    result = app.query(path, json.dumps(params).encode())
    assert result.code == Code.OK, result.log
    return json.loads(result.value)


def member_dids(chain: Chain) -> set[str]:
    return {m["did"] for m in chain.query("identity/members")}


def refused_everywhere(chain: Chain, raw: bytes, code: int) -> None:
    """The mempool refuses it; forced into a block it fails with the same code and writes
    nothing at all (not even a nonce row)."""
    assert chain.app.check_tx(raw).code == code
    before = chain.rows()
    assert chain.run(raw) == [code]
    assert chain.rows() == before


# --- membership and validators ------------------------------------------------------------


def test_admission_needs_two_thirds_of_four_members(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    members, applicant = chain.members, Identity.generate()
    validator_key = Identity.generate().signing_public.hex()
    payload = application_payload(CHAIN_ID, applicant, members[0], "St. Elsewhere", validator_key)
    assert chain.run(chain.tx(applicant, "identity/apply_membership", payload)) == [Code.OK]

    def approve(voter: Identity) -> bytes:
        return chain.vote(voter, "admit", applicant.did)

    assert chain.run(approve(members[0]), approve(members[1])) == [Code.OK, Code.OK]
    assert applicant.did not in member_dids(chain)
    assert chain.query("identity/proposals")[0]["approvals"] == sorted(
        [members[0].did, members[1].did]
    )

    result = chain.finalize(approve(members[2]))
    assert [r.code for r in result.tx_results] == [Code.OK]
    assert [(u.pub_key.hex(), u.power) for u in result.validator_updates] == [(validator_key, 10)]
    assert applicant.did in member_dids(chain)
    assert chain.query("identity/identity", did=applicant.did)["kind"] == "organisation"
    assert chain.query("identity/proposals") == []
    # A fourth vote finds no open proposal.
    assert chain.run(approve(members[3])) == [Code.NOT_FOUND]


def test_only_members_vote_and_only_once(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    members = chain.members
    applicant, outsider = Identity.generate(), Identity.generate()
    apply = chain.tx(
        applicant,
        "identity/apply_membership",
        application_payload(CHAIN_ID, applicant, members[0], "Clinic"),
    )
    codes = chain.run(
        apply,
        chain.vote(outsider, "admit", applicant.did),
        chain.vote(members[0], "admit", applicant.did),
        chain.vote(members[0], "admit", applicant.did),
        chain.vote(applicant, "admit", applicant.did),
    )
    # An outsider, and an applicant not yet admitted, are no identities: they send nothing.
    assert codes == [Code.OK, Code.UNKNOWN_SENDER, Code.OK, Code.CONFLICT, Code.UNKNOWN_SENDER]


def test_removing_a_member_removes_exactly_its_validator_once(tmp_path: Path) -> None:
    chain = Chain(tmp_path, members=5, validators=True)
    members = chain.members
    voters = members[:3]
    assert chain.run(*(chain.vote(v, "remove", members[4].did) for v in voters[:2])) == [0, 0]
    assert members[4].did in member_dids(chain)  # two of four voters: not yet two thirds
    # The subject does not vote on its own removal.
    assert chain.run(chain.vote(members[4], "remove", members[4].did)) == [Code.INVALID_PAYLOAD]

    result = chain.finalize(chain.vote(voters[2], "remove", members[4].did))
    assert [r.code for r in result.tx_results] == [Code.OK]
    assert [(u.pub_key.hex(), u.power) for u in result.validator_updates] == [
        (chain.validator_keys[4], 0)
    ]
    assert members[4].did not in member_dids(chain)
    assert chain.query("identity/identity", did=members[4].did)["active"] is False
    # Voting again on the removed member finds no member: no second removal of its key.
    again = chain.finalize(chain.vote(members[0], "remove", members[4].did))
    assert [r.code for r in again.tx_results] == [Code.NOT_FOUND]
    assert again.validator_updates == []


def test_in_a_consortium_of_two_one_member_cannot_remove_the_other(tmp_path: Path) -> None:
    """The attack from review: with two members, one vote was two thirds of the one voter,
    so either member expelled the other and its validator and held all the voting power.
    A removal needs two approving members; the two must first admit a third."""
    chain = Chain(tmp_path, members=2, validators=True)
    a, b = chain.members
    alone = chain.finalize(chain.vote(a, "remove", b.did))
    assert [r.code for r in alone.tx_results] == [Code.OK]  # the vote counts, and waits
    assert alone.validator_updates == []
    assert member_dids(chain) == {a.did, b.did}
    assert chain.query("identity/proposals")[0]["approvals"] == [a.did]

    third = Identity.generate()
    payload = application_payload(CHAIN_ID, third, a, "Third Clinic")
    assert chain.run(
        chain.tx(third, "identity/apply_membership", payload),
        chain.vote(a, "admit", third.did),
        chain.vote(b, "admit", third.did),
    ) == [0, 0, 0]
    removal = chain.finalize(chain.vote(third, "remove", b.did))  # A and the third: 2 of 2
    assert [r.code for r in removal.tx_results] == [Code.OK]
    assert [(u.pub_key.hex(), u.power) for u in removal.validator_updates] == [
        (chain.validator_keys[1], 0)
    ]
    assert member_dids(chain) == {a.did, third.did}


def test_removing_a_member_without_a_validator_key_updates_no_validator(tmp_path: Path) -> None:
    chain = Chain(tmp_path)  # solo-style genesis: no validator keys
    members = chain.members
    assert chain.run(chain.vote(members[0], "remove", members[3].did)) == [Code.OK]
    result = chain.finalize(chain.vote(members[1], "remove", members[3].did))  # 2 of 3
    assert [r.code for r in result.tx_results] == [Code.OK]
    assert members[3].did not in member_dids(chain)
    assert result.validator_updates == []


def test_a_validator_key_already_a_members_is_refused(tmp_path: Path) -> None:
    """The attack: admit a second member with an existing validator key, then remove both;
    CometBFT would be told to remove one key twice and halt. Refused at application and,
    for a key taken between application and admission, at admission."""
    chain = Chain(tmp_path, validators=True)
    members = chain.members
    copycat, first, second = Identity.generate(), Identity.generate(), Identity.generate()
    taken = chain.validator_keys[0]
    steal = application_payload(CHAIN_ID, copycat, members[1], "Copycat", taken)
    assert chain.run(chain.tx(copycat, "identity/apply_membership", steal)) == [Code.CONFLICT]
    assert chain.query("identity/proposals") == []

    fresh = Identity.generate().signing_public.hex()
    for applicant in (first, second):  # both apply with one new key: no member holds it yet
        payload = application_payload(CHAIN_ID, applicant, members[0], "Twin", fresh)
        assert chain.run(chain.tx(applicant, "identity/apply_membership", payload)) == [0]
    for subject in (first, second):
        assert chain.run(*(chain.vote(v, "admit", subject.did) for v in members[:2])) == [0, 0]
    admitted = chain.finalize(chain.vote(members[2], "admit", first.did))
    assert [(u.pub_key.hex(), u.power) for u in admitted.validator_updates] == [(fresh, 10)]
    # Five members now: four of the five voters make two thirds for the second applicant.
    assert chain.run(chain.vote(members[2], "admit", second.did)) == [Code.OK]
    late = chain.finalize(chain.vote(members[3], "admit", second.did))
    assert [r.code for r in late.tx_results] == [Code.CONFLICT]
    assert late.validator_updates == []
    assert second.did not in member_dids(chain)
    holders = [m for m in chain.query("identity/members") if m["validator_pub_key"] == fresh]
    assert [m["did"] for m in holders] == [first.did]


def test_an_applicant_that_registered_meanwhile_is_not_admitted_over_its_identity(
    tmp_path: Path,
) -> None:
    """An applicant registers as a patient while the vote runs: admitting it would silently
    turn a patient identity into a member organisation."""
    chain = Chain(tmp_path)
    members, applicant = chain.members, Identity.generate()
    payload = application_payload(CHAIN_ID, applicant, members[0], "Two-faced Clinic")
    assert chain.run(
        chain.tx(applicant, "identity/apply_membership", payload),
        chain.register_patient(applicant),
        chain.vote(members[0], "admit", applicant.did),
        chain.vote(members[1], "admit", applicant.did),
        chain.vote(members[2], "admit", applicant.did),
    ) == [Code.OK, Code.OK, Code.OK, Code.OK, Code.CONFLICT]
    assert applicant.did not in member_dids(chain)
    assert chain.query("identity/identity", did=applicant.did)["kind"] == "patient"


def test_a_genesis_with_a_shared_validator_key_is_refused() -> None:
    a, b = Identity.generate(), Identity.generate()
    key = Identity.generate().signing_public.hex()
    orgs = (
        GenesisOrganisation(a.did, "A", a.encryption_public.hex(), key),
        GenesisOrganisation(b.did, "B", b.encryption_public.hex(), key),
    )
    with pytest.raises(ValueError, match="share a validator key"):
        Genesis(CHAIN_ID, "2026-01-01T00:00:00Z", orgs)
    document = Genesis(CHAIN_ID, "2026-01-01T00:00:00Z", orgs[:1]).to_json()
    doubled = json.loads(document)
    doubled["organisations"].append({**doubled["organisations"][0], "did": b.did})
    with pytest.raises(ValueError, match="share a validator key"):
        Genesis.from_json(json.dumps(doubled).encode())


# --- unknown senders and vouched registration ---------------------------------------------


def test_an_unknown_sender_never_reaches_the_state(tmp_path: Path) -> None:
    """Transactions of an unregistered key are refused by the mempool and, forced into a
    block by a Byzantine proposer, fail with UNKNOWN_SENDER and write nothing, not even the
    nonce row that used to make every stranger a permanent row of state."""
    chain = Chain(tmp_path)
    stranger = Identity.generate()
    patient = Identity.generate()
    assert chain.run(chain.register_patient(patient)) == [Code.OK]
    scope = scope_key_payload(stranger, CHAIN_ID, "clinical", 1, "22" * 32)
    anchor = {
        "patient": patient.did,
        "resource_type": "Observation",
        "record": record_name(patient.did, "Observation", "o1"),
        "version": 1,
        "blob_hash": "ab" * 32,
        "commitment": "cd" * 32,
        "recipients": ["scope/clinical/1", stranger.did],
    }
    rotate = rotation_payload(stranger, Identity.generate(), CHAIN_ID)
    grant = grant_payload(patient.did, stranger.did)
    for type_, payload in [
        ("records/publish_scope_key", scope),
        ("records/anchor", anchor),
        ("identity/rotate_key", rotate),
        ("identity/approve_membership", {"action": "remove", "subject": chain.members[0].did}),
        ("identity/register_practitioner", practitioner_payload(CHAIN_ID, stranger.did, patient)),
        ("consent/grant", grant),
        ("consent/revoke", {"id": grant["id"]}),
    ]:
        refused_everywhere(chain, chain.tx(stranger, type_, payload), Code.UNKNOWN_SENDER)
    assert query(chain.app, "auth/nonce", did=stranger.did)["last_nonce"] == 0


def test_patient_registration_needs_a_members_valid_voucher(tmp_path: Path) -> None:
    """Open registration let anyone fill the chain. Each forged, borrowed, stale or misdirected
    voucher is refused in the mempool and in a block, and writes nothing."""
    chain = Chain(tmp_path)
    org = chain.members[0]
    patient, outsider, other = Identity.generate(), Identity.generate(), Identity.generate()
    assert chain.run(chain.register_patient(other)) == [Code.OK]  # a patient is no member
    height = chain.height + 1

    def attempt(voucher: dict[str, Any] | None) -> bytes:
        payload: dict[str, Any] = {"encryption_key": patient.encryption_public.hex()}
        if voucher is not None:
            payload["voucher"] = voucher
        return Tx(CHAIN_ID, "identity/register_patient", patient.did, 1, payload).sign(patient)

    def vouch(signer: Identity, **changes: Any) -> dict[str, Any]:
        terms = {"chain_id": CHAIN_ID, "purpose": "register_patient", "subject": patient.did}
        terms |= {"expires_at": VOUCHER_EXPIRY} | changes
        return sign_voucher(signer, **terms)

    forged = vouch(outsider) | {"org": org.did}  # signed by a key that is not the member's
    cases = [
        (None, Code.INVALID_PAYLOAD),
        (vouch(outsider), Code.UNAUTHORISED),  # not a member
        (vouch(other), Code.UNAUTHORISED),  # a registered patient is not a member either
        (forged, Code.UNAUTHORISED),
        (vouch(org, subject=other.did), Code.UNAUTHORISED),  # vouches for another did
        (vouch(org, purpose="apply_membership"), Code.UNAUTHORISED),  # for another act
        (vouch(org, chain_id="another-chain"), Code.UNAUTHORISED),
        (vouch(org, expires_at=height - 1), Code.UNAUTHORISED),  # expired
    ]
    for voucher, code in cases:
        refused_everywhere(chain, attempt(voucher), code)
    assert chain.app.query("identity/identity", json.dumps({"did": patient.did}).encode()).code == (
        Code.NOT_FOUND
    )
    valid_to = chain.height + 1  # a voucher is valid up to and including its height
    assert chain.run(attempt(vouch(org, expires_at=valid_to))) == [Code.OK]
    assert chain.query("identity/identity", did=patient.did)["kind"] == "patient"


def test_a_voucher_seen_in_the_mempool_serves_no_one_else_and_only_once(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    org = chain.members[0]
    patient, thief = Identity.generate(), Identity.generate()
    honest = chain.register_patient(patient, org)
    assert chain.app.check_tx(honest).code == Code.OK
    seen = json.loads(honest[:-64])["payload"]["voucher"]  # copied from the mempool
    payload = {"encryption_key": thief.encryption_public.hex(), "voucher": seen}
    stolen = Tx(CHAIN_ID, "identity/register_patient", thief.did, 1, payload).sign(thief)
    refused_everywhere(chain, stolen, Code.UNAUTHORISED)
    assert chain.run(honest) == [Code.OK]
    used = [k for k in chain.rows() if k.startswith(b"identity/used/")]
    assert len(used) == 1

    # One-time: the used row refuses the same statement whatever else would let it through.
    keeper = IdentityKeeper(KV(chain.app.store, "identity"))
    voucher = Voucher(seen["org"], seen["expires_at"], seen["signature"])
    with pytest.raises(TxFailure) as again:
        check_voucher(keeper, CHAIN_ID, "register_patient", patient.did, voucher, chain.height)
    assert again.value.code == Code.CONFLICT


def test_a_membership_application_needs_a_sponsors_voucher(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    applicant, outsider = Identity.generate(), Identity.generate()
    unsponsored = application_payload(CHAIN_ID, applicant, outsider, "Nobody's Clinic")
    refused_everywhere(
        chain, chain.tx(applicant, "identity/apply_membership", unsponsored), Code.UNAUTHORISED
    )
    enrolment = sign_voucher(
        chain.members[0], CHAIN_ID, "register_patient", applicant.did, VOUCHER_EXPIRY
    )
    misused = {**unsponsored, "voucher": enrolment}  # a patient's voucher is not a sponsor's
    refused_everywhere(
        chain, chain.tx(applicant, "identity/apply_membership", misused), Code.UNAUTHORISED
    )
    assert chain.query("identity/proposals") == []
    sponsored = application_payload(CHAIN_ID, applicant, chain.members[1], "Real Clinic")
    assert chain.run(chain.tx(applicant, "identity/apply_membership", sponsored)) == [Code.OK]
    assert chain.query("identity/proposals")[0]["sponsor"] == chain.members[1].did


def test_the_mempool_admits_a_new_patients_transactions_behind_its_registration(
    tmp_path: Path,
) -> None:
    """A clinic enrols a patient and sends the patient's scope keys at once, before any
    block: the mempool view holds the registration, so they are admitted behind it."""
    chain = Chain(tmp_path)
    patient = Identity.generate()
    register = chain.register_patient(patient)
    scope = scope_key_payload(patient, CHAIN_ID, "clinical", 1, "22" * 32)
    publish = chain.tx(patient, "records/publish_scope_key", scope)
    assert chain.app.check_tx(publish).code == Code.UNKNOWN_SENDER  # not before it
    assert [chain.app.check_tx(register).code, chain.app.check_tx(publish).code] == [0, 0]
    twice = chain.register_patient(patient)  # same voucher, next nonce: already registered
    assert chain.app.check_tx(twice).code == Code.CONFLICT
    assert chain.run(register, publish) == [Code.OK, Code.OK]


# --- removed organisations and deregistered practitioners ----------------------------------


def test_an_expelled_organisations_practitioner_can_no_longer_write(tmp_path: Path) -> None:
    """The attack from review: after organisation A was voted out, A's practitioner still
    anchored and tombstoned a patient's record (code 0)."""
    chain = Chain(tmp_path)
    a, b, c, _ = chain.members
    doctor, patient = Identity.generate(), Identity.generate()
    record = record_name(patient.did, "Observation", "o1")

    def anchor(version: int, **extra: Any) -> dict[str, Any]:
        base = {
            "patient": patient.did,
            "resource_type": "Observation",
            "record": record,
            "version": version,
        }
        if extra.get("tombstone"):
            return base | {"tombstone": 1}
        blob = {"blob_hash": f"{version:02x}" * 32, "commitment": "cd" * 32}
        return base | blob | {"recipients": ["scope/clinical/1", doctor.did]}

    setup = chain.run(
        chain.register_practitioner(a, doctor),
        chain.register_patient(patient, a),
        chain.tx(patient, "records/publish_scope_key", clinical_key(patient)),
        chain.tx(patient, "consent/grant", grant_payload(patient.did, a.did)),
        chain.tx(doctor, "records/anchor", anchor(1)),
    )
    assert setup == [Code.OK] * 5
    assert chain.run(chain.vote(b, "remove", a.did)) == [Code.OK]
    assert chain.run(chain.tx(doctor, "records/anchor", anchor(2))) == [Code.OK]  # A not out yet
    assert chain.run(chain.vote(c, "remove", a.did)) == [Code.OK]  # two of the three others
    assert a.did not in member_dids(chain)

    rewrite = chain.tx(doctor, "records/anchor", anchor(3))
    tombstone = chain.tx(doctor, "records/anchor", anchor(3, tombstone=True))
    by_a = chain.tx(a, "records/anchor", anchor(3, tombstone=True))
    for raw in (rewrite, tombstone, by_a):
        refused_everywhere(chain, raw, Code.UNKNOWN_SENDER)
    versions = chain.query("records/versions", patient=patient.did, record=record)["history"]
    assert [v["version"] for v in versions] == [1, 2]
    assert chain.query("identity/identity", did=doctor.did)["active"] is False
    assert chain.query("identity/practitioners", org=a.did)[0]["active"] is False

    # Behind the sender check, the records module's own author check refuses them as well.
    state = Overlay(chain.app.store)
    for sender in (doctor.did, a.did):
        ctx = TxContext(state, sender, chain.height + 1, 0, chain_id=CHAIN_ID)
        msg = Anchor(patient.did, "Observation", record, 3, "", "", (), True)
        with pytest.raises(TxFailure) as refused:
            records_handler.anchor(ctx, msg)
        assert refused.value.code == Code.UNAUTHORISED
    assert state.changes == {}


def test_a_deregistered_practitioner_may_send_nothing(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    org, doctor = chain.members[0], Identity.generate()
    deregister = chain.tx(org, "identity/deregister_practitioner", {"did": doctor.did})
    assert chain.run(chain.register_practitioner(org, doctor), deregister) == [0, 0]
    rotate = rotation_payload(doctor, Identity.generate(), CHAIN_ID)
    refused_everywhere(chain, chain.tx(doctor, "identity/rotate_key", rotate), Code.UNKNOWN_SENDER)


# --- practitioners: consent, and no key reset ----------------------------------------------


def test_an_organisation_cannot_register_a_practitioner_without_consent(tmp_path: Path) -> None:
    """Squatting: an organisation registered any unregistered did as its practitioner."""
    chain = Chain(tmp_path)
    org, rival = chain.members[0], chain.members[1]
    doctor = Identity.generate()
    key = doctor.encryption_public.hex()
    base = {"did": doctor.did, "encryption_key": key, "name": "Dr. Squatted"}

    def consent(signer: Identity, **changes: Any) -> dict[str, Any]:
        terms = {"chain_id": CHAIN_ID, "org": org.did, "encryption_key": key}
        terms |= {"expires_at": VOUCHER_EXPIRY} | changes
        return sign_consent(signer, practitioner_did=doctor.did, **terms)

    cases = [
        (base, Code.INVALID_PAYLOAD),
        (base | {"consent": consent(org)}, Code.UNAUTHORISED),  # the org signs for the did
        (base | {"consent": consent(doctor, org=rival.did)}, Code.UNAUTHORISED),
        (base | {"consent": consent(doctor, encryption_key="55" * 32)}, Code.UNAUTHORISED),
        (base | {"consent": consent(doctor, expires_at=1)}, Code.UNAUTHORISED),  # at height 5
    ]
    for payload, code in cases:
        assert chain.run(chain.tx(org, "identity/register_practitioner", payload)) == [code]
    assert chain.query("identity/practitioners", org=org.did) == []
    consented = base | {"consent": consent(doctor)}
    assert chain.run(chain.tx(org, "identity/register_practitioner", consented)) == [Code.OK]
    assert [p["did"] for p in chain.query("identity/practitioners", org=org.did)] == [doctor.did]


def test_re_registering_a_practitioner_never_resets_a_rotated_key(tmp_path: Path) -> None:
    """Re-registering used to reset the signing key to the did's own: whoever held the key
    the practitioner rotated away from (lost, stolen) could sign for them again."""
    chain = Chain(tmp_path)
    org = chain.members[0]
    first, rotated = Identity.generate(), Identity.generate()
    did = first.did
    key = first.encryption_public.hex()
    original_consent = sign_consent(first, CHAIN_ID, org.did, key, VOUCHER_EXPIRY)
    register = {"did": did, "encryption_key": key, "name": "Dr. R", "consent": original_consent}
    rotate = rotation_payload(first, rotated, CHAIN_ID, encryption_key=key)
    assert chain.run(
        chain.tx(org, "identity/register_practitioner", register),
        chain.tx(first, "identity/rotate_key", rotate, did=did),
        chain.tx(org, "identity/deregister_practitioner", {"did": did}),
    ) == [0, 0, 0]
    history = chain.query("identity/identity", did=did)["keys"]

    # The old consent again (a replay), and a new one by the key rotated away from: refused.
    stale = sign_consent(first, CHAIN_ID, org.did, key, VOUCHER_EXPIRY - 1)
    for consent, code in ((original_consent, Code.CONFLICT), (stale, Code.UNAUTHORISED)):
        payload = register | {"consent": consent}
        assert chain.run(chain.tx(org, "identity/register_practitioner", payload)) == [code]

    # A consent is used once: consenting again to the same organisation and key takes
    # another expiry (a gateway signing "now + N blocks" gets one by itself).
    fresh = sign_consent(rotated, CHAIN_ID, org.did, key, VOUCHER_EXPIRY - 2, practitioner_did=did)
    payload = register | {"consent": fresh}
    assert chain.run(chain.tx(org, "identity/register_practitioner", payload)) == [Code.OK]
    record = chain.query("identity/identity", did=did)
    assert record["active"] is True
    assert record["signing_key"] == rotated.signing_public.hex()
    assert record["keys"] == history
    onward = rotation_payload(first, Identity.generate(), CHAIN_ID, did=did)
    by_old_key = chain.tx(first, "identity/rotate_key", onward, did)
    assert chain.app.check_tx(by_old_key).code == Code.BAD_SIGNATURE


def test_another_organisation_cannot_take_over_a_practitioner(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    org, rival = chain.members[0], chain.members[1]
    doctor = Identity.generate()
    codes = chain.run(
        chain.register_practitioner(org, doctor),
        chain.register_practitioner(rival, doctor),
        chain.tx(rival, "identity/deregister_practitioner", {"did": doctor.did}),
        chain.tx(org, "identity/deregister_practitioner", {"did": doctor.did}),
        chain.register_practitioner(rival, doctor),  # even with consent, once deregistered
    )
    assert codes == [Code.OK, Code.CONFLICT, Code.UNAUTHORISED, Code.OK, Code.CONFLICT]
    assert chain.query("identity/practitioners", org=org.did) == []  # deregistered: no staff
    assert chain.query("identity/identity", did=doctor.did)["org"] == org.did


# --- keys -----------------------------------------------------------------------------------


def test_after_key_rotation_the_old_key_cannot_sign_for_the_identity(tmp_path: Path) -> None:
    chain = Chain(tmp_path, members=1)
    old, new = Identity.generate(), Identity.generate()
    did = old.did
    register = chain.register_patient(old)
    keys = rotation_payload(old, new, CHAIN_ID)
    rotate = chain.tx(old, "identity/rotate_key", keys)
    assert chain.run(register, rotate) == [Code.OK, Code.OK]
    record = chain.query("identity/identity", did=did)
    assert record["signing_key"] == new.signing_public.hex()

    payload = rotation_payload(old, Identity.generate(), CHAIN_ID)
    by_old = Tx(CHAIN_ID, "identity/rotate_key", did, 3, payload).sign(old)
    assert chain.app.check_tx(by_old).code == Code.BAD_SIGNATURE
    assert chain.run(by_old) == [Code.BAD_SIGNATURE]
    # The new key may rotate on, but never back to the key it replaced (lost or stolen keys
    # are rotated away from: taking one back would let its holder sign again).
    back_keys = rotation_payload(new, old, CHAIN_ID, did=did)  # it even proves it holds it
    back = Tx(CHAIN_ID, "identity/rotate_key", did, 3, back_keys).sign(new)
    assert chain.run(back) == [Code.CONFLICT]
    onward = rotation_payload(new, Identity.generate(), CHAIN_ID, did=did)
    assert chain.run(Tx(CHAIN_ID, "identity/rotate_key", did, 4, onward).sign(new)) == [Code.OK]


def test_a_signing_key_signs_for_one_identity_only(tmp_path: Path) -> None:
    """The attack from review: member B rotated its signing key to member C's public key
    (code 0), so C signed as B. A rotation to any identity's current key, any key in any
    identity's history, or a registered did's own key (founders' too) is CONFLICT."""
    chain = Chain(tmp_path, members=3)
    _, b, c = chain.members
    patient, doctor = Identity.generate(), Identity.generate()
    first, second = Identity.generate(), Identity.generate()
    assert chain.run(
        chain.register_patient(patient), chain.register_practitioner(chain.members[0], doctor)
    ) == [0, 0]

    def rotate(who: Identity, to: Identity, did: str = "") -> bytes:
        """A rotation as its holders would sign it: even with the taken key's proof."""
        keys = rotation_payload(who, to, CHAIN_ID, did=did or who.did, encryption_key="44" * 32)
        return chain.tx(who, "identity/rotate_key", keys, did=did)

    for taken in (c, patient, doctor):  # a founder's, a patient's and a practitioner's key
        assert chain.run(rotate(b, taken)) == [Code.CONFLICT]
    assert chain.query("identity/identity", did=b.did)["keys"][-1]["signing_key"] == (
        b.signing_public.hex()
    )
    away = rotation_payload(b, Identity.generate(), CHAIN_ID)
    as_b = Tx(CHAIN_ID, "identity/rotate_key", b.did, 99, away)
    assert chain.app.check_tx(as_b.sign(c)).code == Code.BAD_SIGNATURE  # C cannot sign as B

    assert chain.run(rotate(patient, first)) == [Code.OK]
    assert chain.run(rotate(b, first)) == [Code.CONFLICT]  # the patient's current key
    assert chain.run(rotate(first, second, did=patient.did)) == [Code.OK]
    assert chain.run(rotate(b, first)) == [Code.CONFLICT]  # in the patient's history
    assert chain.run(rotate(b, Identity.generate())) == [Code.OK]  # a fresh key: B moves on
    keeper = IdentityKeeper(KV(chain.app.store, "identity"))
    assert keeper.key_holder(first.signing_public.hex()) == patient.did


def test_a_rotation_needs_a_proof_by_the_new_key_so_no_did_is_squatted(tmp_path: Path) -> None:
    """rotate_key once named any key: an identity rotated to the key of a did not registered
    yet, which then could never register (two identities would share one key). A rotation now
    carries a proof by the new key and a certificate by the current one, over the rotation
    statement: without the victim's private key the squatter is UNAUTHORISED, writes nothing
    but its nonce, and every victim registers."""
    chain = Chain(tmp_path)
    members = chain.members
    holder, stranger = Identity.generate(), Identity.generate()
    patient, doctor, applicant = Identity.generate(), Identity.generate(), Identity.generate()
    assert chain.run(chain.register_patient(holder)) == [0]
    application = application_payload(CHAIN_ID, applicant, members[0], "Late Clinic")
    assert chain.run(chain.tx(applicant, "identity/apply_membership", application)) == [0]

    def forged(victim: Identity, proof_by: Identity, certificate_by: Identity) -> bytes:
        keys = rotation_payload(holder, victim, CHAIN_ID, encryption_key="44" * 32)
        statement = rotation_statement(CHAIN_ID, holder.did, victim.signing_public.hex(), "44" * 32)
        keys["proof"] = proof_by.sign(statement).hex()
        keys["certificate"] = certificate_by.sign(statement).hex()
        return chain.tx(holder, "identity/rotate_key", keys)

    identity_before = chain.query("identity/identity", did=holder.did)
    for victim in (patient, doctor, applicant):
        for proof_by, certificate_by, wrong in (
            (holder, holder, "proof"),  # the squatter's own key proves nothing
            (stranger, holder, "proof"),
            (victim, stranger, "certificate"),  # a certificate not by the current key
        ):
            [result] = run_block_results(chain.app, [forged(victim, proof_by, certificate_by)])
            assert result.code == Code.UNAUTHORISED
            assert f"the {wrong} is not a signature by" in result.log
    wrong_chain = rotation_payload(holder, Identity.generate(), "another-chain")
    [result] = run_block_results(chain.app, [chain.tx(holder, "identity/rotate_key", wrong_chain)])
    assert result.code == Code.UNAUTHORISED
    assert chain.query("identity/identity", did=holder.did) == identity_before

    assert chain.run(
        chain.register_patient(patient),
        chain.register_practitioner(members[0], doctor),
        chain.vote(members[0], "admit", applicant.did),
        chain.vote(members[1], "admit", applicant.did),
        chain.vote(members[2], "admit", applicant.did),
    ) == [0, 0, 0, 0, 0]
    assert applicant.did in member_dids(chain)


def test_a_did_whose_key_another_identity_rotated_to_cannot_register(tmp_path: Path) -> None:
    """The one way left to a did's key becoming another identity's: its holder signs the
    proof (gives the key away). That did then cannot register, or two identities would share
    one key."""
    chain = Chain(tmp_path)
    holder, given_away = Identity.generate(), Identity.generate()
    assert chain.run(chain.register_patient(holder)) == [0]
    keys = rotation_payload(holder, given_away, CHAIN_ID)
    assert chain.run(chain.tx(holder, "identity/rotate_key", keys)) == [0]
    assert chain.run(chain.register_patient(given_away)) == [Code.CONFLICT]
    found = chain.app.query("identity/identity", json.dumps({"did": given_away.did}).encode())
    assert found.code == Code.NOT_FOUND


def test_the_key_history_gives_the_key_in_force_at_any_height(tmp_path: Path) -> None:
    """Offline proofs check an old anchor's signature against the author's key *then*."""
    chain = Chain(tmp_path, members=1)
    first, second, third = (Identity.generate() for _ in range(3))
    did = first.did

    def rotate(signer: Identity, to: Identity) -> bytes:
        payload = rotation_payload(signer, to, CHAIN_ID, did=did, encryption_key="11" * 32)
        entries.append({"encryption_key": "11" * 32} | payload)
        return chain.tx(signer, "identity/rotate_key", payload, did=did)

    entries: list[dict[str, str]] = []

    assert chain.run(chain.register_patient(first)) == [0]
    registered = chain.height
    chain.run(chain.register_patient(Identity.generate()))  # a block without rotation
    assert chain.run(rotate(first, second)) == [0]
    second_since = chain.height
    assert chain.run(rotate(second, third)) == [0]
    third_since = chain.height

    keys = chain.query("identity/identity", did=did)["keys"]
    assert keys == [
        {"since": registered, "signing_key": first.signing_public.hex()},
        {"since": second_since, **entries[0]},
        {"since": third_since, **entries[1]},
    ]
    # Each entry carries what lets anyone follow the keys from the did without the chain:
    # the certificate by the key before it and the proof by the key itself.
    for before, entry in itertools.pairwise(keys):
        statement = rotation_statement(CHAIN_ID, did, entry["signing_key"], entry["encryption_key"])
        for key, signature in ((before, "certificate"), (entry, "proof")):
            assert verify_signature(
                bytes.fromhex(key["signing_key"]), bytes.fromhex(entry[signature]), statement
            )
    keeper = IdentityKeeper(KV(chain.app.store, "identity"))
    assert keeper.signing_key_at(did, registered - 1) is None
    assert keeper.signing_key_at(did, registered + 1) == first.signing_public
    assert keeper.signing_key_at(did, second_since) == second.signing_public
    assert keeper.signing_key_at(did, third_since + 5) == third.signing_public
    # In the block that rotated, both keys signed for the did (before and after the rotation).
    assert keeper.signing_keys_at(did, second_since) == [
        first.signing_public,
        second.signing_public,
    ]
    assert keeper.signing_keys_at(did, registered + 1) == [first.signing_public]


def test_the_signed_statement_is_rfc_8785_and_names_every_term() -> None:
    from careledger.crypto.canonical import canonical_bytes

    terms = {
        "domain": "careledger-statement-v1",
        "chain_id": "ch\u00e9-\u0001",
        "purpose": "register_practitioner",
        "subject": "did:key:zA",
        "org": "did:key:zB",
        "expires_at": 2**53 - 1,
        "encryption_key": "ab" * 32,
    }
    args = [terms[k] for k in ("chain_id", "purpose", "subject", "org", "expires_at")]
    assert statement_bytes(*args, terms["encryption_key"]) == canonical_bytes(terms)
    with pytest.raises(ValueError):
        statement_bytes(*args[:4], 2**53)


def test_patient_identity_holds_nothing_but_a_did_and_keys(tmp_path: Path) -> None:
    chain = Chain(tmp_path, members=1)
    patient = Identity.generate()
    raw = register_patient_tx(CHAIN_ID, patient, chain.members[0])
    assert chain.run(raw, raw) == [Code.OK, Code.REPLAY]
    record = chain.query("identity/identity", did=patient.did)
    assert set(record) == {
        "did",
        "kind",
        "signing_key",
        "keys",
        "encryption_key",
        "active",
        "registered_at",
        "enrolled_by",  # the vouching member: the link its write consent shows anyway
    }
    assert record["enrolled_by"] == chain.members[0].did
    payload = json.loads(raw[:-64])["payload"] | {"name": "Jane Doe"}
    named = Tx(CHAIN_ID, "identity/register_patient", patient.did, 2, payload).sign(patient)
    assert chain.app.check_tx(named).code == Code.INVALID_PAYLOAD
