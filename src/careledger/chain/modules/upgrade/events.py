"""The upgrade module's events (`from_event` decodes them; tuples are comma-joined)."""

from __future__ import annotations

from dataclasses import dataclass

from careledger.chain.modules.base import TypedEvent


@dataclass(frozen=True)
class UpgradeProposed(TypedEvent):
    TYPE = "upgrade.proposed"
    name: str
    height: str
    version: str
    proposer: str


@dataclass(frozen=True)
class UpgradeApproved(TypedEvent):
    """A vote for the plan, counted; the plan is not scheduled yet."""

    TYPE = "upgrade.approved"
    name: str
    voter: str


@dataclass(frozen=True)
class UpgradeScheduled(TypedEvent):
    """Two thirds of the members approved: at `height` the chain runs `version`."""

    TYPE = "upgrade.scheduled"
    name: str
    height: str
    version: str


@dataclass(frozen=True)
class UpgradeCancelVoted(TypedEvent):
    TYPE = "upgrade.cancel_voted"
    name: str
    voter: str


@dataclass(frozen=True)
class UpgradeCancelled(TypedEvent):
    TYPE = "upgrade.cancelled"
    name: str
