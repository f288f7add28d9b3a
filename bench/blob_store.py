"""The node's blob store alone: `put_many` of record-sized blobs, durable, one thread.

Blobs of BLOB_BYTES (the records benchmark's average sealed record, ~1.2 KB), stored in
batches of `--batch` (the writer uploads 1,000 a chunk; single PUTs are batches of 1) into a
fresh store. Reports blobs/s and the CPU this process spent per blob (user + system): on a
shared machine the CPU per blob is the figure to compare. The file system's own writeback
(kernel threads, syncfs) is in neither; it shows in the wall clock only.

Run: .venv/bin/python -m bench.blob_store [--blobs 4000] [--batch 1000] [--label after]
To measure other code (the "before" of a change), put its src first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import careledger.storage.blobstore as blobstore
from bench.record import record
from careledger.storage.blobstore import BlobStore

BLOB_BYTES = 1200


def measure(blobs: int, batch: int) -> tuple[float, float]:
    """(blobs/s wall, CPU ms per blob) for `blobs` new blobs in batches of `batch`."""
    data = [os.urandom(BLOB_BYTES) for _ in range(blobs)]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BLOB_BENCH_DIR")) as scratch:
        store = BlobStore(Path(scratch) / "blobs")
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, blobs, batch):
            store.put_many(data[start : start + batch])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return blobs / wall, 1000 * cpu / blobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blobs", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--label", default="", help="which code this is (before/after)")
    args = parser.parse_args()
    rate, cpu_ms = measure(args.blobs, args.batch)
    load = os.getloadavg()[0]
    code = args.label or blobstore.__file__
    print(
        f"{code}: put_many batch {args.batch}: {rate:,.0f} blobs/s, {cpu_ms:.3f} ms CPU/blob "
        f"(load {load:.1f})"
    )
    detail = {"batch": args.batch, "blobs": args.blobs, "blob_bytes": BLOB_BYTES, "code": code}
    record(f"blobs.put_many.{args.batch}", "blobs/s", rate, **detail)
    record(f"blobs.put_many.{args.batch}.cpu_ms", "ms/blob", cpu_ms, **detail)


if __name__ == "__main__":
    main()
