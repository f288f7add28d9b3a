"""How a read or write is decided: the answer, the per-query memo and the plan.

`ConsentKeeper.read_decision` and `may_write` (keeper.py) are the one decision; this module
holds what they work with: `Decision` (allowed, reason, grant), `DecisionMemo` (each grant
list read once per query) and the plan that checks a request against candidate grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from careledger.chain.modules.consent.messages import DELEGATE
from careledger.crypto.scopekeys import SENSITIVE

# How far a grant got through the checks of a decision (higher: closer to applying). The
# denial names the candidate that got furthest: its reason is the most specific. A grant not
# started yet ranks above an expired one: it is the one that will apply.
_OTHER_GRANTEE, _REVOKED, _EXPIRED, _NOT_STARTED, _SCOPE, _RECORD, _PURPOSE = range(7)


# On what basis a read was allowed (Decision.basis; "" when denied): the audit's outcome.
PATIENT, AUTHOR, GRANT, DELEGATE_BASIS, EMERGENCY = (
    "patient",
    "author",
    "grant",
    "delegate",
    "emergency",
)
BASES = (PATIENT, AUTHOR, GRANT, DELEGATE_BASIS, EMERGENCY)


@dataclass(frozen=True)
class Decision:
    """Whether an access is allowed, why (a sentence for the caller and the audit), the grant
    that allowed it ("" when none did), and on what basis (one of BASES; "" when denied)."""

    allowed: bool
    reason: str
    grant: str = ""
    basis: str = ""


class DecisionMemo:
    """What the decisions of one query have read of one patient's consent state, kept for
    the next decisions about that patient.

    Made for one query and dropped with it, never shared between queries: the state changes
    from block to block, and a memo only ever describes the state view it was read from.
    It holds one patient at a time (asked about another, it starts afresh), so it keeps at
    most that patient's live grants under two dids (MAX_LIVE_GRANTS), two revoked ones, and
    one answer per (scope, author organisation) and per record asked about: a caller with
    many patients should ask about each patient's records together (records/read_access
    sorts them by patient).
    """

    def __init__(self) -> None:
        self._start("")

    def _start(self, patient: str) -> None:
        self.patient = patient
        self.grants: dict[str, dict[str, Any] | None] = {}
        self.indexed: dict[str, list[tuple[str, str]]] = {}  # did -> [(grant id, action)]
        self.last_revoked: dict[str, str] = {}  # did -> grant id ("" for none)
        self.plans: dict[tuple[Request, str], Plan] = {}
        self.reads: dict[tuple[str, str, str, str, int], Decision | Plan | WithEmergency] = {}

    def about(self, patient: str) -> DecisionMemo:
        """This memo, emptied first if it held another patient's state."""
        if patient != self.patient:
            self._start(patient)
        return self


def indexed_under(grant: dict[str, Any]) -> list[str]:
    """The dids a live grant is found under: its grantee and, for reads and writes, the
    grantee's organisation (so that a practitioner of it sees grants naming a colleague)."""
    dids = [grant["grantee"]]
    if grant["action"] != DELEGATE and grant["org"] and grant["org"] != grant["grantee"]:
        dids.append(grant["org"])
    return dids


@dataclass(frozen=True)
class Request:
    """One access asked of the grants: by `actor` acting for `org`, for any record (the
    record is the plan's to check: `Plan.decide`)."""

    actor: str
    org: str
    scope: str
    at: int
    purpose: str = ""  # "" for a write: write grants are not limited by purpose

    def check(self, grant: dict[str, Any]) -> tuple[int | None, str]:
        """(None, "") if the grant allows this access to a record it does not exclude
        (`records`, checked after scope and before purpose), else how far it got and why
        not."""
        name = f"grant {grant['id']}"
        if grant["grantee"] not in (self.actor, self.org):
            return _OTHER_GRANTEE, f"{name} names practitioner {grant['grantee']}"
        if grant["revoked_at"]:
            return _REVOKED, f"{name} was revoked at height {grant['revoked_at']}"
        if self.at >= grant["end"]:
            return _EXPIRED, f"{name} expired at {grant['end']}"
        if self.at < grant["start"]:
            return _NOT_STARTED, f"{name} starts at {grant['start']}"
        if self.scope not in grant["scopes"]:
            named = " (the sensitive scope must be named)" if self.scope == SENSITIVE else ""
            return _SCOPE, f"{name} does not cover scope {self.scope}{named}"
        if self.purpose and self.purpose not in grant["purposes"]:
            purposes = ", ".join(grant["purposes"])
            return _PURPOSE, f"{name} is for purposes {purposes}, not {self.purpose}"
        return None, ""


@dataclass(frozen=True)
class Outcome:
    """A candidate grant's answer: its place among the candidates, and `Request.check`'s
    (step None: it allows the access)."""

    index: int
    grant: str
    step: int | None
    reason: str

    def rank(self) -> tuple[int, int]:
        """A denial's rank: the furthest step, then the earlier candidate (the first to get
        that far)."""
        return (-1 if self.step is None else self.step, -self.index)


class Plan:
    """The grants' decision on one request, worked out once, for any record.

    The rule (as one pass over the candidates applies it): the first candidate that allows
    the access wins; else the denial names the candidate that got furthest, the first of
    those on a tie. Only one check depends on the record: a grant naming `records` that
    passes scope fails on a record it does not name (`_RECORD`, between scope and purpose).
    So the candidates are split once into those whose answer is the same for every record
    (`fixed`: summed up by their first allowing one and their furthest denial) and the
    record-narrowed ones that got past scope (`narrowed`, indexed by record name). A record's
    decision then looks only at the narrowed grants naming it and at the first that does not,
    once per record: a query of 5,000 records against 1,000 grants makes 1,000 checks, not
    5,000,000.
    """

    def __init__(self, request: Request, action: str, candidates: list[dict[str, Any]]) -> None:
        self.request, self.action = request, action
        self.fixed_allowed: Outcome | None = None
        self.fixed_best: Outcome | None = None
        self.narrowed: list[Outcome] = []
        self.naming: dict[str, list[int]] = {}  # record -> its positions in `narrowed`
        self.decided: dict[str, Decision] = {}
        for index, grant in enumerate(candidates):
            step, reason = request.check(grant)
            outcome = Outcome(index, grant["id"], step, reason)
            if grant["records"] and (step is None or step > _RECORD):
                for record in dict.fromkeys(grant["records"]):
                    self.naming.setdefault(record, []).append(len(self.narrowed))
                self.narrowed.append(outcome)
            elif step is None:
                self.fixed_allowed = self.fixed_allowed or outcome
            elif self.fixed_best is None or outcome.rank() > self.fixed_best.rank():
                self.fixed_best = outcome

    def decide(self, record: str) -> Decision:
        """The decision for `record` ("" when no record is concerned: a write)."""
        decision = self.decided.get(record)
        if decision is None:
            decision = self.decided[record] = self._decide(record)
        return decision

    def _decide(self, record: str) -> Decision:
        positions = self.naming.get(record, []) if record else range(len(self.narrowed))
        naming = [self.narrowed[p] for p in positions]
        allowing = [o for o in (*naming, self.fixed_allowed) if o and o.step is None]
        if allowing:
            grant = min(allowing, key=lambda o: o.index).grant
            return Decision(True, f"{self.action} grant {grant}", grant, GRANT)
        # Every narrowed grant naming the record failed at purpose: the first of them ranks
        # highest among them.
        denials = [o for o in (self.fixed_best, *naming[:1], self._first_excluding(record)) if o]
        if not denials:
            actor = self.request.actor
            return Decision(False, f"no {self.action} grant of the patient covers {actor}")
        return Decision(False, max(denials, key=Outcome.rank).reason)

    def _first_excluding(self, record: str) -> Outcome | None:
        """The first narrowed grant that does not name `record`: it fails at `_RECORD`."""
        if not record:
            return None
        named = set(self.naming.get(record, []))
        for position, outcome in enumerate(self.narrowed):
            if position not in named:
                reason = f"grant {outcome.grant} does not name record {record}"
                return Outcome(outcome.index, outcome.grant, _RECORD, reason)
        return None


class WithEmergency:
    """The grants' plan, and what a break-glass of the reader says when the grants deny: an
    emergency read is allowed only where no grant allows it (its basis is then "emergency"),
    and a denial names the break-glass (ended, or not covering the scope) rather than the
    grants, since the reader asked for emergency treatment."""

    def __init__(self, plan: Plan, emergency: Decision) -> None:
        self.plan = plan
        self.emergency = emergency

    def decide(self, record: str) -> Decision:
        decision = self.plan.decide(record)
        return decision if decision.allowed else self.emergency
