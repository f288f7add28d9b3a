"""Records written and read per second end to end, and bytes stored per byte of FHIR JSON.

A real `careledger up` process (the embedded node: solo producer, SQLite, blob store) on a
fresh data directory; this process is the writer (the node's organisation, through the
records SDK, validating and sealing in a pool of `--workers` processes) and then each patient
reading all of their records back. Every Synthea patient bundle is imported.

  write = validate + stamp + canonicalise + compress + encrypt + wrap (x2) + upload (durable)
          + anchor submitted + committed in a block
  read  = chain query + blob fetch + hash check + unwrap + decrypt + commitment check

Then the stages alone, in this process, to show where the time goes.

Run: .venv/bin/python -m bench.records_throughput [--workers 2] [--bundles 0 (all)]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import machine
from careledger.crypto.claim import DEFAULT_KDF, open_claim_package
from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import ScopePublic
from careledger.demo import shared_data
from careledger.node.datadir import initialise
from careledger.storage.blobstore import BlobStore
from careledger.wallet.fhir import BundleIndex, validate_resource
from careledger.wallet.records import ImportSummary, RecordsClient, Written, import_bundles
from careledger.wallet.sealing import Job, prepare

SYNTHEA = (shared_data() or Path("shared-data-not-found")) / "synthea-r4"


def start_node(root: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "careledger.cli",
            "up",
            "--data-dir",
            str(root),
            "--port",
            str(port),
            "--block-interval",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/status", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("node did not start")


def end_to_end(paths: list[Path], workers: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        port = 18000 + (int(time.time()) % 1000)
        node = start_node(root, port)
        url = f"http://127.0.0.1:{port}"
        try:
            summary, written, json_bytes = ImportSummary(), [], 0
            bundles = [orjson.loads(p.read_bytes()) for p in paths]
            source_bytes = sum(p.stat().st_size for p in paths)
            with RecordsClient(url, org, workers=workers) as client:
                client.node.status()  # warm the connection
                client.warm()  # start the pool's processes, load the FHIR models
                pool = pool_pids(node.pid)
                processes = {"node": [node.pid], "writer": [os.getpid()], "pool": pool}
                cpu_before = {k: cpu_seconds(pids) for k, pids in processes.items()}
                started = time.perf_counter()
                written += import_bundles(client, bundles, Path(scratch) / "keys", summary)
                write_s = time.perf_counter() - started
                cpu = {k: cpu_seconds(pids) - cpu_before[k] for k, pids in processes.items()}
            for bundle in bundles:
                index = BundleIndex.of(bundle)
                groups, _ = index.split_by_patient()
                for g in groups:
                    for e in [g.patient, *g.entries]:
                        json_bytes += len(orjson.dumps(index.local_references(e.resource)))
            read_s, read = read_all(url, summary, written)
            stored = sum(p.stat().st_size for p in (root / "blobs").rglob("*") if p.is_file())
        finally:
            node.terminate()
            node.wait(10)
        print(f"machine: {machine()}")
        print(
            f"resources written: {len(written)} of {len(paths)} bundles, "
            f"{summary.patients} patients, workers={workers}"
        )
        print(f"write: {len(written) / write_s:,.0f} records/s ({write_s:.1f} s)")
        per_record = {k: 1000 * v / len(written) for k, v in cpu.items()}
        print(
            f"write CPU per record: {sum(per_record.values()):.2f} ms ("
            + ", ".join(f"{k} {v:.2f}" for k, v in per_record.items())
            + f"; the claim KDF, {summary.patients} patients, ~{kdf_ms(summary.patients, written)}"
            " of the writer's)"
        )
        print(f"read:  {read / read_s:,.0f} records/s ({read_s:.1f} s)")
        print(
            f"stored blob bytes / compact FHIR JSON bytes: {stored / json_bytes:.3f} "
            f"({stored:,} / {json_bytes:,})"
        )
        print(f"stored blob bytes / source bundle file bytes: {stored / source_bytes:.3f}")


_TICKS = os.sysconf("SC_CLK_TCK")


def pool_pids(node: int) -> list[int]:
    """This process's children but the node: the sealing pool's worker processes."""
    me = os.getpid()
    children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
    return [int(c) for c in children if int(c) != node]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these live processes (Linux /proc), so that a run on a
    shared machine still says what the write path costs, whatever the wall clock did."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def kdf_ms(patients: int, written: list[Written]) -> str:
    """The claim packages' Argon2id cost per record written (one derivation per patient)."""
    params = DEFAULT_KDF.with_fresh_salt()
    started = time.process_time()
    params.derive("warm up the kdf")
    one = time.process_time() - started
    return f"{1000 * one * patients / max(1, len(written)):.2f} ms"


def read_all(url: str, summary: ImportSummary, written: list[Written]) -> tuple[float, int]:
    by_patient: dict[str, list[Written]] = {}
    for w in written:
        by_patient.setdefault(w.ref.patient, []).append(w)
    keys = {c.did: patient_keys(c.package, c.code) for c in summary.claims}
    started, count = time.perf_counter(), 0
    for did, writes in by_patient.items():
        client = RecordsClient(url, keys[did])
        count += len(client.read_many([w.ref for w in writes]))
    return time.perf_counter() - started, count


def patient_keys(package: Path, code: str) -> KeyFile:
    """The patient's keys from its claim package (unclaimed: the benchmark reads as the
    identity the clinic enrolled; a claim would only add one rotation)."""
    identity = open_claim_package(package, code).identity
    return KeyFile(identity.did, "patient", identity, naming_key=naming_key_of(identity))


def stages(paths: list[Path]) -> None:
    """Each stage alone on one core, to show where the time goes."""
    resources = []
    for p in paths[:8]:
        index = BundleIndex.of(orjson.loads(p.read_bytes()))
        resources += [index.local_references(e.resource) for e in index.entries]
    me, scope = Identity.generate(), Identity.generate()
    sp = ScopePublic("clinical", 1, scope.encryption_public)
    jobs = [
        Job(orjson.dumps(r), me.did, "00" * 32, 1, sp, me.did, me.encryption_public)
        for r in resources
    ]
    for r in resources[:200]:
        validate_resource(r)  # import the models first
    t = time.perf_counter()
    for r in resources:
        validate_resource(r)
    validate_s = time.perf_counter() - t
    t = time.perf_counter()
    prepared = [prepare(j) for j in jobs]
    prepare_s = time.perf_counter() - t
    blobs = [p.blob for p in prepared if not isinstance(p, str)]
    with tempfile.TemporaryDirectory() as scratch:
        store = BlobStore(scratch)
        t = time.perf_counter()
        store.put_many(blobs)
        put_s = time.perf_counter() - t
    n = len(resources)
    print(f"stages on one core ({n} resources of {min(8, len(paths))} bundles):")
    print(f"  validate (fhir.resources R4B)           {n / validate_s:,.0f}/s")
    print(f"  validate + seal + wrap x2 + pack         {n / prepare_s:,.0f}/s")
    print(f"  seal + wrap x2 + pack alone (derived)    {n / (prepare_s - validate_s):,.0f}/s")
    print(f"  blob put_many, fsync each, one thread    {n / put_s:,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bundles", type=int, default=0)
    args = parser.parse_args()
    paths = sorted(p for p in SYNTHEA.glob("*.json") if "Information" not in p.name)
    if args.bundles:
        paths = paths[: args.bundles]
    end_to_end(paths, args.workers)
    stages(paths)


if __name__ == "__main__":
    main()
