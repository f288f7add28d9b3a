"""The identity module: membership vote, key rotation, practitioners, patients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from careledger.chain.app import Application, BlockContext
from careledger.chain.codes import Code
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, make_app, run_block


class Nonces:
    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def sign(self, who: Identity, type_: str, payload: dict[str, Any], did: str = "") -> bytes:
        sender = did or who.did
        self._next[sender] = self._next.get(sender, 0) + 1
        return Tx(CHAIN_ID, f"identity/{type_}", sender, self._next[sender], payload).sign(who)


def query(app: Application, path: str, **params: str) -> Any:
    result = app.query(path, json.dumps(params).encode())
    assert result.code == Code.OK, result.log
    return json.loads(result.value)


def test_admission_needs_two_thirds_of_four_members(tmp_path: Path) -> None:
    members = [Identity.generate() for _ in range(4)]
    app = make_app(tmp_path / "s.sqlite", members)
    applicant = Identity.generate()
    validator_key = Identity.generate().signing_public.hex()
    n = Nonces()
    apply = n.sign(
        applicant,
        "apply_membership",
        {
            "name": "St. Elsewhere",
            "encryption_key": applicant.encryption_public.hex(),
            "validator_pub_key": validator_key,
        },
    )
    assert run_block(app, [apply]) == [Code.OK]

    def approve(voter: Identity) -> bytes:
        return n.sign(voter, "approve_membership", {"action": "admit", "subject": applicant.did})

    assert run_block(app, [approve(members[0]), approve(members[1])]) == [Code.OK, Code.OK]
    assert applicant.did not in {m["did"] for m in query(app, "identity/members")}
    assert query(app, "identity/proposals")[0]["approvals"] == sorted(
        [members[0].did, members[1].did]
    )

    height = app.info().last_height + 1
    result = app.finalize_block(
        BlockContext(height, 1_900_000_000_000_000_000), [approve(members[2])]
    )
    app.commit()
    assert [r.code for r in result.tx_results] == [Code.OK]
    assert [(u.pub_key.hex(), u.power) for u in result.validator_updates] == [(validator_key, 10)]
    assert applicant.did in {m["did"] for m in query(app, "identity/members")}
    assert query(app, "identity/identity", did=applicant.did)["kind"] == "organisation"
    assert query(app, "identity/proposals") == []
    # A fourth vote finds no open proposal.
    assert run_block(app, [approve(members[3])]) == [Code.NOT_FOUND]


def test_only_members_vote_and_only_once(tmp_path: Path) -> None:
    members = [Identity.generate() for _ in range(4)]
    app = make_app(tmp_path / "s.sqlite", members)
    applicant, outsider = Identity.generate(), Identity.generate()
    n = Nonces()
    apply = n.sign(
        applicant,
        "apply_membership",
        {"name": "Clinic", "encryption_key": applicant.encryption_public.hex()},
    )
    vote = {"action": "admit", "subject": applicant.did}
    codes = run_block(
        app,
        [
            apply,
            n.sign(outsider, "approve_membership", vote),
            n.sign(members[0], "approve_membership", vote),
            n.sign(members[0], "approve_membership", vote),
            n.sign(applicant, "approve_membership", vote),
        ],
    )
    assert codes == [Code.OK, Code.UNAUTHORISED, Code.OK, Code.CONFLICT, Code.UNAUTHORISED]


def test_removal_vote_removes_a_member_and_its_validator(tmp_path: Path) -> None:
    members = [Identity.generate() for _ in range(4)]
    app = make_app(tmp_path / "s.sqlite", members)
    n = Nonces()
    vote = {"action": "remove", "subject": members[3].did}
    assert run_block(app, [n.sign(members[0], "approve_membership", vote)]) == [Code.OK]
    assert members[3].did in {m["did"] for m in query(app, "identity/members")}
    # The subject does not vote on its own removal.
    assert run_block(app, [n.sign(members[3], "approve_membership", vote)]) == [
        Code.INVALID_PAYLOAD
    ]
    # Two of the three other members are two thirds of those who vote.
    height = app.info().last_height + 1
    second = n.sign(members[1], "approve_membership", vote)
    result = app.finalize_block(BlockContext(height, 1_900_000_000_000_000_000), [second])
    app.commit()
    assert [r.code for r in result.tx_results] == [Code.OK]
    assert members[3].did not in {m["did"] for m in query(app, "identity/members")}
    assert query(app, "identity/identity", did=members[3].did)["active"] is False
    assert result.validator_updates == []  # genesis gave it no validator key in this test


def test_after_key_rotation_the_old_key_cannot_sign_for_the_identity(tmp_path: Path) -> None:
    app = make_app(tmp_path / "s.sqlite", [Identity.generate()])
    old = Identity.generate()
    new = Identity.generate()
    did = old.did
    register = Tx(
        CHAIN_ID,
        "identity/register_patient",
        did,
        1,
        {"encryption_key": old.encryption_public.hex()},
    ).sign(old)
    rotate = Tx(
        CHAIN_ID,
        "identity/rotate_key",
        did,
        2,
        {"signing_key": new.signing_public.hex(), "encryption_key": new.encryption_public.hex()},
    ).sign(old)
    assert run_block(app, [register, rotate]) == [Code.OK, Code.OK]
    record = query(app, "identity/identity", did=did)
    assert record["signing_key"] == new.signing_public.hex()

    payload = {"signing_key": old.signing_public.hex(), "encryption_key": "55" * 32}
    by_old = Tx(CHAIN_ID, "identity/rotate_key", did, 3, payload).sign(old)
    assert app.check_tx(by_old).code == Code.BAD_SIGNATURE
    assert run_block(app, [by_old]) == [Code.BAD_SIGNATURE]
    by_new = Tx(CHAIN_ID, "identity/rotate_key", did, 3, payload).sign(new)
    assert run_block(app, [by_new]) == [Code.OK]


def test_organisation_registers_and_deregisters_its_practitioners(tmp_path: Path) -> None:
    org_a, org_b = Identity.generate(), Identity.generate()
    app = make_app(tmp_path / "s.sqlite", [org_a, org_b])
    doctor = Identity.generate()
    n = Nonces()
    reg = {"did": doctor.did, "encryption_key": doctor.encryption_public.hex(), "name": "Dr. A"}
    assert run_block(app, [n.sign(org_a, "register_practitioner", reg)]) == [Code.OK]
    staff = query(app, "identity/practitioners", org=org_a.did)
    assert [p["did"] for p in staff] == [doctor.did]
    assert staff[0]["org"] == org_a.did

    codes = run_block(
        app,
        [
            n.sign(org_b, "register_practitioner", reg),
            n.sign(org_b, "deregister_practitioner", {"did": doctor.did}),
            n.sign(org_a, "deregister_practitioner", {"did": doctor.did}),
        ],
    )
    assert codes == [Code.CONFLICT, Code.UNAUTHORISED, Code.OK]
    assert query(app, "identity/practitioners", org=org_a.did) == []
    assert query(app, "identity/identity", did=doctor.did)["active"] is False


def test_patient_identity_holds_nothing_but_a_did_and_keys(tmp_path: Path) -> None:
    app = make_app(tmp_path / "s.sqlite", [Identity.generate()])
    patient = Identity.generate()
    raw = Tx(
        CHAIN_ID,
        "identity/register_patient",
        patient.did,
        1,
        {"encryption_key": patient.encryption_public.hex()},
    ).sign(patient)
    assert run_block(app, [raw, raw]) == [Code.OK, Code.REPLAY]
    record = query(app, "identity/identity", did=patient.did)
    assert set(record) == {
        "did",
        "kind",
        "signing_key",
        "encryption_key",
        "active",
        "registered_at",
    }
    named = Tx(
        CHAIN_ID,
        "identity/register_patient",
        patient.did,
        2,
        {"encryption_key": patient.encryption_public.hex(), "name": "Jane Doe"},
    ).sign(patient)
    assert app.check_tx(named).code == Code.INVALID_PAYLOAD
