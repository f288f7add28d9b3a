"""A healthy 4-validator network: commits, agreement, rejection, solo equivalence, validators.

One network serves this module (starting one costs seconds on two cores); the fault tests
have their own networks in test_faults.py.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import orjson
import pytest
from netutil import (
    app_hashes,
    assert_same_app_hashes,
    committed_code,
    organisation,
    patient_tx,
    running_network,
    wait_for_height,
    wait_until,
)

from careledger.chain.app import Application, TxResult
from careledger.chain.block import BlockHeader, parse_time_ns
from careledger.chain.codes import Code
from careledger.chain.modules.identity.vouchers import sign_consent, sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.results import outcomes_hash
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx, tx_hash
from careledger.consensus.cometbft.rpc import RpcError, sync_call
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import Audience, authorization
from careledger.localnet.network import Network
from careledger.node.datadir import DataDir
from careledger.wallet.node_client import NodeClient, NodeError, Signer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with running_network(tmp_path_factory.mktemp("consortium") / "net") as net:
        yield net


def clients(network: Network) -> list[NodeClient]:
    """A client of each node, signing as that node's organisation."""
    return [client(network, n.index) for n in network.nodes]


def client(network: Network, index: int) -> NodeClient:
    return NodeClient(network.nodes[index].api_url, organisation(network, index), timeout=60)


def test_transactions_submitted_to_different_nodes_commit_with_one_app_hash(
    network: Network,
) -> None:
    nodes = clients(network)
    submitted = []
    for i in range(12):
        patient, raw = patient_tx(network)
        answer = nodes[i % 4].submit(raw, wait=False)
        assert answer["check_code"] == 0
        submitted.append((patient, answer["hash"]))
    last = nodes[0].submit(patient_tx(network)[1], wait=True)  # through node0, to the end
    assert last["code"] == 0 and last["height"] >= 1

    for client in nodes:  # every node serves every transaction, with a proof
        for patient, digest in submitted:
            wait_until(partial(_in_a_block, client, digest), 30, f"tx {digest[:8]}")
            assert committed_code(client, digest) == 0
            assert client.query("identity/identity", did=patient.did)["kind"] == "patient"
    top = max(c.status()["height"] for c in nodes)
    for i in range(4):
        wait_for_height(network, i, top)
    assert assert_same_app_hashes(network, [0, 1, 2, 3]) >= top


def _in_a_block(client: NodeClient, digest: str) -> bool:
    return committed_code(client, digest) is not None


def test_a_transaction_the_application_rejects_never_changes_state(network: Network) -> None:
    rpc = network.nodes[1].rpc_url
    chain_id = client(network, 0).status()["chain_id"]
    intruder, victim = Identity.generate(), Identity.generate()
    org = organisation(network, 0)
    voucher = sign_voucher(org.identity, chain_id, "register_patient", victim.did, 10**9, org.did)
    payload = {"encryption_key": "11" * 32, "voucher": voucher}
    body = Tx(chain_id, "identity/register_patient", victim.did, 1, payload)
    forged = body.body() + intruder.sign(body.body())  # signed by the wrong key
    garbage = b"not a transaction at all"
    scope = scope_key_payload(intruder, chain_id, "clinical", 1, "22" * 32)  # from no identity
    unknown = Tx(chain_id, "records/publish_scope_key", intruder.did, 1, scope).sign(intruder)

    cases = (
        (forged, Code.BAD_SIGNATURE),
        (garbage, Code.MALFORMED),
        (unknown, Code.UNKNOWN_SENDER),
    )
    for raw, code in cases:
        answer = sync_call(rpc, "broadcast_tx_sync", tx=base64.b64encode(raw).decode())
        assert int(answer["code"]) == code
        committed = sync_call(rpc, "broadcast_tx_commit", timeout=30, tx=_b64(raw + b" "))
        assert int(committed["check_tx"]["code"]) != 0 and int(committed["height"]) == 0

    wait_for_height(network, 1, _height(network, 1) + 2)
    for node in network.nodes:
        with pytest.raises(NodeError) as missing:
            client(network, node.index).query("identity/identity", did=victim.did)
        assert missing.value.status == 404
        for raw, _ in cases:
            with pytest.raises(RpcError):
                sync_call(node.rpc_url, "tx", hash=_b64(tx_hash(raw)))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _height(network: Network, index: int) -> int:
    return int(client(network, index).status()["height"])


def test_the_solo_producer_replays_cometbfts_blocks_to_the_same_app_hashes(
    network: Network, tmp_path: Path
) -> None:
    """The same transactions in the same blocks give the same app hash under both drivers."""
    node = client(network, 2)
    signer_org = organisation(network, 2)
    doctor = Identity.generate()
    chain_id = str(node.status()["chain_id"])
    key = doctor.encryption_public.hex()
    Signer(node, signer_org.did, signer_org.identity).send(
        "identity/register_practitioner",
        {
            "did": doctor.did,
            "encryption_key": key,
            "name": "Dr. N",
            "consent": sign_consent(doctor, chain_id, signer_org.did, key, 10**9),
        },
    )
    top = int(node.status()["height"])
    cometbft_hashes = _app_hashes_by_height(network, 2, top)

    data = DataDir(tmp_path / "solo")
    data.root.mkdir()
    data.genesis.write_bytes(network.app_data(2).genesis.read_bytes())
    blocks = BlockStore(data.blocks)
    for height in range(1, top + 1):
        found = node.block(height)
        _store_block(blocks, network, height, found, cometbft_hashes[height])
    app = Application(StateStore(data.state))
    app.init_chain(data.load_genesis())
    replayed = SoloProducer(app, blocks).recover()  # raises ReplayMismatch on any difference
    assert replayed == top
    assert app.info().last_app_hash.hex() == cometbft_hashes[top]
    assert app.query("identity/identity", orjson.dumps({"did": doctor.did})).code == 0


def _app_hashes_by_height(network: Network, index: int, top: int) -> dict[int, str]:
    table = app_hashes(network, index)
    return {h: table[h] for h in range(1, top + 1)}


def _store_block(
    blocks: BlockStore, network: Network, height: int, found: dict[str, object], app_hash: str
) -> None:
    header = found["header"]
    assert isinstance(header, dict)
    raw_block = sync_call(network.nodes[2].rpc_url, "block", height=str(height))
    txs = [base64.b64decode(t) for t in raw_block["block"]["data"]["txs"] or []]
    outcomes = sync_call(network.nodes[2].rpc_url, "block_results", height=str(height))
    results = [TxResult(int(r["code"])) for r in outcomes["txs_results"] or []]
    stored = BlockHeader(
        chain_id=str(header["chain_id"]),
        height=height,
        time_ns=parse_time_ns(str(header["time"])),
        previous_hash=str(header["previous_hash"]),
        data_hash=str(header["data_hash"]),
        app_hash=app_hash,  # the state after this block, as the solo store records it
        num_txs=len(txs),
        results_hash=outcomes_hash(results).hex(),  # replay must give the same results
    )
    blocks.save(stored, txs, [tx_hash(t) for t in txs], results)


def test_an_admitted_organisation_becomes_a_validator_and_a_removed_one_stops(
    network: Network,
) -> None:
    applicant = Identity.generate()
    validator_key = Identity.generate().signing_public  # any Ed25519 key serves as a consensus key
    own = NodeClient(network.nodes[0].api_url, applicant, timeout=60)  # not registered yet
    sponsor = organisation(network, 0)
    voucher = sign_voucher(
        sponsor.identity, network.chain_id, "apply_membership", applicant.did, 10**9, sponsor.did
    )
    Signer(own, applicant.did, applicant, last_nonce=0).send(
        "identity/apply_membership",
        {
            "name": "New Clinic",
            "encryption_key": applicant.encryption_public.hex(),
            "validator_pub_key": validator_key.hex(),
            "voucher": voucher,
        },
    )
    _vote(network, "admit", applicant.did)
    wait_until(lambda: _has_validator(network, validator_key), 30, "the new validator")

    _vote(network, "remove", applicant.did)
    wait_until(lambda: not _has_validator(network, validator_key), 30, "the removal")
    assert len(_validators(network)) == 4


def _vote(network: Network, action: str, subject: str) -> None:
    for i in range(3):  # three of the four founders: two thirds
        org = organisation(network, i)
        Signer(client(network, i), org.did, org.identity).send(
            "identity/approve_membership", {"action": action, "subject": subject}
        )


def _validators(network: Network) -> list[dict[str, object]]:
    found = sync_call(network.nodes[3].rpc_url, "validators", per_page="100")
    return list(found["validators"])


def _has_validator(network: Network, key: bytes) -> bool:
    encoded = base64.b64encode(key).decode()
    return any(v["pub_key"]["value"] == encoded for v in _validators(network))  # type: ignore[index]


def test_a_request_signed_for_one_node_is_refused_by_another_of_the_same_chain(
    network: Network,
) -> None:
    """The organisation is registered on every node's chain; its request to node0, captured,
    is useless at node1 (the audience is node0's id), and at node0 once it has been used."""
    org = organisation(network, 0)
    statuses = [client(network, i).status() for i in (0, 1)]
    assert statuses[0]["chain_id"] == statuses[1]["chain_id"]
    assert statuses[0]["node_id"] != statuses[1]["node_id"]
    node0 = Audience(statuses[0]["chain_id"], statuses[0]["node_id"])
    target = "/query/identity/members"
    ts = time.time_ns() // 1_000_000
    header = {"authorization": authorization(org.identity, org.did, node0, "GET", target, b"", ts)}

    elsewhere = httpx.get(network.nodes[1].api_url + target, headers=header)
    assert elsewhere.status_code == 401
    assert elsewhere.json()["error"]["code"] == "unauthenticated"
    assert httpx.get(network.nodes[0].api_url + target, headers=header).status_code == 200
    replayed = httpx.get(network.nodes[0].api_url + target, headers=header)
    assert replayed.json()["error"]["code"] == "replayed"
