"""Committed tx/s and commit latency of a 4-validator local CometBFT network: ours vs kvstore.

Both networks get identical CometBFT settings (NetSettings, printed with the figures) and the
same load: pre-signed transactions offered at a fixed rate, spread evenly over the four nodes'
RPC with `broadcast_tx_async` in JSON-RPC batches, while a watcher follows node0's blocks.
(Not `_sync`: CometBFT runs a batch's calls one after another and each `_sync` call waits up
to 20 ms for its CheckTx answer to be flushed over the ABCI socket, which would measure the
client, not the network.) Latency runs from a transaction's submission to the moment the
watcher sees it in a committed block (polled every 20 ms). kvstore transactions are
`key=value` padded to the size of ours, so the ratio is the cost of our application.

Beside the rates it prints the CPU seconds the application processes and the CometBFT
processes spent per 1,000 committed transactions (/proc, from the first submission to the
last commit): on a shared machine that is the steadier figure. `--profile DIR` samples every
application process with py-spy meanwhile and prints the top functions; `--pprof FILE` takes
a 10-second CPU profile of node0's CometBFT (its pprof listener on 127.0.0.1, for this run
only) from the first submission, and prints its top functions when `go` is installed (read
it again with `go tool pprof -top -cum FILE`).

Figures are recorded with bench.record: network.ours, network.kvstore (tx/s, ms p50,
ms p99, app/comet CPU ms per tx) and network.ratio.

Run: .venv/bin/python -m bench.network_throughput [--txs 12000] [--rate 2000]
     [--timeout-commit 300ms] [--only ours|kvstore] [--no-recheck] [--no-broadcast]
     [--profile DIR] [--pprof FILE] [--vouching enrolment|voucher]
Registrations name the member that enrolled them (the enrolments commit before the clock
starts); `--vouching voucher` gives each a member's signed voucher instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import HEADER, VOUCHINGS, Figures, machine, offered_registrations, percentile
from bench.proc_cpu import cpu_by_kind, start_py_spy, top_functions
from bench.record import record
from careledger.consensus.cometbft.config import NetSettings, edit_config_toml
from careledger.consensus.cometbft.rpc import sync_call
from careledger.crypto.keyfile import KeyFile
from careledger.localnet.network import (
    Network,
    create_network,
    node_pids,
    start_network,
    stop_network,
)

BATCH = 50  # transactions per JSON-RPC batch request
POLL_SECONDS = 0.02


def free_base_port() -> int:
    return random.randrange(30_000, 60_000, 10)


class BlockWatcher(threading.Thread):
    """Follows one node's committed blocks; records when each transaction was first seen."""

    def __init__(self, rpc_url: str, start_height: int) -> None:
        super().__init__(daemon=True)
        self.rpc_url = rpc_url
        self.next_height = start_height + 1
        self.seen: dict[bytes, float] = {}
        self.blocks: list[tuple[float, int]] = []  # (when seen, transactions) per block
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                if not self._fetch_next(http):
                    time.sleep(POLL_SECONDS)

    def _fetch_next(self, http: httpx.Client) -> bool:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "block",
            "params": {"height": str(self.next_height)},
        }
        reply = orjson.loads(http.post(self.rpc_url, content=orjson.dumps(body)).content)
        if reply.get("error"):
            return False  # not committed yet
        now = time.perf_counter()
        txs = reply["result"]["block"]["data"]["txs"] or []
        for encoded in txs:
            self.seen.setdefault(hashlib.sha256(base64.b64decode(encoded)).digest(), now)
        self.blocks.append((now, len(txs)))
        self.next_height += 1
        return True


async def offer(urls: list[str], txs: list[bytes], rate: float) -> dict[bytes, float]:
    """Send txs round-robin over the nodes in batches, paced at `rate` per second."""
    sent: dict[bytes, float] = {}
    rejected = 0
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        tasks = []
        start = time.perf_counter()
        for n, first in enumerate(range(0, len(txs), BATCH)):
            due = start + first / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            batch = txs[first : first + BATCH]
            now = time.perf_counter()
            for raw in batch:
                sent[hashlib.sha256(raw).digest()] = now
            tasks.append(asyncio.create_task(_post(http, urls[n % len(urls)], batch)))
        for outcome in await asyncio.gather(*tasks):
            rejected += outcome
    if rejected:
        print(f"  {rejected} transactions refused by the RPC")
    return sent


async def _post(http: httpx.AsyncClient, url: str, batch: list[bytes]) -> int:
    calls = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "broadcast_tx_async",
            "params": {"tx": base64.b64encode(raw).decode()},
        }
        for i, raw in enumerate(batch)
    ]
    reply = orjson.loads((await http.post(url, content=orjson.dumps(calls))).content)
    if not isinstance(reply, list):
        raise RuntimeError(f"batch refused: {reply}")
    return sum(1 for r in reply if r.get("error"))


def kvstore_txs(count: int, size: int) -> list[bytes]:
    txs = []
    for i in range(count):
        key = f"k{i}-{os.urandom(4).hex()}"
        txs.append(
            f"{key}=".encode() + os.urandom(size).hex().encode()[: max(1, size - len(key) - 1)]
        )
    return txs


@dataclass(frozen=True)
class RunFigures:
    figures: Figures
    cpu: dict[str, float]  # process kind ("app", "cometbft") -> CPU seconds during the run
    blocks: list[tuple[float, int]]  # (when seen, transactions) of each block of the run

    def cpu_ms_per_tx(self, kind: str) -> float:
        return 1000 * self.cpu.get(kind, 0.0) / max(1, self.figures.committed)

    def cpu_row(self) -> str:
        shares = ", ".join(f"{k} {self.cpu_ms_per_tx(k):.2f}" for k in sorted(self.cpu))
        return f"  CPU ms per committed tx (all 4 nodes): {shares}"

    def blocks_row(self) -> str:
        """Blocks with transactions: how many, how full, how far apart (the longest gap
        shows a stalled height)."""
        full = [(t, n) for t, n in self.blocks if n]
        if len(full) < 2:
            return "  blocks: fewer than two with transactions"
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(full)]
        sizes = [n for _, n in full]
        return (
            f"  blocks with txs: {len(full)}, txs per block mean {sum(sizes) / len(sizes):,.0f}"
            f" max {max(sizes):,}, interval mean {1000 * sum(gaps) / len(gaps):,.0f} ms"
            f" max {1000 * max(gaps):,.0f} ms"
        )


def run(
    name: str,
    network: Network,
    txs: list[bytes],
    rate: float,
    profile: Path | None = None,
    pprof: Path | None = None,
    setup: list[bytes] | None = None,
) -> RunFigures:
    """Offer `txs` at `rate` and follow them to their blocks, once `setup` has committed."""
    pprof_address = _enable_pprof(network) if pprof is not None else ""
    start_network(network)
    try:
        urls = [n.rpc_url for n in network.nodes]
        _wait_height(urls[0], 2)
        top = int(sync_call(urls[0], "status")["sync_info"]["latest_block_height"])
        if setup:
            top = _commit_first(urls[0], top, setup)
        pids = _pids_by_kind(network)
        # Sampled until the last transaction is committed (stopped below), at most 10 minutes.
        spies = _start_profile(pids.get("app", []), profile, 600)
        watcher = BlockWatcher(urls[0], top)
        watcher.start()
        go_profile = _start_pprof(pprof_address, pprof)
        cpu_before = cpu_by_kind(pids)
        sent = asyncio.run(offer(urls, txs, rate))
        if go_profile is not None:
            go_profile.join()
        deadline = time.perf_counter() + 120
        while len(set(sent) & set(watcher.seen)) < len(sent) and time.perf_counter() < deadline:
            time.sleep(0.2)
        cpu_after = cpu_by_kind(pids)
        watcher.stop.set()
        watcher.join()
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            spy.wait()
    finally:
        stop_network(network)
    committed = [h for h in sent if h in watcher.seen]
    latencies = [watcher.seen[h] - sent[h] for h in committed]
    first = min(sent.values())
    last = max(watcher.seen[h] for h in committed) if committed else first + 1
    figures = Figures(f"{name}, {rate:,.0f} tx/s offered", len(committed), last - first, latencies)
    cpu = {kind: cpu_after[kind] - cpu_before[kind] for kind in cpu_before}
    return RunFigures(figures, cpu, watcher.blocks)


def _commit_first(url: str, top: int, setup: list[bytes]) -> int:
    """Offer `setup` to one node and wait until all of it is in blocks: the last height."""
    watcher = BlockWatcher(url, top)
    watcher.start()
    sent = asyncio.run(offer([url], setup, 1_000))
    deadline = time.perf_counter() + 60
    while set(sent) - set(watcher.seen) and time.perf_counter() < deadline:
        time.sleep(POLL_SECONDS)
    watcher.stop.set()
    watcher.join()
    if set(sent) - set(watcher.seen):
        raise SystemExit("the setup transactions did not commit within 60 s")
    return watcher.next_height - 1


PPROF_SECONDS = 10


def _enable_pprof(network: Network) -> str:
    """Turn on node0's pprof listener (config.toml, before the node starts): its address."""
    with socket.socket() as probe:  # a port free now, on loopback only
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    config = network.home(0) / "config" / "config.toml"
    edit_config_toml(config, {("rpc", "pprof_laddr"): address})
    return address


def _start_pprof(address: str, out: Path | None) -> threading.Thread | None:
    """Fetch a CPU profile of PPROF_SECONDS from node0's CometBFT into `out`, in a thread."""
    if out is None:
        return None
    url = f"http://{address}/debug/pprof/profile?seconds={PPROF_SECONDS}"

    def fetch() -> None:
        with httpx.Client(timeout=PPROF_SECONDS + 30) as http:
            out.write_bytes(http.get(url).content)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    return thread


def print_pprof(path: Path) -> None:
    go = shutil.which("go")
    if go is None:
        print(f"\nCometBFT CPU profile in {path} (no `go` here to read it)")
        return
    print(f"\nnode0's CometBFT, {PPROF_SECONDS} s from the first submission (pprof, cumulative):")
    top = subprocess.run(
        [go, "tool", "pprof", "-top", "-cum", "-nodecount=30", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(top.stdout or top.stderr)


def _pids_by_kind(network: Network) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for node in network.nodes:
        for kind, pid in node_pids(network, node.index).items():
            found.setdefault(kind, []).append(pid)
    return found


def _start_profile(
    app_pids: list[int], directory: Path | None, seconds: float
) -> list[subprocess.Popen[bytes]]:
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    return [start_py_spy(pid, directory / f"app{i}.raw", seconds) for i, pid in enumerate(app_pids)]


def print_profile(directory: Path) -> None:
    files = sorted(directory.glob("app*.raw"))
    print(f"\npy-spy, {len(files)} application processes, top by own time (own %, incl %):")
    for frame, own, incl in top_functions(files, 25):
        print(f"  {own:5.1f} {incl:5.1f}  {frame}")
    print("top by inclusive time:")
    for frame, own, incl in top_functions(files, 30, by_inclusive=True):
        print(f"  {own:5.1f} {incl:5.1f}  {frame}")


def record_run(measure: str, result: RunFigures, **detail: object) -> None:
    figures = result.figures
    detail = {**detail, "committed": figures.committed}
    record(measure, "tx/s", round(figures.tps, 1), **detail)
    record(measure, "ms p50", round(percentile(figures.latencies, 0.50) * 1000), **detail)
    record(measure, "ms p99", round(percentile(figures.latencies, 0.99) * 1000), **detail)
    for kind in sorted(result.cpu):
        record(measure, f"{kind} CPU ms/tx", round(result.cpu_ms_per_tx(kind), 3), **detail)


def _wait_height(url: str, target: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if int(sync_call(url, "status")["sync_info"]["latest_block_height"]) >= target:
            return
        time.sleep(0.2)
    raise TimeoutError("network did not start committing")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--txs", type=int, default=12_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--timeout-commit", default=NetSettings().timeout_commit)
    parser.add_argument("--only", choices=["ours", "kvstore"])
    parser.add_argument(
        "--vouching",
        choices=VOUCHINGS,
        default="enrolment",
        help="registrations naming an enrolment (committed first) or carrying a voucher",
    )
    parser.add_argument("--no-recheck", action="store_true", help="mempool.recheck = false")
    parser.add_argument("--no-broadcast", action="store_true", help="mempool.broadcast = false")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other NetSettings field, for both networks (e.g. flush_throttle=100ms)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the application processes into DIR")
    parser.add_argument(
        "--pprof", type=Path, help="a CPU profile of node0's CometBFT (ours) into FILE"
    )
    parser.add_argument(
        "--label", default="", help="recorded with the figures (e.g. which code ran: base)"
    )
    args = parser.parse_args()
    settings = replace(
        NetSettings(),
        timeout_commit=args.timeout_commit,
        mempool_recheck=not args.no_recheck,
        mempool_broadcast=not args.no_broadcast,
        log_level="*:error",
    )
    settings = replace(settings, **_overrides(args.set))
    print(f"machine: {machine()}")
    print(f"settings: {settings.as_dict()}")
    detail = {
        "txs": args.txs,
        "rate": args.rate,
        "label": args.label,
        "vouching": args.vouching,
        "settings": settings.as_dict(),
    }
    ours = kv = None
    with tempfile.TemporaryDirectory(prefix="netbench-", dir="/tmp") as scratch:
        root = Path(scratch)
        network = create_network(root / "ours", 4, base_port=free_base_port(), settings=settings)
        org = KeyFile.load(network.app_data(0).organisation_key)
        setup, our_txs = offered_registrations(network.chain_id, args.txs, org, args.vouching)
        size = sum(len(t) for t in our_txs) // len(our_txs)
        if args.only != "kvstore":
            name = f"CareLedger app ({args.vouching})"
            ours = run(name, network, our_txs, args.rate, args.profile, args.pprof, setup)
            _report("network.ours", ours, detail)
        if args.only != "ours":
            kv_network = create_network(
                root / "kv", 4, base_port=free_base_port(), settings=settings, builtin_app="kvstore"
            )
            kv = run("CometBFT kvstore", kv_network, kvstore_txs(args.txs, size), args.rate)
            _report("network.kvstore", kv, detail)
    print(f"\n4 validators on 127.0.0.1-4, {args.txs} txs of ~{size} bytes\n{HEADER}")
    for result in (ours, kv):
        if result is not None:
            print(result.figures.row())
    if ours is not None and kv is not None and kv.figures.tps:
        ratio = ours.figures.tps / kv.figures.tps
        record("network.ratio", "ours/kvstore tx/s", round(ratio, 3), **detail)
        print(f"\nours / kvstore committed tx/s: {ratio:.2f}")
    if args.profile is not None and ours is not None:
        print_profile(args.profile)
    if args.pprof is not None and ours is not None:
        print_pprof(args.pprof)


def _overrides(assignments: list[str]) -> dict[str, Any]:
    """`field=value` pairs as NetSettings fields, the value in the field's own type."""
    defaults = NetSettings().as_dict()
    found: dict[str, Any] = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        if name not in defaults:
            raise SystemExit(f"--set: NetSettings has no field {name!r}")
        kind = type(defaults[name])
        found[name] = text.lower() == "true" if kind is bool else kind(text)
    return found


def _report(measure: str, result: RunFigures, detail: dict[str, object]) -> None:
    print(result.figures.row(), flush=True)
    print(result.cpu_row(), flush=True)
    print(result.blocks_row(), flush=True)
    record_run(measure, result, **detail)


if __name__ == "__main__":
    main()
