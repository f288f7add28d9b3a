"""The consent module's rules: who may grant, to whom, what, and until when.

- A grant, a revocation or a key share is sent by the patient, or by an active delegate of
  the patient (a guardian, a proxy: someone the patient named with a `delegate` grant). A
  delegate acts within its delegation: it may not create delegate grants (nor revoke or add
  keys to one), it grants only scopes its delegation names, and only for a period inside its
  delegation's. The grant records the delegation it was made under (`delegation`).
- The grantee of a read or write grant is an organisation that is a member, or an active
  practitioner of one (a practitioner-level grant; its organisation is recorded as `org`).
  A delegate is any identity that may act, other than the patient.
- The period is in unix seconds, start before end, and must not have ended at the block's
  time. Key wraps name a scope of the grant and a (scope, epoch) the patient published.
- A patient has at most MAX_LIVE_GRANTS live grants: beyond, expired ones are pruned, and if
  none has expired the grant is CONFLICT.
- A grant is revoked once, by the patient, a delegate (not a delegate grant), or its grantee
  (renouncing it); from the next block no decision counts it. Revoking a delegation (by the
  patient, or by the delegate renouncing it) revokes with it every live grant its delegate
  made under it, in the same transaction: a delegate's grants never outlive its authority.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.modules.audit import AuditKeeper, BreakGlassAlert
from careledger.chain.modules.base import TxContext
from careledger.chain.modules.consent.events import (
    ConsentGranted,
    ConsentKeysShared,
    ConsentRevoked,
    EmergencyOpened,
)
from careledger.chain.modules.consent.keeper import MAX_LIVE_GRANTS, MODULE, ConsentKeeper
from careledger.chain.modules.consent.messages import (
    DELEGATE,
    BreakGlass,
    Grant,
    KeyWrap,
    OpenEmergency,
    Revoke,
    ShareKeys,
    emergency_threshold,
)
from careledger.chain.modules.identity import IdentityKeeper


def _keeper(ctx: TxContext) -> ConsentKeeper:
    return ConsentKeeper(ctx.kv(MODULE))


def _acting_delegation(
    keeper: ConsentKeeper,
    ctx: TxContext,
    patient: str,
    action: str,
    scopes: Sequence[str],
    period: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """None when the sender is the patient; else the sender's active delegation of the
    patient under which it may act on a grant of `action` in `scopes` (and, for a new grant,
    lasting `period`): UNAUTHORISED when it holds none. A delegate's authority is its
    delegation's: never a delegate grant, no scope its delegation does not name, and no
    grant running before or after its delegation (a guardian named until June cannot grant
    reads until 2100)."""
    if ctx.sender == patient:
        return None
    delegations = keeper.delegations(patient, ctx.sender, ctx.unix_seconds)
    if not delegations:
        raise TxFailure(
            Code.UNAUTHORISED,
            f"{ctx.sender} is neither the patient {patient} nor an active delegate of the patient",
        )
    if action == DELEGATE:
        raise TxFailure(
            Code.UNAUTHORISED, "a delegate may not create, change or revoke a delegate grant"
        )
    refusals = [_outside(delegation, scopes, period) for delegation in delegations]
    for delegation, refusal in zip(delegations, refusals, strict=True):
        if not refusal:
            return delegation
    raise TxFailure(Code.UNAUTHORISED, refusals[0])


def _outside(
    delegation: dict[str, Any], scopes: Sequence[str], period: tuple[int, int] | None
) -> str:
    """Why a delegate may not act under this delegation ("" when it may)."""
    outside = [s for s in scopes if s not in delegation["scopes"]]
    if outside:
        return f"delegation {delegation['id']} does not cover scope(s) {', '.join(outside)}"
    if period is not None:
        start, end = period
        if start < delegation["start"] or end > delegation["end"]:
            return (
                f"delegation {delegation['id']} runs from {delegation['start']} to "
                f"{delegation['end']}: a grant by its delegate must lie within it, not run "
                f"from {start} to {end}"
            )
    return ""


def _grantee_org(identities: IdentityKeeper, msg: Grant) -> str:
    """The grantee's organisation (itself for an organisation, "" for a delegate that is a
    patient); NOT_FOUND "unknown grantee" for anyone a grant of this action cannot name."""
    ident = identities.acting_identity(msg.grantee)
    if ident is not None and msg.grantee != msg.patient:
        if ident["kind"] == "organisation":
            return msg.grantee
        if ident["kind"] == "practitioner":
            return str(ident["org"])
        if msg.action == DELEGATE:
            return ""  # another patient: a parent, a partner
    wanted = (
        "any active identity other than the patient"
        if msg.action == DELEGATE
        else "a member organisation or an active practitioner of one"
    )
    raise TxFailure(
        Code.NOT_FOUND, f"unknown grantee {msg.grantee}: a {msg.action} grant names {wanted}"
    )


def _require_published(ctx: TxContext, patient: str, keys: tuple[KeyWrap, ...]) -> None:
    # Imported here: the records module asks this one for write consent (records -> consent
    # at import time), so this one reaches the records keeper only when a grant runs.
    from careledger.chain.modules.records import MODULE as RECORDS
    from careledger.chain.modules.records import RecordsKeeper

    records = RecordsKeeper(ctx.kv(RECORDS))
    for key in keys:
        if records.scope_key(patient, key.scope, key.epoch) is None:
            raise TxFailure(
                Code.NOT_FOUND,
                f"the patient published no {key.scope} scope key at epoch {key.epoch}",
            )


def _make_room(keeper: ConsentKeeper, patient: str, now: int) -> None:
    if keeper.live_count(patient) < MAX_LIVE_GRANTS:
        return
    keeper.prune_expired(patient, now)
    if keeper.live_count(patient) >= MAX_LIVE_GRANTS:
        raise TxFailure(
            Code.CONFLICT,
            f"the patient has {MAX_LIVE_GRANTS} active grants, the most there may be: revoke one",
        )


def grant(ctx: TxContext, msg: Grant) -> None:
    keeper, now = _keeper(ctx), ctx.unix_seconds
    delegation = _acting_delegation(
        keeper, ctx, msg.patient, msg.action, msg.scopes, (msg.start, msg.end)
    )
    if keeper.identities.active(msg.patient, "patient") is None:
        raise TxFailure(Code.NOT_FOUND, f"{msg.patient} is not a registered active patient")
    if keeper.grant(msg.id) is not None:
        raise TxFailure(Code.CONFLICT, f"grant id {msg.id} is taken: choose another")
    org = _grantee_org(keeper.identities, msg)
    if msg.end <= now:
        raise TxFailure(
            Code.INVALID_PAYLOAD,
            f"expired or inverted period: it ends at {msg.end}, not after the block time {now}",
        )
    _require_published(ctx, msg.patient, msg.keys)
    _make_room(keeper, msg.patient, now)
    keeper.put_grant(
        {
            "id": msg.id,
            "patient": msg.patient,
            "grantee": msg.grantee,
            "action": msg.action,
            "scopes": list(msg.scopes),
            "records": list(msg.records),
            "purposes": list(msg.purposes),
            "start": msg.start,
            "end": msg.end,
            "org": org,
            "grantor": ctx.sender,
            "delegation": delegation["id"] if delegation else "",
            "height": ctx.height,
            "revoked_at": 0,
        }
    )
    for key in msg.keys:
        keeper.put_key(msg.id, key)
    if msg.naming_key:
        keeper.put_naming_key(msg.id, msg.naming_key)
    ctx.emit(ConsentGranted(msg.patient, msg.id, msg.grantee, msg.action))


def _existing(keeper: ConsentKeeper, grant_id: str) -> dict[str, Any]:
    found = keeper.grant(grant_id)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no grant {grant_id}")
    return found


def _require_not_revoked(found: dict[str, Any]) -> None:
    if found["revoked_at"]:
        raise TxFailure(
            Code.CONFLICT, f"grant {found['id']} was revoked at height {found['revoked_at']}"
        )


def revoke(ctx: TxContext, msg: Revoke) -> None:
    keeper = _keeper(ctx)
    found = _existing(keeper, msg.id)
    if ctx.sender != found["grantee"]:  # a grantee may always renounce its own grant
        _acting_delegation(keeper, ctx, found["patient"], found["action"], found["scopes"])
    _require_not_revoked(found)
    # A delegation takes the grants its delegate made under it along (in this same state
    # change): each gets its own event, the delegation's last.
    for revoked in keeper.revoke(found, ctx.height):
        ctx.emit(ConsentRevoked(revoked["patient"], revoked["id"], revoked["grantee"]))


def share_keys(ctx: TxContext, msg: ShareKeys) -> None:
    keeper = _keeper(ctx)
    found = _existing(keeper, msg.id)
    scopes = sorted({k.scope for k in msg.keys})
    _acting_delegation(keeper, ctx, found["patient"], found["action"], scopes)
    _require_not_revoked(found)
    if found["end"] <= ctx.unix_seconds:
        raise TxFailure(Code.CONFLICT, f"grant {found['id']} expired at {found['end']}")
    for key in msg.keys:
        if key.scope not in found["scopes"]:
            raise TxFailure(
                Code.INVALID_PAYLOAD,
                f"a key for scope {key.scope}, which grant {found['id']} does not name",
            )
        if keeper.has_key(found["id"], key.scope, key.epoch):
            raise TxFailure(
                Code.CONFLICT,
                f"grant {found['id']} already has the {key.scope} key of epoch {key.epoch}",
            )
    if msg.naming_key and keeper.naming_key(found["id"]):
        raise TxFailure(Code.CONFLICT, f"grant {found['id']} already has the naming key")
    _require_published(ctx, found["patient"], msg.keys)
    for key in msg.keys:
        keeper.put_key(found["id"], key)
    if msg.naming_key:
        keeper.put_naming_key(found["id"], msg.naming_key)
    ctx.emit(ConsentKeysShared(found["patient"], found["id"]))


# --- break-glass ----------------------------------------------------------------------------


def open_emergency(ctx: TxContext, msg: OpenEmergency) -> None:
    """The patient escrows its emergency keys (docs/chain.md "Break-glass"): only the patient,
    to exactly the current members, with k at least EMERGENCY_THRESHOLD, and epochs that are
    the patient's current ones. A new escrow replaces the previous one."""
    keeper = _keeper(ctx)
    if keeper.identities.active(ctx.sender, "patient") is None:
        raise TxFailure(
            Code.UNAUTHORISED, "only a patient opens emergency access, to its own records"
        )
    current = sorted(str(m["did"]) for m in keeper.identities.members())
    if list(msg.members) != current:
        raise TxFailure(
            Code.CONFLICT,
            f"the escrow names members {', '.join(msg.members)} but the current members are "
            f"{', '.join(current)}: split it among exactly the current members",
        )
    least = emergency_threshold(len(current))
    if msg.threshold < least:
        raise TxFailure(
            Code.INVALID_PAYLOAD,
            f"threshold {msg.threshold} is below the policy's {least} of {len(current)} members "
            "(ceil(2n/3))",
        )
    _require_current_epochs(ctx, ctx.sender, msg.epochs)
    keeper.put_emergency(
        ctx.sender,
        {
            "patient": ctx.sender,
            "escrow": msg.escrow,
            "scopes": list(msg.scopes),
            "sensitive": msg.sensitive,
            "threshold": msg.threshold,
            "members": list(msg.members),
            "shares": [s.to_json() for s in msg.shares],
            "sealed": msg.sealed,
            "epochs": dict(msg.epochs),
            "height": ctx.height,
        },
    )
    ctx.emit(EmergencyOpened(ctx.sender, msg.escrow, msg.scopes))


def _require_current_epochs(
    ctx: TxContext, patient: str, epochs: tuple[tuple[str, int], ...]
) -> None:
    from careledger.chain.modules.records import MODULE as RECORDS
    from careledger.chain.modules.records import RecordsKeeper

    records = RecordsKeeper(ctx.kv(RECORDS))
    for scope, epoch in epochs:
        current = records.current_scope_key(patient, scope)
        if current is None or current["epoch"] != epoch:
            now = current["epoch"] if current else "none"
            raise TxFailure(
                Code.CONFLICT,
                f"the escrow holds the {scope} key of epoch {epoch}, but the patient's current "
                f"{scope} epoch is {now}",
            )


def break_glass(ctx: TxContext, msg: BreakGlass) -> None:
    """A practitioner of a member breaks the glass (docs/chain.md "Break-glass"): a stated
    reason, only the scopes the patient opened (sensitive only if it opted in), at most
    MAX_BREAK_GLASS_SECONDS. Recorded with an alert the patient sees first (the audit
    module's), in this same transaction: no member's node releases a share before both are
    committed."""
    keeper = _keeper(ctx)
    org = _breaking_practitioner_org(keeper, ctx.sender)
    if keeper.identities.active(msg.patient, "patient") is None:
        raise TxFailure(Code.NOT_FOUND, f"{msg.patient} is not a registered active patient")
    escrow = keeper.emergency(msg.patient)
    if escrow is None:
        raise TxFailure(
            Code.NOT_FOUND,
            f"{msg.patient} opened no scope to emergency access (no escrow): nothing could be "
            "released",
        )
    _require_opened(escrow, msg.scopes)
    now = ctx.unix_seconds
    running = keeper.active_break_glass(msg.patient, ctx.sender, now)
    if running is not None:
        raise TxFailure(
            Code.CONFLICT,
            f"break-glass {running['id']} of {ctx.sender} for this patient runs until "
            f"{running['until']}",
        )
    glass = {
        "id": ctx.tx_hash[:32],
        "patient": msg.patient,
        "requester": ctx.sender,
        "org": org,
        "reason": msg.reason,
        "scopes": list(msg.scopes),
        "escrow": escrow["escrow"],
        # Every escrowed scope's epoch: the bundle a requester opens holds all of them, so
        # the patient's rotation afterwards covers all of them (wallet/break_glass.py).
        "epochs": dict(escrow["epochs"]),
        "start": now,
        "until": now + msg.seconds,
        "height": ctx.height,
    }
    if len(glass["id"]) != 32:
        raise TxFailure(Code.INTERNAL, "a break-glass is recorded only in a block")
    keeper.put_break_glass(glass)
    _raise_alert(ctx, glass)


def _breaking_practitioner_org(keeper: ConsentKeeper, sender: str) -> str:
    """The member organisation of the practitioner breaking the glass; UNAUTHORISED for
    anyone else (a patient, an organisation itself, a node: a break-glass names the person)."""
    ident = keeper.identities.identity(sender)
    kind = str(ident["kind"]) if ident else "unregistered identity"
    if kind != "practitioner":
        article = "an" if kind[0] in "aeiou" else "a"
        raise TxFailure(
            Code.UNAUTHORISED,
            f"{article} {kind} cannot break the glass: only a practitioner of a member "
            "organisation, by name",
        )
    org = keeper.identities.acting_for(sender)
    if org is None:  # authentication refuses these already; kept for any other caller
        raise TxFailure(Code.UNAUTHORISED, f"{sender} does not act for a member organisation")
    return org


def _require_opened(escrow: dict[str, Any], scopes: Sequence[str]) -> None:
    if "sensitive" in scopes and not escrow["sensitive"]:
        raise TxFailure(
            Code.UNAUTHORISED,
            "the patient did not open the sensitive scope to emergency access (no opt-in)",
        )
    closed = [s for s in scopes if s not in escrow["scopes"]]
    if closed:
        raise TxFailure(
            Code.UNAUTHORISED,
            f"scope(s) {', '.join(closed)} not opened to emergency access by the patient "
            f"(opened: {', '.join(escrow['scopes'])})",
        )


def _raise_alert(ctx: TxContext, glass: dict[str, Any]) -> None:
    """The patient's alert, in the audit module's state and as its typed event."""
    alert = {k: glass[k] for k in ("id", "requester", "org", "reason", "scopes", "start")}
    AuditKeeper.of(ctx).record_alert(glass["patient"], {**alert, "until": glass["until"]})
    ctx.emit(
        BreakGlassAlert(
            glass["patient"],
            glass["id"],
            glass["requester"],
            glass["org"],
            tuple(glass["scopes"]),
            str(glass["until"]),
        )
    )


def init_genesis(ctx: TxContext, genesis: Genesis) -> None:
    """The consent module starts empty: every grant is a patient's transaction."""
