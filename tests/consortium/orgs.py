"""Organisations running their own nodes with the operator's commands, on any kind of host.

A host is anything with an `address`, `popen(argv, log_path, env)` and `run(argv, timeout,
env)`: a network namespace of hosts.py (a machine that shares no loopback), or `LocalHost`,
one 127.0.x.y address of this machine for the tests that need no separate network. Every
step goes through the `careledger` command exactly as an operator types it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from careledger.consortium.members import MemberFile
from careledger.crypto.keyfile import KeyFile
from careledger.wallet.node_client import NodeClient

CLI = [sys.executable, "-m", "careledger.cli"]
# What `careledger node status` reads for its height (consortium/status.py), with the standard
# library only: CometBFT's RPC status, 0 when it does not answer within its 3 s (loopback:
# no proxy from the environment).
HEIGHT_PROBE = """
import json, sys, urllib.request
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with direct.open(sys.argv[1] + "/status", timeout=3) as answer:
        print(int(json.load(answer)["result"]["sync_info"]["latest_block_height"]))
except (OSError, ValueError, KeyError):
    print(0)
"""


class HostLike(Protocol):
    address: str

    def popen(
        self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]: ...

    def run(
        self, argv: Sequence[str], timeout: float = 60, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass
class LocalHost:
    """A loopback address of this machine (all of 127/8 is loopback on Linux)."""

    address: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.started.append(process)
        return process

    def run(
        self, argv: Sequence[str], timeout: float = 60, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Org:
    """One organisation: its node home on its host, made and run with the CLI."""

    def __init__(self, host: HostLike, root: Path, name: str, rpc_port: int = 26657) -> None:
        self.host = host
        self.root = root
        self.name = name
        self.rpc_port = rpc_port
        self.process: subprocess.Popen[bytes] | None = None
        self._member: MemberFile | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def log(self) -> Path:
        return self.root / "node.log"

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.host.run([*CLI, *args], timeout=timeout)

    def init(self) -> MemberFile:
        self.root.mkdir(parents=True, exist_ok=True)
        done = self.cli(
            "node", "init", "--data-dir", str(self.home), "--name", self.name,
            "--p2p", f"{self.host.address}:26656", "--rpc-port", str(self.rpc_port),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self._member = MemberFile.parse(done.stdout.encode())
        (self.root / "member.json").write_text(done.stdout)
        return self._member

    @property
    def member(self) -> MemberFile:
        assert self._member is not None, "init() first"
        return self._member

    @property
    def member_file(self) -> Path:
        return self.root / "member.json"

    @property
    def api_url(self) -> str:
        return self.member.api_url

    def start_args(self, genesis: Path, peers: Sequence[Org], join: bool = False) -> list[str]:
        args = [
            "node", "start", "--data-dir", str(self.home), "--genesis", str(genesis),
            "--peers", ",".join(p.member.p2p_peer for p in peers),
            "--peer-api", ",".join(p.api_url for p in peers),
        ]  # fmt: skip
        return [*args, "--join"] if join else args

    def start(self, genesis: Path, peers: Sequence[Org], join: bool = False) -> None:
        self.process = self.host.popen([*CLI, *self.start_args(genesis, peers, join)], self.log)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM `node start` (it stops CometBFT, then the application); its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def status(self) -> dict[str, Any]:
        done = self.cli("node", "status", "--data-dir", str(self.home), "--json", timeout=30)
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = orjson.loads(done.stdout)
        return report

    def height(self) -> int:
        """The height `node status` reports (CometBFT's latest block; 0 while its RPC does not
        answer), read by a small probe on the node's host: the waits poll it several times a
        second, and each `careledger` command costs a second of CPU in imports alone, which
        on two cores starved the very nodes being waited for. `status()` is the command."""
        done = self.host.run([sys.executable, "-c", HEIGHT_PROBE, self.rpc_url], timeout=30)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    @property
    def rpc_url(self) -> str:
        """CometBFT's RPC as `node init` configured it (on the node's host's loopback)."""
        return str(orjson.loads((self.home / "node.json").read_bytes())["rpc_url"])

    def wait_height(self, target: int, timeout: float = 60) -> None:
        wait_until(lambda: self.height() >= target, timeout, f"{self.name} at height {target}")

    @property
    def key(self) -> KeyFile:
        return KeyFile.load(self.home / "app" / "keys" / "organisation.json")

    def client(self) -> NodeClient:
        return NodeClient(self.api_url, self.key, timeout=60)


def assemble(orgs: Sequence[Org], out: Path, chain_id: str) -> Path:
    """Genesis from the founders' member files (run by the first founder), verified by each."""
    genesis = out / "genesis.json"
    done = orgs[0].cli(
        "consortium", "genesis", *(str(o.member_file) for o in orgs),
        "--chain-id", chain_id, "--out", str(genesis),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    digest = done.stdout.split("sha256 ")[1].split()[0]
    for org in orgs:
        agreed = [a for o in orgs for a in ("--members", str(o.member_file))]
        checked = org.cli(
            "consortium", "verify-genesis", str(genesis), "--data-dir", str(org.home),
            *agreed, "--hash", digest,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert f"sha256 {digest}" in checked.stdout
    return genesis
