"""Committed transactions per second and commit latency of the embedded node.

Two ways in:
  inproc  the solo producer and the application in this process (the chain's own cost)
  http    a real `careledger up` process, clients posting batches to POST /txs over loopback

Run: .venv/bin/python -m bench.chain_throughput [--txs 20000] [--mode inproc|http|both]
     [--rate 0] [--profile] [--no-record]
Each transaction is a patient registration signed by its own sender: by default naming the
member that enrolled it (the enrolments, 500 dids each, commit before the clock starts), with
`--vouching voucher` carrying the member's signed voucher (two signatures a registration).

Besides the rate, each run reports the CPU time the node spent per committed transaction
(this process in-process, the node process's /proc/<pid>/stat over HTTP, each with its
signature verifier process) and that of the main process alone: on a shared machine these
are the figures to compare. `--verify inline` keeps the signatures on the event loop.
Figures go to bench/record.py: `chain.inproc.saturating`, `chain.inproc.offered`,
`chain.http` (tx/s, ms p50, ms p99, ms cpu/tx, ms cpu/tx main process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx

import careledger
from bench.common import HEADER, VOUCHINGS, Figures, machine, offered_registrations, percentile
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
    verify_ahead: bool | None = None,
    vouching: str = "enrolment",
) -> tuple[Figures, Cpu]:
    """Submit `total` txs (paced at `rate` per second, or all at once when 0) and await commits."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        node = build_node(root, Solo(block_interval=block_interval))
        if verify_ahead is not None:  # else the node's default: a worker process on >= 2 CPUs
            node.consensus.verify_ahead = verify_ahead
        setup, txs = offered_registrations(node.app.chain_id, total, org, vouching)
        own, children = 0.0, 0.0

        def start_clock() -> None:
            nonlocal own, children
            if profiler:
                profiler.enable()
            own, children = time.process_time(), _children_cpu()

        figures = asyncio.run(_drive(node, txs, rate, setup, start_clock))
        own = time.process_time() - own
        cpu = Cpu(own + _children_cpu() - children, own)
        if profiler:
            profiler.disable()
        node.close()
    name = f"in-process, {'saturating' if not rate else f'{rate:.0f} tx/s offered'}"
    return Figures(name, figures[0], figures[1], figures[2]), cpu


async def _drive(
    node: Node[SoloProducer],
    txs: list[bytes],
    rate: float,
    setup: list[bytes],
    start_clock: Callable[[], None],
) -> tuple[int, float, list[float]]:
    """Commit `setup`, call `start_clock`, then offer `txs`: (committed, seconds, latencies)."""
    producer = asyncio.create_task(node.consensus.run())
    latencies: list[float] = []
    done = await asyncio.gather(*(node.consensus.submit(raw, wait=True) for raw in setup))
    _require_committed("setup", [r.code for r in done])
    start_clock()

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


def _require_committed(what: str, codes: list[int]) -> None:
    if any(codes):
        raise SystemExit(f"{what}: refused with codes {sorted(set(codes))}")


def run_http(
    total: int, clients: int, batch: int, vouching: str = "enrolment"
) -> tuple[Figures, Cpu]:
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
            own_client = NodeClient(url, org)
            chain_id = own_client.status()["chain_id"]
            last_nonce = int(own_client.query("auth/nonce", did=org.did)["last_nonce"])
            setup, txs = offered_registrations(chain_id, total, org, vouching, last_nonce)
            done = own_client.submit_many(setup, wait=True) if setup else []
            _require_committed("setup", [int(r["code"]) for r in done])
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
            own = _process_cpu(proc.pid, children=False)
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            cpu = Cpu(_process_cpu(proc.pid) - cpu, _process_cpu(proc.pid, children=False) - own)
        finally:
            proc.terminate()
            proc.wait(10)
    name = f"HTTP POST /txs, {clients} clients x batches of {batch}"
    return Figures(name, committed[0], elapsed, latencies), cpu


class Cpu(NamedTuple):
    """CPU seconds of a run: the node's processes (with its signature verifier) and the main
    one alone (the event loop's, the figure the verifier process relieves)."""

    total: float
    main: float


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the signature verifier, which the
    producer stops and waits for before the run ends)."""
    times = os.times()
    return times.children_user + times.children_system


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process_cpu(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat, and
    with `children` those of its live child processes (the signature verifier)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not children:
        return own
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            kids += (task / "children").read_text().split()
    return own + sum(_process_cpu(int(kid), children=False) for kid in kids)


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
        "--vouching",
        choices=VOUCHINGS,
        default="enrolment",
        help="registrations naming an enrolment (committed first) or carrying a voucher",
    )
    parser.add_argument(
        "--verify",
        choices=["auto", "process", "inline"],
        default="auto",
        help="in-process: signatures verified ahead in a worker process, or inline"
        " (SoloProducer.verify_ahead; auto: a process when there are >= 2 CPUs)",
    )
    args = parser.parse_args()
    code = Path(careledger.__file__).parent
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}; code {code}")
    print(HEADER)
    settings = {
        "txs": args.txs,
        "block_interval": args.block_interval,
        "verify": args.verify,
        "vouching": args.vouching,
    }
    verify_ahead = {"auto": None, "process": True, "inline": False}[args.verify]
    if args.mode in ("inproc", "both"):
        profiler = cProfile.Profile() if args.profile else None
        figures, cpu = run_inproc(
            args.txs, args.rate, args.block_interval, profiler, verify_ahead, args.vouching
        )
        measure = "chain.inproc.offered" if args.rate else "chain.inproc.saturating"
        _report(figures, cpu, measure, not args.no_record, rate=args.rate, **settings)
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if not args.rate:
            half = args.txs // 2
            figures, cpu = run_inproc(
                half, 2000, args.block_interval, None, verify_ahead, args.vouching
            )
            _report(figures, cpu, "chain.inproc.offered", not args.no_record, rate=2000, **settings)
    if args.mode in ("http", "both"):
        figures, cpu = run_http(args.txs, args.clients, args.batch, args.vouching)
        http = {"txs": args.txs, "clients": args.clients, "batch": args.batch}
        http["vouching"] = args.vouching
        _report(figures, cpu, "chain.http", not args.no_record, **http)


def _report(figures: Figures, cpu: Cpu, measure: str, keep: bool, **detail: object) -> None:
    """Print the row (with CPU ms per committed transaction) and record the figures."""
    per_tx = cpu.total * 1000 / max(figures.committed, 1)
    main_per_tx = cpu.main * 1000 / max(figures.committed, 1)
    print(f"{figures.row()} cpu {per_tx:.3f} ms/tx (main process {main_per_tx:.3f})", flush=True)
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
    record(measure, "ms cpu/tx main process", round(main_per_tx, 4), **detail)


if __name__ == "__main__":
    main()
