"""Consent-checked, audited reads of one record on the embedded node; audit entries committed
per second; on-chain bytes per access entry (issue 9).

The state is `bench/consent_read.py`'s (a real `careledger up` process, 1,000 patients x 100
records = 100,000 records, 10,000 read grants, 4 members, 20 practitioners; every piece a real
signed transaction). A read is a practitioner's signed `GET /blobs/{hash}?purpose=TREAT`: the
request signature and the caller's identity (authentication), the consent guard's decision
(`records/read_access`), the access entry journaled durably (fsync, group commit) before the
blob is served, the blob read from disk, the receipt header. Every answer is checked (200 and
the blob's exact bytes, with a receipt). Then:
- entries committed per second: a burst of reads on the node restarted with batching off
  (`--audit-interval 0`: journaled and receipted, not batched), then the node restarted as
  usual, timed until the chain holds the whole backlog (the batcher's pace, not the reads');
- on-chain bytes per entry: the batch transactions' bytes over their entries;
- the read pipeline in process (the same decision, audit and blob read, without HTTP and
  authentication), on the stopped node's data directory.

The load generator is lean on purpose: the node and the clients share this machine's cores,
and the figure wanted is the node's. Requests are signed before the clock (each unique: its
own nonce and timestamp, as a live client makes them; the node's replay cache and freshness
window apply as usual) and sent with `http.client` on keep-alive connections, one per client
thread. The same reads through `httpx` with signing on the clock are consent_read's figures.

Run: .venv/bin/python -m bench.audited_read [--clients 8] [--reads 3000] [consent_read's
     state options]
Smoke: --patients 20 --records-per-patient 10 --grants-per-patient 3 --reads 200
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.consent_read import (
    PURPOSE,
    Read,
    ReadFigures,
    World,
    add_state_options,
    build,
    cpu_seconds,
    free_port,
    load,
    plan_reads,
    start_node,
    state_size,
)
from bench.record import record
from careledger.chain.store import StateStore
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.requestsig import Audience, authorization
from careledger.node.auth import Caller
from careledger.node.builder import Node, Solo, build_node
from careledger.node.datadir import DataDir, initialise
from careledger.storage.blobstore import blob_hash
from careledger.wallet.node_client import NodeClient

RECEIPT_HEADER = "careledger-audit"
READ_HEADER = (
    "| reads | count | p50 ms | p99 ms | reads/s | node CPU ms/read | client CPU ms/read |\n"
    "|---|---|---|---|---|---|---|"
)


@dataclass(frozen=True)
class SignedRead:
    target: str
    authorization: str
    expected: str  # the blob's hash


def sign_reads(world: World, audience: Audience, reads: list[Read]) -> list[SignedRead]:
    """Each read signed now, as its practitioner's client would sign it."""
    signed = []
    for read in reads:
        practitioner = world.practitioners[read.practitioner].keyfile
        target = f"/blobs/{read.record.hash}?purpose={PURPOSE}"
        header = authorization(
            practitioner.identity,
            practitioner.did,
            audience,
            "GET",
            target,
            b"",
            time.time_ns() // 1_000_000,
        )
        signed.append(SignedRead(target, header, read.record.hash))
    return signed


def read_all(host: str, port: int, reads: list[SignedRead]) -> list[float]:
    """One client: its reads in order on one keep-alive connection; latency of each."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    latencies = []
    try:
        for read in reads:
            started = time.perf_counter()
            connection.request("GET", read.target, headers={"Authorization": read.authorization})
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200 or blob_hash(body) != read.expected:
                raise RuntimeError(f"{read.target}: {response.status} {body[:200]!r}")
            if not response.getheader(RECEIPT_HEADER):
                raise RuntimeError(f"{read.target}: served without an audit receipt")
    finally:
        connection.close()
    return latencies


def measure(
    world: World, audience: Audience, port: int, node_pid: int, reads: list[Read], clients: int
) -> ReadFigures:
    """`reads` signed, dealt out over `clients` threads started together; wall time over
    all, and the CPU the node and this process used meanwhile."""
    signed = sign_reads(world, audience, reads)
    shares = [signed[i::clients] for i in range(clients)]
    results: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = read_all("127.0.0.1", port, shares[i])
        except BaseException as exc:  # raised below, after the join
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    node_cpu, client_cpu = cpu_seconds(node_pid), time.process_time()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    node_cpu = cpu_seconds(node_pid) - node_cpu
    client_cpu = time.process_time() - client_cpu
    if errors:
        raise errors[0]
    latencies = [x for r in results for x in r]
    name = f"audited read (200), {clients} client{'s' if clients > 1 else ''}"
    return ReadFigures(name, len(reads), seconds, latencies, node_cpu, client_cpu)


# --- the audit's side: entries committed, bytes on chain ---------------------------------------


@dataclass(frozen=True)
class ChainAudit:
    """What the chain holds of this node's access entries."""

    batches: int
    entries: int
    tx_bytes: int


def committed_audit(client: NodeClient, node_did: str) -> ChainAudit:
    last = int(client.query("audit/last_seq", node=node_did)["seq"])
    entries = tx_bytes = 0
    for seq in range(1, last + 1):
        batch: dict[str, Any] = client.query("audit/batch", node=node_did, seq=str(seq))
        entries += int(batch["count"])
        found = client.transaction(str(batch["tx"]))
        tx_bytes += len(bytes.fromhex(str(found["evidence"]["tx"])))
    return ChainAudit(last, entries, tx_bytes)


def wait_for_entries(client: NodeClient, node_did: str, total: int, timeout: float) -> float:
    """Seconds until the chain holds `total` entries of this node (counted from the call)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if committed_audit(client, node_did).entries >= total:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {total} entries committed after {timeout} s")


def audit_state(root: Path) -> tuple[int, int]:
    """(bytes, rows) the audit module keeps in the stopped node's state (keys and values)."""
    store = StateStore(root / "state.sqlite")
    try:
        rows = list(store.iterate(b"audit/"))
    finally:
        store.close()
    return sum(len(k) + len(v) for k, v in rows), len(rows)


# --- the pipeline in process: no HTTP, no request signature ------------------------------------


def in_process(root: Path, world: World, reads: list[Read], clients: int) -> ReadFigures:
    """The same reads through the embedded node's read pipeline, in this process: the consent
    guard's decision (the chain query, inline), the audit (entries journaled with fsync, the
    receipt signed) and the blob read, as `GET /blobs/{hash}` runs them after authentication;
    `clients` tasks on one event loop. What HTTP and authentication add is the difference to
    the rows above."""
    node = build_node(root, Solo())
    try:
        return asyncio.run(_pipeline(node, world, reads, clients))
    finally:
        node.close()


async def _pipeline(node: Node[Any], world: World, reads: list[Read], clients: int) -> ReadFigures:
    guard, blobs = node.consent_guard, node.blob_store
    callers = [Caller(p.keyfile.did, "practitioner", p.org) for p in world.practitioners]

    async def one_client(share: list[Read]) -> list[float]:
        latencies = []
        for read in share:
            started = time.perf_counter()
            request = os.urandom(32).hex()  # the digest of a request this node never saw
            decided = await guard.decide(
                callers[read.practitioner], PURPOSE, [read.record.hash], request=request
            )
            if not decided.decisions[0].allowed or decided.receipt is None:
                raise RuntimeError(f"{read}: {decided.decisions[0].reason}")
            if blob_hash(blobs.get(read.record.hash)) != read.record.hash:
                raise RuntimeError(f"{read}: wrong blob")
            latencies.append(time.perf_counter() - started)
        return latencies

    shares = [reads[i::clients] for i in range(clients)]
    cpu, started = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(one_client(share) for share in shares))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies = [x for r in results for x in r]
    name = f"in process: decision + audit + blob read, {clients} tasks"
    return ReadFigures(name, len(reads), seconds, latencies, cpu, 0.0)


# --- main -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, scratch: Path) -> None:
    root = scratch / "data"
    founder = initialise(root)
    node_did = KeyFile.load(DataDir(root).node_key).did
    port = free_port()
    node = start_node(root, port, args.block_interval)
    url = f"http://127.0.0.1:{port}"
    rows: list[ReadFigures] = []
    try:
        client = NodeClient(url, founder, timeout=300)
        status = client.status()
        world = World(url, founder, str(status["chain_id"]), client)
        audience = Audience(str(status["chain_id"]), str(status["node_id"]))
        print(f"machine: {machine()}")
        print(f"load before: {load()} (1, 5, 15 min)")
        started = time.perf_counter()
        build(world, args)
        print(f"state built in {time.perf_counter() - started:.0f} s; on disk: {state_size(root)}")
        rng = random.Random(9)
        before = committed_audit(client, node_did).entries
        for clients in (1, args.clients):
            count = args.reads if clients == 1 else 2 * args.reads
            reads = plan_reads(world, count, True, rng)
            rows.append(measure(world, audience, port, node.pid, reads, clients))
            print(rows[-1].row(), flush=True)
        read_total = sum(r.reads for r in rows)
        wait_for_entries(client, node_did, before + read_total, 120)
        audit = committed_audit(client, node_did)
    finally:
        node.terminate()
        node.wait(30)
    state, state_rows = audit_state(root)
    drained = backlog(root, port, world, audience, args, audit.entries, rng)
    rows.append(in_process(root, world, plan_reads(world, 2 * args.reads, True, rng), args.clients))
    print(f"load after: {load()}")
    print()
    print(READ_HEADER)
    for row in rows:
        print(row.row())
        record_row(row)
    print()
    print(f"entries: {audit.entries - before:,} committed for {read_total:,} reads")
    print(
        f"audit entries committed per second, a backlog of {drained[0]:,} entries journaled "
        f"with batching off, then batched by the restarted node: {drained[0] / drained[1]:,.0f} "
        f"({drained[1]:.1f} s from the restart's first answer to the last entry committed)"
    )
    print(
        f"state kept per entry: {state / max(audit.entries, 1):.1f} bytes (the audit module's "
        f"{state_rows:,} rows, keys and values, for {audit.entries:,} entries)"
    )
    print(
        f"on-chain bytes per entry: {audit.tx_bytes / max(audit.entries, 1):.1f} "
        f"({audit.tx_bytes:,} bytes of batch transactions, {audit.batches} batches, "
        f"{audit.entries:,} entries)"
    )


def record_row(row: ReadFigures) -> None:
    """The row's figures through bench/record.py: `reads.audited` (reads/s) and the node's
    CPU per read, the figure to compare on a shared machine."""
    detail = {"row": row.name, "reads": row.reads, "code": os.environ.get("PYTHONPATH", "")}
    record("reads.audited", "records/s", round(row.reads / row.seconds, 1), **detail)
    node_ms = 1000 * row.node_cpu / row.reads
    record("reads.audited.node_cpu_ms", "ms/record", round(node_ms, 4), **detail)


def backlog(
    root: Path,
    port: int,
    world: World,
    audience: Audience,
    args: argparse.Namespace,
    committed: int,
    rng: random.Random,
) -> tuple[int, float]:
    """A burst of reads on a node that journals but does not batch (`--audit-interval 0`),
    then the node restarted as usual: (entries, seconds until the chain holds them all)."""
    reads = plan_reads(world, 2 * args.reads, True, rng)
    node = start_node(root, port, args.block_interval, ["--audit-interval", "0"])
    try:
        measure(world, audience, port, node.pid, reads, args.clients)
    finally:
        node.terminate()
        node.wait(30)
    node = start_node(root, port, args.block_interval)
    try:
        client = NodeClient(f"http://127.0.0.1:{port}", world.founder, timeout=300)
        node_did = KeyFile.load(DataDir(root).node_key).did
        seconds = wait_for_entries(client, node_did, committed + len(reads), 300)
    finally:
        node.terminate()
        node.wait(30)
    return len(reads), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_state_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run(args, Path(scratch))


if __name__ == "__main__":
    main()
