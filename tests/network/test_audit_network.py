"""The access log is complete on a real 4-validator CometBFT network.

Reads of a patient's records (allowed and denied) through several nodes, each by a real
signed request: every one is in the patient's log exactly once, each entry proven against the
validator set the user trusts (CometBFT's genesis.json), and each read's receipt is proven
on chain, signed by the node that served it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import orjson
import pytest
from netutil import organisation, running_network, some_observations, wait_until

from accessutil import Reader
from careledger.localnet.network import Network
from careledger.protocol.cometbft import ValidatorSet, trusted_validator_set
from careledger.storage.blobstore import BlobStore
from careledger.wallet.audit import AuditClient, check_receipt, receipt_of
from careledger.wallet.consent import ConsentClient
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient
from nodeutil import enrol

pytestmark = pytest.mark.timeout(420)

HOUR = 3600
AUTHOR, READER, STRANGER = 0, 2, 3


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with running_network(tmp_path_factory.mktemp("audit") / "net") as started:
        yield started


def _url(network: Network, node: int) -> str:
    return network.nodes[node].api_url


def _validators(network: Network) -> ValidatorSet:
    genesis = network.home(1) / "config" / "genesis.json"
    return trusted_validator_set(orjson.loads(genesis.read_bytes()))


def _app_height(network: Network, index: int) -> int:
    path = network.app_data(index).state
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (top,) = db.execute("SELECT COALESCE(MAX(height), 0) FROM commits").fetchone()
    return int(top)


def test_every_read_through_any_node_is_in_the_log_once_with_its_proof(network: Network) -> None:
    author = RecordsClient(_url(network, AUTHOR), organisation(network, AUTHOR))
    patient = enrol(author, "audited")
    written = author.write_many(patient.did, some_observations(2))
    hashes = [w.blob_hash for w in written]
    consent = ConsentClient(_url(network, AUTHOR), patient)
    grant = consent.grant(
        organisation(network, READER).did, purposes=("TREAT",), end=int(time.time()) + HOUR
    )
    granted_at = int(consent.grant_detail(grant)["height"])
    for node in range(4):
        wait_until(lambda n=node: _app_height(network, n) >= granted_at, 60, "the grant")
    wait_until(lambda: all(_has_blobs(network, n, hashes) for n in range(4)), 60, "blobs")
    trust = _validators(network)
    before = len(AuditClient(_url(network, 1), patient, trust).log(verify=False))

    reader, stranger = organisation(network, READER), organisation(network, STRANGER)
    reads = [  # (who, through which node, blob, purpose, expected status, outcome)
        (reader, 2, hashes[0], "TREAT", 200, "grant"),
        (reader, 1, hashes[1], "TREAT", 200, "grant"),
        (reader, 3, hashes[0], "HRESCH", 403, "denied"),
        (stranger, 3, hashes[1], "TREAT", 403, "denied"),
        (patient, 0, hashes[1], "", 200, "patient"),
    ]
    served_by: set[str] = set()
    for who, node, digest, purpose, status, outcome in reads:
        response = Reader(_url(network, node), who).get(digest, purpose)
        assert response.status_code == status, response.text
        signed_as = NodeClient(_url(network, node), who)
        (proven,) = check_receipt(receipt_of(response), signed_as, trust=trust)
        assert (proven.entry.outcome, proven.entry.reader) == (outcome, who.did)
        assert proven.block is not None and proven.block.trusted
        served_by.add(proven.node)
    assert len(served_by) == 4  # each node signed the batches of the reads it served

    log = AuditClient(_url(network, 1), patient, trust).log(verify=True)
    assert len(log) == before + len(reads)  # complete: each read once, nothing more
    newest = log[: len(reads)]
    assert sorted(a.entry.outcome for a in newest) == sorted(r[5] for r in reads)
    assert all(a.block is not None and a.block.trusted for a in log)
    assert {a.node for a in newest} == served_by


def _has_blobs(network: Network, node: int, hashes: list[str]) -> bool:
    store = BlobStore(network.app_data(node).blobs)
    return all(h in store for h in hashes)
