"""`careledger verify` on a real network node's directory, and the pipeline under CometBFT.

One 2-validator network: records written through node0 (their blobs replicate to node1),
one of them erased, then the network is stopped and its node directories are verified: an
honest one passes; a copy with one changed byte in the application's state or in a blob
fails, naming the state row, the block height or the blob hash.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from netutil import organisation, running_network, some_observations, wait_until

from blobutil import flip_byte
from careledger.chain.tx import Tx
from careledger.localnet.network import Network
from careledger.storage.blobstore import BlobStore
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.records import RecordsClient, Written
from nodeutil import enrol, run_verify

pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class Stopped:
    network: Network
    patient: str
    written: list[Written]  # live records
    erased: Written
    erased_blob: bytes  # the erased record's blob, as it was before erasure
    while_running: str  # verify's stderr on a running node
    refused: NodeError  # an anchor without its blob, submitted to node1

    def node_copy(self, index: int, tmp_path: Path) -> Path:
        copy = tmp_path / f"node{index}"
        shutil.copytree(
            self.network.node_dir(index),
            copy,
            ignore=shutil.ignore_patterns("*.sock"),
            copy_function=_copy_unless_gone,
        )
        return copy


def _copy_unless_gone(source: str, target: str) -> None:
    """A SQLite -wal or -shm file may vanish between listing and copying: the last
    connection of a process that is still closing (the app's query threads) removes them
    after a checkpoint, which leaves the database file whole. Anything else must copy."""
    try:
        shutil.copy2(source, target)
    except FileNotFoundError:
        if not source.endswith(("-wal", "-shm")):
            raise


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    root = tmp_path_factory.mktemp("verify-network") / "net"
    with running_network(root, validators=2) as network:
        writer = RecordsClient(network.nodes[0].api_url, organisation(network, 0))
        enrolled = enrol(writer, "verify test")
        patient = enrolled.did
        *written, doomed = writer.write_many(patient, some_observations(4))
        node0_blobs = BlobStore(network.app_data(0).blobs)
        doomed_blob = node0_blobs.get(doomed.blob_hash)
        RecordsClient(network.nodes[0].api_url, enrolled).erase([doomed.ref])
        replica = BlobStore(network.app_data(1).blobs)
        wait_until(partial(_replicated, replica, written, doomed), 60, "node1's blobs")
        refused = _anchor_without_its_blob(network, writer)
        while_running = run_verify(network.node_dir(0)).stderr
    yield Stopped(network, patient, written, doomed, doomed_blob, while_running, refused)


def _replicated(store: BlobStore, written: list[Written], erased: Written) -> bool:
    return all(w.blob_hash in store for w in written) and erased.blob_hash not in store


def _anchor_without_its_blob(network: Network, writer: RecordsClient) -> NodeError:
    """Under the CometBFT driver too, the pipeline refuses an anchor whose blob is missing."""
    org = organisation(network, 0)
    client = NodeClient(network.nodes[1].api_url, org)
    nonce = int(client.query("auth/nonce", did=org.did)["last_nonce"]) + 1
    payload = {
        "patient": org.did,
        "resource_type": "Observation",
        "record": os.urandom(32).hex(),
        "version": 1,
        "blob_hash": os.urandom(32).hex(),
        "commitment": os.urandom(32).hex(),
        "recipients": ["scope/clinical/1", org.did],
    }
    raw = Tx(client.status()["chain_id"], "records/anchor", org.did, nonce, payload)
    try:
        client.submit(raw.sign(org.identity), wait=True)
    except NodeError as exc:
        return exc
    raise AssertionError("node1 forwarded an anchor whose blob it does not hold")


def applied_height(node_dir: Path) -> int:
    with sqlite3.connect(node_dir / "app" / "state.sqlite") as db:
        return int(db.execute("SELECT MAX(height) FROM commits").fetchone()[0])


def test_a_stopped_network_node_verifies(stopped: Stopped) -> None:
    for index, target in ((0, stopped.network.node_dir(0)), (1, stopped.network.app_data(1).root)):
        result = run_verify(target)  # the node's directory, or its app/ directory
        assert result.returncode == 0, result.stderr
        blocks = applied_height(stopped.network.node_dir(index))
        assert f"OK: {blocks} blocks," in result.stdout
        assert f"{len(stopped.written)} record blobs verified (1 erased;" in result.stdout


def test_verify_refuses_a_running_node_clearly(stopped: Stopped) -> None:
    assert "verification failed: cannot read CometBFT's stores" in stopped.while_running
    assert "stop it first" in stopped.while_running


def test_an_anchor_without_its_blob_is_refused_under_cometbft(stopped: Stopped) -> None:
    assert stopped.refused.status == 404
    assert "is not stored on this node" in stopped.refused.message


def test_a_changed_state_row_is_named(stopped: Stopped, tmp_path: Path) -> None:
    node = stopped.node_copy(0, tmp_path)
    with sqlite3.connect(node / "app" / "state.sqlite") as db:
        key, value = db.execute(
            "SELECT key, value FROM state WHERE CAST(key AS TEXT) LIKE ? ORDER BY key LIMIT 1",
            (f"%{stopped.patient}%",),
        ).fetchone()
        db.execute("UPDATE state SET value = ? WHERE key = ?", (_flip(value), key))
    result = run_verify(node)
    assert result.returncode == 1
    name = repr(bytes(key).decode())
    assert f"verification failed: state row {name} has a value that differs" in result.stderr


def test_a_changed_app_hash_names_its_block(stopped: Stopped, tmp_path: Path) -> None:
    node = stopped.node_copy(1, tmp_path)
    height = stopped.written[0].height
    with sqlite3.connect(node / "app" / "state.sqlite") as db:
        (app_hash,) = db.execute("SELECT app_hash FROM commits WHERE height = ?", (height,))
        db.execute("UPDATE commits SET app_hash = ? WHERE height = ?", (_flip(app_hash[0]), height))
    result = run_verify(node)
    assert result.returncode == 1
    expected = f"verification failed: block {height}: state store's app hash differs"
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize("fault", ["changed", "deleted", "erased but back"])
def test_a_blob_fault_names_the_blob(stopped: Stopped, tmp_path: Path, fault: str) -> None:
    node = stopped.node_copy(1, tmp_path)  # node1's blobs came by replication
    blobs = BlobStore(node / "app" / "blobs")
    if fault == "erased but back":
        digest, says = stopped.erased.blob_hash, "is still on disk"
        blobs.put(stopped.erased_blob)
    else:
        digest = stopped.written[1].blob_hash
        if fault == "changed":
            says = "does not match its anchor's hash"
            flip_byte(blobs, digest)
        else:
            says = "is missing"
            blobs.delete(digest)
    result = run_verify(node)
    assert result.returncode == 1
    assert f"verification failed: blob {digest} " in result.stderr, result.stderr
    assert says in result.stderr


def _flip(value: bytes) -> bytes:
    data = bytearray(value)
    data[len(data) // 2] ^= 0x01
    return bytes(data)
