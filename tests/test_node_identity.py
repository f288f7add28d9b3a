"""Node identities: each node's own key, registered at genesis for a founder or with
`identity/register_node` for a later member's node; a node acts for its organisation only
while that organisation is a member. On the real state machine (real SQLite) and, for the
API, a real embedded node over HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from careledger.chain.app import Application, QueryResult, TxResult
from careledger.chain.codes import Code
from careledger.chain.genesis import Genesis, GenesisOrganisation, founder
from careledger.chain.modules.identity import IdentityKeeper, rotation_payload
from careledger.chain.modules.identity.events import IdentityRegistered
from careledger.chain.modules.identity.vouchers import CONSENT_PURPOSE
from careledger.chain.state import KV
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import Audience, authorization
from careledger.node.auth import registered_identity
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise
from nodeutil import (
    CHAIN_ID,
    make_app,
    node_payload,
    practitioner_payload,
    run_block_results,
    serve_over_http,
)


class Actor:
    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.did = self.identity.did
        self.nonce = 0

    def tx(self, type_: str, payload: dict[str, Any]) -> bytes:
        self.nonce += 1
        return Tx(CHAIN_ID, type_, self.did, self.nonce, payload).sign(self.identity)


class Chain:
    """Members A, B and C, each with a node registered at genesis."""

    def __init__(self, path: Path) -> None:
        self.a, self.b, self.c = Actor(), Actor(), Actor()
        self.node_a, self.node_b, self.node_c = Actor(), Actor(), Actor()
        orgs = [self.a.identity, self.b.identity, self.c.identity]
        nodes: list[Identity | None] = [
            self.node_a.identity,
            self.node_b.identity,
            self.node_c.identity,
        ]
        self.app: Application = make_app(path, orgs, nodes=nodes)

    def run(self, *txs: bytes) -> list[TxResult]:
        return run_block_results(self.app, list(txs))

    def identities(self) -> IdentityKeeper:
        return IdentityKeeper(KV(self.app.store, "identity"))

    def query(self, path: str, **params: Any) -> Any:
        found = self.app.query(path, orjson.dumps(params))
        assert found.code == Code.OK, found.log
        return orjson.loads(found.value)


def test_a_founders_node_is_registered_at_genesis_and_acts_for_it(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "state.sqlite")
    node = chain.query("identity/identity", did=chain.node_a.did)
    assert (node["kind"], node["org"], node["active"]) == ("node", chain.a.did, True)
    assert node["encryption_key"] == chain.node_a.identity.encryption_public.hex()
    assert chain.identities().acting_for(chain.node_a.did) == chain.a.did
    # a node is not a member: it votes, vouches and registers nobody
    assert chain.identities().is_member(chain.node_a.did) is False
    rotate = chain.node_a.tx(
        "identity/register_practitioner",
        practitioner_payload(CHAIN_ID, chain.node_a.did, Identity.generate()),
    )
    [refused] = chain.run(rotate)
    assert refused.code == Code.UNAUTHORISED and "not a member" in refused.log


def test_a_member_registers_a_node_with_the_nodes_consent(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "state.sqlite")
    new_node = Identity.generate()
    [result] = chain.run(
        chain.b.tx("identity/register_node", node_payload(CHAIN_ID, chain.b.did, new_node))
    )
    assert result.code == Code.OK, result.log
    assert IdentityRegistered.all_in(result.events) == [
        IdentityRegistered(new_node.did, "node", chain.b.did)
    ]
    assert chain.identities().acting_for(new_node.did) == chain.b.did
    assert chain.query("identity/identity", did=new_node.did)["kind"] == "node"


def test_register_node_refuses_what_it_must(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "state.sqlite")
    node = Identity.generate()
    payload = node_payload(CHAIN_ID, chain.a.did, node)
    cases = [
        # a node or a stranger is not a member organisation
        (chain.node_a.tx("identity/register_node", payload), Code.UNAUTHORISED, "not a member"),
        # a consent given to A, used by B
        (chain.b.tx("identity/register_node", payload), Code.UNAUTHORISED, "does not verify"),
        # a practitioner's consent does not register a node
        (
            chain.a.tx(
                "identity/register_node",
                node_payload(CHAIN_ID, chain.a.did, node, purpose=CONSENT_PURPOSE),
            ),
            Code.UNAUTHORISED,
            "does not verify",
        ),
        # an identity already registered (another organisation's node)
        (
            chain.a.tx(
                "identity/register_node", node_payload(CHAIN_ID, chain.a.did, chain.node_b.identity)
            ),
            Code.CONFLICT,
            "already registered",
        ),
    ]
    for raw, code, message in cases:
        [result] = chain.run(raw)
        assert (result.code, message in result.log) == (code, True), result.log
    assert chain.query("identity/identity", did=chain.node_b.did)["org"] == chain.b.did
    [ok] = chain.run(chain.a.tx("identity/register_node", payload))
    assert ok.code == Code.OK
    [again] = chain.run(chain.a.tx("identity/register_node", payload))
    assert again.code == Code.CONFLICT


def test_a_node_of_a_removed_organisation_may_no_longer_act(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "state.sqlite")
    votes = [
        voter.tx("identity/approve_membership", {"action": "remove", "subject": chain.a.did})
        for voter in (chain.b, chain.c)
    ]
    assert [r.code for r in chain.run(*votes)] == [Code.OK, Code.OK]
    assert chain.identities().acting_for(chain.node_a.did) is None
    assert chain.query("identity/identity", did=chain.node_a.did)["active"] is False
    rotation = rotation_payload(chain.node_a.identity, Identity.generate(), CHAIN_ID)
    [refused] = chain.run(chain.node_a.tx("identity/rotate_key", rotation))
    assert refused.code == Code.UNKNOWN_SENDER and "may no longer act" in refused.log


def test_genesis_refuses_a_node_did_used_twice_and_reads_old_documents() -> None:
    a, b, node = Identity.generate(), Identity.generate(), Identity.generate()
    with pytest.raises(ValueError, match="share a did"):
        Genesis(
            CHAIN_ID, "2026-01-01T00:00:00Z", (founder("A", a, "", node), founder("B", b, "", node))
        )
    with pytest.raises(ValueError, match="share a did"):
        Genesis(CHAIN_ID, "2026-01-01T00:00:00Z", (founder("A", a, "", b), founder("B", b)))
    genesis = Genesis(CHAIN_ID, "2026-01-01T00:00:00Z", (founder("A", a, "", node),))
    assert Genesis.from_json(genesis.to_json()) == genesis
    old = orjson.loads(genesis.to_json())
    for org in old["organisations"]:
        del org["node"], org["node_encryption_key"]
    [read] = Genesis.from_json(orjson.dumps(old)).organisations
    assert read == GenesisOrganisation(a.did, "A", a.encryption_public.hex())


def test_initialise_writes_a_node_key_that_genesis_names(tmp_path: Path) -> None:
    root = tmp_path / "data"
    org = initialise(root)
    data = DataDir(root)
    node = KeyFile.load(data.node_key)
    assert (node.kind, node.name) == ("node", f"{org.name} node")
    [founding] = data.load_genesis().organisations
    assert (founding.did, founding.node) == (org.did, node.did)
    assert founding.node_encryption_key == node.identity.encryption_public.hex()
    assert data.node_key.stat().st_mode & 0o077 == 0


class AppQueries:
    """The node's own application answering queries, as a consensus driver does."""

    def __init__(self, app: Application) -> None:
        self.app = app

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult:
        return self.app.query(path, data)


def test_a_node_signs_api_requests_as_its_organisation(tmp_path: Path) -> None:
    """A node identity calls the node API like an organisation (Caller kind "node", org = its
    organisation)."""
    root = tmp_path / "data"
    org = initialise(root)
    node_key = KeyFile.load(DataDir(root).node_key)
    served = build_node(root, Solo(0.05))
    try:
        with serve_over_http(served.asgi()) as url:
            status = httpx.get(url + "/status").json()
            here = Audience(status["chain_id"], status["node_id"])
            target = "/query/identity/members"
            header = authorization(
                node_key.identity, node_key.did, here, "GET", target, b"", time.time_ns() // 10**6
            )
            answer = httpx.get(url + target, headers={"authorization": header})
            assert answer.status_code == 200, answer.text
            assert [m["did"] for m in answer.json()] == [org.did]

            found = asyncio.run(registered_identity(AppQueries(served.app), node_key.did))
            assert found is not None and (found.kind, found.org) == ("node", org.did)
    finally:
        served.close()
