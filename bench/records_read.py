"""Records read per second, on a data directory written once: the read phase of
`bench.records_throughput` alone, repeatable, so that two versions of the code can be measured
one after the other on the same records (issue 13).

  prepare: a fresh data directory, a real `careledger up`, `--bundles` Synthea bundles
           imported (as records_throughput writes them), the patients' keys and their refs
           kept beside it; the node stopped.
  read:    a copy of that directory, a real `careledger up` (the code on PYTHONPATH), each
           patient reading all of its records back (`RecordsClient.read_many`: chain query +
           blob fetch + hash check + unwrap + decrypt + commitment check, and on the node the
           consent decision and the audit entry of every blob). Wall clock, and the CPU
           seconds of the node and of this process per record (on a shared machine the CPU
           is the figure to compare).

Run: .venv/bin/python -m bench.records_read prepare DIR [--bundles 8]
     .venv/bin/python -m bench.records_read read DIR [--rounds 1] [--label after]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import machine
from bench.record import record
from bench.records_throughput import SYNTHEA, cpu_seconds, patient_keys, start_node
from careledger.crypto.keyfile import KeyFile
from careledger.node.datadir import initialise
from careledger.wallet.records import ImportSummary, RecordRef, RecordsClient, import_bundles


def prepare(target: Path, bundles: int, workers: int) -> None:
    target.mkdir(parents=True)
    root = target / "data"
    org = initialise(root)
    port = 18000 + (os.getpid() % 1000)
    node = start_node(root, port)
    try:
        summary = ImportSummary()
        paths = sorted(p for p in SYNTHEA.glob("*.json") if "Information" not in p.name)
        loaded = [orjson.loads(p.read_bytes()) for p in paths[:bundles]]
        with RecordsClient(f"http://127.0.0.1:{port}", org, workers=workers) as client:
            written = import_bundles(client, loaded, target / "claims", summary)
    finally:
        node.terminate()
        node.wait(30)
    keys = {c.did: patient_keys(c.package, c.code).to_json() for c in summary.claims}
    refs = [[w.ref.patient, w.ref.resource_type, w.ref.resource_id, w.ref.name] for w in written]
    (target / "readers.json").write_bytes(orjson.dumps({"keys": keys, "refs": refs}))
    print(f"prepared {len(refs)} records of {len(keys)} patients in {target}")


def read(source: Path, label: str, profile: Path | None = None) -> None:
    saved = orjson.loads((source / "readers.json").read_bytes())
    keys = {did: KeyFile.from_json(k) for did, k in saved["keys"].items()}
    by_patient: dict[str, list[RecordRef]] = {}
    for patient, resource_type, resource_id, name in saved["refs"]:
        by_patient.setdefault(patient, []).append(
            RecordRef(patient, resource_type, resource_id, name)
        )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        shutil.copytree(source / "data", root)
        port = 18000 + (os.getpid() % 1000)
        node = start_node(root, port)
        try:
            url = f"http://127.0.0.1:{port}"
            settle(node.pid)
            load = os.getloadavg()[0]
            spy = _spy(node.pid, profile) if profile else None
            node_cpu, me_cpu = cpu_seconds([node.pid]), time.process_time()
            profiler = cProfile.Profile() if profile else None
            started, count = time.perf_counter(), 0
            if profiler:
                profiler.enable()
            for did, refs in by_patient.items():
                count += len(RecordsClient(url, keys[did]).read_many(refs))
            seconds = time.perf_counter() - started
            if profiler and profile:
                profiler.disable()
                profiler.dump_stats(profile.with_suffix(".reader.prof"))
            node_cpu = cpu_seconds([node.pid]) - node_cpu
            me_cpu = time.process_time() - me_cpu
        finally:
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            node.terminate()
            node.wait(30)
    per = {"node": 1000 * node_cpu / count, "reader": 1000 * me_cpu / count}
    print(
        f"{label}: read {count} records in {seconds:.2f} s = {count / seconds:,.0f}/s; CPU "
        f"ms/record node {per['node']:.3f} reader {per['reader']:.3f} "
        f"total {sum(per.values()):.3f}; load {load:.2f}; {machine()}"
    )
    detail = {"records": count, "label": label, "code": os.environ.get("PYTHONPATH", "")}
    record("records.read", "records/s", round(count / seconds, 1), load=load, **detail)
    record("records.read.cpu_ms", "ms/record", round(sum(per.values()), 4), **per, **detail)


def settle(pid: int) -> None:
    """Wait for the node's start-up work (the blob sweep over every stored blob) to end, so
    that it is not counted as the reads' (at most 20 s)."""
    for _ in range(40):
        before = cpu_seconds([pid])
        time.sleep(0.5)
        if cpu_seconds([pid]) - before < 0.02:
            return


def _spy(pid: int, profile: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the node (a tool of the benchmark, not a dependency)."""
    spy = Path(sys.executable).parent / "py-spy"
    out = profile.with_suffix(".node.txt")
    command = [str(spy), "record", "-p", str(pid), "-f", "raw", "-o", str(out), "-r", "200"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("action", choices=["prepare", "read"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--bundles", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--label", default=sys.argv[0])
    parser.add_argument("--profile", type=Path, help="cProfile the reader, py-spy the node")
    args = parser.parse_args()
    if args.action == "prepare":
        prepare(args.dir, args.bundles, args.workers)
    else:
        for _ in range(args.rounds):
            read(args.dir, args.label, args.profile)


if __name__ == "__main__":
    main()
