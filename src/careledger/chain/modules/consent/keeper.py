"""The consent module's state, and the one place that decides who may read and write.

Layout under the `consent/` prefix (`<e>`: an epoch as 10 zero-padded digits):
  grant/<id>                    a grant: id, patient, grantee, action, scopes, records,
                                purposes, start, end (unix seconds), org (the grantee's
                                organisation; the grantee itself for an organisation; "" for
                                a delegate that is not an organisation's), grantor (who sent
                                it: the patient or a delegate), delegation (the id of the
                                delegation a delegate made it under; "" when the patient made
                                it), height, revoked_at (0, or the height that revoked it)
  key/<id>/<scope>/<e>          a scope private key wrapped to the grantee: scope, epoch,
                                wrapped (hex)
  naming/<id>                   the patient's naming key wrapped to the grantee (hex)
  patient/<patient>/<id>        every grant of a patient (value: its height)
  grantee/<did>/<id>            every grant naming did as grantee (value: its height)
  live/<patient>/<id>           the patient's grants that count towards MAX_LIVE_GRANTS: not
                                revoked, and not yet pruned after expiry (value: end)
  live_count/<patient>          how many live rows the patient has
  pg/<patient>/<did>/<id>       a live grant indexed under its grantee and, for read and write
                                grants, also under the grantee's organisation (value: action):
                                every decision reads only these rows, never all grants
  last_revoked/<patient>/<did>  the last grant revoked that was indexed under did: revoked
                                grants leave `pg`, this keeps the reason a revoked reader gets
  under/<delegation>/<id>       a live grant a delegate made under that delegation (value:
                                end): revoking the delegation revokes these with it
  emergency/<patient>           the patient's current escrow of its emergency keys
                                (consent/open_emergency): escrow, scopes, sensitive,
                                threshold, members, shares, sealed, epochs, height
  break_glass/<id>              a break-glass: id, patient, requester, org, reason, scopes,
                                escrow, epochs (every escrowed scope's, at the time), start,
                                until, height
  bg/<patient>/<requester>      the requester's latest break-glass of the patient (value: id):
                                a requester has at most one active per patient, so a decision
                                reads this one row
  bgp/<patient>/<inverted height>/<id>  every break-glass of a patient, newest first (value:
                                its id); the inverted height is 10^12 - height, 12 digits

Bounded work: a patient has at most MAX_LIVE_GRANTS live grants (expired ones are pruned when
the limit is reached), so a decision reads at most that many `pg` rows and two `last_revoked`
rows, however many grants the patient made and revoked over the years. Revoking a
delegation revokes at most MAX_LIVE_GRANTS grants made under it (the `under` rows are live
grants only).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from careledger.chain.modules.consent.decision import (
    AUTHOR,
    DELEGATE_BASIS,
    EMERGENCY,
    PATIENT,
    Decision,
    DecisionMemo,
    Plan,
    Request,
    WithEmergency,
    indexed_under,
)
from careledger.chain.modules.consent.messages import (
    DELEGATE,
    ETREAT,
    PURPOSES,
    READ,
    WRITE,
    KeyWrap,
)
from careledger.chain.modules.identity import MODULE as IDENTITY
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.state import KV

MODULE = "consent"
MAX_LIVE_GRANTS = 1000


def _newest_first(height: int) -> str:
    """A height as a key that sorts newest first."""
    return f"{10**12 - height:012d}"


def _e(epoch: int) -> str:
    return f"{epoch:010d}"


class ConsentKeeper:
    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self.identities = IdentityKeeper(kv.sibling(IDENTITY))

    # --- grants ---------------------------------------------------------------------------

    def grant(self, grant_id: str) -> dict[str, Any] | None:
        value = self.kv.get(f"grant/{grant_id}")
        return value if isinstance(value, dict) else None

    def put_grant(self, grant: dict[str, Any]) -> None:
        """Store a new grant, its indexes, and count it as live."""
        grant_id, patient = grant["id"], grant["patient"]
        self.kv.set(f"grant/{grant_id}", grant)
        self.kv.set(f"patient/{patient}/{grant_id}", grant["height"])
        self.kv.set(f"grantee/{grant['grantee']}/{grant_id}", grant["height"])
        self.kv.set(f"live/{patient}/{grant_id}", grant["end"])
        for did in indexed_under(grant):
            self.kv.set(f"pg/{patient}/{did}/{grant_id}", grant["action"])
        if grant["delegation"]:
            self.kv.set(f"under/{grant['delegation']}/{grant_id}", grant["end"])
        self.kv.set(f"live_count/{patient}", self.live_count(patient) + 1)

    def revoke(self, grant: dict[str, Any], height: int) -> list[dict[str, Any]]:
        """Revoke a grant and, for a delegation, every live grant its delegate made under it
        (a delegate's grants stand on its delegation and fall with it). The grants revoked,
        the delegation's own last."""
        revoked = self.made_under(grant["id"]) if grant["action"] == DELEGATE else []
        revoked.append(grant)
        for each in revoked:
            self.kv.set(f"grant/{each['id']}", {**each, "revoked_at": height})
            self._unlist(each)
            for did in indexed_under(each):
                self.kv.set(f"last_revoked/{each['patient']}/{did}", each["id"])
        return revoked

    def made_under(self, delegation_id: str) -> list[dict[str, Any]]:
        """The live grants a delegate made under this delegation, by id (at most
        MAX_LIVE_GRANTS: they count among the patient's live grants)."""
        found = [
            self.grant(key.rpartition("/")[2])
            for key, _ in self.kv.items(f"under/{delegation_id}/")
        ]
        return [g for g in found if g is not None]

    def _unlist(self, grant: dict[str, Any]) -> None:
        """Take a grant out of the live rows (revoked, or pruned after expiry)."""
        patient = grant["patient"]
        if not self.kv.has(f"live/{patient}/{grant['id']}"):
            return  # pruned after its expiry already
        self.kv.delete(f"live/{patient}/{grant['id']}")
        for did in indexed_under(grant):
            self.kv.delete(f"pg/{patient}/{did}/{grant['id']}")
        if grant["delegation"]:
            self.kv.delete(f"under/{grant['delegation']}/{grant['id']}")
        self.kv.set(f"live_count/{patient}", self.live_count(patient) - 1)

    def live_count(self, patient: str) -> int:
        value = self.kv.get(f"live_count/{patient}")
        return value if isinstance(value, int) else 0

    def prune_expired(self, patient: str, now: int) -> None:
        """Unlist the patient's grants that ended at or before `now` (at most
        MAX_LIVE_GRANTS rows read). They stay stored, listed by the queries, but count no
        more and no decision reads them again."""
        expired = [key for key, end in self.kv.items(f"live/{patient}/") if end <= now]
        for key in expired:
            grant = self.grant(key.rpartition("/")[2])
            if grant is not None:
                self._unlist(grant)

    # --- key wraps ------------------------------------------------------------------------

    def keys_of(self, grant_id: str) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items(f"key/{grant_id}/")]

    def has_key(self, grant_id: str, scope: str, epoch: int) -> bool:
        return self.kv.has(f"key/{grant_id}/{scope}/{_e(epoch)}")

    def put_key(self, grant_id: str, key: KeyWrap) -> None:
        self.kv.set(f"key/{grant_id}/{key.scope}/{_e(key.epoch)}", key.to_json())

    def naming_key(self, grant_id: str) -> str:
        value = self.kv.get(f"naming/{grant_id}")
        return value if isinstance(value, str) else ""

    def put_naming_key(self, grant_id: str, wrapped: str) -> None:
        self.kv.set(f"naming/{grant_id}", wrapped)

    # --- listings (queries) ---------------------------------------------------------------

    def grants_of(self, patient: str) -> list[dict[str, Any]]:
        """Every grant of the patient, newest first."""
        return self._newest_first(self.kv.items(f"patient/{patient}/"))

    def grants_to(self, grantee: str) -> list[dict[str, Any]]:
        """Every grant naming `grantee`, newest first."""
        return self._newest_first(self.kv.items(f"grantee/{grantee}/"))

    def live_grants(self, patient: str) -> list[dict[str, Any]]:
        """The patient's live grants (at most MAX_LIVE_GRANTS), newest first."""
        return self._newest_first(self.kv.items(f"live/{patient}/"))

    def _newest_first(self, rows: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
        found = [self.grant(key.rpartition("/")[2]) for key, _ in rows]
        grants = [g for g in found if g is not None]
        return sorted(grants, key=lambda g: (g["height"], g["id"]), reverse=True)

    # --- what a decision reads, once per memo ---------------------------------------------

    def _grant_in(self, memo: DecisionMemo, grant_id: str) -> dict[str, Any] | None:
        if grant_id not in memo.grants:
            memo.grants[grant_id] = self.grant(grant_id)
        return memo.grants[grant_id]

    def _indexed(self, memo: DecisionMemo, patient: str, did: str) -> list[tuple[str, str]]:
        """(grant id, action) of every live grant of `patient` indexed under `did`."""
        found = memo.about(patient).indexed.get(did)
        if found is None:
            prefix = f"pg/{patient}/{did}/"
            found = [(key[len(prefix) :], action) for key, action in self.kv.items(prefix)]
            memo.indexed[did] = found
        return found

    def _live_under(
        self, memo: DecisionMemo, patient: str, dids: Iterable[str], action: str
    ) -> list[dict[str, Any]]:
        """The live grants of `action` indexed under any of `dids`, by id."""
        ids: set[str] = set()
        for did in dict.fromkeys(d for d in dids if d):
            ids.update(i for i, a in self._indexed(memo, patient, did) if a == action)
        return [g for g in (self._grant_in(memo, i) for i in sorted(ids)) if g is not None]

    def _last_revoked(
        self, memo: DecisionMemo, patient: str, dids: Iterable[str], action: str
    ) -> list[dict[str, Any]]:
        found = []
        for did in dict.fromkeys(d for d in dids if d):
            if did not in memo.about(patient).last_revoked:
                grant_id = self.kv.get(f"last_revoked/{patient}/{did}")
                memo.last_revoked[did] = grant_id if isinstance(grant_id, str) else ""
            grant_id = memo.last_revoked[did]
            grant = self._grant_in(memo, grant_id) if grant_id else None
            if grant is not None and grant["action"] == action:
                found.append(grant)
        return found

    def is_party(self, patient: str, did: str, org: str, at: int) -> bool:
        """Whether `did` (or the organisation `org` it acts for) holds a grant of `patient` in
        force at `at`, of any action, or `did` broke the glass for the patient and its
        break-glass is running at `at`: a party of the patient's consent. One index scan per
        did (`pg/<patient>/<did>/`), never all the patient's grants."""
        if self.active_break_glass(patient, did, at) is not None:
            return True
        memo = DecisionMemo()
        for grantee in dict.fromkeys(d for d in (did, org) if d):
            for grant_id, _ in self._indexed(memo, patient, grantee):
                grant = self._grant_in(memo, grant_id)
                if grant is not None and grant["start"] <= at < grant["end"]:
                    return True
        return False

    # --- decisions ------------------------------------------------------------------------

    def delegations(
        self, patient: str, did: str, at: int, memo: DecisionMemo | None = None
    ) -> list[dict[str, Any]]:
        """The active delegate grants of `patient` to `did` at time `at`, by id."""
        return [
            grant
            for grant in self._live_under(memo or DecisionMemo(), patient, [did], DELEGATE)
            if grant["start"] <= at < grant["end"] and grant["grantee"] == did
        ]

    def delegation(
        self,
        patient: str,
        did: str,
        at: int,
        scope: str = "",
        memo: DecisionMemo | None = None,
    ) -> dict[str, Any] | None:
        """The first active delegate grant of `patient` to `did` at time `at` (covering
        `scope` when given), if any."""
        for grant in self.delegations(patient, did, at, memo):
            if not scope or scope in grant["scopes"]:
                return grant
        return None

    def read_decision(
        self,
        reader: str,
        patient: str,
        record: str,
        scope: str,
        author_org: str,
        purpose: str,
        at: int,
        memo: DecisionMemo | None = None,
    ) -> Decision:
        """May `reader` read `patient`'s `record` (in `scope`) for `purpose` at unix time
        `at`? `author_org` is the organisation the author of the version read acted for when
        it wrote that version ("" when the patient wrote it): only that organisation reads
        it without a grant. The one read decision; rules in docs/chain.md.

        Pass one `memo` to every decision of a query (records/read_access asks up to 5,000):
        each grant list is then read once, and the decision is worked out once for all the
        versions sharing (patient, scope, author_org), then applied to each record in
        O(1 + grants naming it). The answers are the same with or without it."""
        memo = memo if memo is not None else DecisionMemo()
        key = (reader, scope, author_org, purpose, at)
        answer = memo.about(patient).reads.get(key)
        if answer is None:
            answer = self._read_answer(reader, patient, scope, author_org, purpose, at, memo)
            if purpose == ETREAT and not isinstance(answer, Decision):
                answer = self._with_emergency(answer, reader, patient, scope, at)
            memo.reads[key] = answer
        return answer if isinstance(answer, Decision) else answer.decide(record)

    def _read_answer(
        self,
        reader: str,
        patient: str,
        scope: str,
        author_org: str,
        purpose: str,
        at: int,
        memo: DecisionMemo,
    ) -> Decision | Plan:
        """The read decision for any record of (patient, scope, author_org): a Decision when
        the record cannot change it, else the grants' plan that decides per record."""
        if reader == patient:
            return Decision(True, "patient", basis=PATIENT)
        delegation = self.delegation(patient, reader, at, scope, memo)
        if delegation is not None and self.identities.acting_identity(reader) is not None:
            return Decision(True, "delegate of the patient", delegation["id"], DELEGATE_BASIS)
        if not purpose:
            return Decision(False, "no purpose stated")
        if purpose not in PURPOSES:
            return Decision(False, f"unknown purpose {purpose[:32]!r}")
        org = self.identities.acting_for(reader)
        if org is None:
            return Decision(False, "not acting for a member organisation")
        if author_org and org == author_org:  # it wrote this version: it reads what it wrote
            return Decision(True, "author organisation", basis=AUTHOR)
        return self._plan(memo, patient, Request(reader, org, scope, at, purpose), READ)

    def _with_emergency(
        self, plan: Plan, reader: str, patient: str, scope: str, at: int
    ) -> Plan | WithEmergency:
        """The plan, falling back on the reader's break-glass of the patient if it has one
        (an emergency read: purpose ETREAT, its window, its scopes; docs/chain.md)."""
        found = self.kv.get(f"bg/{patient}/{reader}")
        glass = self.break_glass(found) if isinstance(found, str) else None
        if glass is None:
            return plan
        name = f"break-glass {glass['id']}"
        if at < glass["start"]:
            return WithEmergency(plan, Decision(False, f"{name} starts at {glass['start']}"))
        if at >= glass["until"]:
            return WithEmergency(plan, Decision(False, f"{name} ended at {glass['until']}"))
        if scope not in glass["scopes"]:
            covered = ", ".join(glass["scopes"])
            return WithEmergency(
                plan, Decision(False, f"{name} covers {covered}, not scope {scope}")
            )
        allowed = f"{name}: emergency access until {glass['until']}"
        return WithEmergency(plan, Decision(True, allowed, basis=EMERGENCY))

    # --- break-glass ----------------------------------------------------------------------

    def emergency(self, patient: str) -> dict[str, Any] | None:
        """The patient's current escrow of its emergency keys, if it opened any."""
        value = self.kv.get(f"emergency/{patient}")
        return value if isinstance(value, dict) else None

    def put_emergency(self, patient: str, escrow: dict[str, Any]) -> None:
        self.kv.set(f"emergency/{patient}", escrow)

    def break_glass(self, glass_id: str) -> dict[str, Any] | None:
        value = self.kv.get(f"break_glass/{glass_id}")
        return value if isinstance(value, dict) else None

    def put_break_glass(self, glass: dict[str, Any]) -> None:
        patient = glass["patient"]
        self.kv.set(f"break_glass/{glass['id']}", glass)
        self.kv.set(f"bg/{patient}/{glass['requester']}", glass["id"])
        self.kv.set(f"bgp/{patient}/{_newest_first(glass['height'])}/{glass['id']}", glass["id"])

    def latest_break_glass(self, patient: str, requester: str) -> dict[str, Any] | None:
        found = self.kv.get(f"bg/{patient}/{requester}")
        return self.break_glass(found) if isinstance(found, str) else None

    def active_break_glass(self, patient: str, requester: str, at: int) -> dict[str, Any] | None:
        """The requester's break-glass of the patient running at unix time `at`, if any."""
        glass = self.latest_break_glass(patient, requester)
        return glass if glass is not None and glass["start"] <= at < glass["until"] else None

    def break_glasses_of(self, patient: str, limit: int) -> list[dict[str, Any]]:
        """The patient's `limit` latest break-glasses, newest first (at most `limit` rows
        read, however many there were)."""
        rows = islice(self.kv.items(f"bgp/{patient}/"), limit)
        found = [self.break_glass(glass_id) for _, glass_id in rows]
        return [g for g in found if g is not None]

    def may_write(self, patient: str, sender: str, org: str, scope: str, at: int) -> Decision:
        """May `sender`, acting for `org`, start a new record of `patient` in `scope` at
        unix time `at`? Only a write grant to the organisation or to the sender allows it."""
        if sender == patient:
            return Decision(True, "patient", basis=PATIENT)
        plan = self._plan(DecisionMemo(), patient, Request(sender, org, scope, at), WRITE)
        return plan.decide("")

    def _plan(self, memo: DecisionMemo, patient: str, request: Request, action: str) -> Plan:
        key = (request, action)
        plan = memo.about(patient).plans.get(key)
        if plan is None:
            dids = (request.actor, request.org)
            candidates = self._live_under(memo, patient, dids, action)
            candidates += self._last_revoked(memo, patient, dids, action)
            plan = memo.plans[key] = Plan(request, action, candidates)
        return plan
