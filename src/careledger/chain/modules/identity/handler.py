"""The identity module's rules: who may register whom, key rotation, the membership vote.

- A patient registers itself with a member's enrolment voucher; an organisation applies for
  membership with a sponsoring member's voucher (vouchers.py). `chain/auth.py` checks the
  voucher in full (member, expiry, unused, signature) before the handler runs, and refuses
  every other transaction of an unregistered did (UNKNOWN_SENDER); the handler records the
  voucher as used.
- A member may instead enrol patients' dids on chain, many in one transaction; each
  patient then registers itself naming that member (enrolments.py), and `chain/auth.py`
  checks the enrolment as it checks a voucher; the handler deletes it.
- A member registers a practitioner only with the practitioner's consent (signed by the
  practitioner's current key), and a node of its own likewise (`register_node`; founders'
  nodes are registered at genesis). A node acts for its organisation while it is a member.
  Re-registering a deregistered practitioner (same organisation only) keeps its signing key
  and key history: registration never sets a signing key on a did that already has one, so
  it cannot undo a rotation.
- Validator keys are unique among members: checked at application and again at admission.
- Signing keys are unique among identities, for ever (`key/<hex>` in the keeper): a rotation
  to a key that is or was any identity's (its own earlier keys included) is CONFLICT, and so
  is registering a did whose own key another identity rotated to (rotate_key does not prove
  possession of the new key, so the chain cannot tell which of the two holds it).
- A removal needs two thirds of the other members *and* at least two of them
  (`MIN_REMOVAL_APPROVALS`): in a consortium of two, one member's vote removed the other and
  its validator, leaving the voter all the voting power.
- A removed organisation, a deregistered practitioner, and a removed organisation's
  practitioners may do nothing at all (IdentityKeeper.acting_identity); a removed
  organisation cannot apply again under the same did.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.modules import votes
from careledger.chain.modules.base import TxContext, ValidatorUpdate
from careledger.chain.modules.identity.enrolments import redeem_enrolment
from careledger.chain.modules.identity.events import (
    IdentityRegistered,
    KeyRotated,
    MemberAdmitted,
    MemberRemoved,
    MembershipApplied,
    MembershipApproved,
    PatientsEnrolled,
    PractitionerDeregistered,
)
from careledger.chain.modules.identity.keeper import MODULE, IdentityKeeper
from careledger.chain.modules.identity.messages import (
    ApplyMembership,
    ApproveMembership,
    DeregisterPractitioner,
    EnrolPatients,
    RegisterEnrolledPatient,
    RegisterNode,
    RegisterPatient,
    RegisterPractitioner,
    RotateKey,
)
from careledger.chain.modules.identity.vouchers import (
    NODE_CONSENT_PURPOSE,
    Voucher,
    check_consent,
    redeem,
    redeem_digest,
)
from careledger.crypto.keys import ed25519_from_did, verify_signature
from careledger.crypto.statements import rotation_statement

VALIDATOR_POWER = 10
# A removal takes effect with at least this many approvals (besides two thirds of the voters),
# so that no member alone ever removes another: see approve_membership.
MIN_REMOVAL_APPROVALS = 2


def _keeper(ctx: TxContext) -> IdentityKeeper:
    return IdentityKeeper(ctx.kv(MODULE))


def _require_unregistered(keeper: IdentityKeeper, did: str) -> None:
    if keeper.identity(did) is not None:
        raise TxFailure(Code.CONFLICT, f"{did} is already registered")


def _require_member(keeper: IdentityKeeper, did: str) -> None:
    if not keeper.is_member(did):
        raise TxFailure(Code.UNAUTHORISED, f"{did} is not a member organisation")


def _new_identity(ctx: TxContext, did: str, kind: str, encryption_key: str) -> dict[str, object]:
    signing_key = ed25519_from_did(did).hex()
    return {
        "did": did,
        "kind": kind,
        "signing_key": signing_key,
        "keys": [{"since": ctx.height, "signing_key": signing_key}],
        "encryption_key": encryption_key,
        "active": True,
        "registered_at": ctx.height,
    }


def _claim_own_key(keeper: IdentityKeeper, did: str) -> None:
    """Record that the did's own key signs for it; CONFLICT if another identity rotated to
    that key first (two identities must never share a signing key)."""
    own_key = ed25519_from_did(did).hex()
    holder = keeper.key_holder(own_key)
    if holder is not None and holder != did:
        raise TxFailure(Code.CONFLICT, f"{did}'s key is already {holder}'s signing key")
    keeper.claim_key(own_key, did)


def _redeem_voucher(ctx: TxContext, keeper: IdentityKeeper, purpose: str, voucher: Voucher) -> None:
    """Mark the sender's voucher used. auth.authenticate has already checked it in full
    (member, expiry, unused, signature) against this very state: it is the only way an
    unregistered did reaches this handler."""
    statement = voucher.statement(ctx.chain_id, purpose, ctx.sender)
    redeem_digest(keeper, statement.digest, ctx.height)


def register_patient(ctx: TxContext, msg: RegisterPatient) -> None:
    keeper = _keeper(ctx)
    _require_unregistered(keeper, ctx.sender)
    _redeem_voucher(ctx, keeper, "register_patient", msg.voucher)
    _put_patient(ctx, keeper, msg.encryption_key, msg.voucher.org)


def register_enrolled_patient(ctx: TxContext, msg: RegisterEnrolledPatient) -> None:
    """register_patient, vouched for by an enrolment: auth.authenticate has checked it
    (a member that may act enrolled the sender) against this very state."""
    keeper = _keeper(ctx)
    _require_unregistered(keeper, ctx.sender)
    redeem_enrolment(keeper, ctx.sender, msg.enrolment)
    _put_patient(ctx, keeper, msg.encryption_key, msg.enrolment.org)


def _put_patient(ctx: TxContext, keeper: IdentityKeeper, encryption_key: str, org: str) -> None:
    _claim_own_key(keeper, ctx.sender)
    patient = _new_identity(ctx, ctx.sender, "patient", encryption_key)
    # Who vouched: the clinic that enrolled the patient (a claim keeps its write consent).
    keeper.put_identity({**patient, "enrolled_by": org})
    ctx.emit(IdentityRegistered(ctx.sender, "patient"))


def enrol_patients(ctx: TxContext, msg: EnrolPatients) -> None:
    """A member enrols dids to register themselves (enrolments.py); all or nothing."""
    keeper = _keeper(ctx)
    _require_member(keeper, ctx.sender)
    for did in msg.dids:
        _require_unregistered(keeper, did)
        keeper.enrol(did, ctx.sender, ctx.height)
    ctx.emit(PatientsEnrolled(ctx.sender, str(len(msg.dids))))


def register_practitioner(ctx: TxContext, msg: RegisterPractitioner) -> None:
    keeper = _keeper(ctx)
    _require_member(keeper, ctx.sender)
    existing = keeper.identity(msg.did)
    if existing is not None and (existing["active"] or existing.get("org") != ctx.sender):
        raise TxFailure(Code.CONFLICT, f"{msg.did} is already registered")
    statement = check_consent(
        keeper, ctx.chain_id, ctx.sender, msg.did, msg.encryption_key, msg.consent, ctx.height
    )
    redeem(keeper, statement, ctx.height)
    if existing is None:
        _claim_own_key(keeper, msg.did)
        ident = _new_identity(ctx, msg.did, "practitioner", msg.encryption_key)
    else:  # the same organisation takes back its deregistered practitioner: keys unchanged
        ident = {**existing, "encryption_key": msg.encryption_key, "active": True}
    ident.update(org=ctx.sender, name=msg.name)
    keeper.put_identity(ident)
    keeper.add_staff(ctx.sender, msg.did)
    ctx.emit(IdentityRegistered(msg.did, "practitioner", ctx.sender))


def register_node(ctx: TxContext, msg: RegisterNode) -> None:
    """A member registers one of its nodes, which consents by signing (purpose
    "register_node", so a practitioner's consent never registers a node). A node is never
    re-registered or moved to another organisation: it gets a new key instead."""
    keeper = _keeper(ctx)
    _require_member(keeper, ctx.sender)
    _require_unregistered(keeper, msg.did)
    statement = check_consent(
        keeper,
        ctx.chain_id,
        ctx.sender,
        msg.did,
        msg.encryption_key,
        msg.consent,
        ctx.height,
        purpose=NODE_CONSENT_PURPOSE,
    )
    redeem(keeper, statement, ctx.height)
    _claim_own_key(keeper, msg.did)
    node = _new_identity(ctx, msg.did, "node", msg.encryption_key)
    keeper.put_identity({**node, "org": ctx.sender, "name": msg.name})
    ctx.emit(IdentityRegistered(msg.did, "node", ctx.sender))


def deregister_practitioner(ctx: TxContext, msg: DeregisterPractitioner) -> None:
    keeper = _keeper(ctx)
    ident = keeper.active(msg.did, "practitioner")
    if ident is None:
        raise TxFailure(Code.NOT_FOUND, f"{msg.did} is not an active practitioner")
    if ident["org"] != ctx.sender:
        raise TxFailure(Code.UNAUTHORISED, "only the registering organisation may deregister")
    keeper.put_identity({**ident, "active": False})
    keeper.remove_staff(ctx.sender, msg.did)
    ctx.emit(PractitionerDeregistered(msg.did, ctx.sender))


def _require_rotation_signatures(ctx: TxContext, ident: dict[str, Any], msg: RotateKey) -> None:
    """The certificate by the current key and the proof by the new one, both over the
    rotation statement: without the proof an identity could name a key it does not hold
    (another's, or a did's not yet registered, which could then never register)."""
    statement = rotation_statement(ctx.chain_id, ctx.sender, msg.signing_key, msg.encryption_key)
    signers = (
        ("certificate", ident["signing_key"], msg.certificate, "the current key"),
        ("proof", msg.signing_key, msg.proof, "the new key (proof of possession)"),
    )
    for name, key, signature, by in signers:
        if not _verifies(key, signature, statement):
            raise TxFailure(Code.UNAUTHORISED, f"rotate_key: the {name} is not a signature by {by}")


def _verifies(key_hex: str, signature_hex: str, message: bytes) -> bool:
    return verify_signature(bytes.fromhex(key_hex), bytes.fromhex(signature_hex), message)


def rotate_key(ctx: TxContext, msg: RotateKey) -> None:
    keeper = _keeper(ctx)
    ident = keeper.active(ctx.sender)
    if ident is None:
        raise TxFailure(Code.NOT_FOUND, f"{ctx.sender} is not an active identity")
    if msg.signing_key == ident["signing_key"]:
        raise TxFailure(Code.INVALID_PAYLOAD, "the new signing key is the current one")
    _require_rotation_signatures(ctx, ident, msg)
    holder = keeper.key_holder(msg.signing_key)
    if holder == ctx.sender:
        raise TxFailure(Code.CONFLICT, "the new signing key is one this identity rotated away from")
    if holder is not None:
        raise TxFailure(Code.CONFLICT, f"the new signing key is already {holder}'s")
    keeper.claim_key(msg.signing_key, ctx.sender)
    entry = {
        "since": ctx.height,
        "signing_key": msg.signing_key,
        "encryption_key": msg.encryption_key,
        "certificate": msg.certificate,
        "proof": msg.proof,
    }
    history = [*ident["keys"], entry]
    keeper.put_identity(
        {
            **ident,
            "signing_key": msg.signing_key,
            "keys": history,
            "encryption_key": msg.encryption_key,
        }
    )
    ctx.emit(KeyRotated(ctx.sender))


def apply_membership(ctx: TxContext, msg: ApplyMembership) -> None:
    keeper = _keeper(ctx)
    _require_unregistered(keeper, ctx.sender)
    if keeper.proposal("admit", ctx.sender) is not None:
        raise TxFailure(Code.CONFLICT, f"{ctx.sender} has already applied")
    _require_free_validator_key(keeper, msg.validator_pub_key)
    _redeem_voucher(ctx, keeper, "apply_membership", msg.voucher)
    keeper.put_proposal(
        {
            "action": "admit",
            "subject": ctx.sender,
            "name": msg.name,
            "encryption_key": msg.encryption_key,
            "validator_pub_key": msg.validator_pub_key,
            "approvals": [],
            "opened_at": ctx.height,
            "sponsor": msg.voucher.org,
        }
    )
    ctx.emit(MembershipApplied(ctx.sender))


def _require_free_validator_key(keeper: IdentityKeeper, validator_pub_key: str) -> None:
    """Two members with one consensus key would make their removals remove it twice, which
    CometBFT refuses by halting: a key already a member's is refused."""
    holder = keeper.member_with_validator_key(validator_pub_key) if validator_pub_key else None
    if holder is not None:
        raise TxFailure(Code.CONFLICT, f"validator key {validator_pub_key} is already {holder}'s")


def approve_membership(ctx: TxContext, msg: ApproveMembership) -> None:
    keeper = _keeper(ctx)
    _require_member(keeper, ctx.sender)
    if msg.subject == ctx.sender:
        raise TxFailure(Code.INVALID_PAYLOAD, "a member cannot vote on its own membership")
    proposal = keeper.proposal(msg.action, msg.subject) or _open_removal(keeper, msg)
    if ctx.sender in proposal["approvals"]:
        raise TxFailure(Code.CONFLICT, f"{ctx.sender} has already approved")
    proposal["approvals"] = sorted([*proposal["approvals"], ctx.sender])
    voters = [m["did"] for m in keeper.members() if m["did"] != msg.subject]
    if _carried(msg.action, proposal["approvals"], voters):
        keeper.close_proposal(msg.action, msg.subject)
        (_admit if msg.action == "admit" else _remove)(keeper, ctx, proposal)
    else:
        keeper.put_proposal(proposal)
        ctx.emit(MembershipApproved(msg.action, msg.subject, ctx.sender))


def _carried(action: str, approvals: list[str], voters: list[str]) -> bool:
    """Two thirds of the members who may vote; for a removal, also at least two of them.

    In a consortium of two, one vote was two thirds of the one voter: either member could
    expel the other and take all the voting power (the removed validator signs the block
    that removes it like any other). Two members now remove neither; to remove one they
    first admit a third (docs/security.md, the two-member case).
    """
    minimum = MIN_REMOVAL_APPROVALS if action == "remove" else 1
    return votes.carried(approvals, voters, minimum)


def _open_removal(keeper: IdentityKeeper, msg: ApproveMembership) -> dict[str, Any]:
    if msg.action == "admit":
        raise TxFailure(Code.NOT_FOUND, f"{msg.subject} has not applied for membership")
    if not keeper.is_member(msg.subject):
        raise TxFailure(Code.NOT_FOUND, f"{msg.subject} is not a member")
    return {"action": "remove", "subject": msg.subject, "approvals": []}


def _admit(keeper: IdentityKeeper, ctx: TxContext, proposal: dict[str, object]) -> None:
    did = str(proposal["subject"])
    vkey = str(proposal["validator_pub_key"])
    _require_free_validator_key(keeper, vkey)  # another applicant may have taken it since
    _require_unregistered(keeper, did)  # e.g. registered as a patient while the vote ran
    _claim_own_key(keeper, did)
    ident = _new_identity(ctx, did, "organisation", str(proposal["encryption_key"]))
    ident["name"] = proposal["name"]
    keeper.put_identity(ident)
    keeper.put_member(
        {"did": did, "name": proposal["name"], "validator_pub_key": vkey, "since": ctx.height}
    )
    if vkey:
        ctx.validator_updates.append(ValidatorUpdate(bytes.fromhex(vkey), VALIDATOR_POWER))
    ctx.emit(MemberAdmitted(did))


def _remove(keeper: IdentityKeeper, ctx: TxContext, proposal: dict[str, object]) -> None:
    did = str(proposal["subject"])
    member = keeper.kv.get(f"member/{did}")
    keeper.remove_member(did)
    ident = keeper.identity(did)
    if ident is not None:
        keeper.put_identity({**ident, "active": False})
    if member and member.get("validator_pub_key"):
        ctx.validator_updates.append(ValidatorUpdate(bytes.fromhex(member["validator_pub_key"]), 0))
    ctx.emit(MemberRemoved(did))


def init_genesis(ctx: TxContext, genesis: Genesis) -> None:
    keeper = _keeper(ctx)
    for org in genesis.organisations:
        _claim_own_key(keeper, org.did)  # founders' dids are distinct, so are their keys
        ident = _new_identity(ctx, org.did, "organisation", org.encryption_key)
        ident["name"] = org.name
        keeper.put_identity(ident)
        keeper.put_member(
            {
                "did": org.did,
                "name": org.name,
                "validator_pub_key": org.validator_pub_key,
                "since": 0,
            }
        )
        if org.node:
            _claim_own_key(keeper, org.node)  # Genesis refuses a node did twice or a founder's
            node = _new_identity(ctx, org.node, "node", org.node_encryption_key)
            keeper.put_identity({**node, "org": org.did, "name": f"{org.name} node"})
