"""The records module's rules on a real state machine (real SQLite), block by block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from careledger.chain.app import BlockContext
from careledger.chain.codes import Code
from careledger.chain.modules.identity import sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity, verify_signature
from careledger.crypto.statements import scope_key_statement
from nodeutil import (
    CHAIN_ID,
    VOUCHER_EXPIRY,
    grant_payload,
    make_app,
    practitioner_payload,
    record_name,
    run_block,
    run_block_results,
)


class Actor:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.did = self.identity.did
        self.nonce = 0

    def tx(self, type_: str, payload: dict[str, Any]) -> bytes:
        self.nonce += 1
        return Tx(CHAIN_ID, type_, self.did, self.nonce, payload).sign(self.identity)

    def register_patient(self, org: Actor) -> bytes:
        voucher = sign_voucher(org.identity, CHAIN_ID, "register_patient", self.did, VOUCHER_EXPIRY)
        payload = {"encryption_key": "11" * 32, "voucher": voucher}
        return self.tx("identity/register_patient", payload)

    def publish(self, scope: str, epoch: int, public_key: str = "22" * 32) -> bytes:
        """A scope key, signed by this patient as the chain requires."""
        payload = scope_key_payload(self.identity, CHAIN_ID, scope, epoch, public_key)
        return self.tx("records/publish_scope_key", payload)

    def consent_to_write(self, grantee: Actor) -> bytes:
        return self.tx("consent/grant", grant_payload(self.did, grantee.did))


def anchor(patient: str, rid: str, version: int, blob: str, **extra: Any) -> dict[str, Any]:
    return {
        "patient": patient,
        "resource_type": "Observation",
        "record": record_name(patient, "Observation", rid),
        "version": version,
        "blob_hash": blob * 64 if len(blob) == 1 else blob,
        "commitment": "ab" * 32,
        "recipients": ["scope/diagnostics/1"],
        **extra,
    }


def setup(tmp_path: Path) -> tuple[Any, Actor, Actor]:
    org, patient = Actor(), Actor()
    app = make_app(tmp_path / "state.sqlite", [org.identity])
    codes = run_block(
        app,
        [
            patient.register_patient(org),
            patient.publish("diagnostics", 1),
            patient.consent_to_write(org),
        ],
    )
    assert codes == [0, 0, 0]
    return app, org, patient


def query(app: Any, path: str, **params: str) -> Any:
    result = app.query(path, orjson.dumps(params))
    assert result.code == 0, result.log
    return orjson.loads(result.value)


def test_versions_are_exactly_last_plus_one(tmp_path: Path) -> None:
    app, org, patient = setup(tmp_path)
    p = patient.did
    codes = run_block(
        app,
        [
            org.tx("records/anchor", anchor(p, "o1", 1, "a")),
            org.tx("records/anchor", anchor(p, "o1", 1, "b")),  # same version again
            org.tx("records/anchor", anchor(p, "o1", 3, "c")),  # a gap
            org.tx("records/anchor", anchor(p, "o1", 2, "d")),
            org.tx("records/anchor", anchor(p, "o2", 1, "a")),  # a blob anchors once
        ],
    )
    assert codes == [0, Code.CONFLICT, Code.CONFLICT, 0, Code.CONFLICT]
    found = query(app, "records/versions", patient=p, record=record_name(p, "Observation", "o1"))
    assert [v["blob_hash"][0] for v in found["history"]] == ["a", "d"]
    assert found["history"][0]["author"] == org.did
    listed = query(app, "records/records", patient=p)
    assert [(r["versions"], r["latest"]["version"]) for r in listed] == [(2, 2)]


def test_who_may_write(tmp_path: Path) -> None:
    app, org, patient = setup(tmp_path)
    stranger, unregistered = Actor(), Actor()
    codes = run_block(
        app,
        [
            stranger.register_patient(org),  # another patient: not this patient's author
            stranger.tx("records/anchor", anchor(patient.did, "x", 1, "1")),
            unregistered.tx("records/anchor", anchor(patient.did, "x", 1, "5")),
            org.tx("records/anchor", anchor(unregistered.did, "x", 1, "2")),
            patient.tx("records/anchor", anchor(patient.did, "mine", 1, "3")),
            org.tx(
                "records/anchor",
                anchor(patient.did, "y", 1, "4", recipients=["scope/diagnostics/2"]),
            ),
        ],
    )
    assert codes == [0, Code.UNAUTHORISED, Code.UNKNOWN_SENDER, Code.NOT_FOUND, 0, Code.CONFLICT]


def test_scope_key_epochs_only_go_up_and_revoked_epochs_take_no_record(tmp_path: Path) -> None:
    app, org, patient = setup(tmp_path)
    by_org = scope_key_payload(org.identity, CHAIN_ID, "diagnostics", 3, "33" * 32)
    codes = run_block(
        app,
        [
            patient.publish("diagnostics", 1, "33" * 32),
            patient.publish("diagnostics", 2, "33" * 32),
            org.tx("records/anchor", anchor(patient.did, "z", 1, "5")),  # epoch 1 is stale now
            org.tx("records/publish_scope_key", by_org),  # not a patient
        ],
    )
    assert codes == [Code.CONFLICT, 0, Code.CONFLICT, Code.NOT_FOUND]
    keys = query(app, "records/scope_keys", patient=patient.did)
    assert [k["epoch"] for k in keys] == [1, 2]
    statement = scope_key_statement(CHAIN_ID, patient.did, "diagnostics", 2, "33" * 32)
    assert verify_signature(
        patient.identity.signing_public, bytes.fromhex(keys[1]["signature"]), statement
    )


def test_a_scope_key_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    """A node answering the scope-key query with a key of its own is caught by writers only
    if the chain never holds a scope key the patient did not sign: one signed by another
    key, for another patient, epoch, scope, key or chain is UNAUTHORISED and not stored."""
    app, org, patient = setup(tmp_path)
    other = Actor()
    good = scope_key_payload(patient.identity, CHAIN_ID, "clinical", 1, "44" * 32)
    forged = [
        scope_key_payload(org.identity, CHAIN_ID, "clinical", 1, "44" * 32, patient.did),
        scope_key_payload(other.identity, CHAIN_ID, "clinical", 1, "44" * 32, patient.did),
        {**good, "public_key": "55" * 32},
        {**good, "epoch": 2},
        {**good, "scope": "medications"},
        scope_key_payload(patient.identity, "another-chain", "clinical", 1, "44" * 32),
    ]
    for payload in forged:
        [result] = run_block_results(app, [patient.tx("records/publish_scope_key", payload)])
        assert result.code == Code.UNAUTHORISED
        assert "does not verify with" in result.log
    assert [k["scope"] for k in query(app, "records/scope_keys", patient=patient.did)] == [
        "diagnostics"
    ]
    assert run_block(app, [patient.tx("records/publish_scope_key", good)]) == [0]


def test_erasure_is_the_patients_and_ends_the_record(tmp_path: Path) -> None:
    app, org, patient = setup(tmp_path)
    p = patient.did
    name = record_name(p, "Observation", "e1")
    run_block(
        app,
        [
            org.tx("records/anchor", anchor(p, "e1", 1, "6")),
            org.tx("records/anchor", anchor(p, "e1", 2, "7")),
            org.tx("records/anchor", anchor(p, "e2", 1, "8")),
        ],
    )
    codes = run_block(
        app,
        [
            org.tx("records/erase", {"records": [name]}),
            patient.tx("records/erase", {"records": ["00" * 32]}),
            patient.tx("records/erase", {"records": [name]}),
            org.tx("records/anchor", anchor(p, "e1", 3, "9")),
        ],
    )
    assert codes == [Code.NOT_FOUND, Code.NOT_FOUND, 0, Code.ERASED]
    blob = query(app, "records/blob", hash="6" * 64)
    assert blob["erased_at"] > 0 and blob["version"] == 1
    assert query(app, "records/blob", hash="8" * 64)["erased_at"] == 0


def test_erase_event_lists_every_version_blob_and_tombstones_have_none(tmp_path: Path) -> None:
    app, org, patient = setup(tmp_path)
    p = patient.did
    tombstone = {
        "patient": p,
        "resource_type": "Observation",
        "record": record_name(p, "Observation", "t1"),
        "version": 2,
        "tombstone": 1,
    }
    run_block(app, [org.tx("records/anchor", anchor(p, "t1", 1, "c"))])
    assert run_block(app, [org.tx("records/anchor", tombstone)]) == [0]
    height = app.info().last_height + 1
    result = app.finalize_block(
        BlockContext(height, 1_900_000_000_000_000_000), [patient.tx("records/erase", {"all": 1})]
    )
    app.commit()
    (event,) = result.tx_results[0].events
    assert event.type == "records.erased"
    assert event.attributes["blob_hashes"] == "c" * 64


def test_malformed_payloads_are_refused_before_a_block(tmp_path: Path) -> None:
    app, org, patient = setup(tmp_path)
    bad = [
        anchor(patient.did, "m", 1, "1", resource_type="not a type"),
        anchor(patient.did, "m", 1, "1", recipients=[]),
        anchor(patient.did, "m", 1, "1", recipients=["somebody"]),
        {**anchor(patient.did, "m", 1, "1"), "name": "Jane Doe"},  # nothing extra in clear
    ]
    for payload in bad:
        assert app.check_tx(org.tx("records/anchor", payload)).code == Code.INVALID_PAYLOAD
    both = {"all": 1, "records": ["00" * 32]}
    assert app.check_tx(patient.tx("records/erase", both)).code == Code.INVALID_PAYLOAD


# --- whose record: only its organisation or the patient adds versions ----------------------


class Consortium:
    """Three member organisations, a practitioner each for A and B (two for A), a patient."""

    def __init__(self, tmp_path: Path) -> None:
        self.a, self.b, self.c = Actor(), Actor(), Actor()
        self.doctor, self.nurse, self.rival = Actor(), Actor(), Actor()  # A, A, B
        self.patient = Actor()
        orgs = [self.a.identity, self.b.identity, self.c.identity]
        self.app = make_app(tmp_path / "state.sqlite", orgs)
        staff = [(self.a, self.doctor), (self.a, self.nurse), (self.b, self.rival)]
        codes = run_block(
            self.app,
            [
                *(
                    org.tx(
                        "identity/register_practitioner",
                        practitioner_payload(CHAIN_ID, org.did, member.identity),
                    )
                    for org, member in staff
                ),
                self.patient.register_patient(self.a),
                self.patient.publish("clinical", 1),
                self.patient.consent_to_write(self.a),
            ],
        )
        assert codes == [0, 0, 0, 0, 0, 0]

    def condition(self, rid: str, version: int, blob: str = "", tombstone: bool = False) -> Any:
        payload: dict[str, Any] = {
            "patient": self.patient.did,
            "resource_type": "Condition",
            "record": record_name(self.patient.did, "Condition", rid),
            "version": version,
        }
        if tombstone:
            return payload | {"tombstone": 1}
        return payload | {
            "blob_hash": blob * 64,
            "commitment": "cd" * 32,
            "recipients": ["scope/clinical/1", self.doctor.did],
        }

    def history(self, rid: str) -> list[tuple[int, str, bool]]:
        name = record_name(self.patient.did, "Condition", rid)
        found = query(self.app, "records/versions", patient=self.patient.did, record=name)
        return [(v["version"], v["author"], v["tombstone"]) for v in found["history"]]

    def refused(self, raw: bytes, code: int) -> None:
        """Refused in a block (the mempool checks only sender, signature and nonce), leaving
        the records as they were."""
        before = [(k, v) for k, v in self.app.store.all_rows() if k.startswith(b"records/")]
        assert run_block(self.app, [raw]) == [code]
        after = [(k, v) for k, v in self.app.store.all_rows() if k.startswith(b"records/")]
        assert after == before


def test_another_organisation_cannot_add_versions_or_tombstones_to_a_record(
    tmp_path: Path,
) -> None:
    """The attack from review: organisation A anchors version 1 of a patient's Condition;
    member B sends version 2 as a tombstone, then version 3 with a blob of its own: both
    were code 0. Now only A (itself or any of its practitioners) and the patient may."""
    net = Consortium(tmp_path)
    doctor, nurse, b, rival = net.doctor, net.nurse, net.b, net.rival
    assert run_block(net.app, [doctor.tx("records/anchor", net.condition("c1", 1, "1"))]) == [0]

    net.refused(b.tx("records/anchor", net.condition("c1", 2, tombstone=True)), Code.UNAUTHORISED)
    net.refused(rival.tx("records/anchor", net.condition("c1", 2, "2")), Code.UNAUTHORISED)
    # A's other practitioner, A itself and the patient may; B still may not, at any version.
    assert run_block(
        net.app,
        [
            nurse.tx("records/anchor", net.condition("c1", 2, "3")),
            net.patient.tx("records/anchor", net.condition("c1", 3, "4")),
            net.a.tx("records/anchor", net.condition("c1", 4, "5")),
        ],
    ) == [0, 0, 0]
    net.refused(b.tx("records/anchor", net.condition("c1", 5, "6")), Code.UNAUTHORISED)
    tombstone = net.condition("c1", 5, tombstone=True)
    net.refused(rival.tx("records/anchor", tombstone), Code.UNAUTHORISED)
    assert run_block(net.app, [doctor.tx("records/anchor", tombstone)]) == [0]
    assert net.history("c1") == [
        (1, doctor.did, False),
        (2, nurse.did, False),
        (3, net.patient.did, False),
        (4, net.a.did, False),
        (5, doctor.did, True),
    ]
    listed = query(net.app, "records/records", patient=net.patient.did)
    assert [r["org"] for r in listed] == [net.a.did]


def test_a_record_the_patient_started_takes_versions_from_the_patient_only(
    tmp_path: Path,
) -> None:
    net = Consortium(tmp_path)
    patient = net.patient
    assert run_block(net.app, [patient.tx("records/anchor", net.condition("p1", 1, "1"))]) == [0]
    for org_side in (net.a, net.doctor, net.b):
        raw = org_side.tx("records/anchor", net.condition("p1", 2, tombstone=True))
        net.refused(raw, Code.UNAUTHORISED)
    assert run_block(net.app, [patient.tx("records/anchor", net.condition("p1", 2, "2"))]) == [0]
    assert [v for v, _, _ in net.history("p1")] == [1, 2]


def test_after_its_organisation_is_removed_only_the_patient_adds_versions(tmp_path: Path) -> None:
    """Nobody acts for a removed organisation any more, so no member inherits its records:
    the patient alone adds versions and tombstones."""
    net = Consortium(tmp_path)
    first = net.doctor.tx("records/anchor", net.condition("r1", 1, "1"))
    assert run_block(net.app, [first]) == [0]
    remove = {"action": "remove", "subject": net.a.did}
    votes = [org.tx("identity/approve_membership", remove) for org in (net.b, net.c)]
    assert run_block(net.app, votes) == [0, 0]
    net.refused(net.b.tx("records/anchor", net.condition("r1", 2, "2")), Code.UNAUTHORISED)
    net.refused(net.rival.tx("records/anchor", net.condition("r1", 2, "2")), Code.UNAUTHORISED)
    net.refused(net.nurse.tx("records/anchor", net.condition("r1", 2, "2")), Code.UNKNOWN_SENDER)
    tombstone = net.patient.tx("records/anchor", net.condition("r1", 2, tombstone=True))
    assert run_block(net.app, [tombstone]) == [0]
    assert [(v, t) for v, _, t in net.history("r1")] == [(1, False), (2, True)]
