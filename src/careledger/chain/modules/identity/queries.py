"""The identity module's queries, answered from committed state."""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.identity.keeper import IdentityKeeper
from careledger.chain.state import KV


def _as_seen(keeper: IdentityKeeper, ident: dict[str, Any]) -> dict[str, Any]:
    """The stored identity, with `active` meaning "may act now": for a practitioner, also
    that its organisation is still a member (a removal does not rewrite its staff's rows)."""
    return {**ident, "active": keeper.acting_identity(ident["did"]) is not None}


def identity(kv: KV, params: Payload) -> Any:
    """An identity: kind, current keys, key history (`keys`), organisation, `active`."""
    did = params.text("did", max_len=128)
    params.done()
    keeper = IdentityKeeper(kv)
    found = keeper.identity(did)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no identity {did}")
    return _as_seen(keeper, found)


def enrolment(kv: KV, params: Payload) -> Any:
    """Whether member `org` has enrolled `did` and the enrolment awaits its registration
    (enrolments.py): {"did", "org", "enrolled"}. A row of a did registered since (by a
    voucher, or another member's enrolment) stays, but waits for nothing."""
    did, org = params.did("did"), params.did("org")
    params.done()
    keeper = IdentityKeeper(kv)
    waits = keeper.is_enrolled(did, org) and keeper.identity(did) is None
    return {"did": did, "org": org, "enrolled": waits}


def practitioners(kv: KV, params: Payload) -> Any:
    org = params.text("org", max_len=128)
    params.done()
    keeper = IdentityKeeper(kv)
    return [_as_seen(keeper, keeper.identity(did) or {"did": did}) for did in keeper.staff(org)]


def members(kv: KV, params: Payload) -> Any:
    params.done()
    return IdentityKeeper(kv).members()


def proposals(kv: KV, params: Payload) -> Any:
    params.done()
    return IdentityKeeper(kv).proposals()
