"""The upgrade module's rules: members agree on a planned upgrade, by the membership vote.

- One plan is open at a time. A member proposes {name, height, version}; the proposal is
  its first approval. The plan is *scheduled* when two thirds of the members approve it
  (chain/modules/votes.py, the count the identity module's membership votes use).
- The height is at least MIN_NOTICE_BLOCKS after the block that proposes it, so that
  operators have time to install the new software; the version is above the chain's active
  rules version.
- A vote names the whole plan and counts only for a plan that says exactly that.
- A plan still in its vote when its height comes lapses at that height (chain/app.py asks
  `due` at the start of every block): a plan is never scheduled for a height already past.
- Cancelling: the proposer withdraws its own plan alone while it is not scheduled; a
  scheduled plan is cancelled by two thirds of the members, as it was scheduled.
- At a scheduled plan's height, before the block's first transaction, chain/app.py either
  records the new version (`apply`) or, when this software does not support that version,
  stops the node before executing the block (UpgradeRequired): the block is never executed
  under rules the chain no longer runs.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.modules import votes
from careledger.chain.modules.base import TxContext
from careledger.chain.modules.identity import MODULE as IDENTITY
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.modules.upgrade.events import (
    UpgradeApproved,
    UpgradeCancelled,
    UpgradeCancelVoted,
    UpgradeProposed,
    UpgradeScheduled,
)
from careledger.chain.modules.upgrade.keeper import MODULE, Plan, UpgradeKeeper
from careledger.chain.modules.upgrade.messages import (
    ApproveUpgrade,
    CancelUpgrade,
    ProposeUpgrade,
)
from careledger.chain.state import KV

# Blocks between the block that proposes a plan and the plan's height, at the least.
MIN_NOTICE_BLOCKS = 20


def _keeper(ctx: TxContext) -> UpgradeKeeper:
    return UpgradeKeeper(ctx.kv(MODULE))


def _voters(ctx: TxContext) -> list[str]:
    """The member organisations, who vote; UNAUTHORISED unless the sender is one of them."""
    identity = IdentityKeeper(ctx.kv(IDENTITY))
    if not identity.is_member(ctx.sender):
        raise TxFailure(Code.UNAUTHORISED, f"{ctx.sender} is not a member organisation")
    return [str(m["did"]) for m in identity.members()]


def _open_plan(keeper: UpgradeKeeper, name: str) -> dict[str, Any]:
    plan = keeper.plan()
    if plan is None or plan["name"] != name:
        raise TxFailure(Code.NOT_FOUND, f"no open upgrade plan named {name!r}")
    return plan


def _active_version(keeper: UpgradeKeeper) -> int:
    version = keeper.version()
    if version is None:  # chain/app.py writes it at genesis: a state without it is not ours
        raise RuntimeError("the state records no rules version")
    return version


def propose(ctx: TxContext, msg: ProposeUpgrade) -> None:
    voters = _voters(ctx)
    keeper = _keeper(ctx)
    plan = msg.plan
    existing = keeper.plan()
    if existing is not None:
        raise TxFailure(
            Code.CONFLICT,
            f"upgrade plan {existing['name']!r} is open: one plan at a time (cancel it first)",
        )
    if keeper.applied(plan.name) is not None:
        raise TxFailure(Code.CONFLICT, f"an upgrade plan named {plan.name!r} was applied already")
    active = _active_version(keeper)
    if plan.version <= active:
        raise TxFailure(
            Code.INVALID_PAYLOAD,
            f"version {plan.version} is not above the chain's rules version {active}",
        )
    earliest = ctx.height + MIN_NOTICE_BLOCKS
    if plan.height < earliest:
        raise TxFailure(
            Code.INVALID_PAYLOAD,
            f"height {plan.height} is too soon: at least {MIN_NOTICE_BLOCKS} blocks after this"
            f" block ({ctx.height}), so {earliest} or later",
        )
    record = {
        "name": plan.name,
        "height": plan.height,
        "version": plan.version,
        "proposer": ctx.sender,
        "proposed_at": ctx.height,
        "approvals": [ctx.sender],
        "cancellations": [],
        "scheduled_at": 0,
    }
    ctx.emit(UpgradeProposed(plan.name, str(plan.height), str(plan.version), ctx.sender))
    _count_approvals(ctx, keeper, record, voters)


def approve(ctx: TxContext, msg: ApproveUpgrade) -> None:
    voters = _voters(ctx)
    keeper = _keeper(ctx)
    record = _open_plan(keeper, msg.plan.name)
    if Plan.of(record) != msg.plan:
        raise TxFailure(
            Code.CONFLICT,
            f"the open plan {record['name']!r} is for version {record['version']} at height"
            f" {record['height']}, not version {msg.plan.version} at height {msg.plan.height}",
        )
    if record["scheduled_at"]:
        raise TxFailure(Code.CONFLICT, f"plan {record['name']!r} is scheduled already")
    if ctx.sender in record["approvals"]:
        raise TxFailure(Code.CONFLICT, f"{ctx.sender} has already approved")
    record["approvals"] = sorted([*record["approvals"], ctx.sender])
    _count_approvals(ctx, keeper, record, voters)


def _count_approvals(
    ctx: TxContext, keeper: UpgradeKeeper, record: dict[str, Any], voters: list[str]
) -> None:
    if votes.carried(record["approvals"], voters):
        record["scheduled_at"] = ctx.height
        plan = Plan.of(record)
        ctx.emit(UpgradeScheduled(plan.name, str(plan.height), str(plan.version)))
    else:
        ctx.emit(UpgradeApproved(record["name"], ctx.sender))
    keeper.put_plan(record)


def cancel(ctx: TxContext, msg: CancelUpgrade) -> None:
    voters = _voters(ctx)
    keeper = _keeper(ctx)
    record = _open_plan(keeper, msg.name)
    if ctx.sender in record["cancellations"]:
        raise TxFailure(Code.CONFLICT, f"{ctx.sender} has already voted to cancel")
    record["cancellations"] = sorted([*record["cancellations"], ctx.sender])
    withdrawn = not record["scheduled_at"] and ctx.sender == record["proposer"]
    if withdrawn or votes.carried(record["cancellations"], voters):
        keeper.clear_plan()
        ctx.emit(UpgradeCancelled(msg.name))
    else:
        keeper.put_plan(record)
        ctx.emit(UpgradeCancelVoted(msg.name, ctx.sender))


def init_genesis(ctx: TxContext, genesis: Genesis) -> None:
    """Nothing of the genesis file: chain/app.py records the rules version the chain starts
    under (`record_version`), which only the application knows."""


# --- the switch, at the start of each block (chain/app.py) ---------------------------------


def due(kv: KV, height: int) -> Plan | None:
    """The scheduled plan that takes effect at block `height`, if any. A plan still in its
    vote at its height lapses here (removed): it can never be scheduled for a past height."""
    keeper = UpgradeKeeper(kv)
    record = keeper.plan()
    if record is None or int(record["height"]) > height:
        return None
    if not record["scheduled_at"]:
        keeper.clear_plan()
        return None
    return Plan.of(record)


def apply(kv: KV, plan: Plan) -> None:
    """From this block on the chain runs `plan.version`; the plan moves to the history."""
    keeper = UpgradeKeeper(kv)
    keeper.record_applied(plan, _active_version(keeper))
    keeper.set_version(plan.version)
    keeper.clear_plan()


def record_version(kv: KV, version: int) -> None:
    """The rules version a new chain starts under (chain/app.py init_chain)."""
    UpgradeKeeper(kv).set_version(version)


def active_version(kv: KV) -> int | None:
    """The chain's active rules version (None in a state from before this module)."""
    return UpgradeKeeper(kv).version()
