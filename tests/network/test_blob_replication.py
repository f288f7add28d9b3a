"""Blobs between nodes: a record written through one node can be read from every node."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from netutil import organisation, running_network, some_observations, wait_until

from careledger.storage.blobstore import BlobStore
from careledger.wallet.records import RecordRef, RecordsClient, RecordsError

pytestmark = pytest.mark.timeout(180)


def test_a_record_written_through_one_node_is_readable_from_every_node(tmp_path: Path) -> None:
    with running_network(tmp_path / "net") as network:
        writer = RecordsClient(network.nodes[0].api_url, organisation(network, 0))
        patient = writer.enrol_patient("replication test")
        originals = some_observations(3)
        written = writer.write_many(patient.keyfile.did, originals)

        for index in range(1, len(network.nodes)):
            reader = RecordsClient(network.nodes[index].api_url, organisation(network, 0))
            wait_until(partial(_readable, reader, written[-1].ref), 60, f"node{index} has blobs")
            for original, w in zip(originals, written, strict=True):
                read = reader.read(w.ref)
                assert read["meta"]["versionId"] == "1"
                assert _without_meta(read) == _without_meta(original)
            stored = BlobStore(network.app_data(index).blobs)
            assert {w.blob_hash for w in written} <= set(stored)


def _without_meta(resource: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _readable(reader: RecordsClient, ref: RecordRef) -> bool:
    try:
        reader.read(ref)
    except RecordsError:
        return False
    return True
