"""The upgrade module's state: the active rules version, the one open plan, applied plans.

Layout under the `upgrade/` prefix:
  version            the rules version the chain runs now (an integer): written at genesis
                     (chain/app.py STATE_MACHINE_VERSION of the software that started the
                     chain) and by each applied plan, at the plan's height
  plan               the one open plan: {name, height, version, proposer, proposed_at,
                     approvals, cancellations, scheduled_at}; `scheduled_at` is 0 while
                     the members vote, then the height of the block that carried the vote
  applied/<name>     an applied plan: {name, height, version, from_version}; a name is
                     never applied twice
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from careledger.chain.state import KV

MODULE = "upgrade"


@dataclass(frozen=True)
class Plan:
    """What a plan says: at block `height`, the chain starts running rules `version`."""

    name: str
    height: int
    version: int

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Plan:
        return cls(str(stored["name"]), int(stored["height"]), int(stored["version"]))


class UpgradeKeeper:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    def version(self) -> int | None:
        """The active rules version; None in a state written before the upgrade module."""
        value = self.kv.get("version")
        return value if isinstance(value, int) else None

    def set_version(self, version: int) -> None:
        self.kv.set("version", version)

    def plan(self) -> dict[str, Any] | None:
        value = self.kv.get("plan")
        return value if isinstance(value, dict) else None

    def put_plan(self, plan: dict[str, Any]) -> None:
        self.kv.set("plan", plan)

    def clear_plan(self) -> None:
        self.kv.delete("plan")

    def scheduled(self) -> Plan | None:
        """The open plan once the members carried it, else None."""
        plan = self.plan()
        return Plan.of(plan) if plan is not None and plan["scheduled_at"] else None

    def applied(self, name: str) -> dict[str, Any] | None:
        value = self.kv.get(f"applied/{name}")
        return value if isinstance(value, dict) else None

    def record_applied(self, plan: Plan, from_version: int) -> None:
        self.kv.set(
            f"applied/{plan.name}",
            {
                "name": plan.name,
                "height": plan.height,
                "version": plan.version,
                "from_version": from_version,
            },
        )

    def history(self) -> list[dict[str, Any]]:
        """Applied plans, oldest first."""
        found = [value for _, value in self.kv.items("applied/")]
        return sorted(found, key=lambda p: int(p["height"]))
