"""The access log and break-glass on a real 4-validator CometBFT network.

Reads of a patient's records (allowed and denied) through several nodes, each by a real
signed request: every one is in the patient's log exactly once, each entry proven against the
validator set the user trusts (CometBFT's genesis.json), and each read's receipt is proven
on chain, signed by the node that served it.

A promised entry survives its node's crash: "promised" means the node journaled the entry
durably (fsync) and signed a receipt for it before it served the first byte of the read. The
node's CometBFT is paused before the read, so the batch cannot be committed before the kill
however fast the batcher is; after the restart the entry is on chain and the receipt checks.

Break-glass is k-of-n across the members' own nodes, k = 3 of the 4: the alert is in the
patient's log once the break-glass commits, before any node released a share; with two
members' nodes down the requester gets two shares and nothing opens; with a third back, the
keys open exactly the opened scopes, and the nodes serve them only for emergency treatment.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from netutil import organisation, running_network, some_observations, wait_until

from accessutil import Reader
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import Audience
from careledger.localnet.network import Network, kill_node, node_pids, start_node, stop_node
from careledger.protocol.cometbft import ValidatorSet, trusted_validator_set
from careledger.protocol.signing import RequestSigner
from careledger.storage.blobstore import BlobStore
from careledger.wallet.audit import AuditClient, LoggedAccess, check_receipt, receipt_of
from careledger.wallet.break_glass import (
    NotEnoughShares,
    collect_shares,
    emergency_keys,
    open_emergency,
    submit_break_glass,
)
from careledger.wallet.consent import ConsentClient
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.records import RecordsClient, RecordsError, Written
from nodeutil import enrol, practitioner_payload

pytestmark = pytest.mark.timeout(600)

HOUR = 3600
AUTHOR, READER, STRANGER = 0, 2, 3
GRANTEE = READER


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


# --- a promised entry survives a crash; break-glass k-of-n ------------------------------------

REASON = "unconscious in the emergency department, no consent obtainable"


def node_did(network: Network, index: int) -> str:
    return KeyFile.load(network.app_data(index).node_key).did


def author(network: Network) -> RecordsClient:
    return RecordsClient(_url(network, AUTHOR), organisation(network, AUTHOR))


def write(network: Network, patient: str, resources: Sequence[dict[str, Any]]) -> list[Written]:
    """Organisation 0 writes through node 0; returns once every node holds the blobs (a read
    through another node is then decided, not a 404 for a blob still replicating)."""
    written = author(network).write_many(patient, resources)
    hashes = [w.blob_hash for w in written]
    wait_until(lambda: all(_has_blobs(network, n, hashes) for n in range(4)), 60, "blobs")
    return written


def proven_log(network: Network, patient: KeyFile, at_least: int) -> list[LoggedAccess]:
    """The patient's log through node 3 once it holds `at_least` entries, every entry proven
    against the genesis validator set."""
    audit = AuditClient(_url(network, 3), patient, _validators(network))
    wait_until(lambda: len(audit.log(verify=False)) >= at_least, 60, "entries committed")
    return audit.log(verify=True)


def test_an_entry_promised_before_a_crash_is_committed_after_the_restart(
    network: Network,
) -> None:
    patient = enrol(author(network), "crash")
    [written] = write(network, patient.did, some_observations(1))
    before = len(proven_log(network, patient, 0))
    node = 1
    status = httpx.get(f"{_url(network, node)}/status").json()
    audience = Audience(str(status["chain_id"]), str(status["node_id"]))
    signer = RequestSigner(patient.identity, patient.did, audience)

    cometbft = node_pids(network, node)["cometbft"]
    os.kill(cometbft, signal.SIGSTOP)  # node 1 commits nothing from here on
    try:
        response = httpx.get(f"{_url(network, node)}/blobs/{written.blob_hash}", auth=signer)
        assert response.status_code == 200
        receipted = receipt_of(response)  # the node's signed promise
        assert receipted.receipt.entries == 1
        assert receipted.receipt.node == node_did(network, node)
    finally:
        kill_node(network, node)  # SIGKILL both processes, the stopped CometBFT too
    # Nothing of the read reached the chain before the crash.
    assert len(proven_log(network, patient, 0)) == before

    start_node(network, node)
    log = proven_log(network, patient, before + 1)
    assert len(log) == before + 1
    [entry] = log[:1]
    assert (entry.entry.reader, entry.node, entry.entry.outcome) == (
        patient.did,
        node_did(network, node),
        "patient",
    )
    # The reader's receipt checks against the chain too: the entry promised is the one there.
    [proven] = check_receipt(
        receipted, NodeClient(_url(network, node), patient), trust=_validators(network)
    )
    assert proven.entry.leaf() == entry.entry.leaf()


# --- break-glass ---------------------------------------------------------------------------


def register_practitioner(network: Network, org: int) -> KeyFile:
    member = organisation(network, org)
    client = NodeClient(_url(network, org), member)
    ident = Identity.generate()
    chain_id = str(client.status()["chain_id"])
    payload = practitioner_payload(chain_id, member.did, ident, "Dr. Emergency")
    Signer(client, member.did, member.identity).send("identity/register_practitioner", payload)
    return KeyFile(ident.did, "practitioner", ident, "Dr. Emergency")


def test_break_glass_takes_three_of_the_four_members_nodes_and_alerts_the_patient_first(
    network: Network,
) -> None:
    patient = enrol(author(network), "emergency")
    observation, encounter = (
        some_observations(1)[0],
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
        },
    )
    diagnostics, administrative = write(network, patient.did, [observation, encounter])
    opened = ("clinical", "diagnostics", "medications")
    open_emergency(_url(network, 0), patient, opened)
    doctor = register_practitioner(network, GRANTEE)
    urls = [_url(network, i) for i in range(4)]

    client = NodeClient(_url(network, GRANTEE), doctor)
    glass = submit_break_glass(client, doctor, patient.did, REASON)
    # The alert is committed with the break-glass: in the patient's log before any node
    # was asked for a share (asked of node 2, whose application committed the break-glass:
    # the submission waited for it there; another node may not have applied that block yet).
    with AuditClient(_url(network, GRANTEE), patient, trust=_validators(network)) as audit:
        alerts = audit.access_log(verify=False).alerts
    assert [a["alert"]["id"] for a in alerts][:1] == [glass["id"]]
    assert alerts[0]["height"] <= int(glass["height"])

    stop_node(network, 0)
    stop_node(network, 1)  # two of the four members' nodes down: 2 < k = 3
    try:
        answers, refusals = collect_shares(client, doctor, glass["id"], urls)
        assert len(answers) == 2 and set(refusals) == {urls[0], urls[1]}
        with pytest.raises(NotEnoughShares) as short:
            emergency_keys(client, doctor, glass, answers, refusals)
        assert (short.value.released, short.value.needed) == (2, 3)

        start_node(network, 1)  # a third member's node back: k shares
        answers, refusals = collect_shares(client, doctor, glass["id"], urls)
        assert len(answers) == 3
        keys = emergency_keys(client, doctor, glass, answers, refusals)
    finally:
        start_node(network, 0)
        start_node(network, 1)

    assert set(keys.scopes) == set(opened)
    emergency = RecordsClient(_url(network, GRANTEE), doctor, purpose="ETREAT", keyring=keys)
    read = emergency.read(diagnostics.ref)
    assert read["resourceType"] == "Observation"
    with pytest.raises(RecordsError) as closed:  # administrative was never opened
        emergency.read(administrative.ref)
    assert closed.value.status == 403
    treat = RecordsClient(_url(network, GRANTEE), doctor, purpose="TREAT", keyring=keys)
    with pytest.raises(RecordsError):  # break-glass reads are emergency treatment only
        treat.read(diagnostics.ref)
