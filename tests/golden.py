"""The golden block sequence: fixed keys, fixed times, fixed transactions, one app hash per height.

tests/test_golden.py checks the app hash and the result codes at every height against
constants, so that no change of the rules (what a transaction does, a state value's layout, the
app hash) can pass unnoticed. When the rules change on purpose, bump STATE_MACHINE_VERSION in
chain/app.py and regenerate the constants:

    PYTHONPATH=src .venv/bin/python tests/golden.py

then paste the printed GOLDEN and GOLDEN_RULES_VERSION into tests/test_golden.py. If a block
below no longer does what its comment says under the new rules (a message needs a new field),
update the block first, so that the sequence still exercises every rule it names.

The keys come from fixed seeds: they are test vectors, never real keys.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from careledger.chain.app import (
    STATE_MACHINE_VERSION,
    SUPPORTED_RULES_VERSIONS,
    Application,
    BlockContext,
)
from careledger.chain.genesis import Genesis, founder
from careledger.chain.modules.audit import AccessEntry, encode_batch
from careledger.chain.modules.identity import rotation_payload
from careledger.chain.modules.identity.vouchers import (
    NODE_CONSENT_PURPOSE,
    sign_consent,
    sign_voucher,
)
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import Identity
from nodeutil import record_name

CHAIN_ID = "golden-chain"
GENESIS_TIME = "2026-01-01T00:00:00Z"
GENESIS_NS = 1_767_225_600_000_000_000  # GENESIS_TIME in nanoseconds
GENESIS_S = GENESIS_NS // 10**9


def vector_identity(name: str) -> Identity:
    return Identity(sha256(b"careledger/test-vector/golden/" + name.encode()))


ORG_A, ORG_B, ORG_C = (vector_identity(f"org-{x}") for x in "abc")
PATIENT, DOCTOR, DOCTOR_ROTATED, NURSE = (
    vector_identity(n) for n in ("patient", "doctor", "doctor-rotated", "nurse")
)
STRANGER, LATECOMER = (vector_identity(n) for n in ("stranger", "latecomer"))
ENROLLED, ENROLLED_TWO = (vector_identity(n) for n in ("enrolled", "enrolled-two"))
NODE_A, NODE_C = (vector_identity(n) for n in ("node-a", "node-c"))
VALIDATOR_C = "c0" * 32  # org C's consensus key as it applies
OBSERVATION = record_name(PATIENT.did, "Observation", "golden-observation")
CONDITION = record_name(PATIENT.did, "Condition", "golden-condition")
NURSE_NOTE = record_name(PATIENT.did, "Observation", "golden-nurse-note")
B_NOTE = record_name(PATIENT.did, "Observation", "golden-b-note")
BATCH_ONE = record_name(PATIENT.did, "Observation", "golden-batch-one")
BATCH_TWO = record_name(PATIENT.did, "Observation", "golden-batch-two")
# Vouchers and consents last to this height (beyond the sequence), except the expired one.
EXPIRES_AT = 100
EXPIRED_AT = 1  # a voucher that expired after block 1


class Signer:
    """One identity's transactions, numbered from nonce 1."""

    def __init__(self, did_of: Identity, key: Identity | None = None) -> None:
        self.did = did_of.did
        self.key = key or did_of
        self.nonce = 0

    def tx(self, type_: str, payload: dict[str, Any]) -> bytes:
        self.nonce += 1
        return Tx(CHAIN_ID, type_, self.did, self.nonce, payload).sign(self.key)


def genesis() -> Genesis:
    """Org A with its node, org B without one."""
    orgs = (founder("Org A", ORG_A, "", NODE_A), founder("Org B", ORG_B))
    return Genesis(CHAIN_ID, GENESIS_TIME, orgs)


def anchor(record: str, resource_type: str, version: int, blob: str) -> dict[str, Any]:
    return {
        "patient": PATIENT.did,
        "resource_type": resource_type,
        "record": record,
        "version": version,
        "blob_hash": blob * 32,
        "commitment": "cc" * 32,
        "recipients": ["scope/clinical/1", DOCTOR.did],
    }


def grant(tag: str, grantee: Identity, action: str, **extra: Any) -> dict[str, Any]:
    """A consent/grant of the patient, id `tag` repeated, for the sequence's whole span."""
    payload = {
        "id": tag * 16,
        "patient": PATIENT.did,
        "grantee": grantee.did,
        "action": action,
        "scopes": ["clinical", "diagnostics"],
        "start": GENESIS_S,
        "end": GENESIS_S + 10**8,
    }
    return payload | extra


def wrap(scope: str, epoch: int) -> dict[str, Any]:
    return {"scope": scope, "epoch": epoch, "wrapped": "6b" * 80}


def patient_registration(
    patient: Identity, voucher_by: Identity, expires_at: int = EXPIRES_AT
) -> dict[str, Any]:
    """register_patient's payload with `voucher_by`'s enrolment voucher for `patient`."""
    return {
        "encryption_key": patient.encryption_public.hex(),
        "voucher": sign_voucher(voucher_by, CHAIN_ID, "register_patient", patient.did, expires_at),
    }


def enrolled_registration(patient: Identity, enrolled_by: Identity) -> dict[str, Any]:
    """register_enrolled_patient's payload naming the member that enrolled `patient`."""
    return {"encryption_key": patient.encryption_public.hex(), "enrolled_by": enrolled_by.did}


def practitioner_registration(practitioner: Identity, consent_to: Identity) -> dict[str, Any]:
    """register_practitioner's payload with the practitioner's consent to join `consent_to`."""
    key = practitioner.encryption_public.hex()
    consent = sign_consent(practitioner, CHAIN_ID, consent_to.did, key, EXPIRES_AT)
    return {"did": practitioner.did, "encryption_key": key, "consent": consent}


def node_registration(node: Identity, consent_to: Identity, purpose: str) -> dict[str, Any]:
    """register_node's payload with the node's consent (for `purpose`) to join `consent_to`."""
    key = node.encryption_public.hex()
    consent = sign_consent(node, CHAIN_ID, consent_to.did, key, EXPIRES_AT, purpose=purpose)
    return {"did": node.did, "encryption_key": key, "consent": consent}


def access_batch(node: Identity, seq: int, at: int) -> dict[str, Any]:
    """An audit/record_batch payload of `node`: the doctor's read of the observation (a
    grant), org B's refused read of the condition, a read of a blob that anchors nothing."""
    reads = [
        AccessEntry(PATIENT.did, OBSERVATION, 1, DOCTOR.did, ORG_A.did, "TREAT", "grant", at),
        AccessEntry(PATIENT.did, CONDITION, 1, ORG_B.did, ORG_B.did, "HRESCH", "denied", at + 1),
        AccessEntry("", "", 0, NURSE.did, ORG_C.did, "", "not_found", at + 2),
    ]
    return encode_batch(node.did, seq, reads)


# Proposed in block 5, at least MIN_NOTICE_BLOCKS (20) ahead; for the version after this one.
def upgrade_plan(rules_version: int) -> dict[str, Any]:
    return {"name": "golden-upgrade", "height": 25, "version": rules_version + 1}


def golden_blocks(rules_version: int = STATE_MACHINE_VERSION) -> list[list[bytes]]:
    plan = upgrade_plan(rules_version)
    a, b, c = Signer(ORG_A), Signer(ORG_B), Signer(ORG_C)
    node_a, node_c = Signer(NODE_A), Signer(NODE_C)
    patient, doctor, nurse = Signer(PATIENT), Signer(DOCTOR), Signer(NURSE)
    stranger, latecomer = Signer(STRANGER), Signer(LATECOMER)
    enrolled, enrolled_two = Signer(ENROLLED), Signer(ENROLLED_TWO)
    registration = patient.tx("identity/register_patient", patient_registration(PATIENT, ORG_A))
    application = {
        "name": "Org C",
        "encryption_key": ORG_C.encryption_public.hex(),
        "validator_pub_key": VALIDATOR_C,
        "voucher": sign_voucher(ORG_B, CHAIN_ID, "apply_membership", ORG_C.did, EXPIRES_AT),
    }
    scope_key = scope_key_payload(PATIENT, CHAIN_ID, "clinical", 1, "5c" * 32)
    forged_key = scope_key_payload(ORG_A, CHAIN_ID, "clinical", 1, "5c" * 32, PATIENT.did)
    read_grant = grant("a3", ORG_B, "read", purposes=["TREAT"], keys=[wrap("clinical", 1)])
    read_grant["naming_key"] = "6e" * 80
    rotation = rotation_payload(DOCTOR, DOCTOR_ROTATED, CHAIN_ID)
    delegation = grant("a6", DOCTOR, "delegate", scopes=["clinical"], end=GENESIS_S + 10**7)
    by_delegate = grant("a7", ORG_B, "read", scopes=["clinical"], purposes=["TREAT"])
    by_delegate["end"] = GENESIS_S + 10**7
    blocks = [
        # 1. registrations: a patient (org A's voucher), a practitioner (by org A, with its
        #    consent), and org C applies (org B sponsors it). Refused: C applying again with
        #    the same voucher (one-time), a stranger's transaction (unknown sender), and a
        #    patient vouched for by a non-member (the patient).
        [
            registration,
            a.tx("identity/register_practitioner", practitioner_registration(DOCTOR, ORG_A)),
            c.tx("identity/apply_membership", application),
            c.tx("identity/apply_membership", application),
            stranger.tx("records/publish_scope_key", scope_key),
            latecomer.tx("identity/register_patient", patient_registration(LATECOMER, PATIENT)),
        ],
        # 2. membership: A and B admit C (a validator update); the patient's signed scope key
        #    (one signed by org A is refused). B registering the nurse with the consent she
        #    gave C is refused; C, now a member, registers her with it. A voucher that expired
        #    after block 1 is refused. Consent: the patient's write grant to org A, a
        #    practitioner-level write grant to the nurse, a read grant to org B with key
        #    wraps, a delegation (clinical, shorter than the sequence's span) to the doctor;
        #    refused: B granting on the patient's behalf, an expired grant. C registers its
        #    node with the node's consent; one with a practitioner's consent is refused.
        [
            a.tx("identity/approve_membership", {"action": "admit", "subject": ORG_C.did}),
            b.tx("identity/approve_membership", {"action": "admit", "subject": ORG_C.did}),
            patient.tx("records/publish_scope_key", forged_key),
            patient.tx("records/publish_scope_key", scope_key),
            b.tx("identity/register_practitioner", practitioner_registration(NURSE, ORG_C)),
            c.tx("identity/register_practitioner", practitioner_registration(NURSE, ORG_C)),
            latecomer.tx(
                "identity/register_patient",
                patient_registration(LATECOMER, ORG_A, expires_at=EXPIRED_AT),
            ),
            patient.tx("consent/grant", grant("a1", ORG_A, "write")),
            patient.tx("consent/grant", grant("a2", NURSE, "write")),
            patient.tx("consent/grant", read_grant),
            b.tx("consent/grant", grant("a4", ORG_B, "write")),
            patient.tx(
                "consent/grant",
                grant("a5", ORG_A, "write", start=GENESIS_S - 100, end=GENESIS_S + 1),
            ),
            patient.tx("consent/grant", delegation),
            c.tx(
                "identity/register_node", node_registration(NODE_C, ORG_C, "register_practitioner")
            ),
            c.tx("identity/register_node", node_registration(NODE_C, ORG_C, NODE_CONSENT_PURPOSE)),
        ],
        # 3. anchors by both practitioners and the patient; org B without write consent is
        #    refused; a replay; the doctor, as the patient's delegate, grants org B a read
        #    within its delegation (one outliving the delegation is refused); the doctor
        #    rotates its key (a rotation whose proof is not by the new key is refused).
        #    Audit: node A records its first batch of reads; org B sending one is refused,
        #    and node C's batch naming node A.
        [
            doctor.tx("records/anchor", anchor(OBSERVATION, "Observation", 1, "b1")),
            patient.tx("records/anchor", anchor(CONDITION, "Condition", 1, "b2")),
            nurse.tx("records/anchor", anchor(NURSE_NOTE, "Observation", 1, "b6")),
            b.tx("records/anchor", anchor(B_NOTE, "Observation", 1, "b8")),
            registration,
            doctor.tx("consent/grant", by_delegate),
            doctor.tx("consent/grant", {**by_delegate, "id": "a8" * 16, "end": GENESIS_S + 10**8}),
            doctor.tx("identity/rotate_key", {**rotation, "proof": rotation["certificate"]}),
            doctor.tx("identity/rotate_key", rotation),
            node_a.tx("audit/record_batch", access_batch(NODE_A, 1, GENESIS_S + 2)),
            b.tx("audit/record_batch", access_batch(ORG_B, 1, GENESIS_S + 2)),
            node_c.tx("audit/record_batch", access_batch(NODE_A, 2, GENESIS_S + 2)),
        ],
    ]
    doctor.key = DOCTOR_ROTATED
    blocks += [
        # 4. a version under the rotated key, a tombstone, a version conflict, C's removal
        #    (two approvals of two voters), the revocation of B's read grant, and of the
        #    doctor's delegation (which revokes the read grant the doctor made under it).
        #    Refused: member B tombstoning the observation org A's doctor started, the
        #    patient rotating to org A's key (taken, though both signatures verify), the
        #    revocation again. Node A's batch 1 again (replayed) and batch 3 (skipped) are
        #    refused, its batch 2 recorded.
        [
            doctor.tx("records/anchor", anchor(OBSERVATION, "Observation", 2, "b3")),
            b.tx(
                "records/anchor",
                {
                    "patient": PATIENT.did,
                    "resource_type": "Observation",
                    "record": OBSERVATION,
                    "version": 3,
                    "tombstone": 1,
                },
            ),
            patient.tx(
                "identity/rotate_key",
                rotation_payload(PATIENT, ORG_A, CHAIN_ID, encryption_key="5e" * 32),
            ),
            patient.tx("consent/revoke", {"id": "a3" * 16}),
            patient.tx("consent/revoke", {"id": "a3" * 16}),
            patient.tx("consent/revoke", {"id": "a6" * 16}),
            patient.tx(
                "records/anchor",
                {
                    "patient": PATIENT.did,
                    "resource_type": "Condition",
                    "record": CONDITION,
                    "version": 2,
                    "tombstone": 1,
                },
            ),
            doctor.tx("records/anchor", anchor(OBSERVATION, "Observation", 2, "b4")),
            a.tx("identity/approve_membership", {"action": "remove", "subject": ORG_C.did}),
            b.tx("identity/approve_membership", {"action": "remove", "subject": ORG_C.did}),
            node_a.tx("audit/record_batch", access_batch(NODE_A, 1, GENESIS_S + 3)),
            node_a.tx("audit/record_batch", access_batch(NODE_A, 3, GENESIS_S + 3)),
            node_a.tx("audit/record_batch", access_batch(NODE_A, 2, GENESIS_S + 3)),
        ],
        # 5. the patient erases the observation; a new version of it is refused. Removed C,
        #    its nurse and its voucher have no authority left (unknown sender, unknown sender,
        #    not a member); B alone cannot remove A, one of two members (the vote waits);
        #    the latecomer registers at last with A's voucher. Keys for a revoked grant are
        #    refused. Removed C's node records nothing (unknown sender). Batches of anchors
        #    (version 5): the doctor's batch naming the erased observation is refused whole,
        #    B's batch without write consent too, then the doctor's batch of two new records
        #    (one of them in the refused batch: nothing of that was written) commits.
        #    Upgrade plans (version 6): A proposes one (its first approval: one of the two
        #    members); removed C's vote is refused (unknown sender), and B's naming another
        #    height (a vote counts only for the plan it names); B's vote schedules it; a
        #    second plan while it is open is refused.
        [
            patient.tx("records/erase", {"records": [OBSERVATION]}),
            doctor.tx("records/anchor", anchor(OBSERVATION, "Observation", 3, "b5")),
            c.tx("identity/approve_membership", {"action": "remove", "subject": ORG_A.did}),
            b.tx("identity/approve_membership", {"action": "remove", "subject": ORG_A.did}),
            nurse.tx("records/anchor", anchor(NURSE_NOTE, "Observation", 2, "b7")),
            latecomer.tx("identity/register_patient", patient_registration(LATECOMER, ORG_C)),
            latecomer.tx("identity/register_patient", patient_registration(LATECOMER, ORG_A)),
            patient.tx("consent/share_keys", {"id": "a3" * 16, "keys": [wrap("clinical", 1)]}),
            node_c.tx("audit/record_batch", access_batch(NODE_C, 1, GENESIS_S + 4)),
            doctor.tx(
                "records/anchor_batch",
                {
                    "anchors": [
                        anchor(BATCH_ONE, "Observation", 1, "d1"),
                        anchor(OBSERVATION, "Observation", 3, "d2"),
                    ]
                },
            ),
            b.tx("records/anchor_batch", {"anchors": [anchor(B_NOTE, "Observation", 1, "d3")]}),
            doctor.tx(
                "records/anchor_batch",
                {
                    "anchors": [
                        anchor(BATCH_ONE, "Observation", 1, "d1"),
                        anchor(BATCH_TWO, "Observation", 1, "d4"),
                    ]
                },
            ),
            a.tx("upgrade/propose", plan),
            c.tx("upgrade/approve", plan),
            b.tx("upgrade/approve", {**plan, "height": 26}),
            b.tx("upgrade/approve", plan),
            b.tx("upgrade/propose", {**plan, "name": "golden-other"}),
        ],
        # 6. Enrolments (version 7): A enrols two dids in one transaction; refused: an
        #    enrolment by a practitioner (A's doctor: not a member), by removed C (unknown
        #    sender), and B's of an identity already registered. The first enrolled did
        #    registers naming A; the second naming B (which did not enrol it: refused,
        #    nothing written), then A; the first again (already registered).
        [
            a.tx("identity/enrol_patients", {"dids": [ENROLLED.did, ENROLLED_TWO.did]}),
            doctor.tx("identity/enrol_patients", {"dids": [STRANGER.did]}),
            c.tx("identity/enrol_patients", {"dids": [STRANGER.did]}),
            b.tx("identity/enrol_patients", {"dids": [STRANGER.did, PATIENT.did]}),
            enrolled.tx(
                "identity/register_enrolled_patient", enrolled_registration(ENROLLED, ORG_A)
            ),
            enrolled_two.tx(
                "identity/register_enrolled_patient", enrolled_registration(ENROLLED_TWO, ORG_B)
            ),
            enrolled_two.tx(
                "identity/register_enrolled_patient", enrolled_registration(ENROLLED_TWO, ORG_A)
            ),
            enrolled.tx(
                "identity/register_enrolled_patient", enrolled_registration(ENROLLED, ORG_A)
            ),
        ],
    ]
    return blocks


def run_golden(
    path: Path, rules_version: int = STATE_MACHINE_VERSION
) -> list[tuple[str, list[int]]]:
    """(app hash hex, result codes) at heights 0 (genesis) to 6, on a state store at `path`,
    for a chain started under `rules_version`."""
    app = Application(StateStore(path))
    try:
        heights = [(app.init_chain(genesis(), rules_version).hex(), [])]
        for height, txs in enumerate(golden_blocks(rules_version), start=1):
            result = app.finalize_block(BlockContext(height, GENESIS_NS + height * 10**9), txs)
            app.commit()
            heights.append((result.app_hash.hex(), [int(r.code) for r in result.tx_results]))
        return heights
    finally:
        app.store.close()


def main() -> None:
    """Print the constants of tests/test_golden.py: this version's, then the older ones'
    this software still runs (each a chain started under that version)."""
    older = sorted(SUPPORTED_RULES_VERSIONS - {STATE_MACHINE_VERSION})
    print(f"GOLDEN_RULES_VERSION = {STATE_MACHINE_VERSION}")
    for version in [STATE_MACHINE_VERSION, *older]:
        with tempfile.TemporaryDirectory() as scratch:
            heights = run_golden(Path(scratch) / "golden.sqlite", version)
        name = "GOLDEN" if version == STATE_MACHINE_VERSION else f"GOLDEN_V{version}"
        print(f"{name} = [")
        for app_hash, codes in heights:
            print(f'    ("{app_hash}", {codes}),')
        print("]")


if __name__ == "__main__":
    sys.exit(main())
