"""Consent on a real 4-validator CometBFT network, with the SDK and real reads.

A grant made through one node is enforced by every other node from the block that commits
it, with nothing else done; a revocation made through another node likewise, and a record
written after it is out of reach of the revoked party's old keys; a new record without the
patient's write consent is refused by every node, and nothing of it is anchored.

Each node decides a read from its own committed state (node/consent_guard.py). "A node has
the grant's block" here means its *application* committed that height (`app_height`, read
from the node's state database): CometBFT's RPC height (`wait_for_height`) can run ahead of
it, since CometBFT stores a block before the application has committed it, and a read decided
in that gap would still see the state before the grant.

The window in which a node has not reached the block yet is caught deterministically: the
node's CometBFT process is paused (SIGSTOP; `paused_consensus`) before the grant or the
revocation is submitted, so it cannot commit that block however long the test takes, while
its application and API keep serving what it did commit, and the other three validators (3 of
4 > 2/3) keep committing.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from netutil import organisation, running_network, some_observations, wait_until

from careledger.chain.codes import Code
from careledger.crypto.envelope import BlobOwner, unpack_record_blob
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.scopekeys import (
    BROAD_SCOPES,
    DIAGNOSTICS,
    ScopeKeyError,
    ScopeKeyPair,
    unwrap_data_key,
)
from careledger.localnet.network import Network, node_pids
from careledger.storage.blobstore import BlobStore
from careledger.wallet.consent import ConsentClient
from careledger.wallet.keyring import encryption_keys
from careledger.wallet.node_client import NodeError
from careledger.wallet.records import RecordRef, RecordsClient, RecordsError, Written
from careledger.wallet.refs import raise_for
from nodeutil import enrol

pytestmark = pytest.mark.timeout(420)

NODES = range(4)
AUTHOR, READER, SECOND_READER, STRANGER = 0, 2, 1, 3  # organisation (and node) indexes
HOUR = 3600


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with running_network(tmp_path_factory.mktemp("consent") / "net") as started:
        yield started


# --- the network's state, as each node's application sees it --------------------------------


def app_height(network: Network, index: int) -> int:
    """The last height node `index`'s application committed (its state database, read-only):
    the state its API's reads and consent decisions are answered from. Readable while the
    node's CometBFT is paused."""
    path = network.app_data(index).state
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (top,) = db.execute("SELECT COALESCE(MAX(height), 0) FROM commits").fetchone()
    return int(top)


def wait_for_app_height(network: Network, index: int, target: int) -> int:
    """Wait until node `index`'s application committed `target`; the height it is at then."""
    wait_until(lambda: app_height(network, index) >= target, 60, f"node{index}'s app at {target}")
    return app_height(network, index)


def wait_for_blobs(network: Network, hashes: Sequence[str]) -> None:
    """Every node holds these blobs (replicated from the node that took the write)."""
    stores = [BlobStore(network.app_data(i).blobs) for i in NODES]
    wait_until(lambda: all(h in s for s in stores for h in hashes), 60, "blobs on every node")


@contextmanager
def paused_consensus(network: Network, index: int) -> Iterator[None]:
    """Node `index`'s CometBFT stopped (SIGSTOP) and resumed on the way out: the node commits
    nothing meanwhile, but its application and API keep answering from what it committed.
    Only clients that already asked the node's /status (which asks CometBFT; the SDK reads the
    chain id there once) are used through it meanwhile."""
    pid = node_pids(network, index)["cometbft"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


# --- records and reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    written: Written
    original: dict[str, Any]

    @property
    def ref(self) -> RecordRef:
        return self.written.ref


def url(network: Network, node: int) -> str:
    return network.nodes[node].api_url


def reader(network: Network, org: int, node: int) -> RecordsClient:
    """Organisation `org` reading through node `node`, for treatment."""
    return RecordsClient(url(network, node), organisation(network, org), purpose="TREAT")


def author(network: Network) -> RecordsClient:
    return RecordsClient(url(network, AUTHOR), organisation(network, AUTHOR))


def write(network: Network, patient: str, resources: Sequence[dict[str, Any]]) -> list[Record]:
    """Organisation 0 writes through node 0 (it has the patient's write consent from the
    enrolment); once every node holds the blobs."""
    written = author(network).write_many(patient, resources)
    wait_for_blobs(network, [w.blob_hash for w in written])
    return [Record(w, dict(r)) for w, r in zip(written, resources, strict=True)]


def enrolled(network: Network, name: str) -> KeyFile:
    """A patient with their own keys, registered through organisation 0's voucher."""
    return enrol(author(network), name)


def assert_reads(client: RecordsClient, record: Record) -> None:
    """The record reads, decrypted, as it was written."""
    read = client.read(record.ref)
    assert _without_meta(read) == _without_meta(record.original)


def assert_refused(client: RecordsClient, record: Record, reason: str) -> None:
    """Refused twice over: the node does not even list the patient's records to a
    non-party (node/query_guard.py), and its consent guard refuses the blob for `reason`."""
    with pytest.raises(RecordsError) as refused:
        client.read(record.ref)
    assert refused.value.status == 403
    assert "parties of its consent" in str(refused.value)
    ((status, message),) = client.fetch([record.written.blob_hash])
    assert status == 403 and reason in message.decode(), (status, message[:120])


def _without_meta(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def blob_and_anchor(
    network: Network, patient: KeyFile, record: Record
) -> tuple[bytes, dict[str, Any]]:
    """The record's blob as its patient fetches it, and its anchor."""
    client = RecordsClient(url(network, AUTHOR), patient)
    [(status, blob)] = client.fetch([record.written.blob_hash])
    assert status == 200
    anchor = client.versions(record.ref)["history"][record.written.version - 1]
    return blob, anchor


def owner(record: Record) -> BlobOwner:
    """What the blob's header names (and a data key's wrap is bound to): patient, name."""
    return BlobOwner(record.ref.patient, record.ref.name)


def assert_no_key_opens(
    blob: bytes, record: Record, keys: Sequence[ScopeKeyPair | Any], *, scope_label: str
) -> None:
    """None of `keys` unwraps any of the blob's data key wraps (the scope wrap, whose label is
    checked, and the author's)."""
    wraps = unpack_record_blob(blob).wrapped_keys
    assert scope_label in {w.recipient for w in wraps}
    for wrapped in wraps:
        for key in keys:
            with pytest.raises(ScopeKeyError):
                unwrap_data_key(wrapped, owner(record), key)


def scope_wrap(blob: bytes, label: str) -> Any:
    [found] = [w for w in unpack_record_blob(blob).wrapped_keys if w.recipient == label]
    return found


def grant_read(network: Network, node: int, patient: KeyFile, org: int) -> tuple[str, int]:
    """The patient grants organisation `org` read access for treatment (the broad scopes),
    through node `node`; the grant's id and the height of its block."""
    consent = ConsentClient(url(network, node), patient)
    org_did = organisation(network, org).did
    grant_id = consent.grant(org_did, purposes=("TREAT",), end=int(time.time()) + HOUR)
    return grant_id, int(consent.grant_detail(grant_id)["height"])


# --- the tests -----------------------------------------------------------------------------


def test_without_a_grant_every_node_refuses_organisation_2_and_no_key_of_it_opens(
    network: Network,
) -> None:
    patient = enrolled(network, "no grant")
    records = write(network, patient.did, some_observations(2))

    for node in (1, 2, 3):
        for record in records:
            # The blob is there and readable from this node, by its author organisation ...
            assert_reads(reader(network, AUTHOR, node), record)
            # ... and refused to an organisation the patient granted nothing.
            assert_refused(reader(network, READER, node), record, "no read grant")

    # Organisation 2 holds no key: with the blob in hand (as its patient fetched it), it can
    # neither open it through the SDK nor unwrap any data key with its own keys.
    stranger = reader(network, READER, 2)
    record = records[0]
    blob, anchor = blob_and_anchor(network, patient, record)
    with pytest.raises(RecordsError) as unopened:
        stranger.open_blob(record.ref, anchor, blob)
    assert unopened.value.status == 403
    with pytest.raises(RecordsError) as unnamed:
        stranger.keyring.naming_key(patient.did)
    assert unnamed.value.status == 403
    label = f"scope/{DIAGNOSTICS}/1"
    own = encryption_keys(organisation(network, READER))
    assert_no_key_opens(blob, record, own, scope_label=label)
    # The check can fail: the patient's scope key does open the same wrap.
    assert unwrap_data_key(
        scope_wrap(blob, label), owner(record), patient.scope_key(DIAGNOSTICS, 1)
    )


def test_a_grant_through_node_0_is_enforced_by_every_other_node_from_its_block(
    network: Network,
) -> None:
    patient = enrolled(network, "grant")
    first, later = some_observations(3)[:2], some_observations(3)[2]
    records = write(network, patient.did, first)
    # Organisation 2's clients, one per node, made before the grant and kept: nothing is done
    # on its side but reading.
    clients = {node: reader(network, READER, node) for node in (1, 2, 3)}
    for client in clients.values():
        assert_refused(client, records[0], "no read grant")

    with paused_consensus(network, 3):
        _, granted_at = grant_read(network, 0, patient, READER)
        # Node 3 has not committed the grant's block (its CometBFT stopped before the grant
        # existed): it still refuses, from the state it has.
        assert_refused(clients[3], records[0], "no read grant")
        assert app_height(network, 3) < granted_at
        for node in (1, 2):
            wait_for_app_height(network, node, granted_at)
            for record in records:
                assert_reads(clients[node], record)
    wait_for_app_height(network, 3, granted_at)
    for record in records:
        assert_reads(clients[3], record)

    # A record written after the grant is covered by it, the patient doing nothing more: it is
    # wrapped to the patient's scope key only (and its author), not to organisation 2.
    [new] = write(network, patient.did, [later])
    recipients = author(network).versions(new.ref)["history"][0]["recipients"]
    assert organisation(network, READER).did not in recipients
    for client in clients.values():
        assert_reads(client, new)


def test_a_revocation_through_node_3_is_enforced_from_its_block_and_new_epochs_lock_out_old_keys(
    network: Network,
) -> None:
    patient = enrolled(network, "revocation")
    before_resource, after_resource = some_observations(2)
    [before] = write(network, patient.did, [before_resource])
    revoked_id, granted_at = grant_read(network, 0, patient, READER)
    # The patient moves to node 1: once it has the first grant (its nonce comes from there).
    wait_for_app_height(network, 1, granted_at)
    _, kept_at = grant_read(network, 1, patient, SECOND_READER)  # made before the revocation
    for node in NODES:
        wait_for_app_height(network, node, max(granted_at, kept_at))
    # Both grantees read before the revocation, through clients they keep (and so the keys
    # their grants wrapped to them, which organisation 2 keeps below).
    revoked = {node: reader(network, READER, node) for node in NODES}
    for client in revoked.values():
        assert_reads(client, before)
    kept = reader(network, SECOND_READER, 1)
    assert_reads(kept, before)
    held = [revoked[2].keyring.scope_pair(patient.did, scope, 1) for scope in BROAD_SCOPES]
    old_keys = [pair for pair in held if pair is not None]
    assert len(old_keys) == len(BROAD_SCOPES)

    with paused_consensus(network, 1):
        through_node_3 = ConsentClient(url(network, 3), patient)
        # The revocation, and new epochs of its scopes whose keys go to organisation 1.
        assert sorted(through_node_3.revoke(revoked_id)) == sorted(BROAD_SCOPES)
        revoked_at = int(through_node_3.grant_detail(revoked_id)["revoked_at"])
        rotated_by = app_height(network, 3)  # the new epochs may commit a block later
        # Node 1, below the revocation's block, still decides from the state it has.
        assert_reads(revoked[1], before)
        assert app_height(network, 1) < revoked_at
        for node in (0, 2, 3):
            wait_for_app_height(network, node, revoked_at)
            assert_refused(revoked[node], before, f"revoked at height {revoked_at}")
    wait_for_app_height(network, 1, revoked_at)
    assert_refused(revoked[1], before, f"revoked at height {revoked_at}")
    for node in NODES:
        wait_for_app_height(network, node, rotated_by)

    # Written after the revocation, to the new epoch of the scope: every node refuses it to
    # organisation 2, and the keys it held open none of it, even with the blob in hand.
    [after] = write(network, patient.did, [after_resource])
    new_label = f"scope/{DIAGNOSTICS}/2"
    assert new_label in author(network).versions(after.ref)["history"][0]["recipients"]
    for client in revoked.values():
        assert_refused(client, after, "revoked at height")
    blob, anchor = blob_and_anchor(network, patient, after)
    with pytest.raises(RecordsError) as unopened:
        revoked[2].open_blob(after.ref, anchor, blob)
    assert unopened.value.status == 403
    own = encryption_keys(organisation(network, READER))
    assert_no_key_opens(blob, after, [*old_keys, *own], scope_label=new_label)
    # The check can fail: the same old keys open the record written before the revocation.
    old_blob, _ = blob_and_anchor(network, patient, before)
    old_label = f"scope/{DIAGNOSTICS}/1"
    diagnostics = next(pair for pair in old_keys if pair.scope == DIAGNOSTICS)
    assert unwrap_data_key(scope_wrap(old_blob, old_label), owner(before), diagnostics)

    # Organisation 1, granted before the revocation, received the new epoch's keys: it reads
    # the new record, through the client it kept and through a new one on another node.
    assert_reads(kept, after)
    assert_reads(reader(network, SECOND_READER, 2), after)


def test_a_new_record_without_write_consent_is_refused_by_every_node_and_nothing_is_anchored(
    network: Network,
) -> None:
    patient = enrolled(network, "write consent")
    resources = some_observations(2)
    [existing] = write(network, patient.did, resources[:1])
    intruder = organisation(network, STRANGER)

    # Through the SDK the write stops before the chain: the patient shared no naming key.
    with pytest.raises(RecordsError) as unnamed:
        RecordsClient(url(network, 0), intruder).write(patient.did, resources[1])
    assert unnamed.value.status == 403

    # As an intruder would, with a made-up name: sealed, uploaded and its anchor submitted
    # through each node, and each refuses it for want of write consent.
    attempted = []
    for node in NODES:
        client = RecordsClient(url(network, node), intruder)
        keys = client.scope_keys(patient.did)
        job = client.writer.job(patient.did, resources[1], keys, {}, os.urandom(32))
        [prepared] = client.writer.seal_and_upload([job])
        attempted.append(prepared.payload["blob_hash"])
        raw = client.signer.sign("records/anchor", prepared.payload)
        [result] = client.node.submit_many([raw], wait=True)
        assert (result["check_code"] or result["code"]) == Code.NO_CONSENT, result
        if result["height"]:  # refused in the block: the next node must have it (the nonce)
            for other in NODES:
                wait_for_app_height(network, other, int(result["height"]))
        with pytest.raises(RecordsError) as refused:
            raise_for(result, "anchor")
        assert refused.value.status == 403
        assert "no write consent" in str(refused.value)

    # Nothing is anchored, on any node, a block later.
    top = max(app_height(network, node) for node in NODES) + 1
    for node in NODES:
        wait_for_app_height(network, node, top)
        client = RecordsClient(url(network, node), intruder)
        mine = RecordsClient(url(network, node), patient)
        assert [r["record"] for r in mine.records()] == [existing.ref.name]
        for blob_hash in attempted:
            with pytest.raises(NodeError) as unanchored:
                client.node.query("records/blob", hash=blob_hash)
            assert unanchored.value.status == 404

    # The check can fail: with the patient's write consent, the same organisation writes.
    consent = ConsentClient(url(network, 2), patient)
    consent.grant(
        intruder.did, action="write", scopes=BROAD_SCOPES, purposes=(), end=int(time.time()) + HOUR
    )
    written = RecordsClient(url(network, 2), intruder).write(patient.did, resources[1])
    assert written.version == 1
