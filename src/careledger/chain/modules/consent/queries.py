"""The consent module's queries, answered from committed state.

Times (`at`) are unix seconds, given by the caller (a node's clock, a wallet's): a query has
no block time of its own. Without `at`, "active" means not revoked.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.consent.keeper import ConsentKeeper
from careledger.chain.modules.consent.messages import (
    ESCROW_ID_BYTES,
    GRANT_ID_BYTES,
    MAX_PERIOD_END,
    READ,
)
from careledger.chain.state import KV
from careledger.crypto.scopekeys import SCOPES


def _at(params: Payload) -> int | None:
    return params.integer("at", 0, MAX_PERIOD_END, digits=True) if params.has("at") else None


def _active(grant: dict[str, Any], at: int | None) -> bool:
    if grant["revoked_at"]:
        return False
    return at is None or grant["start"] <= at < grant["end"]


def _with_keys(keeper: ConsentKeeper, grant: dict[str, Any]) -> dict[str, Any]:
    return {
        **grant,
        "keys": keeper.keys_of(grant["id"]),
        "naming_key": keeper.naming_key(grant["id"]),
    }


def grants(kv: KV, params: Payload) -> Any:
    """A patient's grants, newest first, revoked and expired ones included, without their
    key wraps: ?patient=<did>."""
    patient = params.text("patient", max_len=128)
    params.done()
    return ConsentKeeper(kv).grants_of(patient)


def grant(kv: KV, params: Payload) -> Any:
    """One grant with its key wraps (`keys`) and wrapped naming key (`naming_key`, "" if
    none): ?id=<32 hex>."""
    grant_id = params.hex_bytes("id", GRANT_ID_BYTES)
    params.done()
    keeper = ConsentKeeper(kv)
    found = keeper.grant(grant_id)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no grant {grant_id}")
    return _with_keys(keeper, found)


def granted(kv: KV, params: Payload) -> Any:
    """What a grantee may read or write: the grants naming it, and for a practitioner those
    naming its organisation, each with its key wraps, newest first: ?grantee=<did>[&at=<unix
    seconds>: only those active then; else only those not revoked]."""
    grantee = params.text("grantee", max_len=128)
    at = _at(params)
    params.done()
    keeper = ConsentKeeper(kv)
    ident = keeper.identities.identity(grantee)
    found = keeper.grants_to(grantee)
    if ident is not None and ident["kind"] == "practitioner":
        found += keeper.grants_to(str(ident["org"]))
    found.sort(key=lambda g: (g["height"], g["id"]), reverse=True)
    return [_with_keys(keeper, g) for g in found if _active(g, at)]


def readers(kv: KV, params: Payload) -> Any:
    """Who may read a patient's records of a scope: the active read grants covering it
    (sensitive only where named), newest first: ?patient=<did>&scope=<scope>[&at=...]."""
    patient = params.text("patient", max_len=128)
    scope = params.choice("scope", SCOPES)
    at = _at(params)
    params.done()
    live = ConsentKeeper(kv).live_grants(patient)
    return [g for g in live if g["action"] == READ and scope in g["scopes"] and _active(g, at)]


def party(kv: KV, params: Payload) -> Any:
    """Whether a did (or its organisation) is party to a patient's consent at a time:
    ?patient=&did=&org=&at= -> {"party": bool}. The node asks it to decide who may list a
    patient's records (node/query_guard.py)."""
    patient, did = params.did("patient"), params.did("did")
    org = params.text("org", max_len=128, optional=True)
    at = _at(params)
    params.done()
    if at is None:
        raise TxFailure(Code.INVALID_PAYLOAD, "'at' is required")
    return {"party": ConsentKeeper(kv).is_party(patient, did, org, at)}


def emergency(kv: KV, params: Payload) -> Any:
    """The patient's escrow of its emergency keys (public: opened scopes, sensitive, k, the
    members, the wrapped shares and the sealed bundle, which open only with k shares), with
    `current_members` (sorted) so that a wallet sees when it must re-escrow: ?patient=<did>."""
    patient = params.did("patient")
    params.done()
    keeper = ConsentKeeper(kv)
    found = keeper.emergency(patient)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"{patient} opened no scope to emergency access")
    members = sorted(str(m["did"]) for m in keeper.identities.members())
    return {**found, "current_members": members}


def break_glass(kv: KV, params: Payload) -> Any:
    """One break-glass: ?id=<32 hex>."""
    glass_id = params.hex_bytes("id", ESCROW_ID_BYTES)
    params.done()
    found = ConsentKeeper(kv).break_glass(glass_id)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no break-glass {glass_id}")
    return found


MAX_BREAK_GLASSES = 500


def break_glasses(kv: KV, params: Payload) -> Any:
    """A patient's latest break-glasses, newest first: ?patient=<did>[&limit=1..500, default
    100]."""
    patient = params.did("patient")
    limit = (
        params.integer("limit", 1, MAX_BREAK_GLASSES, digits=True) if params.has("limit") else 100
    )
    params.done()
    return ConsentKeeper(kv).break_glasses_of(patient, limit)
