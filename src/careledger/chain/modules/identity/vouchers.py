"""Vouchers and consents: signed, one-time, expiring statements that let an identity act.

A **voucher** is a member organisation's word for an identity that registers itself: a
patient's `register_patient` and an applicant's `apply_membership` carry one in their payload

    "voucher": {"org": <member did>, "expires_at": <height>, "signature": <128 hex>}

A **consent** is a practitioner's (or a node's) word that an organisation may register them:
`register_practitioner` (and `register_node`) carries

    "consent": {"expires_at": <height>, "signature": <128 hex>}

Each signature is Ed25519, by the signer's *current* key (after a rotation, the new one), over
the RFC 8785 bytes of one statement:

    {"domain": "careledger-statement-v1", "chain_id", "purpose", "subject", "org",
     "expires_at", "encryption_key"}

- `purpose` is "register_patient", "apply_membership", "register_practitioner" or
  "register_node", so a
  statement for one act is never accepted for another; `chain_id` ties it to one chain, and
  the domain keeps it apart from transaction bodies and signed requests.
- `subject` is the did that registers (the sender of a self-registration; the practitioner).
  A voucher stolen from the mempool is useless to anyone else: it names one did, and only
  that did's key signs that did's transactions.
- `org` is the vouching member, or for a consent, the organisation the practitioner joins.
- `encryption_key` is bound by a consent (the practitioner accepts the key the organisation
  registers for them); it is "" in a voucher.
- `expires_at` is the last block height at which the statement is accepted. Heights rather
  than times: `check_tx` knows the next height but not the next block's time.
- Once a statement has been accepted its SHA-256 is stored (`used/<hash>`, identity module),
  and the same statement is refused from then on (CONFLICT), by whoever sends it.

The wallet and the tests sign with `sign_voucher` and `sign_consent`; the chain checks with
`check_voucher` / `check_consent` and records use with `redeem`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.identity.keeper import IdentityKeeper
from careledger.crypto.hashing import sha256, sha256_hex
from careledger.crypto.keys import Identity, KeyError_, ed25519_from_did, verify_signature

STATEMENT_DOMAIN = "careledger-statement-v1"
# The only transactions an unregistered did may send, each with a voucher for its purpose.
SELF_REGISTRATIONS = {
    "identity/register_patient": "register_patient",
    # vouched for by an enrolment on chain rather than a signed voucher (enrolments.py)
    "identity/register_enrolled_patient": "register_patient",
    "identity/apply_membership": "apply_membership",
}
VOUCHED_PURPOSES = tuple(dict.fromkeys(SELF_REGISTRATIONS.values()))
CONSENT_PURPOSE = "register_practitioner"
NODE_CONSENT_PURPOSE = "register_node"
CONSENT_PURPOSES = (CONSENT_PURPOSE, NODE_CONSENT_PURPOSE)
MAX_HEIGHT = 2**53 - 1
# How long a clinic's enrolment voucher lasts when it signs one for immediate use (blocks).
ENROLMENT_VOUCHER_BLOCKS = 1000

# A verifier of a statement's signature under a public key: libsodium's (verify_statement),
# or a validator's cache of it (auth.SignatureCache.verify_statement).
VerifyStatement = Callable[[bytes, "SignedStatement"], bool]


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """A voucher's statement as the chain checks it, computed once (Voucher.statement)."""

    chain_id: str  # the terms it was made for (with the voucher's own org and expiry)
    purpose: str
    subject: str
    message: bytes  # the RFC 8785 bytes signed (statement_bytes)
    signature: bytes
    digest: str  # SHA-256 hex of `message`: its used/ key once redeemed
    entry: bytes  # SHA-256 of message + signature: its name in the signature cache

    def made_for(self, chain_id: str, purpose: str, subject: str) -> bool:
        return self.subject == subject and self.purpose == purpose and self.chain_id == chain_id


@dataclass(frozen=True)
class Voucher:
    org: str
    expires_at: int
    signature: str  # hex
    # The statement this voucher was last checked against: a decoded transaction's voucher
    # is one immutable value shared by check_tx, every recheck, the block and the handler,
    # which all need the same bytes and digests for the same terms (a voucher names one
    # subject). One kept, not a table: a decoded transaction stays in the decode cache.
    _kept: SignedStatement | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def statement(self, chain_id: str, purpose: str, subject: str) -> SignedStatement:
        """The statement this voucher signs for `subject`'s `purpose` on `chain_id`
        (ValueError as `voucher_bytes`): the one kept if it was made for exactly these
        terms, else computed (and kept instead)."""
        kept = self._kept
        if kept is not None and kept.made_for(chain_id, purpose, subject):
            return kept
        # Copied to a bytes object of its own size: orjson's keeps a 4 KiB buffer (as
        # state.encode_value notes), and this one lives as long as the decoded transaction.
        message = bytes(
            memoryview(voucher_bytes(chain_id, purpose, subject, self.org, self.expires_at))
        )
        signature = bytes.fromhex(self.signature)
        kept = SignedStatement(
            chain_id,
            purpose,
            subject,
            message,
            signature,
            sha256_hex(message),
            sha256(message + signature),
        )
        object.__setattr__(self, "_kept", kept)  # a cache of a pure function: still frozen
        return kept

    @classmethod
    def parse(cls, p: Payload) -> Voucher:
        voucher = cls(
            p.did("org"), p.integer("expires_at", 1, MAX_HEIGHT), p.hex_bytes("signature", 64)
        )
        p.done()
        return voucher

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Voucher:
        """The `voucher` field of a transaction payload (INVALID_PAYLOAD if missing or bad)."""
        return cls.parse(Payload({"voucher": payload.get("voucher")}).nested("voucher"))


@dataclass(frozen=True)
class Consent:
    expires_at: int
    signature: str  # hex

    @classmethod
    def parse(cls, p: Payload) -> Consent:
        consent = cls(p.integer("expires_at", 1, MAX_HEIGHT), p.hex_bytes("signature", 64))
        p.done()
        return consent


# --- the signed bytes -----------------------------------------------------------------------


def statement_bytes(
    chain_id: str,
    purpose: str,
    subject: str,
    org: str,
    expires_at: int,
    encryption_key: str = "",
) -> bytes:
    """The RFC 8785 bytes a voucher or consent signs (see the module docstring).

    orjson with sorted keys gives exactly the RFC 8785 form here (`canonical_bytes` checks
    each value for the cases where it would not: floats, integers beyond 2^53, keys outside
    the BMP; these keys are fixed ASCII and the one integer is bounded), at a fraction of the
    cost: every registration computes these bytes four times.
    """
    if not 1 <= expires_at <= MAX_HEIGHT:
        raise ValueError(f"expires_at must be a height in 1..{MAX_HEIGHT}")
    return orjson.dumps(
        {
            "domain": STATEMENT_DOMAIN,
            "chain_id": chain_id,
            "purpose": purpose,
            "subject": subject,
            "org": org,
            "expires_at": expires_at,
            "encryption_key": encryption_key,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def voucher_bytes(chain_id: str, purpose: str, subject: str, org: str, expires_at: int) -> bytes:
    if purpose not in VOUCHED_PURPOSES:
        raise ValueError(f"a voucher is for one of {', '.join(VOUCHED_PURPOSES)}")
    return statement_bytes(chain_id, purpose, subject, org, expires_at)


def consent_bytes(
    chain_id: str,
    org: str,
    practitioner: str,
    encryption_key: str,
    expires_at: int,
    purpose: str = CONSENT_PURPOSE,
) -> bytes:
    if purpose not in CONSENT_PURPOSES:
        raise ValueError(f"a consent is for one of {', '.join(CONSENT_PURPOSES)}")
    return statement_bytes(chain_id, purpose, practitioner, org, expires_at, encryption_key)


# --- signing (wallet and tests) -------------------------------------------------------------


def sign_voucher(
    org: Identity,
    chain_id: str,
    purpose: str,
    subject: str,
    expires_at: int,
    org_did: str = "",
) -> dict[str, Any]:
    """The `voucher` payload field: `org` vouches for `subject` to `purpose` until a height.

    `org_did` is the organisation's did when its key was rotated (default: `org.did`).
    """
    did = org_did or org.did
    signature = org.sign(voucher_bytes(chain_id, purpose, subject, did, expires_at))
    return {"org": did, "expires_at": expires_at, "signature": signature.hex()}


def sign_consent(
    practitioner: Identity,
    chain_id: str,
    org: str,
    encryption_key: str,
    expires_at: int,
    practitioner_did: str = "",
    purpose: str = CONSENT_PURPOSE,
) -> dict[str, Any]:
    """The `consent` payload field: the practitioner (or node, with purpose
    NODE_CONSENT_PURPOSE) agrees that `org` registers them."""
    did = practitioner_did or practitioner.did
    statement = consent_bytes(chain_id, org, did, encryption_key, expires_at, purpose)
    signature = practitioner.sign(statement)
    return {"expires_at": expires_at, "signature": signature.hex()}


# --- checking (the chain) -------------------------------------------------------------------


def sender_key(keeper: IdentityKeeper, sender: str, tx_type: str) -> tuple[bytes, str]:
    """(the key that must sign for `sender`, the voucher purpose if it registers itself).

    The purpose is "" for an identity that may act. TxFailure(UNKNOWN_SENDER) for anything
    else: an unregistered did sending any other transaction than a self-registration, and an
    identity that may no longer act (deregistered, removed, or a practitioner whose
    organisation was removed), whatever it sends.
    """
    ident = keeper.identity(sender)
    if ident is not None:
        if not keeper.may_act(ident):
            raise TxFailure(
                Code.UNKNOWN_SENDER,
                f"{sender} may no longer act: deregistered, removed, or its organisation was"
                " removed",
            )
        return bytes.fromhex(ident["signing_key"]), ""
    purpose = SELF_REGISTRATIONS.get(tx_type)
    if purpose is None:
        raise TxFailure(Code.UNKNOWN_SENDER, f"{sender[:128]} is not a registered identity")
    try:
        return ed25519_from_did(sender), purpose
    except KeyError_ as exc:
        raise TxFailure(Code.MALFORMED, f"sender: {exc}") from None


def verify_statement(public_key: bytes, statement: SignedStatement) -> bool:
    """The statement's signature checked by libsodium (verify_signature)."""
    return verify_signature(public_key, statement.signature, statement.message)


def check_voucher(
    keeper: IdentityKeeper,
    chain_id: str,
    purpose: str,
    subject: str,
    voucher: Voucher,
    height: int,
    verify: VerifyStatement | None = None,
) -> bytes:
    """The voucher's statement bytes; TxFailure unless a member vouched, unexpired, unused."""
    org = keeper.acting_identity(voucher.org)
    if org is None or org["kind"] != "organisation":
        raise TxFailure(Code.UNAUTHORISED, f"voucher: {voucher.org} is not a member organisation")
    statement = voucher.statement(chain_id, purpose, subject)
    _check_statement(keeper, statement.digest, voucher.expires_at, height)
    key = bytes.fromhex(org["signing_key"])
    if not (verify or verify_statement)(key, statement):
        raise TxFailure(
            Code.UNAUTHORISED, f"voucher: the signature does not verify with {voucher.org}'s key"
        )
    return statement.message


def check_consent(
    keeper: IdentityKeeper,
    chain_id: str,
    org: str,
    practitioner: str,
    encryption_key: str,
    consent: Consent,
    height: int,
    purpose: str = CONSENT_PURPOSE,
) -> bytes:
    """The consent's statement bytes; TxFailure unless the practitioner's (node's) current
    key signed it (the did's own key while unregistered), unexpired and unused."""
    statement = consent_bytes(
        chain_id, org, practitioner, encryption_key, consent.expires_at, purpose
    )
    _check_statement(keeper, sha256_hex(statement), consent.expires_at, height)
    try:
        key = keeper.signing_key(practitioner)
    except KeyError_ as exc:
        raise TxFailure(Code.INVALID_PAYLOAD, f"did: {exc}") from None
    if not verify_signature(key, bytes.fromhex(consent.signature), statement):
        raise TxFailure(
            Code.UNAUTHORISED, f"consent: the signature does not verify with {practitioner}'s key"
        )
    return statement


def _check_statement(keeper: IdentityKeeper, digest: str, expires_at: int, height: int) -> None:
    """`digest`: the statement's SHA-256 (hex)."""
    if height > expires_at:
        raise TxFailure(Code.UNAUTHORISED, f"expired at height {expires_at} (now {height})")
    if keeper.statement_used(digest):
        raise TxFailure(Code.CONFLICT, "this voucher or consent was already used")


def redeem(keeper: IdentityKeeper, statement: bytes, height: int) -> None:
    """Record a checked statement as used: it is refused from now on (one-time)."""
    redeem_digest(keeper, sha256_hex(statement), height)


def redeem_digest(keeper: IdentityKeeper, digest: str, height: int) -> None:
    """`redeem` of the statement whose SHA-256 (hex) is `digest`."""
    if keeper.statement_used(digest):
        raise TxFailure(Code.CONFLICT, "this voucher or consent was already used")
    keeper.use_statement(digest, height)


def registration_reads(chain_id: str, tx_type: str, sender: str, voucher: Voucher) -> list[bytes]:
    """State keys a self-registration's check reads besides the sender's identity and nonces
    (auth.keys_read_first), to read ahead for a batch: its voucher's used/ row and the
    sender's own key's key/ row, both absent for an honest registration, so each would
    otherwise cost an SQLite lookup of its own. A hint: [] for anything that is not one."""
    purpose = SELF_REGISTRATIONS.get(tx_type)
    if purpose is None:
        return []
    try:
        digest = voucher.statement(chain_id, purpose, sender).digest
        own_key = ed25519_from_did(sender).hex()
    except ValueError:  # KeyError_ is one: a sender that is no did:key
        return []
    return [
        IdentityKeeper.full_key(f"used/{digest}"),
        IdentityKeeper.full_key(f"key/{own_key}"),
    ]
