"""Consent-checked reads of one record, and grants committed per second (issue 8).

A real `careledger up` process (the embedded node: solo producer, SQLite, blob store) on a
fresh data directory, brought to a state of `--patients` x `--records-per-patient` records and
`--grants-per-patient` read grants per patient (default 1,000 x 100 and 10: 100,000 records,
10,000 read grants), every piece of it a real signed transaction through `POST /txs`:

  members        the node's organisation (it writes every record) and `--orgs` more member
                 organisations (apply, admitted by two thirds of the members), whose
                 `--practitioners` practitioners are the readers
  patients       each registers itself (the node organisation's voucher), publishes its six
                 signed scope keys of epoch 1 and grants the node's organisation write
                 consent with its naming key wrapped to it (as `wallet/enrolment.py` does)
  records        blobs uploaded in batches (`POST /blobs`; each names its record in its header,
                 two wrapped keys of random bytes and random ciphertext: what is measured is who
                 the node serves, not decryption), then anchored by the node's organisation
                 (one `scope/<scope>/1` recipient, scopes in turn), pipelined 3 chunks deep
  grants         per patient, one organisation-level read grant and the rest to single
                 practitioners of the other organisations, each as `ConsentClient.grant` makes
                 it (the broad scopes' keys and the naming key HPKE-wrapped to the grantee's
                 organisation, purpose TREAT): signed first, then submitted in batches
                 (pipelined, 3 deep) and waited for: grants committed per second

The measure: a practitioner fetching one blob, `GET /blobs/{hash}?purpose=TREAT`, signed
(`RequestSigner`), one new request each: authentication (one identity query), the consent
guard (one `records/read_access` query), the blob read from disk. Allowed reads: random
records the practitioner may read through a grant (its own or its organisation's); denied
reads: random records of patients who granted neither (403). Each with one client thread and
with `--clients` threads; every answer is checked (status, and the blob's hash when served).

Run: .venv/bin/python -m bench.consent_read [--patients 1000] [--records-per-patient 100]
     [--grants-per-patient 10] [--reads 3000] [--clients 8] [--profile DIR]
Smoke (well under a minute): --patients 20 --records-per-patient 10 --grants-per-patient 3
     --reads 200
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import machine, percentile
from careledger.chain.app import Application
from careledger.chain.modules.identity.vouchers import sign_consent, sign_voucher
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.store import LastCommit, StateStore
from careledger.chain.tx import Tx
from careledger.crypto.envelope import BlobOwner, WrappedKey, pack_record_blob
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.naming import record_name
from careledger.crypto.requestsig import Audience
from careledger.crypto.scopekeys import BROAD_SCOPES, SCOPES, wrap_naming_key, wrap_scope_key
from careledger.node.datadir import initialise
from careledger.protocol.frames import pack_frames
from careledger.protocol.signing import RequestSigner
from careledger.storage.blobstore import blob_hash
from careledger.wallet.enrolment import write_consent
from careledger.wallet.node_client import NodeClient, PendingBatch, Signer

VOUCHER_EXPIRY = 10**9  # a height no benchmark reaches
EPOCH = 1
PURPOSE = "TREAT"
GRANT_SECONDS = 30 * 24 * 3600
CHUNK = 1000  # transactions (or records) per POST /txs, blobs per POST /blobs
DEPTH = 3  # batches in flight: the next is signed and submitted while earlier ones commit
WRAP_BYTES = 80  # an HPKE-wrapped 32-byte key: 32 enc + 32 + 16 tag


# --- the node -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(
    root: Path, port: int, block_interval: float, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`careledger up` on `root` (with `extra` options), its output in `root`/../node.log;
    returns once it answers."""
    log = open(root.parent / "node.log", "ab")  # noqa: SIM115 (the child keeps it)
    command = [sys.executable, "-m", "careledger.cli", "up", "--data-dir", str(root)]
    command += ["--port", str(port), "--block-interval", str(block_interval), *extra]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with {proc.returncode}: see {log.name}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/status", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the node did not start")


# --- the state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Practitioner:
    keyfile: KeyFile
    org: str


@dataclass(frozen=True)
class StoredRecord:
    patient: int  # index into World.patients
    hash: str


@dataclass
class World:
    """What the bench made, and who may read what."""

    url: str
    founder: KeyFile
    chain_id: str
    client: NodeClient
    orgs: list[KeyFile] = field(default_factory=list)
    practitioners: list[Practitioner] = field(default_factory=list)
    patients: list[KeyFile] = field(default_factory=list)
    records: list[StoredRecord] = field(default_factory=list)
    readers: list[set[int]] = field(default_factory=list)  # per patient: practitioner indexes
    signers: dict[str, Signer] = field(default_factory=dict)  # members', by did

    def sign(self, keyfile: KeyFile, nonce: int, type_: str, payload: dict[str, Any]) -> bytes:
        return Tx(self.chain_id, type_, keyfile.did, nonce, payload).sign(keyfile.identity)


class Rejected(RuntimeError):
    """A transaction of the build failed: the state would not be what the figures claim."""


def _check(results: list[dict[str, Any]], what: str, key: str = "code") -> int:
    """How many results; Rejected unless each one's `key` (code, or check_code for the
    mempool's answer) is 0."""
    for result in results:
        if result.get(key) != 0:
            raise Rejected(f"{what}: {result}")
    return len(results)


def commit_pipelined(client: NodeClient, batches: Iterable[list[bytes]], what: str) -> int:
    """Submit each batch once the mempool answered the previous one (nonces stay in order),
    at most DEPTH waiting for their blocks; raises Rejected on any failure. How many."""
    in_flight: collections.deque[PendingBatch] = collections.deque()
    committed = 0
    try:
        for raws in batches:
            pending = client.submit_pipelined(raws)
            in_flight.append(pending)
            _check(pending.admitted, f"{what} (mempool)", "check_code")
            while len(in_flight) >= DEPTH:
                committed += _check(in_flight.popleft().results(), what)
        while in_flight:
            committed += _check(in_flight.popleft().results(), what)
    finally:
        for pending in in_flight:
            pending.close()
    return committed


def chunks(items: list[bytes], size: int = CHUNK) -> Iterator[list[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def admit_members(world: World, count: int) -> None:
    """`count` member organisations: each applies with the founder's voucher, and is admitted
    by two thirds of the members at the time (one vote each, sent in turn)."""
    founder = Signer(world.client, world.founder.did, world.founder.identity)
    world.signers[world.founder.did] = founder
    voters = [founder]
    for i in range(count):
        ident = Identity.generate()
        org = KeyFile(ident.did, "organisation", ident, f"Reader Clinic {i + 1}")
        voucher = sign_voucher(
            world.founder.identity, world.chain_id, "apply_membership", org.did, VOUCHER_EXPIRY
        )
        payload = {"name": org.name, "encryption_key": ident.encryption_public.hex()}
        applying = world.sign(org, 1, "identity/apply_membership", {**payload, "voucher": voucher})
        _check(world.client.submit_many([applying], wait=True), "apply_membership")
        needed = -(-2 * len(voters) // 3)  # two thirds of the members, rounded up
        for signer in voters[:needed]:
            signer.send("identity/approve_membership", {"action": "admit", "subject": org.did})
        voters.append(Signer(world.client, org.did, ident, last_nonce=1))
        world.signers[org.did] = voters[-1]
        world.orgs.append(org)


def register_practitioners(world: World, count: int) -> None:
    """`count` practitioners, dealt out over the member organisations (not the founder)."""
    raws = []
    for i in range(count):
        org = world.orgs[i % len(world.orgs)]
        ident = Identity.generate()
        key = ident.encryption_public.hex()
        payload = {
            "did": ident.did,
            "encryption_key": key,
            "name": f"Dr. Reader {i + 1}",
            "consent": sign_consent(ident, world.chain_id, org.did, key, VOUCHER_EXPIRY),
        }
        raws.append(world.signers[org.did].sign("identity/register_practitioner", payload))
        keyfile = KeyFile(ident.did, "practitioner", ident, payload["name"])
        world.practitioners.append(Practitioner(keyfile, org.did))
    commit_pipelined(world.client, chunks(raws), "register_practitioner")


def enrol_patients(world: World, count: int) -> None:
    """`count` patients, each as `wallet/enrolment.py` registers one: registration, six signed
    scope keys, write consent to the node's organisation (nonces 1 to 8)."""
    status = world.client.status()
    founder_key = world.founder.identity.encryption_public
    raws = []
    for _ in range(count):
        ident = Identity.generate()
        patient = KeyFile(ident.did, "patient", ident)
        voucher = sign_voucher(
            world.founder.identity, world.chain_id, "register_patient", patient.did, VOUCHER_EXPIRY
        )
        register = {"encryption_key": ident.encryption_public.hex(), "voucher": voucher}
        txs = [world.sign(patient, 1, "identity/register_patient", register)]
        for nonce, scope in enumerate(SCOPES, start=2):
            public = patient.scope_key(scope, EPOCH).public_bytes.hex()
            payload = scope_key_payload(ident, world.chain_id, scope, EPOCH, public)
            txs.append(world.sign(patient, nonce, "records/publish_scope_key", payload))
        naming = wrap_naming_key(patient.naming_key, patient.did, world.founder.did, founder_key)
        consent = {**write_consent(patient.did, world.founder.did, status)}
        consent["naming_key"] = naming.hex()
        txs.append(world.sign(patient, len(txs) + 1, "consent/grant", consent))
        raws += txs
        world.patients.append(patient)
    commit_pipelined(world.client, chunks(raws), "enrolment")


def write_records(world: World, per_patient: int, ciphertext_bytes: int) -> None:
    """`per_patient` records of every patient, written by the node's organisation: each chunk's
    blobs are uploaded (durable) before its anchors are signed and submitted."""
    founder = world.signers[world.founder.did]
    auth = RequestSigner(world.founder.identity, world.founder.did)
    wanted = [(p, i) for i in range(per_patient) for p in range(len(world.patients))]

    def batches() -> Iterator[list[bytes]]:
        for start in range(0, len(wanted), CHUNK):
            blobs, anchors = [], []
            for p, i in wanted[start : start + CHUNK]:
                blob, anchor = _record(world, world.patients[p], i, ciphertext_bytes)
                blobs.append(blob)
                anchors.append(anchor)
                world.records.append(StoredRecord(p, anchor["blob_hash"]))
            response = world.client.http.post("/blobs", content=pack_frames(blobs), auth=auth)
            if response.status_code not in (200, 201):
                raise Rejected(f"blob upload: {response.status_code} {response.text}")
            yield [founder.sign("records/anchor", a) for a in anchors]

    commit_pipelined(world.client, batches(), "records/anchor")


def _record(
    world: World, patient: KeyFile, index: int, ciphertext_bytes: int
) -> tuple[bytes, dict[str, Any]]:
    """A record blob (its header naming the record) and its anchor: version 1, its scope's
    key of epoch 1 and the writer as recipients (as the records SDK writes)."""
    scope = BROAD_SCOPES[index % len(BROAD_SCOPES)]
    name = record_name(patient.naming_key, "Observation", f"bench-{index}")
    recipients = [f"scope/{scope}/{EPOCH}", world.founder.did]
    wrapped = [WrappedKey(r, os.urandom(WRAP_BYTES)) for r in recipients]
    blob = pack_record_blob(BlobOwner(patient.did, name), wrapped, os.urandom(ciphertext_bytes))
    anchor = {
        "patient": patient.did,
        "resource_type": "Observation",
        "record": name,
        "version": 1,
        "blob_hash": blob_hash(blob),
        "commitment": os.urandom(32).hex(),
        "recipients": recipients,
    }
    return blob, anchor


def plan_grants(world: World, per_patient: int, rng: random.Random) -> list[list[str]]:
    """Per patient, the grantees of its read grants: one organisation (in turn) and
    `per_patient - 1` practitioners of the other organisations. Fills `world.readers`."""
    by_org: dict[str, list[int]] = collections.defaultdict(list)
    for i, practitioner in enumerate(world.practitioners):
        by_org[practitioner.org].append(i)
    plans = []
    for p in range(len(world.patients)):
        org = world.orgs[p % len(world.orgs)].did
        others = [i for i in range(len(world.practitioners)) if world.practitioners[i].org != org]
        if per_patient - 1 > len(others):
            raise SystemExit(f"{per_patient} grants per patient need more practitioners")
        chosen = rng.sample(others, per_patient - 1)
        plans.append([org, *(world.practitioners[i].keyfile.did for i in chosen)])
        world.readers.append(set(by_org[org]) | set(chosen))
    return plans


def sign_grants(world: World, plans: list[list[str]]) -> list[bytes]:
    """Every planned read grant, signed by its patient (nonces from 9: after enrolment), as
    `ConsentClient.grant` makes one: the broad scopes' keys of epoch 1 and the naming key
    wrapped to the grantee's organisation."""
    org_keys = {org.did: org.identity.encryption_public for org in world.orgs}
    org_of = {p.keyfile.did: p.org for p in world.practitioners} | {d: d for d in org_keys}
    now = int(time.time())
    raws = []
    for patient, grantees in zip(world.patients, plans, strict=True):
        for nonce, grantee in enumerate(grantees, start=len(SCOPES) + 3):
            holder = org_of[grantee]
            keys = [
                {
                    "scope": scope,
                    "epoch": EPOCH,
                    "wrapped": wrap_scope_key(
                        patient.scope_key(scope, EPOCH), patient.did, holder, org_keys[holder]
                    ).hex(),
                }
                for scope in BROAD_SCOPES
            ]
            naming = wrap_naming_key(patient.naming_key, patient.did, holder, org_keys[holder])
            payload = {
                "id": os.urandom(16).hex(),
                "patient": patient.did,
                "grantee": grantee,
                "action": "read",
                "scopes": list(BROAD_SCOPES),
                "purposes": [PURPOSE],
                "start": now - 3600,
                "end": now + GRANT_SECONDS,
                "keys": keys,
                "naming_key": naming.hex(),
            }
            raws.append(world.sign(patient, nonce, "consent/grant", payload))
    return raws


def interleaved(raws: list[bytes], per_patient: int) -> list[bytes]:
    """Grants ordered round-robin over patients (patient 0's first, patient 1's first, ...),
    as many patients granting at once would send them, rather than one patient's ten in a
    row. Each patient's own nonces stay in order."""
    patients = len(raws) // per_patient
    return [raws[p * per_patient + g] for g in range(per_patient) for p in range(patients)]


def build(world: World, args: argparse.Namespace) -> dict[str, float]:
    """The whole state; seconds per step and the grants' figures."""
    rng = random.Random(8)
    figures: dict[str, float] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("members", lambda: admit_members(world, args.orgs)),
        ("practitioners", lambda: register_practitioners(world, args.practitioners)),
        ("patients", lambda: enrol_patients(world, args.patients)),
        (
            "records",
            lambda: write_records(world, args.records_per_patient, args.ciphertext_bytes),
        ),
    ]
    for name, step in steps:
        started = time.perf_counter()
        step()
        figures[f"build {name} s"] = time.perf_counter() - started
        print(f"  {name}: {figures[f'build {name} s']:.1f} s", flush=True)
    started = time.perf_counter()
    raws = interleaved(
        sign_grants(world, plan_grants(world, args.grants_per_patient, rng)),
        args.grants_per_patient,
    )
    figures["grants signed s"] = time.perf_counter() - started
    print(f"  grants signed: {len(raws)} in {figures['grants signed s']:.1f} s", flush=True)
    started = time.perf_counter()
    committed = commit_pipelined(world.client, chunks(raws, args.grant_batch), "consent/grant")
    figures["grants committed"] = committed
    figures["grants s"] = time.perf_counter() - started
    print(f"  grants committed: {committed} in {figures['grants s']:.1f} s", flush=True)
    return figures


# --- the reads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    practitioner: int
    record: StoredRecord


def plan_reads(world: World, count: int, allowed: bool, rng: random.Random) -> list[Read]:
    """`count` random (practitioner, record) pairs the consent allows (or denies)."""
    everyone = set(range(len(world.practitioners)))
    if not any((r if allowed else everyone - r) for r in world.readers):
        raise SystemExit(f"no (practitioner, patient) pair is {'allowed' if allowed else 'denied'}")
    reads = []
    while len(reads) < count:
        record = rng.choice(world.records)
        readers = world.readers[record.patient]
        pool = sorted(readers if allowed else everyone - readers)
        if pool:
            reads.append(Read(rng.choice(pool), record))
    return reads


@dataclass
class ReadFigures:
    name: str
    reads: int
    seconds: float
    latencies: list[float]
    node_cpu: float  # CPU seconds the node used meanwhile
    client_cpu: float  # CPU seconds this process (the clients) used meanwhile

    def row(self) -> str:
        p50 = percentile(self.latencies, 0.50) * 1000
        p99 = percentile(self.latencies, 0.99) * 1000
        rate = self.reads / self.seconds
        node, client = (1000 * cpu / self.reads for cpu in (self.node_cpu, self.client_cpu))
        return (
            f"| {self.name} | {self.reads} | {p50:.2f} | {p99:.2f} | {rate:,.0f} "
            f"| {node:.2f} | {client:.2f} |"
        )


READ_HEADER = (
    "| reads | count | p50 ms | p99 ms | reads/s | node CPU ms/read | client CPU ms/read |\n"
    "|---|---|---|---|---|---|---|"
)


class ReadClient:
    """One client thread: its own connection, a signer per practitioner."""

    def __init__(self, world: World, audience: Audience) -> None:
        self.http = httpx.Client(base_url=world.url, timeout=60)
        self.signers = [
            RequestSigner(p.keyfile.identity, p.keyfile.did, audience) for p in world.practitioners
        ]

    def run(self, reads: list[Read], allowed: bool) -> list[float]:
        latencies = []
        expected = 200 if allowed else 403
        target = f"?purpose={PURPOSE}"
        for read in reads:
            started = time.perf_counter()
            response = self.http.get(
                f"/blobs/{read.record.hash}{target}", auth=self.signers[read.practitioner]
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != expected or (
                allowed and blob_hash(response.content) != read.record.hash
            ):
                raise RuntimeError(
                    f"read {read}: expected {expected}, got {response.status_code} "
                    f"{response.text[:200]}"
                )
        return latencies

    def close(self) -> None:
        self.http.close()


@dataclass(frozen=True)
class ReadBench:
    world: World
    audience: Audience
    node_pid: int

    def status_floor(self, count: int) -> ReadFigures:
        """The HTTP stack's floor: `GET /status` (public: no signature, no blob, one small
        answer from memory), one client."""
        with httpx.Client(base_url=self.world.url, timeout=60) as http:
            http.get("/status")
            latencies = []
            node_cpu, client_cpu = cpu_seconds(self.node_pid), time.process_time()
            started = time.perf_counter()
            for _ in range(count):
                before = time.perf_counter()
                http.get("/status").raise_for_status()
                latencies.append(time.perf_counter() - before)
            seconds = time.perf_counter() - started
            node_cpu = cpu_seconds(self.node_pid) - node_cpu
            client_cpu = time.process_time() - client_cpu
        name = "floor: GET /status, unsigned, 1 client"
        return ReadFigures(name, count, seconds, latencies, node_cpu, client_cpu)

    def measure(self, reads: list[Read], clients: int, allowed: bool, name: str) -> ReadFigures:
        """`reads` dealt out over `clients` threads, started together; wall time over all,
        and the CPU the node and this process used meanwhile."""
        workers = [ReadClient(self.world, self.audience) for _ in range(clients)]
        for worker in workers:  # open each connection before the clock starts
            worker.run(reads[:2], allowed)
        shares = [reads[i::clients] for i in range(clients)]
        results: list[list[float]] = [[] for _ in range(clients)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(clients + 1)

        def work(i: int) -> None:
            barrier.wait()
            try:
                results[i] = workers[i].run(shares[i], allowed)
            except BaseException as exc:  # raised below, after the join
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        node_cpu, client_cpu = cpu_seconds(self.node_pid), time.process_time()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        node_cpu = cpu_seconds(self.node_pid) - node_cpu
        client_cpu = time.process_time() - client_cpu
        for worker in workers:
            worker.close()
        if errors:
            raise errors[0]
        latencies = [x for r in results for x in r]
        return ReadFigures(name, len(reads), seconds, latencies, node_cpu, client_cpu)


# --- profile and report -----------------------------------------------------------------------


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the node's threads that hold the GIL (its CPU in Python and in the C
    calls Python makes) until stop_profile, collapsed stacks in `out`; None without py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: no profile")
        return None
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--gil"]
    command += ["--output", str(out), "--nonblocking"]
    spy_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached
    return spy_process


def stop_profile(spy_process: subprocess.Popen[bytes], out: Path) -> None:
    spy_process.send_signal(signal.SIGINT)  # py-spy writes its output and exits
    spy_process.wait(60)
    summarise_profile(out)


# Where a read's node CPU goes: each sample goes to the first stage one of its frames names.
STAGES = (
    ("authentication: signature (Ed25519)", ("check_signature ",)),
    ("authentication: identity query", ("registered_identity ",)),
    ("consent decision (records/read_access query)", ("ConsentGuard._ask_chain ",)),
    ("blob read on a worker thread", ("BlobService._read ", "_worker (futures/thread.py)")),
    ("hand-off to the worker thread", ("to_thread ",)),
    ("response sent", ("Response.__call__ ",)),
    ("HTTP parsing, routing, middleware, event loop", ("",)),
)


def summarise_profile(path: Path) -> None:
    """The node's CPU by stage of a read, the chain's query work in it, and the functions
    with the most own time (py-spy's collapsed stacks)."""
    if not path.exists():
        print(f"no profile written at {path}")
        return
    stages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, samples = [_short(frame) for frame in stack.split(";")], int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
        joined = ";".join(frames)
        stages[next(name for name, marks in STAGES if any(m in joined for m in marks))] += samples
    print(f"node profile ({path.name}): {total} samples holding the GIL")
    for name, _ in STAGES:
        print(f"  {100 * stages[name] / total:5.1f}%  {name}")
    print("  of which, chain state reads:")
    for frame, samples in inclusive.most_common():
        if frame.startswith(("StateStore.", "ConsentKeeper.", "RecordsKeeper.", "Identity")):
            print(f"  {100 * samples / total:5.1f}%    {frame}")
    print("  own time:")
    for frame, samples in own.most_common(8):
        print(f"  {100 * samples / total:5.1f}%  {frame}")


def _short(frame: str) -> str:
    """`function (path/to/file.py:line)` as `function (dir/file.py)`: lines merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def state_size(root: Path) -> str:
    """The data directory's size: the state and block databases (with their WAL files), the
    blob store (file bytes, not the file system's blocks) and the rest."""
    groups = {"state.sqlite": 0, "blocks.sqlite": 0, "blobs": 0, "other": 0}
    for path in root.rglob("*"):
        if path.is_file():
            top = path.relative_to(root).parts[0]
            group = next((g for g in groups if top.startswith(g)), "other")
            groups[group] += path.stat().st_size
    return ", ".join(f"{name} {size / 2**20:,.1f} MiB" for name, size in groups.items())


class CountingStore(StateStore):
    """The state store, counting the reads a query makes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: collections.Counter[str] = collections.Counter()

    def get(self, key: bytes) -> bytes | None:
        self.calls["point reads"] += 1
        return super().get(key)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        self.calls["range scans"] += 1
        return super().iterate(prefix, start)

    def last_commit(self) -> LastCommit:
        self.calls["last_commit selects"] += 1
        return super().last_commit()


def chain_costs(root: Path, world: World, count: int) -> None:
    """The chain's part of a read, in this process on the node's state once it stopped: the
    two queries the node makes per read (the caller's identity, then the read decision), their
    time (warm cache, as on the node) and how many state reads each makes."""
    store = CountingStore(root / "state.sqlite")
    app = Application(store)
    rng = random.Random(10)
    at = int(time.time())
    print("the chain's part of one read (in process, the node's state, warm cache):")
    for allowed in (True, False):
        reads = plan_reads(world, count, allowed, rng)
        queries = [
            (
                "identity/identity",
                orjson.dumps({"did": world.practitioners[r.practitioner].keyfile.did}),
            )
            for r in reads
        ] + [
            (
                "records/read_access",
                orjson.dumps(
                    {
                        "reader": world.practitioners[r.practitioner].keyfile.did,
                        "purpose": PURPOSE,
                        "at": at,
                        "hashes": [r.record.hash],
                    }
                ),
            )
            for r in reads
        ]
        for path, data in queries:  # warm the cache, as the node's was
            app.query(path, data)
        label = "allowed" if allowed else "denied"
        for wanted in ("identity/identity", "records/read_access"):
            store.calls.clear()
            mine = [data for path, data in queries if path == wanted]
            started = time.perf_counter()
            for data in mine:
                app.query(wanted, data)
            micros = (time.perf_counter() - started) / len(mine) * 1e6
            calls = ", ".join(f"{n / len(mine):.1f} {what}" for what, n in store.calls.items())
            print(f"  {label:7} {wanted:20} {micros:6.0f} us per query; per query: {calls}")
    store.close()


# --- main -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, scratch: Path) -> None:
    root = scratch / "data"
    founder = initialise(root)
    port = free_port()
    node = start_node(root, port, args.block_interval)
    url = f"http://127.0.0.1:{port}"
    try:
        client = NodeClient(url, founder, timeout=300)
        status = client.status()
        world = World(url, founder, str(status["chain_id"]), client)
        print(f"machine: {machine()}")
        print(f"load before: {load()} (1, 5, 15 min)")
        print("building:", flush=True)
        started = time.perf_counter()
        figures = build(world, args)
        build_s = time.perf_counter() - started
        height = int(world.client.status()["height"])
        print(
            f"state: {len(world.patients)} patients, {len(world.records)} records, "
            f"{int(figures['grants committed'])} read grants + {len(world.patients)} write "
            f"grants, {len(world.orgs) + 1} members, {len(world.practitioners)} practitioners; "
            f"height {height}; built in {build_s:.0f} s"
        )
        print(f"on disk: {state_size(root)}")
        grants_s = figures["grants committed"] / figures["grants s"]
        print(
            f"grants committed per second: {grants_s:,.0f} "
            f"({int(figures['grants committed'])} in {figures['grants s']:.1f} s, batches of "
            f"{args.grant_batch}, {DEPTH} in flight; signing them took "
            f"{figures['grants signed s']:.1f} s before the clock)"
        )
        rows = measure(world, node.pid, args)
        print(f"load after: {load()}")
    finally:
        node.terminate()
        node.wait(30)
    print()
    print(READ_HEADER)
    for row in rows:
        print(row.row())
    print()
    chain_costs(root, world, min(args.reads, 2000))


def measure(world: World, node_pid: int, args: argparse.Namespace) -> list[ReadFigures]:
    """Allowed, then denied reads: one client, then `args.clients` (py-spy on the node
    during those with --profile)."""
    status = world.client.status()
    bench = ReadBench(world, Audience(str(status["chain_id"]), str(status["node_id"])), node_pid)
    rng = random.Random(9)
    rows = [bench.status_floor(args.reads)]
    print(rows[-1].row(), flush=True)
    for allowed, label in ((True, "allowed (200)"), (False, "denied (403)")):
        single = plan_reads(world, args.reads, allowed, rng)
        rows.append(bench.measure(single, 1, allowed, f"{label}, 1 client"))
        print(rows[-1].row(), flush=True)
        many = plan_reads(world, args.reads * 2, allowed, rng)
        out = Path(args.profile or ".") / f"consent_read-{label.split()[0]}.collapsed"
        spy = start_profile(node_pid, out) if args.profile else None
        rows.append(bench.measure(many, args.clients, allowed, f"{label}, {args.clients} clients"))
        print(rows[-1].row(), flush=True)
        if spy is not None:
            stop_profile(spy, out)
    return rows


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """The options of the state `build` makes, and of the reads (bench.audited_read too)."""
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--records-per-patient", type=int, default=100)
    parser.add_argument("--grants-per-patient", type=int, default=10)
    parser.add_argument("--orgs", type=int, default=3, help="reader organisations")
    parser.add_argument("--practitioners", type=int, default=20)
    parser.add_argument("--ciphertext-bytes", type=int, default=600)
    parser.add_argument("--grant-batch", type=int, default=CHUNK)
    parser.add_argument("--reads", type=int, default=3000, help="per single-client run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--block-interval", type=float, default=0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add_state_options(parser)
    parser.add_argument("--profile", default="", help="a directory: py-spy the node's reads")
    args = parser.parse_args()
    if args.grants_per_patient < 1 or args.orgs < 2:
        parser.error("at least one grant per patient and two reader organisations")
    with tempfile.TemporaryDirectory() as scratch:
        run(args, Path(scratch))


if __name__ == "__main__":
    main()
