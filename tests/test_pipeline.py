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
from careledger.crypto.envelope import BlobOwner, WrappedKey, pack_record_blob
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


def test_an_anchor_spelling_its_type_with_escapes_does_not_pass_the_guard(
    served: Served,
) -> None:
    """The pipeline looks for a checked type's JSON string in the bytes before decoding them
    (most submissions are of no checked type). An attacker spells the type another way JSON
    allows (`records\\/anchor`, `\\u0061`), validly signed, hoping the guard skips the
    anchor while the chain reads it as one: the driver refuses such bytes as not canonical,
    on every route, and no nonce is spent."""
    before = served.nonce()
    missing = anchor_payload(os.urandom(32).hex())
    body = served.sign("records/anchor", missing, before + 1)[:-64]
    spellings = [b'"records\\/anchor"', b'"records/\\u0061nchor"']
    for spelling in spellings:
        hidden = body.replace(b'"records/anchor"', spelling)
        assert hidden != body and b'"records/anchor"' not in hidden
        raw = hidden + served.org.identity.sign(hidden)
        assert served.node.pipeline.refusal(raw) is None  # not looked at: no such bytes

        with pytest.raises(NodeError) as one:
            served.client.submit(raw, wait=True)
        assert one.value.code == "malformed" and "canonical" in one.value.message
        [batch] = served.client.submit_many([raw], wait=True)
        assert batch["check_code"] == Code.MALFORMED and batch["height"] is None
    assert served.nonce() == before
    assert served.client.status()["mempool_size"] == 0


def test_the_builder_registers_the_records_checks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    initialise(root)
    node = build_node(root, Solo())
    try:
        assert node.pipeline.checked_types() == {"records/anchor", "records/anchor_batch"}
        assert node.driver.inner is node.consensus
    finally:
        node.close()


def stored_blob_for(served: Served, payload: dict[str, object], named: str = "") -> str:
    """A record blob naming the anchor's record (or the record `named`), in the node's store."""
    owner = BlobOwner(str(payload["patient"]), named or str(payload["record"]))
    blob = pack_record_blob(owner, [WrappedKey("scope/clinical/1", bytes(80))], os.urandom(64))
    return served.node.blob_store.put(blob)


def test_a_batch_is_refused_whole_when_one_anchors_blob_is_missing_or_names_another_record(
    served: Served,
) -> None:
    before = served.nonce()
    good = anchor_payload("")
    good["blob_hash"] = stored_blob_for(served, good)
    missing = anchor_payload(os.urandom(32).hex())
    claimed = anchor_payload("")
    claimed["blob_hash"] = stored_blob_for(served, claimed, named=os.urandom(32).hex())
    other = anchor_payload("")
    tombstone = {k: v for k, v in other.items() if k in ("patient", "resource_type", "record")}
    tombstone |= {"version": 2, "tombstone": 1}  # names no blob: not this check's business

    refusals = [
        ([good, tombstone, missing], 404, f"anchor 2 of 3: blob {missing['blob_hash']} is not"),
        ([good, claimed], 409, f"anchor 1 of 2: blob {claimed['blob_hash']} names record"),
    ]
    for anchors, status, expected in refusals:
        raw = served.sign("records/anchor_batch", {"anchors": anchors}, before + 1)
        with pytest.raises(NodeError) as refused:
            served.client.submit(raw, wait=True)
        assert refused.value.status == status and expected in refused.value.message
    assert served.nonce() == before  # nothing reached the mempool
    assert served.client.status()["mempool_size"] == 0

    # Every blob here and naming its record: the batch passes this node's checks (the chain
    # then refuses it: its patients are made up, which is the state machine's business).
    raw = served.sign("records/anchor_batch", {"anchors": [good, tombstone]}, before + 1)
    result = served.client.submit(raw, wait=True)
    assert result["code"] == Code.NOT_FOUND and "anchor 0 of 2: " in result["log"]
    assert served.nonce() == before + 1
