"""The upgrade module: planned upgrades of the chain's rules, agreed by the members.

See handler.py for the rules and chain/app.py for the switch at the plan's height.
"""

from careledger.chain.modules.base import Message, Module
from careledger.chain.modules.upgrade import handler, messages, queries
from careledger.chain.modules.upgrade.events import (
    UpgradeApproved,
    UpgradeCancelled,
    UpgradeCancelVoted,
    UpgradeProposed,
    UpgradeScheduled,
)
from careledger.chain.modules.upgrade.handler import MIN_NOTICE_BLOCKS
from careledger.chain.modules.upgrade.keeper import MODULE, Plan, UpgradeKeeper

upgrade_module = Module(
    name=MODULE,
    messages={
        "propose": Message(messages.ProposeUpgrade.parse, handler.propose),
        "approve": Message(messages.ApproveUpgrade.parse, handler.approve),
        "cancel": Message(messages.CancelUpgrade.parse, handler.cancel),
    },
    queries={"status": queries.status, "history": queries.history},
    init_genesis=handler.init_genesis,
)

__all__ = [
    "MIN_NOTICE_BLOCKS",
    "MODULE",
    "Plan",
    "UpgradeApproved",
    "UpgradeCancelVoted",
    "UpgradeCancelled",
    "UpgradeKeeper",
    "UpgradeProposed",
    "UpgradeScheduled",
    "upgrade_module",
]
