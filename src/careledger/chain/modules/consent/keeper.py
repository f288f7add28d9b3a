"""The consent module's state, and the one place that decides who may read and write.

Layout under the `consent/` prefix (`<e>`: an epoch as 10 zero-padded digits):
  grant/<id>                    a grant: id, patient, grantee, action, scopes, records,
                                purposes, start, end (unix seconds), org (the grantee's
                                organisation; the grantee itself for an organisation; "" for
                                a delegate that is not an organisation's), grantor (who sent
                                it: the patient or a delegate), height, revoked_at (0, or the
                                height that revoked it)
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

Bounded work: a patient has at most MAX_LIVE_GRANTS live grants (expired ones are pruned when
the limit is reached), so a decision reads at most that many `pg` rows and two `last_revoked`
rows, however many grants the patient made and revoked over the years.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from careledger.chain.modules.consent.messages import (
    DELEGATE,
    PURPOSES,
    READ,
    WRITE,
    KeyWrap,
)
from careledger.chain.modules.identity import MODULE as IDENTITY
from careledger.chain.modules.identity import IdentityKeeper
from careledger.chain.state import KV
from careledger.crypto.scopekeys import SENSITIVE

MODULE = "consent"
MAX_LIVE_GRANTS = 1000


@dataclass(frozen=True)
class Decision:
    """Whether an access is allowed, why (a sentence for the caller and the audit), and the
    grant that allowed it ("" when none did)."""

    allowed: bool
    reason: str
    grant: str = ""


def _e(epoch: int) -> str:
    return f"{epoch:010d}"


# How far a grant got through the checks of a decision (higher: closer to applying). The
# denial names the candidate that got furthest: its reason is the most specific. A grant not
# started yet ranks above an expired one: it is the one that will apply.
_OTHER_GRANTEE, _REVOKED, _EXPIRED, _NOT_STARTED, _SCOPE, _RECORD, _PURPOSE = range(7)


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
        for did in _indexed_under(grant):
            self.kv.set(f"pg/{patient}/{did}/{grant_id}", grant["action"])
        self.kv.set(f"live_count/{patient}", self.live_count(patient) + 1)

    def revoke(self, grant: dict[str, Any], height: int) -> None:
        self.kv.set(f"grant/{grant['id']}", {**grant, "revoked_at": height})
        self._unlist(grant)
        for did in _indexed_under(grant):
            self.kv.set(f"last_revoked/{grant['patient']}/{did}", grant["id"])

    def _unlist(self, grant: dict[str, Any]) -> None:
        """Take a grant out of the live rows (revoked, or pruned after expiry)."""
        patient = grant["patient"]
        if not self.kv.has(f"live/{patient}/{grant['id']}"):
            return  # pruned after its expiry already
        self.kv.delete(f"live/{patient}/{grant['id']}")
        for did in _indexed_under(grant):
            self.kv.delete(f"pg/{patient}/{did}/{grant['id']}")
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

    def _live_under(self, patient: str, dids: Iterable[str], action: str) -> list[dict[str, Any]]:
        """The live grants of `action` indexed under any of `dids`, by id."""
        ids: set[str] = set()
        for did in dict.fromkeys(d for d in dids if d):
            prefix = f"pg/{patient}/{did}/"
            ids.update(key[len(prefix) :] for key, a in self.kv.items(prefix) if a == action)
        return [g for g in (self.grant(i) for i in sorted(ids)) if g is not None]

    def _last_revoked(self, patient: str, dids: Iterable[str], action: str) -> list[dict[str, Any]]:
        found = []
        for did in dict.fromkeys(d for d in dids if d):
            grant_id = self.kv.get(f"last_revoked/{patient}/{did}")
            grant = self.grant(grant_id) if isinstance(grant_id, str) else None
            if grant is not None and grant["action"] == action:
                found.append(grant)
        return found

    # --- decisions ------------------------------------------------------------------------

    def delegation(self, patient: str, did: str, at: int, scope: str = "") -> dict[str, Any] | None:
        """The active delegate grant of `patient` to `did` at time `at` (covering `scope`
        when given), if any."""
        for grant in self._live_under(patient, [did], DELEGATE):
            in_period = grant["start"] <= at < grant["end"]
            if in_period and grant["grantee"] == did and (not scope or scope in grant["scopes"]):
                return grant
        return None

    def read_decision(
        self,
        reader: str,
        patient: str,
        record: str,
        scope: str,
        record_org: str,
        purpose: str,
        at: int,
    ) -> Decision:
        """May `reader` read `patient`'s `record` (in `scope`, started by `record_org`) for
        `purpose` at unix time `at`? The one read decision; rules in docs/chain.md."""
        if reader == patient:
            return Decision(True, "patient")
        delegation = self.delegation(patient, reader, at, scope)
        if delegation is not None and self.identities.acting_identity(reader) is not None:
            return Decision(True, "delegate of the patient", delegation["id"])
        if not purpose:
            return Decision(False, "no purpose stated")
        if purpose not in PURPOSES:
            return Decision(False, f"unknown purpose {purpose[:32]!r}")
        org = self.identities.acting_for(reader)
        if org is None:
            return Decision(False, "not acting for a member organisation")
        if org == record_org:
            return Decision(True, "author organisation")
        request = _Request(reader, org, scope, at, record, purpose)
        return self._by_grants(patient, request, READ)

    def may_write(self, patient: str, sender: str, org: str, scope: str, at: int) -> Decision:
        """May `sender`, acting for `org`, start a new record of `patient` in `scope` at
        unix time `at`? Only a write grant to the organisation or to the sender allows it."""
        if sender == patient:
            return Decision(True, "patient")
        return self._by_grants(patient, _Request(sender, org, scope, at), WRITE)

    def _by_grants(self, patient: str, request: _Request, action: str) -> Decision:
        dids = (request.actor, request.org)
        candidates = self._live_under(patient, dids, action)
        candidates += self._last_revoked(patient, dids, action)
        best: tuple[int, str, str] | None = None
        for grant in candidates:
            step, reason = request.check(grant)
            if step is None:
                return Decision(True, f"{action} grant {grant['id']}", grant["id"])
            if best is None or step > best[0]:
                best = (step, reason, grant["id"])
        if best is None:
            return Decision(False, f"no {action} grant of the patient covers {request.actor}")
        return Decision(False, best[1])


def _indexed_under(grant: dict[str, Any]) -> list[str]:
    """The dids a live grant is found under: its grantee and, for reads and writes, the
    grantee's organisation (so that a practitioner of it sees grants naming a colleague)."""
    dids = [grant["grantee"]]
    if grant["action"] != DELEGATE and grant["org"] and grant["org"] != grant["grantee"]:
        dids.append(grant["org"])
    return dids


@dataclass(frozen=True)
class _Request:
    """One access asked of the grants: by `actor` acting for `org`."""

    actor: str
    org: str
    scope: str
    at: int
    record: str = ""
    purpose: str = ""  # "" for a write: write grants are not limited by purpose

    def check(self, grant: dict[str, Any]) -> tuple[int | None, str]:
        """(None, "") if the grant allows this access, else how far it got and why not."""
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
        if self.record and grant["records"] and self.record not in grant["records"]:
            return _RECORD, f"{name} does not name record {self.record}"
        if self.purpose and self.purpose not in grant["purposes"]:
            purposes = ", ".join(grant["purposes"])
            return _PURPOSE, f"{name} is for purposes {purposes}, not {self.purpose}"
        return None, ""
