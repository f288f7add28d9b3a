"""Memory of the embedded chain as it commits 10^4 and then 10^5 transactions: it stays flat.

Run: .venv/bin/python -m bench.chain_memory [--txs 100000] [--checkpoint 10000] [--wave 5000]

In process, like the in-process run of bench.chain_throughput: the solo producer and the
application on real SQLite files. Transactions are patient registrations, each from its own
sender (so every one adds state rows and cache entries), signed in waves of `--wave` and
submitted at once, each wave committed before the next is signed: the mempool holds one wave
at most, so what grows is the chain's, not the load's.

At each checkpoint it prints the process's peak RSS (VmHWM, what the kernel counted at most),
the current RSS split into anonymous memory (the Python heap: caches, overlays) and file-backed
pages (SQLite's memory-mapped state, bounded by its mmap_size of 256 MiB and reclaimable), and
the size of the state machine's caches.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import tempfile
import time
from pathlib import Path

from bench.common import machine, registrations
from careledger.consensus.solo.producer import SoloProducer
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import initialise

HEADER = (
    "| committed txs | peak RSS MiB | RSS anon MiB | RSS file MiB | state cache | "
    "decode cache | signature cache | tx/s |\n|---|---|---|---|---|---|---|---|"
)


def memory_mib() -> dict[str, float]:
    """VmHWM, RssAnon and RssFile of this process, in MiB (Linux /proc/self/status)."""
    wanted = {"VmHWM", "RssAnon", "RssFile"}
    found: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in wanted:
                found[name] = int(value.split()[0]) / 1024  # kB
    return found


def cache_sizes(node: Node[SoloProducer]) -> tuple[str, str, str]:
    """Entries (and estimated bytes) of the state, decode and signature caches."""
    app = node.app
    state = node.store.cache
    decode = app._decoded
    return (
        f"{len(state):,} ({state.bytes / 2**20:.1f} MiB)",
        f"{len(decode):,} ({decode.bytes / 2**20:.1f} MiB)",
        f"{len(app._signatures):,}",
    )


async def commit_all(node: Node[SoloProducer], txs: list[bytes]) -> int:
    outcomes = await asyncio.gather(*(node.consensus.submit(raw, wait=True) for raw in txs))
    return sum(1 for o in outcomes if o.code == 0)


async def run(total: int, checkpoints: set[int], wave: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        initialise(root)
        node = build_node(root, Solo(0.05))
        producing = asyncio.create_task(node.consensus.run())
        committed = sent = 0
        busy = 0.0
        while sent < total:
            txs = registrations(node.app.chain_id, min(wave, total - sent))
            started = time.perf_counter()
            committed += await commit_all(node, txs)
            busy += time.perf_counter() - started
            sent += len(txs)
            if sent in checkpoints:
                mem = memory_mib()
                state, decode, signatures = cache_sizes(node)
                rows.append(
                    f"| {committed:,} | {mem['VmHWM']:,.0f} | {mem['RssAnon']:,.0f} "
                    f"| {mem['RssFile']:,.0f} | {state} | {decode} | {signatures} "
                    f"| {committed / busy:,.0f} |"
                )
                print(rows[-1], flush=True)
        producing.cancel()
        node.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=100_000)
    parser.add_argument("--checkpoint", type=int, action="append", help="default 10^4, 10^5")
    parser.add_argument("--wave", type=int, default=5000, help="transactions signed at once")
    args = parser.parse_args()
    checkpoints = set(args.checkpoint or [10_000, args.txs])
    print(f"machine: {machine()}")
    print(f"date: {datetime.date.today().isoformat()}")
    print(f"command: python -m bench.chain_memory --txs {args.txs} --wave {args.wave}")
    print(HEADER, flush=True)
    asyncio.run(run(args.txs, checkpoints, args.wave))


if __name__ == "__main__":
    main()
