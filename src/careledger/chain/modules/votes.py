"""How the consortium counts a vote: one rule for every module that asks the members.

A proposal carries when at least two thirds of the members entitled to vote approve it.
Only approvals of current voters count: a member removed while a vote runs takes its
approval with it, and the two-thirds bar moves with the membership.
"""

from __future__ import annotations

from collections.abc import Collection


def counted(approvals: Collection[str], voters: Collection[str]) -> list[str]:
    """The approvals that count: those of current voters, in the order given."""
    return [did for did in approvals if did in voters]


def carried(approvals: Collection[str], voters: Collection[str], minimum: int = 1) -> bool:
    """Two thirds of `voters` approve, and at least `minimum` of them (integer arithmetic:
    3 * approvals >= 2 * voters, so one voter of one carries and one of two does not)."""
    valid = counted(approvals, voters)
    return len(valid) >= minimum and 3 * len(valid) >= 2 * len(voters)
