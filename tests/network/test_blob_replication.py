"""Blobs between nodes: a record written through one node can be read from every node.

Nodes copy blobs through `POST /replication/fetch` (member organisations only); who may read
a copy is decided by each node's consent guard, as on the node that took the write."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from netutil import organisation, running_network, some_observations, wait_until

from careledger.storage.blobstore import BlobStore
from careledger.wallet.records import RecordRef, RecordsClient, RecordsError
from nodeutil import enrol

pytestmark = pytest.mark.timeout(180)


def test_a_record_written_through_one_node_is_readable_from_every_node(tmp_path: Path) -> None:
    with running_network(tmp_path / "net") as network:
        writer = RecordsClient(network.nodes[0].api_url, organisation(network, 0))
        patient = enrol(writer, "replication test")
        originals = some_observations(3)
        written = writer.write_many(patient.did, originals)

        for index in range(1, len(network.nodes)):
            url = network.nodes[index].api_url
            # The author organisation reads its records from any node, stating why.
            reader = RecordsClient(url, organisation(network, 0), purpose="TREAT")
            # Blobs replicate in no set order: wait for each (the last written may come first).
            for w in written:
                wait_until(partial(_readable, reader, w.ref), 60, f"node{index} has {w.ref}")
            for original, w in zip(originals, written, strict=True):
                read = reader.read(w.ref)
                assert read["meta"]["versionId"] == "1"
                assert _without_meta(read) == _without_meta(original)
            stored = BlobStore(network.app_data(index).blobs)
            assert {w.blob_hash for w in written} <= set(stored)
            # The copy is ciphertext in custody: the member running this node has no grant,
            # and its node does not serve it the blob it holds.
            member = RecordsClient(url, organisation(network, index), purpose="TREAT")
            assert [s for s, _ in member.fetch([written[0].blob_hash])] == [403]
            # The patient reads from every node.
            assert RecordsClient(url, patient).read(written[0].ref)["id"]


def _without_meta(resource: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _readable(reader: RecordsClient, ref: RecordRef) -> bool:
    try:
        reader.read(ref)
    except RecordsError:
        return False
    return True
