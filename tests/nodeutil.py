"""Test helpers: real data directories, real node processes on loopback, real state machines.

Imported by the tests as `nodeutil` (not `conftest`: tests/network has a conftest of its own,
and two modules named `conftest` on sys.path shadow each other).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from careledger.chain.app import STATE_MACHINE_VERSION, Application, BlockContext, TxResult
from careledger.chain.genesis import Genesis
from careledger.chain.modules.identity.vouchers import (
    NODE_CONSENT_PURPOSE,
    sign_consent,
    sign_voucher,
)
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.crypto.claim import open_claim_package
from careledger.crypto.envelope import length_prefixed
from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SCOPES
from careledger.demo import shared_data
from careledger.wallet.custody import new_patient_keys
from careledger.wallet.enrolment import clinic_voucher, register_patient
from careledger.wallet.importing import PendingClaim
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient

# The shared FHIR test data (careledger.demo.shared_data); conftest.py stops the run with a
# clear message when it cannot be found.
SHARED_DATA = shared_data() or Path("shared-data-not-found")
CHAIN_ID = "test-chain"
GENESIS_TIME = "2026-01-01T00:00:00Z"
VOUCHER_EXPIRY = 1_000_000  # a height no test reaches


@contextmanager
def serve_over_http(app: ASGIApp) -> Iterator[str]:
    """Serve an ASGI app (a node's `asgi()`) on a free loopback port in a thread; its URL.
    The server runs the app's lifespan (the block producer) and stops on the way out."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# Ports the tests listen on come from below the kernel's ephemeral range (32768-60999 on
# Linux), so no outgoing connection of any process takes one between the probe and the bind;
# under pytest-xdist each worker draws from a range of its own, so two workers never hand out
# the same port (a probe alone cannot promise that: the port is free until someone binds it).
PORTS_FIRST, PORTS_LAST = 10_000, 32_000
_handed_out: set[int] = set()


def worker_index() -> int:
    """This pytest-xdist worker's number (gw3 -> 3); 0 when the tests run in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw")) if name.removeprefix("gw").isdigit() else 0


def worker_port_range() -> range:
    """The ports this worker may hand out: an equal share of the test range per worker."""
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    share = (PORTS_LAST - PORTS_FIRST) // workers
    first = PORTS_FIRST + share * (worker_index() % workers)
    return range(first, first + share)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, from this worker's range, not handed out before
    by this process (a test may take several before starting anything on them)."""
    ports = worker_port_range()
    start = random.randrange(len(ports))
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        if port not in _handed_out and port_is_free("127.0.0.1", port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {ports}")


def free_port_block(size: int, hosts: list[str]) -> int:
    """The first of `size` consecutive ports (starting at a multiple of 10) free on every
    address of `hosts`, from this worker's range and handed out by it no earlier."""
    ports = worker_port_range()
    bases = range(ports.start + (-ports.start) % 10, ports.stop - size, 10)
    for _ in range(200):
        base = random.choice(bases)
        block = range(base, base + size)
        if _handed_out.isdisjoint(block) and all(
            port_is_free(host, port) for host in hosts for port in block
        ):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no {size} free ports in {ports}")


def careledger_command() -> list[str]:
    return [sys.executable, "-m", "careledger.cli"]


def run_verify(root: Path) -> subprocess.CompletedProcess[str]:
    """`careledger verify` on a data directory, as a separate process."""
    return subprocess.run(
        [*careledger_command(), "verify", "--data-dir", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass
class NodeProcess:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def organisation(self) -> KeyFile:
        """The key file `careledger up` wrote for the chain's founding organisation."""
        return KeyFile.load(self.data_dir / "keys" / "organisation.json")

    def client(self, identity: KeyFile | None = None, timeout: float = 30) -> NodeClient:
        """A node client signing as `identity` (default: the node's organisation)."""
        return NodeClient(self.url, identity or self.organisation(), timeout=timeout)

    def start(self, *extra: str) -> None:
        log = open(self.data_dir.parent / f"node-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *careledger_command(),
                "up",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/status", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("node did not answer /status")

    def voucher(self, did: str) -> dict[str, object]:
        """This node's organisation's enrolment voucher for `did` (for register_patient)."""
        org = self.organisation()
        chain_id = httpx.get(self.url + "/status").json()["chain_id"]
        return sign_voucher(org.identity, chain_id, "register_patient", did, VOUCHER_EXPIRY)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def make_app(
    path: Path,
    organisations: list[Identity],
    chain_id: str = CHAIN_ID,
    validator_keys: list[str] | None = None,
    nodes: list[Identity | None] | None = None,
    rules_version: int = STATE_MACHINE_VERSION,
) -> Application:
    """A state machine on a real SQLite file with these founding organisations (and their
    nodes, in the same order, registered at genesis), started under `rules_version`."""
    app = Application(StateStore(path))
    orgs = tuple((f"Org {i}", ident) for i, ident in enumerate(organisations))
    genesis = Genesis.for_organisations(chain_id, list(orgs), validator_keys, nodes)
    genesis = Genesis(chain_id, GENESIS_TIME, genesis.organisations)
    app.init_chain(genesis, rules_version)
    return app


BLOCK_TIME_NS = 1_800_000_000_000_000_000  # run_block's block times: this plus the height


def run_block(app: Application, txs: list[bytes]) -> list[int]:
    """Finalize and commit one block; the result codes."""
    return [int(r.code) for r in run_block_results(app, txs)]


def run_block_results(
    app: Application, txs: list[bytes], time_ns: int | None = None
) -> list[TxResult]:
    """Finalize and commit one block (at `time_ns`, default BLOCK_TIME_NS + height); the
    results, with their logs."""
    height = app.info().last_height + 1
    when = BLOCK_TIME_NS + height if time_ns is None else time_ns
    result = app.finalize_block(BlockContext(height, when), txs)
    app.commit()
    return result.tx_results


# --- registrations, vouched as the chain requires ----------------------------------------


def register_patient_tx(
    chain_id: str,
    patient: Identity,
    org: Identity,
    nonce: int = 1,
    expires_at: int = VOUCHER_EXPIRY,
) -> bytes:
    """`identity/register_patient` signed by the patient, with member `org`'s voucher."""
    payload = {
        "encryption_key": patient.encryption_public.hex(),
        "voucher": sign_voucher(org, chain_id, "register_patient", patient.did, expires_at),
    }
    return Tx(chain_id, "identity/register_patient", patient.did, nonce, payload).sign(patient)


def practitioner_payload(
    chain_id: str, org: str, practitioner: Identity, name: str = "Dr. Test"
) -> dict[str, object]:
    """An `identity/register_practitioner` payload with the practitioner's consent."""
    key = practitioner.encryption_public.hex()
    return {
        "did": practitioner.did,
        "encryption_key": key,
        "name": name,
        "consent": sign_consent(practitioner, chain_id, org, key, VOUCHER_EXPIRY),
    }


def node_payload(
    chain_id: str, org: str, node: Identity, purpose: str = NODE_CONSENT_PURPOSE
) -> dict[str, object]:
    """An `identity/register_node` payload with the node's consent."""
    key = node.encryption_public.hex()
    return {
        "did": node.did,
        "encryption_key": key,
        "name": "a node",
        "consent": sign_consent(node, chain_id, org, key, VOUCHER_EXPIRY, purpose=purpose),
    }


def grant_payload(
    patient: str, grantee: str, action: str = "write", **extra: object
) -> dict[str, object]:
    """A `consent/grant` payload: every scope, a fresh id, a period covering every block the
    tests make (unix seconds); `extra` adds or replaces fields (e.g. purposes for a read)."""
    payload: dict[str, object] = {
        "id": os.urandom(16).hex(),
        "patient": patient,
        "grantee": grantee,
        "action": action,
        "scopes": list(SCOPES),
        "start": 0,
        "end": 2**40,
    }
    if action == "read":
        payload["purposes"] = ["TREAT"]
    return payload | extra


def application_payload(
    chain_id: str, applicant: Identity, sponsor: Identity, name: str, validator_key: str = ""
) -> dict[str, object]:
    """An `identity/apply_membership` payload with sponsor member's voucher."""
    payload: dict[str, object] = {
        "name": name,
        "encryption_key": applicant.encryption_public.hex(),
        "voucher": sign_voucher(
            sponsor, chain_id, "apply_membership", applicant.did, VOUCHER_EXPIRY
        ),
    }
    if validator_key:
        payload["validator_pub_key"] = validator_key
    return payload


# --- patients, the way they really come to be ----------------------------------------------


def enrol(clinic: RecordsClient, name: str = "") -> KeyFile:
    """A patient whose keys are made here, as on their own device (`careledger keys new`),
    registered with `clinic`'s one-time voucher: registration, signed scope keys and the
    clinic's write consent, all signed by the patient. Its key file."""
    patient, _ = new_patient_keys(name)
    status = clinic.node.status()
    voucher = clinic_voucher(clinic.identity, clinic.did, patient.did, status)
    node = NodeClient(clinic.node.url)
    register_patient(node, patient, voucher, clinic.did, clinic.identity.encryption_public)
    return patient


def write_without_naming_key(writer: RecordsClient, patient: str, resource: dict[str, Any]) -> None:
    """Write a record for `patient` under a made-up name, as an intruder who holds no naming
    key of the patient would: sealed, uploaded and anchored, for the chain to judge."""
    keys = writer.scope_keys(patient)
    job = writer.writer.job(patient, resource, keys, {}, os.urandom(32))
    writer.writer.anchor(writer.writer.seal_and_upload([job]))


def claimed_keys(pending: PendingClaim) -> KeyFile:
    """The key file inside a claim package, opened with its code but not claimed (no key
    rotation): the patient's identity as the clinic enrolled it, for tests of records."""
    contents = open_claim_package(pending.package, pending.code)
    identity = contents.identity
    return KeyFile(pending.did, "patient", identity, naming_key=naming_key_of(identity))


def record_name(patient: str, resource_type: str, resource_id: str) -> str:
    """A distinct record name per (patient, type, id), for tests of the state machine, which
    treats names as opaque 32-byte values (writers key them: crypto/naming.py). It is the
    unkeyed hash of rules version 2, so the golden block sequence keeps its names."""
    data = b"careledger-record-name-v1" + b"".join(
        length_prefixed(part) for part in (patient, resource_type, resource_id)
    )
    return hashlib.sha256(data).hexdigest()
