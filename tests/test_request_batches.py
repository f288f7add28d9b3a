"""The wallet splits a long or heavy submission into POST /txs the node accepts.

The node refuses a POST /txs of more than MAX_BATCH transactions (400) or a body over TXS_BODY
(413): a hospital's 600 enrolments of 500 dids (30 KB each) made one request of 24 MB, and
nothing was enrolled. `NodeClient.submit_many` now sends as many requests as the limits need,
in order."""

from __future__ import annotations

import base64
import json

from careledger.chain.codes import Code
from careledger.chain.modules.identity.enrolments import ENROLLED_REGISTRATION_TYPE
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity
from careledger.protocol.batches import MAX_BATCH, TXS_BODY, request_batches
from careledger.wallet.enrolment import enrol_patients
from careledger.wallet.node_client import NodeClient
from nodeutil import NodeProcess
from test_enrolments import registration


def body_bytes(batch: list[bytes]) -> int:
    """The size of the POST /txs body the wallet sends for `batch`."""
    txs = [base64.b64encode(raw).decode() for raw in batch]
    return len(json.dumps({"txs": txs, "wait": True, "stream": True}).encode())


def test_batches_keep_the_order_and_both_limits() -> None:
    heavy = [bytes([i % 256]) * 30_000 for i in range(700)]  # 40 KB each in base64: 24+ MB
    light = [i.to_bytes(4, "big") for i in range(2 * MAX_BATCH + 1)]
    for raws in (heavy, light, heavy[:3] + light + heavy[:2]):
        batches = request_batches(raws)
        assert [raw for batch in batches for raw in batch] == raws
        assert all(0 < len(b) <= MAX_BATCH and body_bytes(list(b)) <= TXS_BODY for b in batches)
    assert len(request_batches(heavy)) == 2  # as few requests as the limits allow
    assert [len(b) for b in request_batches(light)] == [MAX_BATCH, MAX_BATCH, 1]
    assert request_batches([]) == []


def test_a_submission_over_the_nodes_batch_limit_goes_through(node: NodeProcess) -> None:
    """MAX_BATCH + 1 registrations by enrolment in one submit_many (a real node)."""
    org = node.organisation()
    client = NodeClient(node.url, org)
    chain_id = str(client.status()["chain_id"])
    patients = [Identity.generate() for _ in range(MAX_BATCH + 1)]
    enrol_patients(client, org.identity, org.did, [p.did for p in patients])
    registrations = [
        Tx(chain_id, ENROLLED_REGISTRATION_TYPE, p.did, 1, registration(p, org.did)).sign(p)
        for p in patients
    ]
    results = client.submit_many(registrations, wait=True)
    assert [r["code"] for r in results] == [Code.OK] * len(patients)
