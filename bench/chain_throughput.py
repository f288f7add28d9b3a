"""Committed transactions per second and commit latency of the embedded node.

Two ways in:
  inproc  the solo producer and the application in this process (the chain's own cost)
  http    a real `careledger up` process, clients posting batches to POST /txs over loopback

Run: .venv/bin/python -m bench.chain_throughput [--txs 20000] [--mode inproc|http|both]
     [--rate 0] [--profile] [--no-record]
Each transaction is a patient registration signed by its own sender.

Besides the rate, each run reports the CPU time the node spent per committed transaction
(this process in-process, the node process's /proc/<pid>/stat over HTTP): on a shared machine
that is the figure to compare. Figures go to bench/record.py: `chain.inproc.saturating`,
`chain.inproc.offered`, `chain.http` (tx/s, ms p50, ms p99, ms cpu/tx).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import careledger
from bench.common import HEADER, Figures, machine, percentile, registrations
from bench.record import record
from careledger.consensus.solo.producer import SoloProducer
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise
from careledger.wallet.node_client import NodeClient


def run_inproc(
    total: int,
    rate: float,
    block_interval: float,
    profiler: cProfile.Profile | None = None,
    verify_in_thread: bool = False,
) -> tuple[Figures, float]:
    """Submit `total` txs (paced at `rate` per second, or all at once when 0) and await commits."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        node = build_node(root, Solo(block_interval=block_interval))
        if hasattr(node.consensus, "verify_in_thread"):  # absent before issue 13
            node.consensus.verify_in_thread = verify_in_thread
        txs = registrations(node.app.chain_id, total, org)
        if profiler:
            profiler.enable()
        cpu = time.process_time()
        figures = asyncio.run(_drive(node, txs, rate))
        cpu = time.process_time() - cpu
        if profiler:
            profiler.disable()
        node.close()
    name = f"in-process, {'saturating' if not rate else f'{rate:.0f} tx/s offered'}"
    return Figures(name, figures[0], figures[1], figures[2]), cpu


async def _drive(
    node: Node[SoloProducer], txs: list[bytes], rate: float
) -> tuple[int, float, list[float]]:
    producer = asyncio.create_task(node.consensus.run())
    latencies: list[float] = []

    async def one(raw: bytes) -> bool:
        sent = time.perf_counter()
        result = await node.consensus.submit(raw, wait=True)
        latencies.append(time.perf_counter() - sent)
        return result.code == 0

    start = time.perf_counter()
    tasks = []
    for i, raw in enumerate(txs):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(raw)))
        if not rate and i % 500 == 0:
            await asyncio.sleep(0)
    ok = sum(await asyncio.gather(*tasks))
    elapsed = time.perf_counter() - start
    producer.cancel()
    return ok, elapsed, latencies


def run_http(total: int, clients: int, batch: int) -> tuple[Figures, float]:
    """A real node process; `clients` threads post batches of signed txs and wait for commit."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        port = _free_port()  # not a fixed one: other benchmarks may run on this machine
        command = [sys.executable, "-m", "careledger.cli", "up", "--data-dir", str(root)]
        proc = subprocess.Popen(
            [*command, "--port", str(port), "--block-interval", "0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url)
            print(f"node pid {proc.pid} on {url}", file=sys.stderr, flush=True)
            chain_id = NodeClient(url).status()["chain_id"]
            txs = registrations(chain_id, total, org)
            chunks = [txs[i : i + batch] for i in range(0, len(txs), batch)]
            latencies: list[float] = []
            committed = [0]
            lock = threading.Lock()

            def worker(mine: list[list[bytes]]) -> None:
                client = NodeClient(url, org, timeout=120)
                for chunk in mine:
                    sent = time.perf_counter()
                    results = client.submit_many(chunk, wait=True)
                    took = time.perf_counter() - sent
                    with lock:
                        committed[0] += sum(1 for r in results if r["code"] == 0)
                        latencies.extend([took] * len(chunk))
                client.close()

            threads = [
                threading.Thread(target=worker, args=(chunks[i::clients],)) for i in range(clients)
            ]
            cpu = _process_cpu(proc.pid)
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            cpu = _process_cpu(proc.pid) - cpu
        finally:
            proc.terminate()
            proc.wait(10)
    name = f"HTTP POST /txs, {clients} clients x batches of {batch}"
    return Figures(name, committed[0], elapsed, latencies), cpu


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url + "/status", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20000)
    parser.add_argument("--mode", choices=["inproc", "http", "both"], default="both")
    parser.add_argument(
        "--rate", type=float, default=0, help="offered tx/s in-process; 0 saturates"
    )
    parser.add_argument("--block-interval", type=float, default=0.25)
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process run")
    parser.add_argument("--clients", type=int, default=8, help="HTTP client threads")
    parser.add_argument("--batch", type=int, default=500, help="transactions per POST /txs")
    parser.add_argument("--no-record", action="store_true", help="print only, record nothing")
    parser.add_argument(
        "--verify-thread",
        action="store_true",
        help="in-process: verify signatures in a thread (SoloProducer.verify_in_thread)",
    )
    args = parser.parse_args()
    code = Path(careledger.__file__).parent
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}; code {code}")
    print(HEADER)
    settings = {
        "txs": args.txs,
        "block_interval": args.block_interval,
        "verify_thread": args.verify_thread,
    }
    if args.mode in ("inproc", "both"):
        profiler = cProfile.Profile() if args.profile else None
        figures, cpu = run_inproc(
            args.txs, args.rate, args.block_interval, profiler, args.verify_thread
        )
        measure = "chain.inproc.offered" if args.rate else "chain.inproc.saturating"
        _report(figures, cpu, measure, not args.no_record, rate=args.rate, **settings)
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if not args.rate:
            figures, cpu = run_inproc(
                args.txs // 2, 2000, args.block_interval, None, args.verify_thread
            )
            _report(figures, cpu, "chain.inproc.offered", not args.no_record, rate=2000, **settings)
    if args.mode in ("http", "both"):
        figures, cpu = run_http(args.txs, clients=args.clients, batch=args.batch)
        http = {"txs": args.txs, "clients": args.clients, "batch": args.batch}
        _report(figures, cpu, "chain.http", not args.no_record, **http)


def _report(figures: Figures, cpu: float, measure: str, keep: bool, **detail: object) -> None:
    """Print the row (with CPU ms per committed transaction) and record the figures."""
    per_tx = cpu * 1000 / max(figures.committed, 1)
    print(f"{figures.row()} cpu {per_tx:.3f} ms/tx", flush=True)
    if not keep:
        return
    detail = {
        **detail,
        "committed": figures.committed,
        "code": str(Path(careledger.__file__).parent),
    }
    record(measure, "tx/s", round(figures.tps, 1), **detail)
    record(measure, "ms p50", round(percentile(figures.latencies, 0.50) * 1000, 1), **detail)
    record(measure, "ms p99", round(percentile(figures.latencies, 0.99) * 1000, 1), **detail)
    record(measure, "ms cpu/tx", round(per_tx, 4), **detail)


if __name__ == "__main__":
    main()
