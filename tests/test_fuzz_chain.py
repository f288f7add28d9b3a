"""Adversarial blocks against two real state machines: nothing raises, both always agree.

Issue 7, attack 2: blocks of hostile transactions (random bytes, bodies nested hundreds deep,
valid signed envelopes with hostile payloads for every message type of every module, extreme
integers and nonces, unknown types, the wrong chain, odd unicode; vouchers and consents signed
by the wrong key or for the wrong organisation, purpose, subject or chain, expired, reused,
malformed or nested deep; unregistered senders; scope keys and key rotations signed by the
wrong key; issue 8's consent grants, revocations and key shares with hostile periods, scopes,
purposes, grantees, ids and key wraps, by the patient and by others; enrolments and
registrations by enrolment, in and out of order, among registrations by voucher and a member's
removal) go to `finalize_block` of two independent Applications on real SQLite files. Neither
may raise (a raise halts the node: on every validator at once, for a transaction anyone can
send), both must return the same results
and the same app hash at every height, and `check_tx` must answer every transaction with a
code. The second application runs with a tiny state cache and no mempool, so its caches never
hold what the first one's do: a result that depended on a cache would show here.

Reproducible in CI: `derandomize=True` draws the same examples on every run, with no example
database; raise FUZZ_EXAMPLES locally for a longer search.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careledger.chain.app import DEFAULT_MODULES, Application, BlockContext
from careledger.chain.auth import MAX_NONCE_JUMP, last_nonce
from careledger.chain.codes import Code
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.modules.identity.vouchers import (
    MAX_HEIGHT,
    SELF_REGISTRATIONS,
    sign_consent,
    sign_voucher,
    statement_bytes,
)
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.state import KV
from careledger.chain.tx import MAX_NONCE, MAX_TX_BYTES, Tx
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SCOPES
from careledger.crypto.statements import rotation_statement, scope_key_statement
from nodeutil import CHAIN_ID, make_app, record_name, run_block

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def actor(name: str) -> Identity:
    """Fixed keys from fixed seeds: test vectors, never real keys."""
    return Identity(sha256(b"careledger/test-vector/fuzz/" + name.encode()))


# Members A and B; the patient and the doctor registered by setup_block; three dids that are
# not registered (the stranger, an organisation applying, a practitioner a member may
# register with her consent): only vouched self-registrations of theirs may pass.
ORG_A, ORG_B, PATIENT, DOCTOR, STRANGER, APPLICANT, NURSE = (
    actor(n) for n in ("org-a", "org-b", "patient", "doctor", "stranger", "applicant", "nurse")
)
ACTORS = (ORG_A, ORG_B, PATIENT, DOCTOR, STRANGER, APPLICANT, NURSE)
ROTATED = (actor("rotated-1"), actor("rotated-2"))  # keys an actor may rotate to
SIGNERS = {i.signing_public: i for i in (*ACTORS, *ROTATED)}
MESSAGE_TYPES = tuple(f"{m.name}/{name}" for m in DEFAULT_MODULES for name in m.messages)
T0 = 1_800_000_000_000_000_000
# The expiry of setup_block's voucher and consent. The fuzzer draws it often too, so that it
# signs the very same statements again: reuse (CONFLICT) comes up without being spelled out.
SETUP_EXPIRY = 1000

# --- values --------------------------------------------------------------------------------

RECORDS = tuple(record_name(PATIENT.did, "Observation", rid) for rid in ("r1", "r2"))
HEX32 = ("11" * 32, "22" * 32, "ab" * 32, "AB" * 32, "ab" * 31, "zz" * 32, "ab" * 32 + " ")
ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\u202e",
    "\ufeff",
    "\U0001d518",
    "\ud800",  # a lone surrogate: not UTF-8 at all
    "did:key:z",
    "did:key:z" + "1" * 119,
    "did:key:z6Mk\u00e9",
    "did:key:z6Mk\U0001d518",
    "did:key:z" + "\u0660" * 40,
    "scope/clinical/1",
    "scope/clinical/4294967296",
    "scope/\u0661/1",
    "Observation",
    "observation",
    "x" * 300,
)
EXTREME_INTS = (
    -(2**63),
    -1,
    0,
    1,
    2,
    2**31,
    2**32 - 1,
    2**32,
    MAX_NONCE_JUMP,
    MAX_NONCE_JUMP + 1,
    MAX_NONCE - 1,
    MAX_NONCE,
    MAX_NONCE + 1,
    2**63,
    2**64,
    10**40,
)

ints = st.one_of(st.sampled_from(EXTREME_INTS), st.integers())
strings = st.one_of(
    st.sampled_from(ODD_STRINGS + HEX32 + RECORDS),
    st.sampled_from([a.did for a in ACTORS]),
    st.text(max_size=30),
)
leaves = st.one_of(st.none(), st.booleans(), ints, strings, st.floats())
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=10,
)

# --- vouchers and consents ----------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """A voucher or consent, signed once the sender and the payload are known (Builder).

    A field left None takes the value an honest signer would use: the purpose of the
    transaction, this chain, the sender as a voucher's subject, the payload's did and
    encryption key in a consent, the sender as the organisation a consent names, the named
    organisation (voucher) or practitioner (consent) as the signer, with its current key.
    """

    org: int | None  # index into ACTORS: the voucher's `org`, the consent's organisation
    signer: int | None
    subject: int | None
    purpose: str | None
    chain_id: str | None
    encryption_key: str | None  # consent only
    expires_at: Any
    tamper: str | None


PURPOSES = ("register_patient", "apply_membership", "register_practitioner", "anchor")
TAMPERS = (
    "flip",  # one signature bit
    "short",  # a signature of 63 bytes
    "upper",  # uppercase hex
    "old-key",  # the signer's original key, whatever it rotated to
    "drop",  # a field missing
    "extra",  # a field too many
    "not-an-object",
    "deep-29",
    "deep-30",
    "deep-31",
    "deep-40",
)
# One flaw each: its field and the hostile values it takes. The blocks run at heights 2 to 4
# (setup is 1), so expiry 1 is past, and 2 passes during an example.
FLAWS: dict[str, st.SearchStrategy[Any]] = {
    "org": st.sampled_from([2, 3, 4, 5]),  # a patient, a practitioner, unregistered dids
    "signer": st.integers(0, len(ACTORS) - 1),
    "subject": st.integers(0, len(ACTORS) - 1),
    "purpose": st.sampled_from(PURPOSES),
    "chain_id": st.sampled_from(["other-chain", ""]),
    "encryption_key": st.sampled_from(HEX32[:3]),
    "expires_at": st.sampled_from(
        (1, 2, 0, -1, MAX_HEIGHT, MAX_HEIGHT + 1, 2**64, "3", None, 2.5, True)
    ),
    "tamper": st.sampled_from(TAMPERS),
}


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    """Half honest (by member A or B, unexpired: so registrations pass, and the same few
    statements come back to be reused), half with one or two flaws."""
    statement = Statement(
        org=draw(st.sampled_from([None, 1])),  # None: A in a voucher, the sender in a consent
        signer=None,
        subject=None,
        purpose=None,
        chain_id=None,
        encryption_key=None,
        expires_at=draw(st.sampled_from([3, SETUP_EXPIRY, SETUP_EXPIRY])),
        tamper=None,
    )
    for flaw in draw(st.lists(st.sampled_from(sorted(FLAWS)), max_size=2, unique=True)):
        statement = dataclasses.replace(statement, **{flaw: draw(FLAWS[flaw])})
    return statement


@dataclass(frozen=True)
class Sig:
    """A signature the Builder makes once the sender and the payload are known: `rotation`
    over the rotation statement by the sender's current key (the certificate) or `proof` by
    the new key; `scope_key` over the scope key statement by the sender's current key. `by`
    signs instead when given (a forgery)."""

    kind: str
    by: int | None = None


def sigs(kind: str) -> st.SearchStrategy[Sig]:
    """Mostly honest, sometimes by another actor's key."""
    forger = st.integers(0, len(ACTORS) - 1)
    return st.builds(Sig, st.just(kind), st.one_of(st.none(), st.none(), st.none(), forger))


T0_S = T0 // 10**9  # the blocks' time in unix seconds, for grant periods
GRANT_IDS = ("0a" * 16, "0b" * 16, "0c" * 16)  # few, so that ids collide and revokes find them
WRAP = "6b" * 80
KEY_WRAPS = (
    [],
    [{"scope": "clinical", "epoch": 1, "wrapped": WRAP}],
    [{"scope": "clinical", "epoch": 2, "wrapped": WRAP}],  # an epoch maybe not published
    [{"scope": "diagnostics", "epoch": 1, "wrapped": WRAP}],
    [{"scope": "clinical", "epoch": 1, "wrapped": WRAP}] * 2,  # twice
    [{"scope": "clinical", "epoch": 1, "wrapped": "6b" * 79}],
)

# Payloads good enough to reach the handlers, each field open to a hostile replacement.
TEMPLATES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "identity/register_patient": {
        "encryption_key": st.sampled_from(HEX32[:3]),
        "voucher": statements(),
    },
    # Enrolments (rules version 7): dids registered or not, listed once or twice, and the
    # members, a patient and unregistered dids as the enrolling member a registration names.
    "identity/enrol_patients": {
        "dids": st.sampled_from(
            [
                [STRANGER.did],
                [APPLICANT.did],
                [STRANGER.did, APPLICANT.did],
                [APPLICANT.did, NURSE.did, PATIENT.did],  # the patient is registered
                [STRANGER.did, STRANGER.did],
            ]
        ),
    },
    "identity/register_enrolled_patient": {
        "encryption_key": st.sampled_from(HEX32[:3]),
        "enrolled_by": st.sampled_from([ORG_A.did, ORG_A.did, ORG_B.did, PATIENT.did]),
    },
    "identity/register_practitioner": {
        "did": st.sampled_from([NURSE.did, NURSE.did, DOCTOR.did, STRANGER.did, PATIENT.did]),
        "encryption_key": st.sampled_from([NURSE.encryption_public.hex(), "33" * 32]),
        "name": st.sampled_from(["Dr A", "x" * 256]),
        "consent": statements(),
    },
    "identity/deregister_practitioner": {
        "did": st.sampled_from([DOCTOR.did, NURSE.did, STRANGER.did])
    },
    "identity/rotate_key": {
        "signing_key": st.sampled_from([i.signing_public.hex() for i in ROTATED]),
        "encryption_key": st.sampled_from(HEX32[:3]),
        "certificate": sigs("certificate"),
        "proof": sigs("proof"),
    },
    "identity/apply_membership": {
        "name": st.sampled_from(["Org C", "y" * 200]),
        "encryption_key": st.just("44" * 32),
        "validator_pub_key": st.sampled_from(HEX32[:3]),
        "voucher": statements(),
    },
    "identity/approve_membership": {
        "action": st.sampled_from(["admit", "remove"]),
        "subject": st.sampled_from([a.did for a in ACTORS]),
    },
    "records/anchor": {
        "patient": st.sampled_from([PATIENT.did] * 4 + [DOCTOR.did]),
        "resource_type": st.sampled_from(["Observation", "Condition"]),
        "record": st.sampled_from(RECORDS),
        "version": st.sampled_from([1, 1, 2, 3]),
        "blob_hash": st.sampled_from(HEX32[:3]),
        "commitment": st.just("55" * 32),
        "recipients": st.sampled_from([["scope/clinical/1"], [DOCTOR.did], ["scope/clinical/2"]]),
    },
    "records/publish_scope_key": {
        "scope": st.sampled_from(["clinical", "clinical", "diagnostics", "sensitive"]),
        "epoch": st.integers(1, 3),
        "public_key": st.just("66" * 32),
        "signature": sigs("scope_key"),
    },
    "records/erase": {"records": st.sampled_from([list(RECORDS[:1]), list(RECORDS)])},
    "consent/grant": {  # honest values; consent_envelopes adds GRANT_FLAWS now and then
        "id": st.sampled_from(GRANT_IDS),
        "patient": st.just(PATIENT.did),
        "grantee": st.sampled_from([ORG_B.did, DOCTOR.did, NURSE.did, ORG_A.did]),
        "action": st.sampled_from(["read", "read", "write", "delegate"]),
        "scopes": st.sampled_from([["clinical"], ["clinical", "sensitive"], list(SCOPES)]),
        "purposes": st.sampled_from([["TREAT"], ["HRESCH", "TREAT"]]),
        "start": st.sampled_from([0, T0_S]),
        "end": st.sampled_from([T0_S + 1000, 2**40]),
        "keys": st.sampled_from(KEY_WRAPS[:2]),
        "naming_key": st.just(WRAP),
    },
    "consent/revoke": {"id": st.sampled_from(GRANT_IDS)},
    "consent/share_keys": {
        "id": st.sampled_from(GRANT_IDS),
        "keys": st.sampled_from(KEY_WRAPS),
    },
}

# A batch: up to three anchors from the same hostile template (records and blobs repeat now
# and then: a batch names each once), now and then more than a batch may hold.
TEMPLATES["records/anchor_batch"] = {
    "anchors": st.one_of(
        st.lists(st.fixed_dictionaries(TEMPLATES["records/anchor"]), min_size=0, max_size=3),
        st.lists(st.fixed_dictionaries(TEMPLATES["records/anchor"]), min_size=101, max_size=101),
    )
}


def often(chance_in_ten: int) -> st.SearchStrategy[bool]:
    """True about chance_in_ten times in ten (integers() would lean towards its minimum)."""
    return st.sampled_from([True] * chance_in_ten + [False] * (10 - chance_in_ten))


ANCHOR_TOMBSTONE = ("patient", "resource_type", "record", "version")


@st.composite
def payloads(draw: st.DrawFn, type_: str) -> dict[str, Any]:
    """The message's fields with good values, now and then one replaced, dropped or added."""
    template = TEMPLATES.get(type_)
    if template is None:
        return draw(st.dictionaries(strings, values, max_size=6))
    payload = {name: draw(field) for name, field in template.items()}
    if type_ == "records/anchor" and draw(often(2)):  # a tombstone names no blob
        payload = {k: v for k, v in payload.items() if k in ANCHOR_TOMBSTONE} | {"tombstone": 1}
    if draw(often(3)):
        payload[draw(st.sampled_from([*template, "extra"]))] = draw(values)
    if draw(often(1)):
        del payload[draw(st.sampled_from(sorted(payload)))]
    return payload


# --- transactions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A signed envelope to build once nonces are known (`nonce` None: the signer's next)."""

    signer: int
    sender: str | None  # None: the signer's own did
    chain_id: Any
    type: Any
    nonce: Any
    payload: Any
    ascii_escapes: bool
    drop_field: str | None


MEMBERS_SEND = ("identity/register_practitioner", "identity/enrol_patients")


@st.composite
def valid_envelopes(draw: st.DrawFn) -> Envelope:
    """Signed by the sender, for this chain, the next nonce: these reach the handlers."""
    type_ = draw(st.sampled_from([*MESSAGE_TYPES, "records/anchor", "records/anchor"]))
    if type_ in SELF_REGISTRATIONS and draw(often(7)):  # mostly by a did that may send it
        signer = draw(st.sampled_from([ACTORS.index(STRANGER), ACTORS.index(APPLICANT)]))
    elif type_ in MEMBERS_SEND and draw(often(7)):  # mostly by a member
        signer = draw(st.sampled_from([ACTORS.index(ORG_A), ACTORS.index(ORG_B)]))
    elif type_.startswith("consent/") and draw(often(7)):  # mostly by the patient
        signer = ACTORS.index(PATIENT)
    else:
        signer = draw(st.integers(0, len(ACTORS) - 1))
    return Envelope(signer, None, CHAIN_ID, type_, None, draw(payloads(type_)), False, None)


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> Envelope:
    """Anything in any field: another's did, extreme or mistyped nonces, odd types, escapes."""
    type_ = draw(st.one_of(st.sampled_from(MESSAGE_TYPES), strings))
    return Envelope(
        signer=draw(st.integers(0, len(ACTORS) - 1)),
        sender=draw(st.one_of(st.none(), strings)),
        chain_id=draw(st.sampled_from([CHAIN_ID, "other-chain", "", 7])),
        type=type_,
        nonce=draw(st.one_of(st.none(), ints, leaves)),
        payload=draw(payloads(type_)) if draw(often(7)) else draw(values),
        ascii_escapes=draw(often(2)),
        drop_field=draw(st.sampled_from([None] * 12 + ["chain_id", "nonce", "payload"])),
    )


@dataclass(frozen=True)
class Deep:
    """A signed body whose payload is nested `depth` levels deep."""

    signer: int
    depth: int


@dataclass(frozen=True)
class RawBytes:
    raw: bytes


transactions = st.one_of(
    valid_envelopes(),
    valid_envelopes(),
    valid_envelopes(),
    valid_envelopes(),
    hostile_envelopes(),
    hostile_envelopes(),
    st.builds(
        Deep,
        st.integers(0, len(ACTORS) - 1),
        st.sampled_from([31, 32, 33, 254, 255, 256, 1023, 1025, 5000]),
    ),
    st.builds(RawBytes, st.binary(max_size=200)),
    st.builds(RawBytes, st.binary(max_size=100).map(lambda b: b"{" + b + b"}" + b"\0" * 64)),
    st.builds(RawBytes, st.sampled_from([b"", b"\0" * 65, b"x" * (MAX_TX_BYTES + 1)])),
)
blocks = st.lists(st.lists(transactions, min_size=1, max_size=8), min_size=1, max_size=3)


class Builder:
    """Turns drawn transactions into bytes as a wallet would: each signer's next nonce, signed
    by the key the state holds for it (after a rotation, the new one)."""

    def __init__(self, app: Application | None = None) -> None:
        self.app = app
        self.nonces = {a.did: self._last_nonce(a.did) for a in ACTORS}

    def _last_nonce(self, did: str) -> int:
        return 0 if self.app is None else last_nonce(KV(self.app.store, "auth"), did)

    def key_of(self, actor: Identity) -> Identity:
        if self.app is None:
            return actor
        current = IdentityKeeper(KV(self.app.store, "identity")).signing_key(actor.did)
        return SIGNERS.get(current, actor)

    def build(self, tx: Envelope | Deep | RawBytes) -> bytes:
        if isinstance(tx, RawBytes):
            return tx.raw
        signer = ACTORS[tx.signer]
        key = self.key_of(signer)
        if isinstance(tx, Deep):
            nonce = self._next(signer)
            body = (
                b'{"chain_id":"' + CHAIN_ID.encode() + b'","nonce":' + str(nonce).encode()
                + b',"payload":{"x":' + b"[" * tx.depth + b"]" * tx.depth
                + b'},"sender":"' + signer.did.encode() + b'","type":"records/erase"}'
            )  # fmt: skip
            return body + key.sign(body)
        sender = signer.did if tx.sender is None else tx.sender
        fields = {
            "chain_id": tx.chain_id,
            "type": tx.type,
            "sender": sender,
            "nonce": self._next(signer) if tx.nonce is None else tx.nonce,
            "payload": self._sign_statements(tx.type, sender, tx.payload),
        }
        if tx.drop_field:
            del fields[tx.drop_field]
        text = json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=tx.ascii_escapes
        )
        body = text.encode("utf-8", "surrogatepass")
        return body + key.sign(body)

    def _next(self, signer: Identity) -> int:
        self.nonces[signer.did] += 1
        return self.nonces[signer.did]

    def _sign_statements(self, type_: Any, sender: Any, payload: Any) -> Any:
        """The payload with each drawn Statement replaced by the signed voucher or consent,
        and each Sig by its signature."""
        if not isinstance(payload, dict):
            return payload
        signed = {}
        for name, value in payload.items():
            if isinstance(value, Statement):
                value = self.statement(type_, sender, payload, value)
            elif isinstance(value, Sig):
                value = self.signature(sender, payload, value)
            signed[name] = value
        return signed

    def signature(self, sender: Any, payload: dict[str, Any], sig: Sig) -> str:
        """The hex signature a Sig describes (over garbage when the payload's fields are not
        strings and integers a statement can hold)."""
        signer = _actor_with_did(sender)
        key = self.key_of(signer)
        try:
            if sig.kind == "scope_key":
                message = scope_key_statement(
                    CHAIN_ID, sender, payload["scope"], payload["epoch"], payload["public_key"]
                )
            else:
                signing_key = payload["signing_key"]
                message = rotation_statement(
                    CHAIN_ID, sender, signing_key, payload["encryption_key"]
                )
                if sig.kind == "proof":
                    key = SIGNERS.get(bytes.fromhex(signing_key), key)
        except (KeyError, ValueError, TypeError):
            message = b"not a statement"
        if sig.by is not None:
            key = ACTORS[sig.by]
        return key.sign(message).hex()

    def statement(self, type_: Any, sender: Any, payload: dict[str, Any], spec: Statement) -> Any:
        """The voucher (for register_practitioner, the consent) that `spec` describes."""
        consent = type_ == "identity/register_practitioner"
        honest_subject, honest_org = (
            (payload.get("did"), sender) if consent else (sender, ORG_A.did)
        )
        subject = honest_subject if spec.subject is None else ACTORS[spec.subject].did
        org = honest_org if spec.org is None else ACTORS[spec.org].did
        # A voucher is signed by the organisation it names, a consent by the practitioner.
        honest_signer = _actor_with_did(subject if consent else org)
        signer = honest_signer if spec.signer is None else ACTORS[spec.signer]
        key = signer if spec.tamper == "old-key" else self.key_of(signer)
        if consent:
            encryption_key = spec.encryption_key or payload.get("encryption_key")
            fields = {"expires_at": spec.expires_at}
        else:
            encryption_key = spec.encryption_key or ""
            fields = {"org": org, "expires_at": spec.expires_at}
        try:
            message = statement_bytes(
                CHAIN_ID if spec.chain_id is None else spec.chain_id,
                spec.purpose or str(type_).partition("/")[2],
                subject,
                org,
                spec.expires_at,
                encryption_key,
            )
        except (ValueError, TypeError):  # an expiry statement_bytes refuses to sign
            message = b"not a statement"
        fields["signature"] = key.sign(message).hex()
        return _tampered(fields, spec.tamper)


def _actor_with_did(did: Any) -> Identity:
    return next((a for a in ACTORS if a.did == did), STRANGER)


def _tampered(fields: dict[str, Any], tamper: str | None) -> Any:
    signature = fields["signature"]
    if tamper == "flip":
        return fields | {"signature": signature[:-1] + ("0" if signature[-1] != "0" else "1")}
    if tamper == "short":
        return fields | {"signature": signature[:-2]}
    if tamper == "upper":
        return fields | {"signature": signature.upper()}
    if tamper == "drop":
        return {k: v for k, v in fields.items() if k != "expires_at"}
    if tamper == "extra":
        return fields | {"extra": 1}
    if tamper == "not-an-object":
        return list(fields.values())
    if tamper and tamper.startswith("deep-"):
        depth = int(tamper.removeprefix("deep-"))
        nested: Any = signature
        for _ in range(depth):
            nested = [nested]
        return fields | {"signature": nested}
    return fields


# --- the state machines --------------------------------------------------------------------


def setup_block() -> list[bytes]:
    """Register the patient (org A's voucher), the doctor (by org A, with the doctor's
    consent), a scope key and the patient's write consent for org A, so that the records
    rules run."""
    scope_key = scope_key_payload(PATIENT, CHAIN_ID, "clinical", 1, "77" * 32)
    write_consent = {
        "id": GRANT_IDS[0],
        "patient": PATIENT.did,
        "grantee": ORG_A.did,
        "action": "write",
        "scopes": ["clinical"],
        "start": 0,
        "end": T0_S + 1000,
    }
    voucher = sign_voucher(ORG_A, CHAIN_ID, "register_patient", PATIENT.did, SETUP_EXPIRY)
    doctor_key = DOCTOR.encryption_public.hex()
    consent = sign_consent(DOCTOR, CHAIN_ID, ORG_A.did, doctor_key, SETUP_EXPIRY)
    patient = {"encryption_key": PATIENT.encryption_public.hex(), "voucher": voucher}
    doctor = {"did": DOCTOR.did, "encryption_key": doctor_key, "consent": consent}
    return [
        Tx(CHAIN_ID, "identity/register_patient", PATIENT.did, 1, patient).sign(PATIENT),
        Tx(CHAIN_ID, "identity/register_practitioner", ORG_A.did, 1, doctor).sign(ORG_A),
        Tx(CHAIN_ID, "records/publish_scope_key", PATIENT.did, 2, scope_key).sign(PATIENT),
        Tx(CHAIN_ID, "consent/grant", PATIENT.did, 3, write_consent).sign(PATIENT),
    ]


def two_state_machines(scratch: Path) -> tuple[Application, Application]:
    a = make_app(scratch / "a.sqlite", [ORG_A, ORG_B])
    b = make_app(scratch / "b.sqlite", [ORG_A, ORG_B])
    b.store.cache.max_bytes = 2048  # evicts nearly every read: a cache must change nothing
    for app in (a, b):
        assert run_block(app, setup_block()) == [Code.OK] * 4
    return a, b


@FUZZ
@given(blocks)
def test_adversarial_blocks_never_raise_and_two_state_machines_agree(
    drawn: list[list[Envelope | Deep | RawBytes]],
) -> None:
    run_on_two_state_machines(drawn)


CONSENT_TYPES = ("consent/grant", "consent/grant", "consent/revoke", "consent/share_keys")
# One flaw of a grant: its field and the hostile values it takes.
GRANT_FLAWS: dict[str, st.SearchStrategy[Any]] = {
    "patient": st.sampled_from([DOCTOR.did, STRANGER.did, ORG_A.did]),
    "grantee": st.sampled_from([PATIENT.did, STRANGER.did, APPLICANT.did]),
    "scopes": st.sampled_from([["clinical", "nope"], [], ["clinical", "clinical"]]),
    "purposes": st.sampled_from([["BOGUS"], [], ["TREAT"] * 10]),
    "start": st.sampled_from([T0_S + 3, T0_S + 2000, -1]),
    "end": st.sampled_from([T0_S + 3, T0_S + 1, 2**40 + 1, 0]),
    "keys": st.sampled_from(KEY_WRAPS[2:]),
    "naming_key": st.sampled_from(["6b" * 81, ""]),
    "records": st.sampled_from([list(RECORDS), ["zz" * 32], []]),
}


@st.composite
def consent_envelopes(draw: st.DrawFn) -> Envelope:
    """Consent messages (mostly the patient's) among the anchors and scope keys they
    decide: grants with hostile periods, scopes, purposes, grantees, ids and key wraps."""
    type_ = draw(st.sampled_from([*CONSENT_TYPES, "records/anchor", "records/publish_scope_key"]))
    signer = ACTORS.index(PATIENT) if draw(often(6)) else draw(st.integers(0, len(ACTORS) - 1))
    payload = draw(payloads(type_))
    if type_ == "consent/grant" and draw(often(4)):
        flaw = draw(st.sampled_from(sorted(GRANT_FLAWS)))
        payload[flaw] = draw(GRANT_FLAWS[flaw])
    return Envelope(signer, None, CHAIN_ID, type_, None, payload, False, None)


@FUZZ
@given(st.lists(st.lists(consent_envelopes(), min_size=1, max_size=8), min_size=1, max_size=3))
def test_consent_blocks_never_raise_and_two_state_machines_agree(
    drawn: list[list[Envelope | Deep | RawBytes]],
) -> None:
    run_on_two_state_machines(drawn)


ENROLMENT_TYPES = (
    "identity/enrol_patients",
    "identity/register_enrolled_patient",
    "identity/register_enrolled_patient",
    "identity/register_patient",  # the same dids by voucher, meanwhile
    "identity/approve_membership",  # a member voted out while its enrolments wait
)


@st.composite
def enrolment_envelopes(draw: st.DrawFn) -> Envelope:
    """Enrolments by members and registrations by the dids they enrol, in any order within
    and across blocks, among registrations by voucher and votes to remove a member."""
    type_ = draw(st.sampled_from(ENROLMENT_TYPES))
    if type_ == "identity/approve_membership":
        signer = draw(st.sampled_from([ACTORS.index(ORG_A), ACTORS.index(ORG_B)]))
    elif draw(often(8)):
        signer = (
            ACTORS.index(ORG_A)
            if type_ == "identity/enrol_patients"
            else draw(st.sampled_from([ACTORS.index(STRANGER), ACTORS.index(APPLICANT)]))
        )
    else:
        signer = draw(st.integers(0, len(ACTORS) - 1))
    payload = draw(payloads(type_))
    if type_ == "identity/approve_membership":
        payload = {"action": "remove", "subject": draw(st.sampled_from([ORG_A.did, ORG_B.did]))}
    return Envelope(signer, None, CHAIN_ID, type_, None, payload, False, None)


@FUZZ
@given(st.lists(st.lists(enrolment_envelopes(), min_size=1, max_size=8), min_size=1, max_size=3))
def test_enrolment_blocks_never_raise_and_two_state_machines_agree(
    drawn: list[list[Envelope | Deep | RawBytes]],
) -> None:
    run_on_two_state_machines(drawn)


def run_on_two_state_machines(drawn: list[list[Envelope | Deep | RawBytes]]) -> None:
    """Each block on both state machines: nothing raises, both agree at every height."""
    with tempfile.TemporaryDirectory() as scratch:
        a, b = two_state_machines(Path(scratch))
        builder = Builder(a)
        assert a.info() == b.info()
        for specs in drawn:
            raws = [builder.build(spec) for spec in specs]
            checked = [a.check_tx(raw) for raw in raws]  # only a has a mempool view
            assert all(isinstance(r.code, Code) and (r.code == Code.OK or r.log) for r in checked)
            height = a.info().last_height + 1
            ctx = BlockContext(height, T0 + height)
            from_a = a.finalize_block(ctx, raws)
            a.commit()
            from_b = b.finalize_block(ctx, raws)
            b.commit()
            assert from_a == from_b
            assert all(isinstance(r.code, Code) for r in from_a.tx_results)
            assert Code.INTERNAL not in [r.code for r in from_a.tx_results]
            assert a.info() == b.info()
        assert dict(a.store.all_rows()) == dict(b.store.all_rows())
        a.store.close()
        b.store.close()


@FUZZ
@given(st.one_of(transactions, st.builds(RawBytes, st.binary(max_size=4000))))
def test_check_tx_answers_any_bytes_with_a_code(tx: Envelope | Deep | RawBytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        app = make_app(Path(scratch) / "s.sqlite", [ORG_A])
        raw = Builder().build(tx)
        first, again = app.check_tx(raw), app.check_tx(raw)
        assert isinstance(first.code, Code) and first.code != Code.INTERNAL
        if first.code == Code.OK:
            # A replay; an application (its sender still unregistered while the members
            # vote) meets its used voucher before its nonce.
            assert again.code == Code.REPLAY or (
                again.code == Code.CONFLICT and "already used" in again.log
            ), again
        else:
            assert again == first
        app.store.close()


def test_the_hostile_shapes_named_in_the_issue_are_each_refused_with_a_code(
    tmp_path: Path,
) -> None:
    """The cases the fuzzer must cover, spelled out: each is answered, none raises."""
    app = make_app(tmp_path / "s.sqlite", [ORG_A])
    builder = Builder()
    cases = {
        "deep JSON (orjson cannot re-encode it)": (Deep(0, 300), Code.MALFORMED),
        "JSON past orjson's read limit": (Deep(0, 1100), Code.MALFORMED),
        "integer beyond 2**64": (_envelope(nonce=2**64), Code.MALFORMED),
        "not UTF-8": (RawBytes(b'{"a":"\xff"}' + b"\0" * 64), Code.MALFORMED),
        "lone surrogate": (_envelope(payload={"name": "\ud800"}), Code.MALFORMED),
        "odd unicode in a did": (
            _envelope(type="identity/deregister_practitioner", payload={"did": ODD_STRINGS[9]}),
            Code.INVALID_PAYLOAD,
        ),
        "float": (_envelope(payload={"epoch": 1.5}), Code.MALFORMED),
        "nonce beyond the jump": (_envelope(nonce=MAX_NONCE_JUMP + 5), Code.NONCE_TOO_FAR),
        "wrong chain": (_envelope(chain_id="other"), Code.WRONG_CHAIN),
        "unknown type": (_envelope(type="identity/make_me_admin"), Code.UNKNOWN_TYPE),
    }
    raws = {name: builder.build(tx) for name, (tx, _) in cases.items()}
    for name, (_, expected) in cases.items():
        assert app.check_tx(raws[name]).code == expected, name
    assert run_block(app, list(raws.values())) == [code for _, code in cases.values()]


def _envelope(**changes: Any) -> Envelope:
    base: dict[str, Any] = {
        "signer": 0,
        "sender": None,
        "chain_id": CHAIN_ID,
        "type": "records/publish_scope_key",
        "nonce": None,
        "payload": {
            "scope": "clinical",
            "epoch": 1,
            "public_key": "66" * 32,
            "signature": Sig("scope_key"),
        },
        "ascii_escapes": False,
        "drop_field": None,
    }
    return Envelope(**(base | changes))


HONEST = Statement(
    org=None,
    signer=None,
    subject=None,
    purpose=None,
    chain_id=None,
    encryption_key=None,
    expires_at=SETUP_EXPIRY,
    tamper=None,
)


def _vouched(type_: str, signer: Identity, payload: dict[str, Any]) -> Envelope:
    return _envelope(signer=ACTORS.index(signer), type=type_, payload=payload)


def _registration(**flaws: Any) -> Envelope:
    """The stranger registers as a patient with a voucher by A, flawed as given."""
    voucher = dataclasses.replace(HONEST, **flaws)
    payload = {"encryption_key": "11" * 32, "voucher": voucher}
    return _vouched("identity/register_patient", STRANGER, payload)


def _application(**flaws: Any) -> Envelope:
    """The applicant applies for membership with a voucher by A, flawed as given."""
    payload = {"name": "Org C", "encryption_key": "44" * 32}
    voucher = dataclasses.replace(HONEST, **flaws)
    return _vouched("identity/apply_membership", APPLICANT, payload | {"voucher": voucher})


def _nurse(sender: Identity = ORG_A, **flaws: Any) -> Envelope:
    """A member registers the nurse, with her consent flawed as given."""
    payload = {
        "did": NURSE.did,
        "encryption_key": NURSE.encryption_public.hex(),
        "consent": dataclasses.replace(HONEST, **flaws),
    }
    return _vouched("identity/register_practitioner", sender, payload)


def test_the_hostile_vouchers_and_consents_are_each_refused_with_a_code(tmp_path: Path) -> None:
    """The voucher and consent shapes the fuzzer draws, spelled out on both state machines:
    each flaw gets its code and reason, the honest statements pass once, and a statement
    used once is refused after."""
    a, b = two_state_machines(tmp_path)
    rotation = _envelope(
        signer=ACTORS.index(ORG_B),
        type="identity/rotate_key",
        payload={
            "signing_key": ROTATED[0].signing_public.hex(),
            "encryption_key": "22" * 32,
            "certificate": Sig("certificate"),
            "proof": Sig("proof"),
        },
    )
    rotated = Builder(a).build(rotation)
    assert run_block(a, [rotated]) == run_block(b, [rotated]) == [Code.OK]
    deregister_nurse = _envelope(
        type="identity/deregister_practitioner", payload={"did": NURSE.did}
    )
    cases = [
        ("a voucher by a non-member", _registration(org=2), 8, "not a member organisation"),
        ("a voucher signed by another key", _registration(signer=1), 8, "does not verify"),
        ("a voucher for another did", _registration(subject=5), 8, "does not verify"),
        ("a voucher for another act", _registration(purpose="apply_membership"), 8, "verify"),
        ("a voucher for another chain", _registration(chain_id="other-chain"), 8, "verify"),
        ("an expired voucher", _registration(expires_at=1), 8, "expired at height 1 (now 3)"),
        ("an expiry beyond 2**53", _registration(expires_at=MAX_HEIGHT + 1), 1, "safe integer"),
        ("an expiry of 0", _registration(expires_at=0), 7, "'expires_at' must be an integer"),
        ("a string expiry", _registration(expires_at="3"), 7, "'expires_at' must be an integer"),
        ("a flipped signature", _registration(tamper="flip"), 8, "does not verify"),
        ("a short signature", _registration(tamper="short"), 7, "'signature' must be 64 bytes"),
        ("uppercase hex", _registration(tamper="upper"), 7, "in lowercase hex"),
        ("a missing field", _registration(tamper="drop"), 7, "missing field 'expires_at'"),
        ("an extra field", _registration(tamper="extra"), 7, "unknown field(s): extra"),
        ("not an object", _registration(tamper="not-an-object"), 7, "'voucher' must be an"),
        ("nested 29 deep", _registration(tamper="deep-29"), 7, "'signature' must be a string"),
        ("nested 40 deep", _registration(tamper="deep-40"), 1, "nested deeper than"),
        ("an honest registration", _registration(), 0, ""),
        ("B's key before its rotation", _application(org=1, tamper="old-key"), 8, "verify"),
        ("an honest application", _application(), 0, ""),
        ("its voucher again", _application(), 10, "already used"),
        ("a consent to another org", _nurse(sender=ORG_B, org=0), 8, "does not verify"),
        ("a consent by another key", _nurse(signer=4), 8, "does not verify"),
        ("a consent for another key", _nurse(encryption_key="11" * 32), 8, "does not verify"),
        ("an expired consent", _nurse(expires_at=1), 8, "expired at height 1 (now 3)"),
        ("an honest consent", _nurse(), 0, ""),
        ("the nurse's deregistration", deregister_nurse, 0, ""),
        ("her consent again", _nurse(), 10, "already used"),
    ]
    builder = Builder(a)
    raws = [builder.build(envelope) for _, envelope, _, _ in cases]
    ctx = BlockContext(3, T0 + 3)
    from_a = a.finalize_block(ctx, raws)
    a.commit()
    assert b.finalize_block(ctx, raws) == from_a
    b.commit()
    unexpected = [
        (name, result.code, result.log)
        for (name, _, code, reason), result in zip(cases, from_a.tx_results, strict=True)
        if result.code != code or reason not in result.log
    ]
    assert unexpected == []
    a.store.close()
    b.store.close()
