"""Gateway search with 100,000 indexed resources (issue 10): p50/p99 of
`Observation?patient=...&code=...`, of a date range, of a count over every patient, and of a
Patient name search.

  index level  the index (real gateway.sqlite) filled with Synthea's resources, copied with
               fresh ids and patients until it holds 100,000; each query parsed, matched,
               narrowed to what the caller may read (`Access`) and paged, as a search does
               before reading the page through the node
  end to end   (--http) a real `careledger up` process: one Synthea patient's resources
               written through the gateway's FHIR API, the rest of the 100,000 added to its
               index; each query a real HTTP request with a SMART token, its page read
               through the node (consent decided, blobs fetched, decrypted, audited)

Run: .venv/bin/python -m bench.gateway_search [--http] [--resources 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import machine, percentile
from careledger.demo import shared_data
from careledger.gateway.context import SCHEMAS
from careledger.gateway.db import GatewayDb
from careledger.gateway.index.search import Access, IndexSearch, parse_query
from careledger.gateway.index.store import Located, RecordIndex

ORG = "did:key:zBenchOrganisation"
STAMP = "2026-01-01T00:00:00.000Z"


def synthea_patients() -> list[list[dict[str, Any]]]:
    """Each Synthea bundle's resources (references made relative), one list per patient."""
    root = shared_data()
    assert root is not None, "shared data not found (CARELEDGER_SHARED_DATA)"
    patients = []
    for path in sorted((root / "synthea-r4").glob("*_*.json")):
        bundle = json.loads(path.read_text())
        text = json.dumps([e["resource"] for e in bundle["entry"]])
        resources = json.loads(text.replace('"urn:uuid:', '"Patient/'))
        kept = [r for r in resources if r["resourceType"] not in ("Organization", "Practitioner")]
        if kept and kept[0]["resourceType"] == "Patient":
            patients.append(kept)
    return patients


def copies(
    patients: list[list[dict[str, Any]]], total: int
) -> Iterator[list[tuple[Located, dict[str, Any]]]]:
    """Patients' resources with fresh ids and dids, until `total` resources, one patient at
    a time (references rewritten to the copy's ids)."""
    made, n = 0, 0
    while made < total:
        source = patients[n % len(patients)]
        did = f"did:key:zBenchPatient{n}"
        renamed = {r["id"]: str(uuid.uuid4()) for r in source}
        text = json.dumps(source)
        for old, new in renamed.items():
            text = text.replace(old, new)
        items = []
        for i, resource in enumerate(json.loads(text)[: total - made]):
            located = Located(
                resource["resourceType"], resource["id"], did, f"{n:08x}{i:056x}", 1, STAMP, False
            )
            items.append((located, resource))
        made += len(items)
        n += 1
        yield items


def fill(index: RecordIndex, total: int) -> float:
    """Put `total` resources, a patient per put (as an import does a bundle); the seconds
    spent in put() alone (making the copies is the benchmark's own work)."""
    spent = 0.0
    for items in copies(synthea_patients(), total):
        started = time.perf_counter()
        index.put(items)
        spent += time.perf_counter() - started
    with index.db.write() as sql:
        sql.execute("ANALYZE")
    return spent


def workloads(
    index: RecordIndex, rng: random.Random
) -> dict[str, Callable[[], list[tuple[str, str]]]]:
    """Each query's parameters, drawn at random from what the index holds."""
    with index.db.read() as sql:
        patients = [
            str(r[0])
            for r in sql.execute("SELECT id FROM resources WHERE resource_type = 'Patient'")
        ]
        codes = [
            str(r[0])
            for r in sql.execute(
                "SELECT DISTINCT code FROM search_token "
                "WHERE resource_type = 'Observation' AND name = 'code'"
            )
        ]
        families = [
            str(r[0])
            for r in sql.execute("SELECT value FROM search_string WHERE name = 'family' LIMIT 2000")
        ]

    def patient_code() -> list[tuple[str, str]]:
        return [
            ("patient", rng.choice(patients)),
            ("code", f"http://loinc.org|{rng.choice(codes)}"),
        ]

    def patient_dates() -> list[tuple[str, str]]:
        year = rng.randint(1990, 2019)
        return [
            ("patient", rng.choice(patients)),
            ("date", f"ge{year}"),
            ("date", f"lt{year + 3}"),
            ("_sort", "-date"),
        ]

    def code_count() -> list[tuple[str, str]]:
        return [("code", rng.choice(codes)), ("_summary", "count")]

    def family_prefix() -> list[tuple[str, str]]:
        return [("family", rng.choice(families)[:3])]

    return {
        "Observation?patient=&code=": patient_code,
        "Observation?patient=&date=ge&date=lt&_sort=-date": patient_dates,
        "Observation?code=&_summary=count (every patient)": code_count,
        "Patient?family=<3 letters>": family_prefix,
    }


def index_level(total: int, queries: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = GatewayDb.open(Path(tmp) / "gateway.sqlite", SCHEMAS)
        index = RecordIndex(db, ORG)
        seconds = fill(index, total)
        print(f"put {total:,} resources in {seconds:.1f} s ({total / seconds:,.0f}/s in put())")
        search = IndexSearch(index)
        access = Access.of_grants([], ORG, ORG, "TREAT", int(time.time()))
        rng = random.Random(10)
        print("| query (index level) | p50 ms | p99 ms | mean matches |")
        print("|---|---|---|---|")
        for name, draw in workloads(index, rng).items():
            times, sizes = [], []
            for _ in range(queries):
                query = parse_query(name.split("?")[0], draw())
                started = time.perf_counter()
                found = search.run(query, access)
                times.append(time.perf_counter() - started)
                sizes.append(found.total)
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            print(f"| {name} | {p50:.2f} | {p99:.2f} | {sum(sizes) / len(sizes):,.0f} |")
        db.close()


def end_to_end(total: int, queries: int) -> None:
    """A real careledger up: one patient written through the FHIR API, the index filled."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from gatewayutil import GatewayProcess  # type: ignore[import-not-found]
    from nodeutil import free_port  # type: ignore[import-not-found]

    # The index's filler patients are not on the chain: the follower would (rightly) forget
    # them while the queries run. Its passes are off for this measurement.
    os.environ["CARELEDGER_GATEWAY_SYNC"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        node = GatewayProcess(Path(tmp) / "data", free_port())
        node.start("--block-interval", "0.05")
        try:
            http = node.http
            patient = synthea_patients()[0]
            created = _post(http, {k: v for k, v in patient[0].items() if k != "id"})
            observations = [
                {**r, "subject": {"reference": f"Patient/{created}"}}
                for r in patient[1:]
                if r["resourceType"] == "Observation"
            ][:200]
            codes = []
            for resource in observations:
                clean = {k: v for k, v in resource.items() if k not in ("id", "encounter")}
                _post(http, clean)
                codes.append(resource["code"]["coding"][0]["code"])
            node.stop()
            db = GatewayDb.open(node.gateway_dir / "gateway.sqlite", SCHEMAS)
            index = RecordIndex(db, node.organisation().did)
            started = time.perf_counter()
            for items in copies(synthea_patients(), total - len(observations) - 1):
                index.put(items)
            with db.write() as sql:
                sql.execute("ANALYZE")
            db.close()
            print(f"index filled to {total:,} in {time.perf_counter() - started:.1f} s")
            node.start("--block-interval", "0.05")
            http = node.http
            rng = random.Random(10)
            times, sizes = [], []
            for _ in range(queries):
                params = {"patient": created, "code": f"http://loinc.org|{rng.choice(codes)}"}
                began = time.perf_counter()
                response = http.get("Observation", params=params)
                times.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
                sizes.append(len(response.json().get("entry", [])))
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            print("| query (HTTP, read through the node) | p50 ms | p99 ms | mean entries |")
            print("|---|---|---|---|")
            mean = sum(sizes) / len(sizes)
            print(f"| Observation?patient=&code= | {p50:.1f} | {p99:.1f} | {mean:.1f} |")
        finally:
            node.stop()


def _post(http: Any, resource: dict[str, Any]) -> str:
    response = http.post(
        resource["resourceType"],
        content=json.dumps(resource),
        headers={"content-type": "application/fhir+json"},
    )
    assert response.status_code == 201, response.text
    return str(response.headers["location"]).split("/")[
        -3 if "_history" in response.headers["location"] else -1
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--http", action="store_true", help="also end to end over HTTP")
    parser.add_argument("--http-only", action="store_true", help="only end to end")
    args = parser.parse_args()
    print(machine())
    if not args.http_only:
        index_level(args.resources, args.queries)
    if args.http or args.http_only:
        end_to_end(args.resources, args.queries)


if __name__ == "__main__":
    main()
