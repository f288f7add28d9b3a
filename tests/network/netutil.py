"""Helpers for the network tests: a real local network, waiting, reading what nodes committed."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.tx import Tx
from careledger.consensus.cometbft.config import NetSettings
from careledger.consensus.cometbft.rpc import sync_call
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.localnet.network import (
    Network,
    create_network,
    start_network,
    stop_network,
)
from careledger.wallet.node_client import NodeClient, NodeError
from nodeutil import SHARED_DATA, free_port_block

SYNTHEA = SHARED_DATA / "synthea-r4"

# Short timeouts keep the tests quick; the machine has two cores, so not too short.
TEST_SETTINGS = NetSettings(timeout_commit="200ms", create_empty_blocks_interval="0s")


def free_base_port(hosts: int) -> int:
    """A base port whose p2p, RPC, API (and spare) ports are free on every node's address,
    from this test worker's own ports (nodeutil.free_port_block)."""
    return free_port_block(4, [f"127.0.0.{i + 1}" for i in range(hosts)])


@contextmanager
def running_network(root: Path, validators: int = 4) -> Iterator[Network]:
    """A started network whose processes are stopped whatever happens in the test."""
    network = create_network(
        root, validators, base_port=free_base_port(validators), settings=TEST_SETTINGS
    )
    try:
        start_network(network)
        yield network
    finally:
        stop_network(network)


def height(network: Network, index: int) -> int:
    """The node's CometBFT height; -1 while its RPC does not take connections (a stopped or
    starting node) or is too busy to answer in time. Any other error is raised: a test that
    waits on this must fail with the real error, not a timeout."""
    try:
        sync = sync_call(network.nodes[index].rpc_url, "status", timeout=5)["sync_info"]
    except (httpx.ConnectError, httpx.TimeoutException):
        return -1
    return int(sync["latest_block_height"])


def committed_code(client: NodeClient, digest: str) -> int | None:
    """The result code of a committed transaction; None while it is in no block (404).
    Any other answer is an error and is raised."""
    try:
        return int(client.transaction(digest)["code"])
    except NodeError as exc:
        if exc.status == 404:
            return None
        raise


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_for_height(network: Network, index: int, target: int, timeout: float = 30) -> None:
    wait_until(lambda: height(network, index) >= target, timeout, f"node{index} at {target}")


def app_hashes(network: Network, index: int) -> dict[int, str]:
    """height -> app hash, as the node's application committed them (read-only)."""
    path = network.app_data(index).state
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT height, app_hash FROM commits ORDER BY height").fetchall()
    return {int(h): bytes(a).hex() for h, a in rows}


def assert_same_app_hashes(network: Network, indexes: list[int]) -> int:
    """Every node agrees at every height they all have; returns how many heights compared."""
    tables = [app_hashes(network, i) for i in indexes]
    common = set.intersection(*(set(t) for t in tables))
    for h in sorted(common):
        assert len({t[h] for t in tables}) == 1, f"app hashes differ at height {h}"
    return len(common)


def block_hash(network: Network, index: int, at: int) -> str:
    found = sync_call(network.nodes[index].rpc_url, "block", height=str(at))
    return str(found["block_id"]["hash"])


def organisation(network: Network, index: int) -> KeyFile:
    return KeyFile.load(network.app_data(index).organisation_key)


def patient_tx(network: Network, nonce: int = 1) -> tuple[Identity, bytes]:
    """A new patient's registration, with node0's organisation's enrolment voucher."""
    patient, org = Identity.generate(), organisation(network, 0)
    payload = {
        "encryption_key": patient.encryption_public.hex(),
        "voucher": sign_voucher(
            org.identity, network.chain_id, "register_patient", patient.did, 10**9, org.did
        ),
    }
    tx = Tx(network.chain_id, "identity/register_patient", patient.did, nonce, payload)
    return patient, tx.sign(patient)


def some_observations(count: int) -> list[dict[str, object]]:
    """Observations of a Synthea bundle, without their subject (the writer sets the patient)."""
    bundle = orjson.loads(next(iter(sorted(SYNTHEA.glob("A*.json")))).read_bytes())
    found = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    return [{k: v for k, v in r.items() if k != "subject"} for r in found[:count]]
