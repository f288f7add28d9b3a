"""The pre-submit pipeline on a real node (built by `build_node`, served over loopback HTTP).

Every submission route (`POST /tx`, `POST /txs`, `POST /txs` streamed) goes through the
pipeline before the consensus driver: a refused transaction never reaches the mempool and
spends no nonce. The records module's anchor check is registered by the builder; a check
registered later (the shape consent and audit checks take) applies to its type only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from careledger.chain.codes import Code
from careledger.chain.tx import SignedTx, Tx
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise
from careledger.node.pipeline import Refusal
from careledger.wallet.node_client import NodeClient, NodeError
from nodeutil import practitioner_payload, serve_over_http


@dataclass
class Served:
    node: Node[SoloProducer]
    client: NodeClient
    org: KeyFile

    def nonce(self) -> int:
        return int(self.client.query("auth/nonce", did=self.org.did)["last_nonce"])

    def sign(self, type_: str, payload: dict[str, object], nonce: int) -> bytes:
        chain_id = self.node.app.chain_id
        return Tx(chain_id, type_, self.org.did, nonce, payload).sign(self.org.identity)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A node of its own per test: a check registered by one test never leaks into another."""
    root = tmp_path / "data"
    org = initialise(root)
    node = build_node(root, Solo(block_interval=0.05))
    with serve_over_http(node.asgi()) as url:
        yield Served(node, NodeClient(url, org), org)
    node.close()


def anchor_payload(blob_hash: str) -> dict[str, object]:
    return {
        "patient": Identity.generate().did,
        "resource_type": "Observation",
        "record": os.urandom(32).hex(),
        "version": 1,
        "blob_hash": blob_hash,
        "commitment": os.urandom(32).hex(),
        "recipients": ["scope/clinical/1", Identity.generate().did],
    }


def test_an_anchor_whose_blob_is_not_here_is_refused_on_every_route(served: Served) -> None:
    before = served.nonce()
    missing = os.urandom(32).hex()
    raw = served.sign("records/anchor", anchor_payload(missing), before + 1)
    expected = f"blob {missing} is not stored on this node"

    with pytest.raises(NodeError) as one:
        served.client.submit(raw, wait=True)
    assert (one.value.status, one.value.code) == (404, "not_found")
    assert expected in one.value.message

    [batch] = served.client.submit_many([raw], wait=True)
    assert batch["check_code"] == Code.NOT_FOUND and expected in batch["check_log"]

    pending = served.client.submit_pipelined([raw])
    [admitted] = pending.admitted
    [result] = pending.results()
    assert admitted["check_code"] == Code.NOT_FOUND and expected in admitted["check_log"]
    assert result["height"] is None  # never in a block

    assert served.nonce() == before  # the mempool never saw it: no nonce spent
    assert served.client.status()["mempool_size"] == 0
    with pytest.raises(NodeError) as unknown:
        served.client.transaction(batch["hash"])
    assert unknown.value.status == 404


def test_a_registered_check_refuses_its_type_before_the_driver(served: Served) -> None:
    blocked = Identity.generate()

    def no_blocked_practitioner(stx: SignedTx) -> Refusal | None:
        if stx.tx.payload.get("did") == blocked.did:
            return Refusal(Code.UNAUTHORISED, f"{blocked.did} is refused by this node's policy")
        return None

    served.node.pipeline.register("identity/register_practitioner", no_blocked_practitioner)
    start = served.nonce()

    def register(practitioner: Identity, nonce: int) -> bytes:
        chain_id = served.node.app.chain_id
        payload = practitioner_payload(chain_id, served.org.did, practitioner, "Dr. P")
        return served.sign("identity/register_practitioner", payload, nonce)

    with pytest.raises(NodeError) as refused:
        served.client.submit(register(blocked, start + 1), wait=True)
    assert (refused.value.status, refused.value.code) == (403, "unauthorised")
    assert "refused by this node's policy" in refused.value.message
    assert served.nonce() == start

    allowed = served.client.submit(register(Identity.generate(), start + 1), wait=True)
    assert allowed["code"] == 0 and allowed["height"] >= 1
    assert served.nonce() == start + 1


def test_bytes_that_do_not_decode_reach_the_driver_which_names_the_fault(
    served: Served,
) -> None:
    def refuse_everything(stx: SignedTx) -> Refusal | None:
        return Refusal(Code.UNAUTHORISED, "refused by the pipeline")

    served.node.pipeline.register("records/anchor", refuse_everything)
    with pytest.raises(NodeError) as malformed:
        served.client.submit(b'{"type":"records/anchor"}' + bytes(64), wait=True)
    assert malformed.value.code == "malformed"  # check_tx's answer, not the pipeline's
    assert "refused by the pipeline" not in malformed.value.message


def test_the_builder_registers_the_records_checks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    initialise(root)
    node = build_node(root, Solo())
    try:
        assert node.pipeline.checked_types() == {"records/anchor", "records/anchor_batch"}
        assert node.driver.inner is node.consensus
    finally:
        node.close()
