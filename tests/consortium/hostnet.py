"""A consortium on separate test hosts, made the way operators make one (docs/operations.md):
each organisation runs `careledger node init` on its own host, one assembles the genesis from
the member files, every one verifies it, and each starts `careledger node start` in its own
namespace. The test process watches from the observer address, through the node APIs.

Used by tests/consortium/test_four_hosts.py and bench/consortium_latency.py.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from hosts import Host, Hosts

from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeClient, NodeError

P2P_PORT = 26656
API_PORT = 26658
CHAIN_ID = "careledger-hosts"
VOUCHER_EXPIRY = 10**9  # a height no test reaches
CARELEDGER = [sys.executable, "-m", "careledger.cli"]


class CommandFailed(RuntimeError):
    """A careledger command exited non-zero; the message carries its output."""


@dataclass
class Organisation:
    """One member organisation: its host, node home and (once started) its node process."""

    name: str
    host: Host
    home: Path
    log: Path
    member: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host.address}:{API_PORT}"

    @property
    def p2p_address(self) -> str:
        return f"{self.host.address}:{P2P_PORT}"

    @property
    def peer_entry(self) -> str:
        return f"{self.member['node_id']}@{self.member['p2p_address']}"

    def organisation_key(self) -> KeyFile:
        return KeyFile.load(self.home / "app" / "keys" / "organisation.json")

    def client(self) -> NodeClient:
        """A client of this organisation's node API, signing as the organisation."""
        return NodeClient(self.api_url, self.organisation_key(), timeout=30)


def careledger(host: Host, *args: str, timeout: float = 120) -> str:
    """Run a careledger command on a host; its stdout, CommandFailed on a non-zero exit."""
    done = host.run([*CARELEDGER, *args], timeout=timeout)
    if done.returncode != 0:
        raise CommandFailed(
            f"careledger {' '.join(args[:2])} on {host.name} exited {done.returncode}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


def sha256_line(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("sha256 "):
            return line.split()[1]
    raise CommandFailed(f"no sha256 line in {output!r}")


class HostConsortium:
    """Founding organisations, one per host, from `node init` to running nodes."""

    def __init__(self, hosts: Hosts, root: Path, names: Sequence[str] | None = None) -> None:
        names = names or [f"Org{i}" for i in range(len(hosts))]
        self.hosts = hosts
        self.root = root
        self.genesis = root / "genesis.json"
        self.genesis_hash = ""
        self.orgs = [
            Organisation(name, host, root / f"node-{host.index}", root / f"node-{host.index}.log")
            for name, host in zip(names, hosts, strict=True)
        ]

    def __getitem__(self, index: int) -> Organisation:
        return self.orgs[index]

    def ceremony(self) -> str:
        """init on every host, genesis from the member files, verified by every founder;
        the genesis hash every founder printed (they are compared: one value)."""
        for org in self.orgs:
            careledger(
                org.host,
                "node", "init", "--data-dir", str(org.home), "--name", org.name,
                "--p2p", org.p2p_address,
            )  # fmt: skip
            org.member = orjson.loads((org.home / "member.json").read_bytes())
        member_files = [str(org.home / "member.json") for org in self.orgs]
        out = careledger(
            self.orgs[0].host,
            "consortium", "genesis", *member_files,
            "--chain-id", CHAIN_ID, "--out", str(self.genesis),
        )  # fmt: skip
        self.genesis_hash = sha256_line(out)
        members = [arg for path in member_files for arg in ("--members", path)]
        printed = {self._verify(org, members) for org in self.orgs}
        if printed != {self.genesis_hash}:
            raise CommandFailed(f"founders printed different genesis hashes: {printed}")
        return self.genesis_hash

    def _verify(self, org: Organisation, members: list[str]) -> str:
        """`verify-genesis` as this founder runs it; the hash it printed."""
        out = careledger(
            org.host,
            "consortium", "verify-genesis", str(self.genesis), "--data-dir", str(org.home),
            *members, "--hash", self.genesis_hash,
        )  # fmt: skip
        return sha256_line(out)

    def start(self, index: int, peers: Sequence[str] | None = None) -> None:
        """`careledger node start` on the organisation's host, as a long-running process;
        peers default to every other founder's P2P address."""
        org = self.orgs[index]
        others = [o for o in self.orgs if o is not org]
        peer_list = list(peers) if peers is not None else [o.peer_entry for o in others]
        org.process = org.host.popen(
            [
                *CARELEDGER, "node", "start", "--data-dir", str(org.home),
                "--genesis", str(self.genesis), "--name", org.name,
                "--peers", ",".join(peer_list),
                "--peer-api", ",".join(o.api_url for o in others),
            ],
            org.log,
        )  # fmt: skip

    def start_all(self) -> None:
        for index in range(len(self.orgs)):
            self.start(index)

    def stop(self, index: int, timeout: float = 30) -> int:
        """SIGTERM, as an operator's supervisor stops a node; its exit status."""
        process = self.orgs[index].process
        assert process is not None, "not started"
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def status(self, index: int) -> dict[str, object] | None:
        """The node API's /status, from the observer; None while it cannot be reached."""
        try:
            answer = httpx.get(self.orgs[index].api_url + "/status", timeout=5)
        except httpx.TransportError:
            return None
        return dict(answer.json()) if answer.status_code == 200 else None

    def height(self, index: int) -> int:
        """The height the node's application committed; -1 while its API is unreachable."""
        self._require_running(index)
        found = self.status(index)
        return int(str(found["height"])) if found else -1

    def _require_running(self, index: int) -> None:
        process = self.orgs[index].process
        if process is not None and process.poll() is not None:
            log = self.orgs[index].log.read_text(errors="replace")[-3000:]
            raise CommandFailed(f"node {index} exited with {process.returncode}:\n{log}")

    def wait_for_height(self, indexes: Sequence[int], target: int, timeout: float = 120) -> None:
        wait_until(
            lambda: all(self.height(i) >= target for i in indexes),
            timeout,
            f"nodes {list(indexes)} at height {target}",
        )

    def app_hashes(self, index: int) -> dict[int, str]:
        """height -> app hash as the node's application committed them (read-only)."""
        path = self.orgs[index].home / "app" / "state.sqlite"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT height, app_hash FROM commits ORDER BY height").fetchall()
        return {int(h): bytes(a).hex() for h, a in rows}

    def assert_no_fork(self, indexes: Sequence[int]) -> int:
        """Every node has the same app hash at every height they all have; how many."""
        tables = [self.app_hashes(i) for i in indexes]
        common = set.intersection(*(set(t) for t in tables))
        for h in sorted(common):
            assert len({t[h] for t in tables}) == 1, f"app hashes differ at height {h}"
        return len(common)

    def register_patient(self, index: int) -> str:
        """A patient registration (with the organisation's enrolment voucher) submitted at
        this organisation's node API; the transaction's hash."""
        org = self.orgs[index]
        raw = registration(CHAIN_ID, org.organisation_key())
        client = org.client()
        try:
            return str(client.submit(raw, wait=False)["hash"])
        finally:
            client.close()

    def committed_code(self, index: int, digest: str) -> int | None:
        """The result code of a committed transaction at this node; None while in no block."""
        client = self.orgs[index].client()
        try:
            return int(client.transaction(digest)["code"])
        except NodeError as exc:
            if exc.status == 404:
                return None
            raise
        finally:
            client.close()


def registration(chain_id: str, org: KeyFile) -> bytes:
    """A new patient's registration, with organisation `org`'s enrolment voucher."""
    patient = Identity.generate()
    voucher = sign_voucher(
        org.identity, chain_id, "register_patient", patient.did, VOUCHER_EXPIRY, org.did
    )
    payload = {"encryption_key": patient.encryption_public.hex(), "voucher": voucher}
    return Tx(chain_id, "identity/register_patient", patient.did, 1, payload).sign(patient)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
