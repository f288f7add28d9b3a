"""The identity module's transaction payloads: parsed, validated, typed."""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.modules.base import Payload
from careledger.chain.modules.identity.enrolments import MAX_ENROLMENT_DIDS, Enrolment
from careledger.chain.modules.identity.vouchers import Consent, Voucher
from careledger.crypto.keys import Identity
from careledger.crypto.statements import rotation_statement

MEMBERSHIP_ACTIONS = ("admit", "remove")


@dataclass(frozen=True)
class RegisterPatient:
    """A patient's pseudonymous identity: its did (the sender) and an encryption key, no name;
    with a member organisation's enrolment voucher for that did (vouchers.py)."""

    encryption_key: str
    voucher: Voucher

    @classmethod
    def parse(cls, p: Payload) -> RegisterPatient:
        msg = cls(p.hex_bytes("encryption_key", 32), Voucher.parse(p.nested("voucher")))
        p.done()
        return msg


@dataclass(frozen=True)
class RegisterEnrolledPatient:
    """A patient registers itself as register_patient does, vouched for by a member's
    enrolment of its did on chain instead of a signed voucher (enrolments.py)."""

    encryption_key: str
    enrolment: Enrolment

    @classmethod
    def parse(cls, p: Payload) -> RegisterEnrolledPatient:
        msg = cls(p.hex_bytes("encryption_key", 32), Enrolment(p.did("enrolled_by")))
        p.done()
        return msg


@dataclass(frozen=True)
class EnrolPatients:
    """A member enrols patients' dids, each to register itself once (enrolments.py)."""

    dids: tuple[str, ...]

    @classmethod
    def parse(cls, p: Payload) -> EnrolPatients:
        msg = cls(tuple(p.did_list("dids", MAX_ENROLMENT_DIDS)))
        p.done()
        return msg


@dataclass(frozen=True)
class RegisterPractitioner:
    """An organisation registers a practitioner, who consents by signing (vouchers.py)."""

    did: str
    encryption_key: str
    name: str
    consent: Consent

    @classmethod
    def parse(cls, p: Payload) -> RegisterPractitioner:
        msg = cls(
            p.did("did"),
            p.hex_bytes("encryption_key", 32),
            p.text("name", optional=True),
            Consent.parse(p.nested("consent")),
        )
        p.done()
        return msg


@dataclass(frozen=True)
class RegisterNode:
    """A member registers one of its nodes (the key its audit batches are signed with); the
    node consents by signing, as a practitioner does (vouchers.py, purpose "register_node")."""

    did: str
    encryption_key: str
    name: str
    consent: Consent

    @classmethod
    def parse(cls, p: Payload) -> RegisterNode:
        msg = cls(
            p.did("did"),
            p.hex_bytes("encryption_key", 32),
            p.text("name", max_len=200, optional=True),
            Consent.parse(p.nested("consent")),
        )
        p.done()
        return msg


@dataclass(frozen=True)
class DeregisterPractitioner:
    did: str

    @classmethod
    def parse(cls, p: Payload) -> DeregisterPractitioner:
        msg = cls(p.did("did"))
        p.done()
        return msg


@dataclass(frozen=True)
class RotateKey:
    """New keys for the sender's identity; signed by the current key, the old one stops working.

    `certificate` (by the current key) and `proof` (by the new key: proof of possession) are
    Ed25519 signatures over `rotation_statement` (crypto/statements.py), kept in the key
    history so that anyone can follow the chain of keys from the did without the chain.
    """

    signing_key: str
    encryption_key: str
    certificate: str
    proof: str

    @classmethod
    def parse(cls, p: Payload) -> RotateKey:
        msg = cls(
            p.hex_bytes("signing_key", 32),
            p.hex_bytes("encryption_key", 32),
            p.hex_bytes("certificate", 64),
            p.hex_bytes("proof", 64),
        )
        p.done()
        return msg


def rotation_payload(
    old: Identity, new: Identity, chain_id: str, did: str = "", encryption_key: str = ""
) -> dict[str, str]:
    """A signed `identity/rotate_key` payload moving `did` (default `old.did`) from the key
    `old` to `new` (its encryption key unless `encryption_key` is given)."""
    did = did or old.did
    signing_key = new.signing_public.hex()
    encryption_key = encryption_key or new.encryption_public.hex()
    statement = rotation_statement(chain_id, did, signing_key, encryption_key)
    return {
        "signing_key": signing_key,
        "encryption_key": encryption_key,
        "certificate": old.sign(statement).hex(),
        "proof": new.sign(statement).hex(),
    }


@dataclass(frozen=True)
class ApplyMembership:
    """An organisation asks to join, with a sponsoring member's voucher; the members then
    vote with `approve_membership`."""

    name: str
    encryption_key: str
    validator_pub_key: str
    voucher: Voucher

    @classmethod
    def parse(cls, p: Payload) -> ApplyMembership:
        msg = cls(
            p.text("name", max_len=200),
            p.hex_bytes("encryption_key", 32),
            p.hex_bytes("validator_pub_key", 32) if p.has("validator_pub_key") else "",
            Voucher.parse(p.nested("voucher")),
        )
        p.done()
        return msg


@dataclass(frozen=True)
class ApproveMembership:
    """One member's vote to admit an applicant or to remove a member."""

    action: str
    subject: str

    @classmethod
    def parse(cls, p: Payload) -> ApproveMembership:
        msg = cls(p.choice("action", MEMBERSHIP_ACTIONS), p.did("subject"))
        p.done()
        return msg
