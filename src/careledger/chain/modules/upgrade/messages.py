"""The upgrade module's transaction payloads: parsed, validated, typed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.upgrade.keeper import Plan

MAX_HEIGHT = 2**53 - 1
MAX_VERSION = 2**31 - 1
# A plan's name is what operators say and logs print: short, no spaces or separators.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _name(p: Payload) -> str:
    name = p.text("name", max_len=64)
    if NAME_PATTERN.fullmatch(name) is None:
        raise TxFailure(
            Code.INVALID_PAYLOAD,
            "'name' must be 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        )
    return name


def _plan(p: Payload) -> Plan:
    return Plan(
        _name(p),
        p.integer("height", 1, MAX_HEIGHT),
        p.integer("version", 1, MAX_VERSION),
    )


@dataclass(frozen=True)
class ProposeUpgrade:
    """A member proposes that from block `height` on, the chain runs rules `version`.
    The proposal counts as the proposer's approval."""

    plan: Plan

    @classmethod
    def parse(cls, p: Payload) -> ProposeUpgrade:
        msg = cls(_plan(p))
        p.done()
        return msg


@dataclass(frozen=True)
class ApproveUpgrade:
    """A member's vote for the open plan. It names the whole plan (name, height, version)
    and counts only for a plan that says exactly that: a vote never carries a plan its
    voter did not read."""

    plan: Plan

    @classmethod
    def parse(cls, p: Payload) -> ApproveUpgrade:
        msg = cls(_plan(p))
        p.done()
        return msg


@dataclass(frozen=True)
class CancelUpgrade:
    """A member's vote to cancel the open plan (by name). The proposer withdraws a plan
    not yet scheduled at once; a scheduled plan is cancelled by the same two-thirds vote
    that scheduled it."""

    name: str

    @classmethod
    def parse(cls, p: Payload) -> CancelUpgrade:
        msg = cls(_name(p))
        p.done()
        return msg
