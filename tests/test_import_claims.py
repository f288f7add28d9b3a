"""An import of several patients: each claim package sealed ahead (a thread, while the
previous patient's records are written) at the full KDF strength, each one the patient's.

A real embedded node over HTTP on loopback; the three smallest Synthea bundles in one
`import_bundles` call, so that every patient but the first is sealed ahead.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from careledger.crypto.claim import DEFAULT_KDF, KdfParams, claim_package_info
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import initialise
from careledger.wallet.enrolment import enrol_sealed_claim, seal_new_claim
from careledger.wallet.fhir import BundleIndex
from careledger.wallet.records import (
    ImportSummary,
    RecordsClient,
    RecordsError,
    import_bundles,
)
from nodeutil import SHARED_DATA, claimed_keys, serve_over_http

CHEAP = KdfParams(memory_kib=64 * 1024, iterations=1, lanes=1)


def smallest_bundles(count: int) -> list[Path]:
    paths = [p for p in (SHARED_DATA / "synthea-r4").glob("*.json") if "Information" not in p.name]
    return sorted(paths, key=lambda p: p.stat().st_size)[:count]


def test_claims_sealed_ahead_are_each_patients_at_full_strength(tmp_path: Path) -> None:
    root = tmp_path / "data"
    org = initialise(root)
    node = build_node(root, Solo(block_interval=0.05))
    bundles = [orjson.loads(p.read_bytes()) for p in smallest_bundles(3)]
    summary = ImportSummary()
    try:
        with serve_over_http(node.asgi()) as url, RecordsClient(url, org, workers=2) as client:
            written = import_bundles(client, bundles, tmp_path / "claims", summary)
    finally:
        node.close()
    assert summary.patients == 3 and len(summary.claims) == 3
    assert len({c.did for c in summary.claims}) == 3
    assert len({c.code for c in summary.claims}) == 3
    expected: Counter[int] = Counter()
    for bundle in bundles:
        groups, _ = BundleIndex.of(bundle).split_by_patient()
        assert len(groups) == 1
        expected[len(groups[0].entries) + 1] += 1
    per_patient = Counter(w.ref.patient for w in written)
    assert Counter(per_patient.values()) == expected  # each patient's records under its did
    for claim in summary.claims:
        header = claim_package_info(claim.package)
        assert header["did"] == claim.did
        kdf = header["kdf"]  # the strength is the default's, whatever the thread did
        assert (kdf["memory_kib"], kdf["iterations"], kdf["lanes"]) == (
            DEFAULT_KDF.memory_kib,
            DEFAULT_KDF.iterations,
            DEFAULT_KDF.lanes,
        )
        assert claimed_keys(claim).did == claim.did  # the code opens it: the patient's keys
        assert set(per_patient) >= {claim.did}


def test_a_claim_sealed_for_another_chain_is_not_enrolled(tmp_path: Path) -> None:
    root = tmp_path / "data"
    org = initialise(root)
    node = build_node(root, Solo(block_interval=0.05))
    try:
        with serve_over_http(node.asgi()) as url, RecordsClient(url, org) as client:
            sealed = seal_new_claim("another-chain", "Ada", kdf=CHEAP)
            with pytest.raises(ValueError, match="another chain"):
                enrol_sealed_claim(client.node, client.identity, client.did, sealed)
            with pytest.raises(RecordsError) as unknown:  # nothing of it reached the chain
                client.scope_keys(sealed.did)
            assert unknown.value.status == 404
            assert "Ada" not in repr(sealed) and sealed.code not in repr(sealed)
    finally:
        node.close()
