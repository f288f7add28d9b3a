"""The gateway end to end (issue 10): Synthea bundles imported through `POST /fhir` (one
transaction each: validate, enrol, encrypt, upload, anchor, index, commit), then reads by id.

A real `careledger up` process with a SMART backend client; the import is what
`careledger import` does (gateway/importer.py: directory bundles first, POST entries sent as
PUTs to their urn:uuid ids); reads are `GET /fhir/{type}/{id}` of random imported resources,
one client, each read through the node (consent decided, blob fetched, decrypted, audited).

Run: .venv/bin/python -m bench.gateway_import [--bundles 39] [--reads 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, percentile
from careledger.demo import shared_data
from careledger.gateway.importer import ImportState, import_files, ordered_files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=39, help="patient bundles to import")
    parser.add_argument("--reads", type=int, default=1000)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from gatewayutil import GatewayProcess  # type: ignore[import-not-found]
    from nodeutil import free_port  # type: ignore[import-not-found]

    root = shared_data()
    assert root is not None, "shared data not found (CARELEDGER_SHARED_DATA)"
    files = ordered_files([root / "synthea-r4"])
    directory = [f for f in files if "_" not in f.name]
    files = directory + [f for f in files if "_" in f.name][: args.bundles]
    print(machine())
    os.environ.setdefault("CARELEDGER_GATEWAY_SYNC", "0")  # the follower is not measured here
    with tempfile.TemporaryDirectory() as tmp:
        node = GatewayProcess(Path(tmp) / "data", free_port())
        node.start()
        try:
            http = node.http
            http.timeout = 600
            state = ImportState(Path(tmp) / "state.json")
            report = import_files(http, files, state)
            print(
                f"import: {report.resources:,} resources in {len(files)} bundles, "
                f"{report.seconds:.1f} s: **{report.per_second:.0f} resources/s** "
                f"(answers {report.by_status})"
            )
            ids = _observation_ids(http, 2000)
            rng = random.Random(7)
            times = []
            for _ in range(args.reads):
                began = time.perf_counter()
                answer = http.get(f"Observation/{rng.choice(ids)}")
                times.append(time.perf_counter() - began)
                assert answer.status_code == 200, answer.text
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            print(f"read by id: {args.reads} reads, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        finally:
            node.stop()


def _observation_ids(http: object, count: int) -> list[str]:
    answer = http.get("Observation", params={"_count": "500"})  # type: ignore[attr-defined]
    ids: list[str] = []
    while answer.status_code == 200 and len(ids) < count:
        bundle = answer.json()
        ids += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            break
        answer = http.get(following[0])  # type: ignore[attr-defined]
    assert ids, "no Observation found"
    return ids


if __name__ == "__main__":
    main()
