"""Committed transactions per second and commit latency of the embedded node.

Two ways in:
  inproc  the solo producer and the application in this process (the chain's own cost)
  http    a real `careledger up` process, clients posting batches to POST /txs over loopback

Run: .venv/bin/python -m bench.chain_throughput [--txs 20000] [--mode inproc|http|both]
     [--rate 0] [--profile]
Each transaction is a patient registration signed by its own sender.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import HEADER, Figures, machine, registrations
from careledger.consensus.solo.producer import SoloProducer
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise
from careledger.wallet.node_client import NodeClient


def run_inproc(
    total: int, rate: float, block_interval: float, profiler: cProfile.Profile | None = None
) -> Figures:
    """Submit `total` txs (paced at `rate` per second, or all at once when 0) and await commits."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        node = build_node(root, Solo(block_interval=block_interval))
        txs = registrations(node.app.chain_id, total, org)
        if profiler:
            profiler.enable()
        figures = asyncio.run(_drive(node, txs, rate))
        if profiler:
            profiler.disable()
        node.close()
    name = f"in-process, {'saturating' if not rate else f'{rate:.0f} tx/s offered'}"
    return Figures(name, figures[0], figures[1], figures[2])


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


def run_http(total: int, clients: int, batch: int) -> Figures:
    """A real node process; `clients` threads post batches of signed txs and wait for commit."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        org = initialise(root)
        port = 18500
        command = [sys.executable, "-m", "careledger.cli", "up", "--data-dir", str(root)]
        proc = subprocess.Popen(
            [*command, "--port", str(port), "--block-interval", "0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url)
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
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(10)
    name = f"HTTP POST /txs, {clients} clients x batches of {batch}"
    return Figures(name, committed[0], elapsed, latencies)


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
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(HEADER)
    if args.mode in ("inproc", "both"):
        profiler = cProfile.Profile() if args.profile else None
        print(run_inproc(args.txs, args.rate, args.block_interval, profiler).row(), flush=True)
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if not args.rate:
            print(run_inproc(args.txs // 2, 2000, args.block_interval).row(), flush=True)
    if args.mode in ("http", "both"):
        print(run_http(args.txs, clients=args.clients, batch=args.batch).row(), flush=True)


if __name__ == "__main__":
    main()
