"""The identity module's queries, answered from committed state."""

from __future__ import annotations

from typing import Any

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Payload
from careledger.chain.modules.identity.keeper import IdentityKeeper
from careledger.chain.state import KV


def identity(kv: KV, params: Payload) -> Any:
    did = params.text("did", max_len=128)
    params.done()
    found = IdentityKeeper(kv).identity(did)
    if found is None:
        raise TxFailure(Code.NOT_FOUND, f"no identity {did}")
    return found


def practitioners(kv: KV, params: Payload) -> Any:
    org = params.text("org", max_len=128)
    params.done()
    keeper = IdentityKeeper(kv)
    return [keeper.identity(did) for did in keeper.staff(org)]


def members(kv: KV, params: Payload) -> Any:
    params.done()
    return IdentityKeeper(kv).members()


def proposals(kv: KV, params: Payload) -> Any:
    params.done()
    return IdentityKeeper(kv).proposals()
