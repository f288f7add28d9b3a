"""The audit module's rules: who may record a batch of access entries, and when.

- Only a node identity sends `audit/record_batch` (an organisation, a practitioner, a patient
  is refused), and only while its organisation is a member (chain/auth.py refuses a node of a
  removed organisation before this runs). The batch names its node, which must be the sender:
  a node cannot record entries as another node, of its organisation or another's. The batch's
  organisation is the chain's word (the node's `org`), never the payload's.
- Batches of a node are numbered 1, 2, ... without gaps: a replayed batch (a number already
  recorded) is BATCH_REPLAYED, one that skips a number BATCH_GAP, so a node cannot drop a
  batch it signed and a patient can count a node's batches.
- An entry that names a record names a record of that patient at a version it has
  (BAD_BATCH otherwise): a node cannot fill a patient's log with reads of another patient's
  records, or of records that do not exist.
- The batch's base time is at most MAX_BATCH_AGE before the block's time and its last entry at
  most MAX_CLOCK_AHEAD after it: a node's entries carry the node's clock, and a node that held
  its entries back for a day, or dated them ahead, is refused (BAD_BATCH).
"""

from __future__ import annotations

from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.modules.audit.events import AccessBatchRecorded
from careledger.chain.modules.audit.keeper import AuditKeeper
from careledger.chain.modules.audit.messages import RecordBatch
from careledger.chain.modules.base import TxContext
from careledger.chain.modules.identity import MODULE as IDENTITY
from careledger.chain.modules.identity import IdentityKeeper

MAX_BATCH_AGE = 86_400  # seconds a batch's time may lie before its block's
MAX_CLOCK_AHEAD = 300  # seconds an entry's time may lie after its block's (clock skew)


def init_genesis(ctx: TxContext, genesis: Genesis) -> None:
    """Nothing: the audit state starts empty."""


def record_batch(ctx: TxContext, msg: RecordBatch) -> None:
    org = _sending_node_org(IdentityKeeper(ctx.kv(IDENTITY)), ctx.sender)
    if msg.node != ctx.sender:
        raise TxFailure(
            Code.UNAUTHORISED, f"batch names node {msg.node} but is signed by {ctx.sender}"
        )
    keeper = AuditKeeper.of(ctx)
    _require_next(keeper, msg)
    _require_timely(ctx, msg)
    _require_patients_records(ctx, msg)
    batch = keeper.record_batch(msg.node, org, msg.seq, msg.entries)
    ctx.emit(AccessBatchRecorded(msg.node, org, str(msg.seq), str(batch["count"]), batch["root"]))


def _sending_node_org(identities: IdentityKeeper, sender: str) -> str:
    """The organisation of the sending node; UNAUTHORISED for any other sender."""
    ident = identities.acting_identity(sender)
    if ident is None or ident["kind"] != "node":
        kind = ident["kind"] if ident is not None else "not an identity that may act"
        raise TxFailure(
            Code.UNAUTHORISED, f"only a node sends audit batches: {sender} is {_a(kind)}"
        )
    return str(ident["org"])


def _a(kind: str) -> str:
    return kind if kind.startswith("not") else ("an " if kind[0] in "aeiou" else "a ") + kind


def _require_next(keeper: AuditKeeper, msg: RecordBatch) -> None:
    last = keeper.last_seq(msg.node)
    if msg.seq <= last:
        raise TxFailure(Code.BATCH_REPLAYED, f"batch {msg.seq} of node {msg.node} already recorded")
    if msg.seq != last + 1:
        raise TxFailure(
            Code.BATCH_GAP,
            f"expected batch {last + 1} of node {msg.node}, not {msg.seq}: batches are not skipped",
        )


def _require_timely(ctx: TxContext, msg: RecordBatch) -> None:
    now = ctx.unix_seconds
    if msg.time < now - MAX_BATCH_AGE:
        raise TxFailure(
            Code.BAD_BATCH,
            f"batch time {msg.time} is more than {MAX_BATCH_AGE} s before the block's ({now})",
        )
    if msg.last_at > now + MAX_CLOCK_AHEAD:
        raise TxFailure(
            Code.BAD_BATCH,
            f"an entry at {msg.last_at} is more than {MAX_CLOCK_AHEAD} s after the block's"
            f" time ({now})",
        )


def _require_patients_records(ctx: TxContext, msg: RecordBatch) -> None:
    """Every entry naming a record names a record of its patient, at a version the record
    has: a node cannot put into a patient's log reads of another patient's records, or of
    records that do not exist (an honest node's entries come from the chain's own read
    decision, on a state no newer than the block's). One index seek per distinct record."""
    from careledger.chain.modules.records import MODULE as RECORDS  # (records -> consent -> audit)
    from careledger.chain.modules.records import RecordsKeeper

    records = RecordsKeeper(ctx.kv(RECORDS))
    versions: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(msg.entries):
        if not entry.record:
            continue
        key = (entry.patient, entry.record)
        if key not in versions:
            found = records.record_by_prefix(entry.patient, entry.record)
            versions[key] = int(found["versions"]) if found is not None else 0
        if entry.version > versions[key]:
            raise TxFailure(
                Code.BAD_BATCH,
                f"entry {index}: patient {entry.patient} has no record {entry.record} at version "
                f"{entry.version}: an entry names a record of its own patient",
            )
