"""Scale curves (issue 13): the node's measures as its store grows from 10^4 to 10^6 records.

One data directory, grown size by size. At each size a real `careledger up` process serves it
and the bench measures, with real records:

  write   records written end to end through the node: blobs uploaded (`POST /blobs`,
          durable), then their anchors submitted (`POST /txs`, pipelined) and committed;
          records/s and the node's CPU per record
  read    consent-checked, audited reads (`bench.audited_read`'s): a practitioner's signed
          `GET /blobs/{hash}?purpose=TREAT` of a real record its organisation or itself was
          granted; authentication, the consent decision, the access entry journaled, the blob
  search  a patient's records, each with its latest anchor (`records/records`, the query the
          portal's timeline makes), for random synthetic patients (100 records each, so the
          answer's size is the same at every size: what changes is the state around it)
  tx      committed tx/s: patient registrations (with a member's voucher) through
          `POST /txs`, pipelined, signed before the clock
  memory  the node's RSS after the measures: anonymous (the heap) and file-backed (SQLite's
          memory map of the state, reclaimable), and its peak
  disk    the state and block databases' bytes per record (with their WAL files); the blob
          store's bytes per real record apart (synthetic records have no blob)

Growing between sizes: synthetic patients and anchors through the state machine in big blocks,
in this process while the node is stopped (bench/scale_grow.py). The real records read are
the base patients' (written at set-up and by each size's write measure).

Every figure goes through bench/record.py as `scale.<measure>.<size>`; the curves are drawn
as PNG files in bench/plots/ (matplotlib, Agg).

Run: .venv/bin/python -m bench.scale                    (10^4, 10^5, 10^6: ~4 min of CPU to grow,
                                                         24 min wall at load 11-23 on 2 cores)
     .venv/bin/python -m bench.scale --quick            (10^3, 10^4: 1-2 minutes, `make bench`)
     .venv/bin/python -m bench.scale --sizes 10000,100000 --plots DIR
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import scale_plot
from bench.audited_read import measure as audited_reads
from bench.common import machine, percentile, registrations
from bench.consent_read import (
    StoredRecord,
    World,
    _record,
    admit_members,
    chunks,
    commit_pipelined,
    cpu_seconds,
    enrol_patients,
    free_port,
    interleaved,
    load,
    plan_grants,
    plan_reads,
    register_practitioners,
    sign_grants,
    start_node,
    start_profile,
    stop_profile,
)
from bench.record import record
from bench.scale_grow import Grown, grow
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.requestsig import Audience
from careledger.node.datadir import initialise
from careledger.protocol.frames import pack_frames
from careledger.protocol.signing import RequestSigner
from careledger.wallet.node_client import NodeClient, Signer

FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
PLOTS = Path(__file__).resolve().parent / "plots"
BLOCK_INTERVAL = 0.05
CIPHERTEXT_BYTES = 600  # a small Observation's sealed size


@dataclass(frozen=True)
class Workload:
    """How much each measure does at each size (the same at every size)."""

    writes: int
    reads: int
    searches: int
    txs: int


FULL = Workload(writes=2000, reads=2000, searches=300, txs=4000)
QUICK = Workload(writes=500, reads=500, searches=100, txs=1000)


@dataclass
class Bench:
    """The bench's state across sizes."""

    root: Path
    founder: KeyFile
    work: Workload
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    grown: Grown = field(default_factory=lambda: Grown([]))
    world: World | None = None
    written: int = 0  # real records written so far (their names' indexes)
    profile: Path | None = None  # py-spy the node's reads into this directory
    size: int = 0  # the size being measured

    @property
    def records(self) -> int:
        return self.grown.anchors + self.written


# --- set-up: members, practitioners, the real patients and their grants ----------------------


def set_up(bench: Bench, port: int) -> None:
    node = start_node(bench.root, port, BLOCK_INTERVAL)
    try:
        url = f"http://127.0.0.1:{port}"
        client = NodeClient(url, bench.founder, timeout=300)
        world = World(url, bench.founder, str(client.status()["chain_id"]), client)
        admit_members(world, 2)
        register_practitioners(world, 6)
        enrol_patients(world, 10)
        grants = 3  # one to an organisation, two to practitioners of the other
        raws = sign_grants(world, plan_grants(world, grants, bench.rng))
        commit_pipelined(client, chunks(interleaved(raws, grants)), "consent/grant")
        bench.world = world
        write_real(bench, 200)
    finally:
        _stop(node)


def _stop(node: Any) -> None:
    node.terminate()
    node.wait(60)


# --- the measures ------------------------------------------------------------------------------


def write_real(bench: Bench, count: int) -> float:
    """`count` real records of the base patients, written by the founder: each chunk's blobs
    uploaded (durable) before its anchors are signed and submitted. Seconds taken."""
    world = _world(bench)
    auth = RequestSigner(world.founder.identity, world.founder.did)
    founder = Signer(world.client, world.founder.did, world.founder.identity)
    first = bench.written

    def batches() -> Iterator[list[bytes]]:
        for start in range(first, first + count, 250):
            blobs, anchors = [], []
            for index in range(start, min(start + 250, first + count)):
                patient = index % len(world.patients)
                blob, anchor = _record(world, world.patients[patient], index, CIPHERTEXT_BYTES)
                blobs.append(blob)
                anchors.append(anchor)
                world.records.append(StoredRecord(patient, anchor["blob_hash"]))
            response = world.client.http.post("/blobs", content=pack_frames(blobs), auth=auth)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"blob upload: {response.status_code} {response.text}")
            yield [founder.sign("records/anchor", a) for a in anchors]

    started = time.perf_counter()
    commit_pipelined(world.client, batches(), "records/anchor")
    bench.written += count
    return time.perf_counter() - started


def _world(bench: Bench) -> World:
    if bench.world is None:
        raise RuntimeError("set_up first")
    return bench.world


def measure_write(bench: Bench, pid: int) -> dict[str, float]:
    cpu = cpu_seconds(pid)
    seconds = write_real(bench, bench.work.writes)
    cpu = cpu_seconds(pid) - cpu
    return {
        "write records/s": bench.work.writes / seconds,
        "write node CPU ms/record": 1000 * cpu / bench.work.writes,
    }


def measure_read(bench: Bench, port: int, pid: int) -> dict[str, float]:
    world = _world(bench)
    status = world.client.status()
    audience = Audience(str(status["chain_id"]), str(status["node_id"]))
    reads = plan_reads(world, bench.work.reads, True, bench.rng)
    out = bench.profile / f"read-{bench.size}.txt" if bench.profile else None
    spy = start_profile(pid, out) if out else None
    figures = audited_reads(world, audience, port, pid, reads, 1)
    if spy is not None and out is not None:
        stop_profile(spy, out)
    return {
        "read p50 ms": 1000 * percentile(figures.latencies, 0.5),
        "read p99 ms": 1000 * percentile(figures.latencies, 0.99),
        "read reads/s": figures.reads / figures.seconds,
        "read node CPU ms/read": 1000 * figures.node_cpu / figures.reads,
    }


def measure_search(bench: Bench, pid: int) -> dict[str, float]:
    """A random synthetic patient's records (each with its latest anchor), one at a time."""
    client = _world(bench).client
    latencies = []
    cpu = cpu_seconds(pid)
    for _ in range(bench.work.searches):
        patient = bench.rng.choice(bench.grown.patients)
        started = time.perf_counter()
        found = client.query("records/records", patient=patient)
        latencies.append(time.perf_counter() - started)
        if not found or any(r.get("latest") is None for r in found):
            raise RuntimeError(f"records/records of {patient}: {len(found)} records")
    return {
        "search p50 ms": 1000 * percentile(latencies, 0.5),
        "search p99 ms": 1000 * percentile(latencies, 0.99),
        "search node CPU ms": 1000 * (cpu_seconds(pid) - cpu) / len(latencies),
    }


def measure_txs(bench: Bench, pid: int) -> dict[str, float]:
    world = _world(bench)
    raws = registrations(world.chain_id, bench.work.txs, world.founder)
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    committed = commit_pipelined(world.client, chunks(raws, 500), "identity/register_patient")
    seconds = time.perf_counter() - started
    return {
        "tx/s": committed / seconds,
        "tx node CPU ms/tx": 1000 * (cpu_seconds(pid) - cpu) / committed,
    }


def measure_memory(pid: int) -> dict[str, float]:
    wanted = {"VmRSS": "RSS MiB", "RssAnon": "RSS anon MiB", "RssFile": "RSS file MiB"}
    wanted["VmHWM"] = "peak RSS MiB"
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in wanted:
                found[wanted[name]] = int(value.split()[0]) / 1024  # kB
    return found


def measure_disk(bench: Bench) -> dict[str, float]:
    """Bytes on disk per record: the state and the block store (each with its WAL), and the
    blob store's file bytes per real record (synthetic records have no blob)."""
    state, blocks = _bytes(bench.root, "state.sqlite"), _bytes(bench.root, "blocks.sqlite")
    blobs = sum(p.stat().st_size for p in (bench.root / "blobs").rglob("*") if p.is_file())
    return {
        "chain bytes/record": (state + blocks) / bench.records,
        "state bytes/record": state / bench.records,
        "blocks bytes/record": blocks / bench.records,
        "blob bytes/real record": blobs / max(bench.written, 1),
        "chain MiB": (state + blocks) / 2**20,
    }


def _bytes(root: Path, name: str) -> int:
    """A SQLite database's bytes with its WAL and shared-memory files."""
    return sum(p.stat().st_size for p in root.glob(f"{name}*") if p.is_file())


def measure_size(bench: Bench, port: int) -> dict[str, float]:
    """Every measure on the node serving the data directory as it is now."""
    started = time.perf_counter()
    node = start_node(bench.root, port, BLOCK_INTERVAL)
    figures = {"node start s": time.perf_counter() - started}
    try:
        world = _world(bench)
        world.client = NodeClient(world.url, world.founder, timeout=300)
        figures |= measure_write(bench, node.pid)
        figures |= measure_read(bench, port, node.pid)
        figures |= measure_search(bench, node.pid)
        figures |= measure_txs(bench, node.pid)
        figures |= measure_memory(node.pid)
    finally:
        _stop(node)
    return figures | measure_disk(bench)


# --- the run -----------------------------------------------------------------------------------

UNITS = {
    "write records/s": ("scale.write", "records/s"),
    "write node CPU ms/record": ("scale.write.cpu_ms", "ms/record"),
    "read p50 ms": ("scale.read.p50", "ms p50"),
    "read p99 ms": ("scale.read.p99", "ms p99"),
    "read reads/s": ("scale.read", "records/s"),
    "read node CPU ms/read": ("scale.read.cpu_ms", "ms/record"),
    "search p50 ms": ("scale.search.p50", "ms p50"),
    "search p99 ms": ("scale.search.p99", "ms p99"),
    "search node CPU ms": ("scale.search.cpu_ms", "ms/query"),
    "tx/s": ("scale.tx", "tx/s"),
    "tx node CPU ms/tx": ("scale.tx.cpu_ms", "ms/tx"),
    "RSS MiB": ("scale.rss", "MiB"),
    "RSS anon MiB": ("scale.rss.anon", "MiB"),
    "RSS file MiB": ("scale.rss.file", "MiB"),
    "peak RSS MiB": ("scale.rss.peak", "MiB"),
    "chain bytes/record": ("scale.disk", "bytes/record"),
    "state bytes/record": ("scale.disk.state", "bytes/record"),
    "blocks bytes/record": ("scale.disk.blocks", "bytes/record"),
    "blob bytes/real record": ("scale.disk.blob", "bytes/record"),
    "chain MiB": ("scale.disk.chain", "MiB"),
    "node start s": ("scale.start", "s"),
    "grow s": ("scale.grow", "s"),
    "grow CPU s": ("scale.grow.cpu", "s"),
    "records": ("scale.records", "records"),
}


def run(
    sizes: list[int], work: Workload, scratch: Path, plots: Path | None, profile: Path | None
) -> None:
    root = scratch / "data"
    bench = Bench(root, initialise(root), work, profile=profile)
    port = free_port()
    print(f"machine: {machine()}\nload before: {load()}", flush=True)
    started = time.perf_counter()
    set_up(bench, port)
    print(f"set-up: {time.perf_counter() - started:.0f} s", flush=True)
    results: dict[int, dict[str, float]] = {}
    for size in sizes:
        bench.size = size
        grow_started, grow_cpu = time.perf_counter(), time.process_time()
        missing = size - bench.records - work.writes  # the write measure adds work.writes
        if missing > 0:
            grow(root, bench.founder, bench.grown, missing)
        figures = {
            "grow s": time.perf_counter() - grow_started,
            "grow CPU s": time.process_time() - grow_cpu,  # the load's share excluded
        }
        figures |= measure_size(bench, port)
        figures["records"] = bench.records
        results[size] = figures
        for name, value in figures.items():
            measure, unit = UNITS[name]
            record(f"{measure}.{size}", unit, value, records=bench.records, load=load())
        print(f"{bench.records:,} records (load {load()}): {_brief(figures)}", flush=True)
    print(f"\ntotal: {time.perf_counter() - started:.0f} s; load after: {load()}\n")
    print(table(results))
    if plots is not None:
        for path in scale_plot.draw(results, plots):
            print(f"plot: {path}")


def _brief(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:,.2f}" for name, value in figures.items())


def table(results: dict[int, dict[str, float]]) -> str:
    """One markdown row per measure, one column per size, and the ratio last/first."""
    sizes = sorted(results)
    head = "| measure | " + " | ".join(f"{s:,} records" for s in sizes) + " | last / first |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]
    for name in UNITS:
        if not all(name in results[s] for s in sizes):
            continue
        values = [results[s][name] for s in sizes]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        cells = " | ".join(f"{v:,.2f}" for v in values)
        lines.append(f"| {name} | {cells} | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^3 and 10^4, smaller measures")
    parser.add_argument("--sizes", help="comma-separated record counts (default 10^4,10^5,10^6)")
    parser.add_argument("--plots", type=Path, default=PLOTS, help="where the PNG files go")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--keep", type=Path, help="grow the data directory here and keep it")
    parser.add_argument("--profile", type=Path, help="py-spy the node's reads into this directory")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or list(QUICK_SIZES if args.quick else FULL_SIZES)
    work = QUICK if args.quick else FULL
    plots = None if args.no_plots else args.plots
    if args.keep:
        args.keep.mkdir(parents=True)  # a new directory: the bench grows it from nothing
        run(sorted(sizes), work, args.keep, plots, args.profile)
        return
    with tempfile.TemporaryDirectory() as scratch:
        run(sorted(sizes), work, Path(scratch), plots, args.profile)


if __name__ == "__main__":
    main()
