"""Records written and read per second end to end, and bytes stored per byte of FHIR JSON.

A real `careledger up` process (the embedded node: solo producer, SQLite, blob store) on a
fresh data directory; this process is the writer (the node's organisation, through the
records SDK, validating and sealing in a pool of `--workers` processes) and then each patient
reading all of their records back. Every Synthea patient bundle is imported.

  write = validate + stamp + canonicalise + compress + encrypt + wrap (x2) + upload (durable)
          + anchor submitted + committed in a block
  read  = chain query + blob fetch (consent decision, audit entries journaled, receipt) + hash
          check + receipt check + unwrap + decrypt + commitment check

Then a second version of every record for the patients now enrolled (the import's figure
includes one claim-package KDF per patient, a security parameter: docs/crypto.md 9.4; this
one shows the write path alone), and the stages alone, in this process.

Figures go to bench/record.py: records.write, records.write.cpu_ms (node/writer/pool split),
records.write.enrolled, records.write.enrolled.cpu_ms, records.read, records.read.cpu_ms
(node/reader split: the node's includes its audit batcher and the blocks committing the
reads' entries, as far as they run within the reads' time).

Run: .venv/bin/python -m bench.records_throughput [--workers 2] [--bundles 0 (all)]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import careledger
from bench.common import machine
from bench.record import record
from careledger.crypto.claim import DEFAULT_KDF, open_claim_package
from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import ScopePublic
from careledger.demo import shared_data
from careledger.node.datadir import initialise
from careledger.storage.blobstore import BlobStore
from careledger.wallet.fhir import BundleIndex, model_class, validate_resource
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


@dataclass
class Phase:
    """One timed write: records, wall seconds, CPU seconds per process group."""

    records: int
    seconds: float
    cpu: dict[str, float]

    def per_record_ms(self) -> dict[str, float]:
        return {k: 1000 * v / max(1, self.records) for k, v in self.cpu.items()}

    def show(self, label: str) -> str:
        split = self.per_record_ms()
        return (
            f"{label}: {self.records / self.seconds:,.0f} records/s ({self.seconds:.1f} s); "
            f"CPU per record {sum(split.values()):.2f} ms ("
            + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
            + ")"
        )

    def record(self, measure: str, **detail: object) -> None:
        split = {k: round(v, 3) for k, v in self.per_record_ms().items()}
        record(measure, "records/s", round(self.records / self.seconds, 1), **detail)
        record(f"{measure}.cpu_ms", "ms/record", round(sum(split.values()), 3), **split, **detail)


def timed(processes: dict[str, list[int]], write: Callable[[], int]) -> Phase:
    cpu_before = {k: cpu_seconds(pids) for k, pids in processes.items()}
    started = time.perf_counter()
    count = write()
    seconds = time.perf_counter() - started
    cpu = {k: cpu_seconds(pids) - cpu_before[k] for k, pids in processes.items()}
    return Phase(count, seconds, cpu)


def end_to_end(paths: list[Path], workers: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        port = 18000 + (int(time.time()) % 1000)
        node = start_node(root, port)
        url = f"http://127.0.0.1:{port}"
        try:
            summary, written, keys_dir = ImportSummary(), [], Path(scratch) / "keys"
            bundles = [orjson.loads(p.read_bytes()) for p in paths]
            with RecordsClient(url, org, workers=workers) as client:
                client.node.status()  # warm the connection
                client.warm()  # start the pool's processes, load the FHIR models
                pool = pool_pids(node.pid)
                processes = {"node": [node.pid], "writer": [os.getpid()], "pool": pool}

                def import_all() -> int:
                    written.extend(import_bundles(client, bundles, keys_dir, summary))
                    return len(written)

                imported = timed(processes, import_all)
                readers = {"node": [node.pid], "reader": [os.getpid()]}
                read = read_all(url, summary, written, readers)
                stored = stored_bytes(root / "blobs")
                again = second_versions(client, bundles, written)
                enrolled = timed(
                    processes, lambda: sum(len(w) for w in client.writer.pipelined(again))
                )
        finally:
            node.terminate()
            node.wait(10)
        report(paths, bundles, summary, workers, imported, enrolled, read, stored)


def stored_bytes(blobs: Path) -> tuple[int, int]:
    """Bytes of the blobs themselves (the segment files) and of the store's index (its
    SQLite file, WAL included: what the disk holds right after the import)."""
    files = [p for p in blobs.rglob("*") if p.is_file()]
    segments = sum(p.stat().st_size for p in files if p.parent.name == "segments")
    return segments, sum(p.stat().st_size for p in files) - segments


def report(
    paths: list[Path],
    bundles: list[Any],
    summary: ImportSummary,
    workers: int,
    imported: Phase,
    enrolled: Phase,
    read: Phase,
    stored: tuple[int, int],
) -> None:
    json_bytes = 0
    for bundle in bundles:
        index = BundleIndex.of(bundle)
        groups, _ = index.split_by_patient()
        for g in groups:
            for e in [g.patient, *g.entries]:
                json_bytes += len(orjson.dumps(index.local_references(e.resource)))
    source_bytes = sum(p.stat().st_size for p in paths)
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.2f}")
    print(
        f"resources written: {imported.records} of {len(paths)} bundles, "
        f"{summary.patients} patients, workers={workers}"
    )
    kdf = kdf_ms(summary.patients, imported.records)
    print(
        imported.show("write (import: enrol + write)")
        + f"; the claim KDF, {summary.patients} patients, ~{kdf} of the writer's"
    )
    print(enrolled.show("write (version 2, patients enrolled)"))
    print(read.show("read"))
    blobs, index_bytes = stored
    print(
        f"stored blob bytes / compact FHIR JSON bytes: {blobs / json_bytes:.3f} "
        f"({blobs:,} / {json_bytes:,}); the blob index {index_bytes:,} bytes more"
    )
    print(f"stored blob bytes / source bundle file bytes: {blobs / source_bytes:.3f}")
    detail = {
        "workers": workers,
        "patients": summary.patients,
        "records": imported.records,
        "source": source_tree(),  # the code measured (the "before" runs this bench on base)
    }
    imported.record("records.write", **detail)
    enrolled.record("records.write.enrolled", **detail)
    read.record("records.read", **detail)


def source_tree() -> str:
    """The work tree whose careledger package ran (it may not be this bench's)."""
    return str(Path(careledger.__file__).resolve().parents[2])


def second_versions(client: RecordsClient, bundles: list[Any], written: list[Written]) -> list[Job]:
    """A version 2 of every record written, for its (now enrolled) patient."""
    resources: dict[tuple[str, str], Any] = {}
    for bundle in bundles:
        index = BundleIndex.of(bundle)
        for entry in index.entries:
            resource = index.local_references(entry.resource)
            resources[(resource["resourceType"], str(resource.get("id")))] = resource
    keys: dict[str, Any] = {}
    jobs = []
    for w in written:
        patient = w.ref.patient
        if patient not in keys:
            keys[patient] = (client.scope_keys(patient), client.keyring.naming_key(patient))
        scopes, naming_key = keys[patient]
        resource = resources[(w.ref.resource_type, w.ref.resource_id)]
        jobs.append(
            client.writer.job(patient, resource, scopes, {w.ref.name: w.version}, naming_key)
        )
    return jobs


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


def kdf_ms(patients: int, records: int) -> str:
    """The claim packages' Argon2id cost per record written (one derivation per patient)."""
    params = DEFAULT_KDF.with_fresh_salt()
    started = time.process_time()
    params.derive("warm up the kdf")
    one = time.process_time() - started
    return f"{1000 * one * patients / max(1, records):.2f} ms"


def read_all(
    url: str, summary: ImportSummary, written: list[Written], processes: dict[str, list[int]]
) -> Phase:
    """Each patient reads all of its records back; timed after the patients' keys are
    opened (a claim package's KDF each)."""
    by_patient: dict[str, list[Written]] = {}
    for w in written:
        by_patient.setdefault(w.ref.patient, []).append(w)
    keys = {c.did: patient_keys(c.package, c.code) for c in summary.claims}

    def read_back() -> int:
        count = 0
        for did, writes in by_patient.items():
            client = RecordsClient(url, keys[did])
            count += len(client.read_many([w.ref for w in writes]))
        return count

    return timed(processes, read_back)


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
    for r in resources:
        validate_resource(r)  # import the models and compile their checks first
    # CPU seconds of this process (one thread): the figure a loaded machine does not bend.
    t = time.process_time()
    for r in resources:
        model_class(r["resourceType"]).model_validate(r)
    models_s = time.process_time() - t
    t = time.process_time()
    for r in resources:
        validate_resource(r)
    validate_s = time.process_time() - t
    t = time.process_time()
    prepared = [prepare(j) for j in jobs]
    prepare_s = time.process_time() - t
    blobs = [p.blob for p in prepared if not isinstance(p, str)]
    with tempfile.TemporaryDirectory() as scratch:
        store = BlobStore(scratch)
        t = time.perf_counter()
        store.put_many(blobs)
        put_s = time.perf_counter() - t
    n = len(resources)
    print(f"stages, per CPU second ({n} resources of {min(8, len(paths))} bundles):")
    print(f"  validate, R4B models (pydantic) alone   {n / models_s:,.0f}/s")
    print(f"  validate (compiled check, models if unsure) {n / validate_s:,.0f}/s")
    print(f"  validate + seal + wrap x2 + pack         {n / prepare_s:,.0f}/s")
    print(f"  seal + wrap x2 + pack alone (derived)    {n / (prepare_s - validate_s):,.0f}/s")
    print(f"  blob put_many, fsync each, one thread    {n / put_s:,.0f}/s (wall clock)")


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
