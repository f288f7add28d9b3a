"""The upgrade module's queries, answered from committed state."""

from __future__ import annotations

from typing import Any

from careledger.chain.modules.base import Payload
from careledger.chain.modules.upgrade.handler import MIN_NOTICE_BLOCKS
from careledger.chain.modules.upgrade.keeper import UpgradeKeeper
from careledger.chain.state import KV


def status(kv: KV, params: Payload) -> Any:
    """The chain's active rules version and the open plan (None when there is none)."""
    params.done()
    keeper = UpgradeKeeper(kv)
    return {
        "version": keeper.version(),
        "plan": keeper.plan(),
        "min_notice_blocks": MIN_NOTICE_BLOCKS,
    }


def history(kv: KV, params: Payload) -> Any:
    """The applied plans, oldest first: {name, height, version, from_version}."""
    params.done()
    return UpgradeKeeper(kv).history()
