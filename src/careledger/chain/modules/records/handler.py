"""The records module's rules: who may anchor a record version, scope keys, erasure.

- The patient must be a registered, active patient identity.
- The author (the sender) must be the patient, a member organisation, or an active
  practitioner of a member organisation (`IdentityKeeper.acting_for`).
- Version 1 fixes the record's organisation (`org`: the one its author acted for, "" when
  the patient wrote it). Later versions and tombstones come from the patient or from someone
  acting for that same organisation (it or any of its active practitioners); no other
  member may overwrite or tombstone a record it did not start. Once that organisation is
  removed nobody acts for it, so the patient alone may add versions.
- A version is exactly the last one plus one (else CONFLICT), so that two writers racing on
  the same record cannot both win; an erased record takes no new version.
- A blob anchors one record version only: erasing one record must not delete another's blob.
- Data keys are wrapped to the patient's *current* scope key (a revoked epoch takes no new
  record), exactly one per version: its scope is the record's, fixed by version 1 (later
  versions keep it, else CONFLICT). Dids may be recipients too (e.g. the author keeping
  access to what it wrote).
- Each version records `org`, the organisation its author wrote it for ("" for the
  patient): the read decision lets that organisation read that version without a grant, and
  no other version (a correction the patient wrote is not its author organisation's).
- Write consent: version 1 by anyone but the patient needs the patient's active write grant
  to the author's organisation or to the author itself, covering the record's scope at the
  block's time (`ConsentKeeper.may_write`); otherwise NO_CONSENT, naming what is missing.
- A scope key is published with the patient's signature over `scope_key_statement` by their
  current key (UNAUTHORISED otherwise); it is stored, and `records/scope_keys` returns it.
- `records/anchor_batch`: up to 100 anchors of one author, each under every rule above,
  all or nothing (the first refusal names its anchor and fails the whole batch).
- Erasure is the patient's alone; the event lists the blob hashes every node must delete.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.modules.base import TxContext
from careledger.chain.modules.consent import MODULE as CONSENT
from careledger.chain.modules.consent import ConsentKeeper
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.modules.records.events import (
    RecordAnchored,
    RecordsErased,
    ScopeKeyPublished,
)
from careledger.chain.modules.records.keeper import MODULE, RecordsKeeper
from careledger.chain.modules.records.messages import (
    Anchor,
    AnchorBatch,
    Erase,
    PublishScopeKey,
    parse_scope_label,
)
from careledger.crypto.keys import verify_signature
from careledger.crypto.statements import scope_key_statement


def _keeper(ctx: TxContext) -> RecordsKeeper:
    return RecordsKeeper(ctx.kv(MODULE))


def _identities(ctx: TxContext) -> IdentityKeeper:
    return IdentityKeeper(ctx.kv("identity"))


def _require_patient(ctx: TxContext, did: str) -> None:
    if _identities(ctx).active(did, "patient") is None:
        raise TxFailure(Code.NOT_FOUND, f"{did} is not a registered active patient")


def _author_org(ctx: TxContext, patient: str) -> str:
    """The organisation the sender writes for ("" for the patient itself): the member itself
    or the member an active practitioner belongs to. UNAUTHORISED for anyone else (another
    patient, a removed organisation's practitioners)."""
    if ctx.sender == patient:
        return ""
    org = _identities(ctx).acting_for(ctx.sender)
    if org is None:
        raise TxFailure(
            Code.UNAUTHORISED,
            f"{ctx.sender} may not write records: not the patient, a member organisation "
            "or an active practitioner of one",
        )
    return org


def _require_same_org(rec: dict[str, Any], author_org: str) -> None:
    """A later version or tombstone: the patient, or the record's own organisation."""
    if author_org == "" or author_org == rec["org"]:
        return
    owner = f"organisation {rec['org']}" if rec["org"] else "the patient"
    raise TxFailure(
        Code.UNAUTHORISED,
        f"record {rec['record']} was started by {owner}: only it or the patient may add "
        f"versions or tombstones, not {author_org}",
    )


def _require_current_scopes(keeper: RecordsKeeper, msg: Anchor) -> None:
    for label in msg.recipients:
        parsed = parse_scope_label(label)
        if parsed is None:
            continue  # a did recipient: the writer's own business
        current = keeper.current_scope_key(msg.patient, parsed[0])
        if current is None or current["epoch"] != parsed[1]:
            now = f"epoch {current['epoch']}" if current else "none published"
            raise TxFailure(
                Code.CONFLICT, f"{label} is not the patient's current scope key ({now})"
            )


def _require_same_scope(rec: dict[str, Any], msg: Anchor) -> str:
    """The version's scope: the record's (fixed by version 1), which a later version keeps."""
    scope = msg.scope_key[0] if msg.scope_key else rec["scope"]
    if rec["versions"] and scope != rec["scope"]:
        raise TxFailure(
            Code.CONFLICT,
            f"record {msg.record} is in scope {rec['scope']}: a version cannot move it to {scope}",
        )
    return str(scope)


def _require_write_consent(ctx: TxContext, msg: Anchor, author_org: str, scope: str) -> None:
    """A new record of the patient by anyone else needs the patient's write consent."""
    if msg.version != 1 or author_org == "":
        return
    decision = ConsentKeeper(ctx.kv(CONSENT)).may_write(
        msg.patient, ctx.sender, author_org, scope, ctx.unix_seconds
    )
    if not decision.allowed:
        raise TxFailure(
            Code.NO_CONSENT,
            f"no write consent of {msg.patient} for {ctx.sender} (acting for {author_org}) "
            f"in scope {scope}: {decision.reason}",
        )


def _checked_record(
    ctx: TxContext, keeper: RecordsKeeper, msg: Anchor
) -> tuple[dict[str, Any], str]:
    """The record this anchor adds a version to (new for version 1) with its scope, and the
    organisation the author writes for ("" for the patient), once every rule of who may add
    which version holds."""
    author_org = _author_org(ctx, msg.patient)
    rec = keeper.record(msg.patient, msg.record) or {
        "record": msg.record,
        "resource_type": msg.resource_type,
        "versions": 0,
        "erased_at": 0,
        "org": author_org,
        "scope": "",
    }
    _require_same_org(rec, author_org)
    if rec["erased_at"]:
        raise TxFailure(Code.ERASED, f"record {msg.record} is erased: it takes no new version")
    if rec["resource_type"] != msg.resource_type:
        raise TxFailure(Code.CONFLICT, f"record {msg.record} is a {rec['resource_type']}")
    if msg.version != rec["versions"] + 1:
        raise TxFailure(
            Code.CONFLICT,
            f"version conflict: record {msg.record} is at version {rec['versions']}, "
            f"so the next is {rec['versions'] + 1}, not {msg.version}",
        )
    scope = _require_same_scope(rec, msg)
    _require_write_consent(ctx, msg, author_org, scope)
    return {**rec, "scope": scope}, author_org


def anchor(ctx: TxContext, msg: Anchor) -> None:
    _require_patient(ctx, msg.patient)
    keeper = _keeper(ctx)
    rec, author_org = _checked_record(ctx, keeper, msg)
    if not msg.tombstone:
        if keeper.blob(msg.blob_hash) is not None:
            raise TxFailure(Code.CONFLICT, f"blob {msg.blob_hash} already anchors a record")
        _require_current_scopes(keeper, msg)
        keeper.put_blob(msg.blob_hash, msg.patient, msg.record, msg.version)
    keeper.put_version(
        msg.patient,
        msg.record,
        {
            "version": msg.version,
            "blob_hash": msg.blob_hash,
            "commitment": msg.commitment,
            "recipients": list(msg.recipients),
            "scope": rec["scope"],
            "author": ctx.sender,
            "org": author_org,
            "tombstone": msg.tombstone,
            "height": ctx.height,
        },
    )
    keeper.put_record(msg.patient, {**rec, "versions": msg.version})
    ctx.emit(RecordAnchored(msg.patient, msg.record, str(msg.version), msg.blob_hash, ctx.sender))


def anchor_batch(ctx: TxContext, msg: AnchorBatch) -> None:
    """Each anchor as `anchor` applies it, in order, each seeing the ones before it; the
    first refusal fails the transaction, whose writes are then all discarded (the
    application keeps only the spent nonce), so a batch is written whole or not at all."""
    for index, item in enumerate(msg.anchors):
        try:
            anchor(ctx, item)
        except TxFailure as failure:
            raise TxFailure(
                failure.code, f"anchor {index} of {len(msg.anchors)}: {failure.log}"
            ) from None


def _require_signed_by_patient(ctx: TxContext, msg: PublishScopeKey) -> None:
    statement = scope_key_statement(ctx.chain_id, ctx.sender, msg.scope, msg.epoch, msg.public_key)
    key = _identities(ctx).signing_key(ctx.sender)
    if not verify_signature(key, bytes.fromhex(msg.signature), statement):
        raise TxFailure(
            Code.UNAUTHORISED,
            f"the scope key's signature does not verify with {ctx.sender}'s current key",
        )


def publish_scope_key(ctx: TxContext, msg: PublishScopeKey) -> None:
    _require_patient(ctx, ctx.sender)
    _require_signed_by_patient(ctx, msg)
    keeper = _keeper(ctx)
    current = keeper.current_scope_key(ctx.sender, msg.scope)
    if current is not None and msg.epoch <= current["epoch"]:
        raise TxFailure(
            Code.CONFLICT,
            f"scope {msg.scope} is at epoch {current['epoch']}: a new key needs a higher epoch",
        )
    keeper.put_scope_key(
        ctx.sender,
        {
            "scope": msg.scope,
            "epoch": msg.epoch,
            "public_key": msg.public_key,
            "signature": msg.signature,
            "height": ctx.height,
        },
    )
    ctx.emit(ScopeKeyPublished(ctx.sender, msg.scope, str(msg.epoch)))


def erase(ctx: TxContext, msg: Erase) -> None:
    _require_patient(ctx, ctx.sender)
    keeper = _keeper(ctx)
    if msg.all:
        targets = [r for r in keeper.records_of(ctx.sender) if not r["erased_at"]]
    else:
        targets = [_erasable(keeper, ctx.sender, name) for name in msg.records]
    blob_hashes: list[str] = []
    for rec in targets:
        for version in keeper.versions(ctx.sender, rec["record"]):
            if version["blob_hash"]:
                blob_hashes.append(version["blob_hash"])
        keeper.put_record(ctx.sender, {**rec, "erased_at": ctx.height})
    ctx.emit(RecordsErased(ctx.sender, tuple(r["record"] for r in targets), tuple(blob_hashes)))


def _erasable(keeper: RecordsKeeper, patient: str, name: str) -> dict[str, object]:
    rec = keeper.record(patient, name)
    if rec is None:
        raise TxFailure(Code.NOT_FOUND, f"the patient has no record {name}")
    if rec["erased_at"]:
        raise TxFailure(Code.ERASED, f"record {name} is already erased")
    return rec


def init_genesis(ctx: TxContext, genesis: Genesis) -> None:
    """The records module starts empty."""
