"""A consortium on separate test hosts, made the way operators make one (docs/operations.md):
each organisation runs `careledger node init` on its own host, one assembles the genesis from
the member files, every one verifies it, and each starts `careledger node start` in its own
namespace. The test process watches from the observer address, through the node APIs.

Used by tests/consortium/test_four_hosts.py and bench/consortium_latency.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import httpx
from hosts import Host
from orgs import CLI, Org, assemble, wait_until

from careledger.chain.modules.identity.vouchers import sign_voucher
from careledger.chain.tx import Tx
from careledger.consortium.ceremony import genesis_hash
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.wallet.node_client import NodeError

P2P_PORT = 26656
CHAIN_ID = "careledger-hosts"
VOUCHER_EXPIRY = 10**9  # a height no test reaches


class NodeExited(RuntimeError):
    """A node process ended while the test expected it to run; the message has its log."""


__all__ = ["CHAIN_ID", "P2P_PORT", "HostConsortium", "NodeExited", "registration", "wait_until"]


class HostConsortium:
    """Founding organisations (orgs.Org), one per host, from `node init` to running nodes."""

    def __init__(
        self, hosts: Sequence[Host], root: Path, names: Sequence[str] | None = None
    ) -> None:
        """One founder on each of `hosts` (a Hosts, or some of its hosts)."""
        names = names or [f"Org{i}" for i in range(len(hosts))]
        self.hosts = hosts
        self.root = root
        self.genesis = root / "genesis.json"
        self.genesis_hash = ""
        self.orgs = [
            Org(host, root / f"org{host.index}", name)
            for name, host in zip(names, hosts, strict=True)
        ]

    def __getitem__(self, index: int) -> Org:
        return self.orgs[index]

    def ceremony(self) -> str:
        """`node init` on every host, the genesis assembled from the member files by the first
        founder and verified by each (orgs.assemble checks that each printed its hash)."""
        for org in self.orgs:
            org.init()
        self.genesis = assemble(self.orgs, self.root, CHAIN_ID)
        self.genesis_hash = genesis_hash(self.genesis.read_bytes())
        return self.genesis_hash

    def start(self, index: int, peers: Sequence[str] | None = None) -> None:
        """`careledger node start` on the organisation's host, as a long-running process;
        peers (ID@HOST:PORT) default to every other founder's P2P address."""
        org = self.orgs[index]
        args = org.start_args(self.genesis, [o for o in self.orgs if o is not org])
        if peers is not None:
            args[args.index("--peers") + 1] = ",".join(peers)
        org.process = org.host.popen([*CLI, *args, "--name", org.name], org.log)

    def start_all(self) -> None:
        for index in range(len(self.orgs)):
            self.start(index)

    def stop(self, index: int, timeout: float = 30) -> int:
        """SIGTERM, as an operator's supervisor stops a node; its exit status."""
        return self.orgs[index].stop(timeout)

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
            raise NodeExited(f"node {index} exited with {process.returncode}:\n{log}")

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
        raw = registration(CHAIN_ID, org.key)
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
