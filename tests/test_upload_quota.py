"""Per-identity upload quotas on a real embedded node over real HTTP: one identity filling the
node's disk with unanchored blobs is refused, with the limit named; others keep uploading."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise
from careledger.node.upload_quota import UploadQuota
from careledger.wallet.records import RecordsClient, RecordsError
from nodeutil import SHARED_DATA, enrol, serve_over_http

QUOTA = 16 * 1024
HOLD_S = 3600.0


@dataclass
class Served:
    node: Node[SoloProducer]
    url: str
    org: KeyFile
    clock: list[float]  # the quota's clock, moved by the test to expire orphans


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "data"
    org = initialise(root)
    node = build_node(root, Solo(0.05))
    clock = [0.0]
    node.blob_service.quota = UploadQuota(
        node.consensus, max_bytes=QUOTA, max_blobs=1000, hold_s=HOLD_S, clock=lambda: clock[0]
    )
    try:
        with serve_over_http(node.asgi()) as url:
            yield Served(node, url, org, clock)
    finally:
        node.close()


def observations(count: int) -> list[dict[str, object]]:
    bundle = orjson.loads(
        next(iter(sorted((SHARED_DATA / "synthea-r4").glob("A*.json")))).read_bytes()
    )
    found = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    return [{k: v for k, v in r.items() if k != "subject"} for r in found[:count]]


def test_an_identity_over_its_upload_quota_is_refused_while_others_upload(served: Served) -> None:
    clinic = RecordsClient(served.url, served.org)
    patient = RecordsClient(served.url, enrol(clinic, "quota test"))

    # The patient uploads blobs it never anchors, up to its quota; one more is refused.
    junk = [os.urandom(7 * 1024) for _ in range(2)]
    patient.upload(junk)
    with pytest.raises(RecordsError) as refused:
        patient.upload([os.urandom(4 * 1024)])
    assert refused.value.status == 429
    message = str(refused.value)
    assert message.startswith("quota_exceeded:") and f"limit of {QUOTA} bytes" in message
    assert served.node.blob_service.quota.pending_bytes(patient.did) == 2 * 7 * 1024

    # Another identity still uploads, and writes far more than the quota in all: its blobs
    # are anchored as it goes, and anchored blobs stop counting.
    written = []
    for resource in observations(60):
        written += clinic.write_many(patient.did, [resource])
    stored = sum(len(served.node.blob_store.get(w.blob_hash)) for w in written)
    assert stored > 2 * QUOTA
    assert patient.read(written[-1].ref)["id"] == written[-1].ref.resource_id

    with pytest.raises(RecordsError) as still:  # the patient's orphans still count
        patient.upload([os.urandom(4 * 1024)])
    assert still.value.status == 429

    served.clock[0] += HOLD_S + 1  # orphans older than the bound no longer count
    assert len(patient.upload([os.urandom(4 * 1024)])) == 1


def test_one_upload_larger_than_the_quota_is_refused_and_nothing_is_stored(
    served: Served,
) -> None:
    clinic = RecordsClient(served.url, served.org)
    before = sum(1 for _ in served.node.blob_store)
    with pytest.raises(RecordsError) as refused:
        clinic.upload([os.urandom(QUOTA + 1)])
    assert refused.value.status == 429 and "quota_exceeded" in str(refused.value)
    assert sum(1 for _ in served.node.blob_store) == before
    assert served.node.blob_service.quota.pending_bytes(clinic.did) == 0
