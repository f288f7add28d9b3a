"""The node's audit journal alone: what journaling a read costs, and group commit at work.

`--readers` concurrent tasks on one event loop each journal `--reads` reads of one entry
(`AuditJournal.append`, as the consent guard's auditor does: one entry per blob read, durable
before the answer), on a real SQLite file in a temporary directory (or `--dir`). Reported:
latency per append (p50, p99), appends per second, and fsyncs (group commits) per append:
with many readers waiting at once, one commit carries many reads.

Run: .venv/bin/python -m bench.audit_journal [--readers 1,8,64] [--reads 2000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import percentile
from careledger.chain.modules.audit.entries import AccessEntry
from careledger.crypto.keys import Identity
from careledger.node.audit.journal import AuditJournal


def _entry() -> dict[str, object]:
    patient, reader, org = (Identity.generate().did for _ in range(3))
    entry = AccessEntry(patient, "ab" * 32, 1, reader, org, "TREAT", "grant", 1_800_000_000)
    return entry.to_json()


async def _run(journal: AuditJournal, readers: int, reads: int) -> list[float]:
    entry = _entry()
    latencies: list[float] = []

    async def reader() -> None:
        for _ in range(reads):
            start = time.perf_counter()
            await journal.append([entry])
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(reader() for _ in range(readers)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", default="1,8,64")
    parser.add_argument("--reads", type=int, default=2000, help="per reader")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    print("| readers | appends | p50 ms | p99 ms | appends/s | fsyncs per append |")
    print("|---|---|---|---|---|---|")
    for readers in (int(n) for n in args.readers.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            journal = AuditJournal(Path(tmp) / "audit.sqlite")
            reads = max(1, args.reads // readers) if readers > 8 else args.reads
            start = time.perf_counter()
            latencies = asyncio.run(_run(journal, readers, reads))
            elapsed = time.perf_counter() - start
            commits = journal.group_commits
            journal.close()
        total = len(latencies)
        print(
            f"| {readers} | {total} | {percentile(latencies, 0.5) * 1e3:.2f} | "
            f"{percentile(latencies, 0.99) * 1e3:.2f} | {total / elapsed:,.0f} | "
            f"{commits / total:.3f} |"
        )


if __name__ == "__main__":
    main()
