"""A local consortium of N validators on 127.0.0.x: create, start, stop, inspect.

Layout of a network directory:
  network.json            chain id, nodes (address, ports, node id), the tuned settings
  node<i>/cometbft/       CometBFT's home (config, keys, block store)
  node<i>/app/            our data directory (genesis.json, state.sqlite, keys/)
  node<i>/node.json       what the application process needs (node.network.NodeConfig)
  node<i>/{app,cometbft}.{pid,log}

Node i listens on its own loopback address 127.0.0.(i+1) (all of 127/8 is loopback on
Linux), so every node can use the same ports. Each node runs two processes: the application
(ABCI server + node HTTP API) and CometBFT, which connects to the application's socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from careledger.chain.genesis import Genesis, founder
from careledger.consensus.cometbft.binary import CometBftNotFound
from careledger.consensus.cometbft.binary import cometbft_binary as _find_binary
from careledger.consensus.cometbft.config import (
    NetSettings,
    NodeAddress,
    cometbft_genesis,
    edit_config_toml,
    node_config_values,
    node_id,
    validator_public_key,
)
from careledger.consensus.cometbft.rpc import sync_call
from careledger.consensus.cometbft.server import abci_socket_path
from careledger.node.datadir import DataDir, write_organisation_keys
from careledger.node.netconfig import APP_DIR, COMETBFT_HOME, CONFIG_FILE, NodeConfig

DEFAULT_BASE_PORT = 26656  # p2p; rpc is +1, the node API +2
PROCESSES = ("app", "cometbft")


class NetError(RuntimeError):
    """The network cannot be created, started or reached."""


def cometbft_binary() -> str:
    """The CometBFT binary (see consensus/cometbft/binary.py); NetError when there is none."""
    try:
        return _find_binary()
    except CometBftNotFound as exc:
        raise NetError(str(exc)) from None


@dataclass
class Network:
    root: Path
    chain_id: str
    nodes: list[NodeAddress]
    settings: dict[str, Any] = field(default_factory=dict)
    builtin_app: str = ""  # e.g. "kvstore": CometBFT runs its own app, we start none

    @property
    def processes(self) -> tuple[str, ...]:
        return ("cometbft",) if self.builtin_app else PROCESSES

    def node_dir(self, index: int) -> Path:
        return self.root / f"node{index}"

    def home(self, index: int) -> Path:
        return self.node_dir(index) / COMETBFT_HOME

    def app_data(self, index: int) -> DataDir:
        return DataDir(self.node_dir(index) / APP_DIR)

    def save(self) -> None:
        nodes = [n.__dict__ for n in self.nodes]
        doc = {
            "chain_id": self.chain_id,
            "nodes": nodes,
            "settings": self.settings,
            "builtin_app": self.builtin_app,
        }
        (self.root / "network.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, root: Path) -> Network:
        path = root / "network.json"
        if not path.exists():
            raise NetError(f"{root} holds no network (no network.json); run `net up` first")
        doc = orjson.loads(path.read_bytes())
        nodes = [NodeAddress(**n) for n in doc["nodes"]]
        return cls(root, doc["chain_id"], nodes, doc["settings"], doc["builtin_app"])


# --- creation --------------------------------------------------------------------------------


def create_network(
    root: Path,
    validators: int,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    settings: NetSettings | None = None,
    chain_id: str | None = None,
    builtin_app: str = "",
) -> Network:
    """Write N node homes with one genesis; builtin_app ("kvstore") replaces our application."""
    if not 1 <= validators <= 50:
        raise NetError("--validators must be between 1 and 50")
    if (root / "network.json").exists():
        raise NetError(f"{root} already holds a network")
    settings = settings or NetSettings()
    root.mkdir(parents=True, exist_ok=True)
    binary = cometbft_binary()
    addresses = []
    for i in range(validators):
        home = root / f"node{i}" / COMETBFT_HOME
        _run([binary, "init", "--home", str(home)])
        host = f"127.0.0.{i + 1}"
        addresses.append(
            NodeAddress(i, host, base_port, base_port + 1, base_port + 2, node_id(home))
        )
    chain_id = chain_id or "careledger-net-" + os.urandom(3).hex()
    network = Network(root, chain_id, addresses, settings.as_dict(), builtin_app)
    genesis = _write_organisations(network)
    template = orjson.loads((network.home(0) / "config" / "genesis.json").read_bytes())
    comet_genesis = orjson.dumps(cometbft_genesis(template, genesis), option=orjson.OPT_INDENT_2)
    for node in addresses:
        _configure_node(network, node, comet_genesis, settings)
    network.save()
    return network


def _write_organisations(network: Network) -> Genesis:
    """One founding organisation per node: its key file and its node's, and in genesis its
    validator key and its node's did."""
    orgs = []
    for node in network.nodes:
        name = f"Hospital {node.index}"
        data = network.app_data(node.index)
        data.root.mkdir(parents=True, exist_ok=True)
        org_key, node_key = write_organisation_keys(data, name)
        vkey = validator_public_key(network.home(node.index)).hex()
        orgs.append(founder(name, org_key.identity, vkey, node_key.identity))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    genesis = Genesis(network.chain_id, now, tuple(orgs))
    for node in network.nodes:
        network.app_data(node.index).genesis.write_bytes(genesis.to_json())
    return genesis


def _configure_node(
    network: Network,
    node: NodeAddress,
    comet_genesis: bytes,
    settings: NetSettings,
) -> None:
    home = network.home(node.index)
    (home / "config" / "genesis.json").write_bytes(comet_genesis)
    abci = abci_address(network.node_dir(node.index), node)
    others = [p.p2p for p in network.nodes if p.index != node.index]
    values = node_config_values(node, others, network.builtin_app or abci, settings)
    edit_config_toml(home / "config" / "config.toml", values)
    peers = tuple(p.api_url for p in network.nodes if p.index != node.index)
    config = NodeConfig(
        network.node_dir(node.index),
        node.index,
        abci,
        node.host,
        node.api_port,
        node.rpc_url,
        peers,
    )
    (network.node_dir(node.index) / CONFIG_FILE).write_bytes(config.to_json())


def abci_address(node_dir: Path, node: NodeAddress) -> str:
    """Always a Unix socket (a short private path when the node's is too long), never TCP."""
    return f"unix://{abci_socket_path(node_dir)}"


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise NetError(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")


# --- processes -------------------------------------------------------------------------------


def start_network(network: Network, timeout: float = 60.0) -> None:
    """Start every node (application first, then CometBFT); wait until each RPC answers."""
    for node in network.nodes:
        start_node(network, node.index, wait=False)
    for node in network.nodes:
        wait_for_rpc(node.rpc_url, timeout)


def start_node(network: Network, index: int, *, wait: bool = True, timeout: float = 60.0) -> None:
    node = network.nodes[index]
    if not node_running(network, index):
        stop_node(network, index)  # half of a node may be left over from a crash
        if not network.builtin_app:
            _start_app(network, node)
        _spawn(
            network,
            index,
            "cometbft",
            [cometbft_binary(), "start", "--home", str(network.home(index))],
        )
    if wait:
        wait_for_rpc(node.rpc_url, timeout)


def _start_app(network: Network, node: NodeAddress, timeout: float = 30.0) -> None:
    node_dir = network.node_dir(node.index)
    config = NodeConfig.load(node_dir)
    command = [
        sys.executable,
        "-m",
        "careledger.node.network",
        "--node-dir",
        str(node_dir),
    ]
    process = _spawn(network, node.index, "app", command)
    deadline = time.monotonic() + timeout
    while not _listening(config.abci_address):
        if process.poll() is not None:
            raise NetError(f"node{node.index} application exited; see {node_dir / 'app.log'}")
        if time.monotonic() > deadline:
            raise NetError(f"node{node.index} application did not open its ABCI socket")
        time.sleep(0.05)


def _listening(address: str) -> bool:
    family = socket.AF_UNIX if address.startswith("unix://") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if family == socket.AF_UNIX:
            target: Any = address.removeprefix("unix://")
        else:
            host, _, port = address.removeprefix("tcp://").rpartition(":")
            target = (host, int(port))
        try:
            probe.connect(target)
        except OSError:
            return False
    return True


def _spawn(network: Network, index: int, name: str, command: list[str]) -> subprocess.Popen[bytes]:
    node_dir = network.node_dir(index)
    with open(node_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # `net up` returns; the nodes keep running
            cwd=node_dir,
        )
    (node_dir / f"{name}.pid").write_text(str(process.pid))
    return process


def node_pids(network: Network, index: int) -> dict[str, int]:
    """The live processes of a node, by name; a pid file whose process is gone is ignored."""
    pids = {}
    for name in network.processes:
        pid_file = network.node_dir(index) / f"{name}.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if _is_ours(pid, network.node_dir(index)):
                pids[name] = pid
    return pids


def _is_ours(pid: int, node_dir: Path) -> bool:
    """The pid is alive and still one of this node's processes (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and str(node_dir).encode() in cmdline


def node_running(network: Network, index: int) -> bool:
    return set(node_pids(network, index)) == set(network.processes)


def kill_node(network: Network, index: int) -> None:
    """SIGKILL both processes of a node: a crash, nothing flushed."""
    for pid in node_pids(network, index).values():
        _signal(pid, signal.SIGKILL)
    _wait_gone(network, index, 10.0)


def stop_node(network: Network, index: int, timeout: float = 15.0) -> None:
    """SIGTERM CometBFT, then the application; SIGKILL whatever outlives the timeout."""
    pids = node_pids(network, index)
    for name in ("cometbft", "app"):
        if name in pids:
            _signal(pids[name], signal.SIGTERM)
            _wait_pid(pids[name], network.node_dir(index), timeout)
    kill_node(network, index)


def stop_network(network: Network) -> None:
    for node in network.nodes:
        stop_node(network, node.index)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_pid(pid: int, node_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _is_ours(pid, node_dir) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)


def _wait_gone(network: Network, index: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while node_pids(network, index) and time.monotonic() < deadline:
        for pid in node_pids(network, index).values():
            _reap(pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect a child we started in this process, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --- inspection ------------------------------------------------------------------------------


def wait_for_rpc(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sync_call(url, "status", timeout=2)
            return
        except (httpx.HTTPError, ValueError):
            time.sleep(0.1)
    raise NetError(f"CometBFT RPC at {url} did not answer within {timeout}s")


@dataclass(frozen=True)
class NodeStatus:
    index: int
    host: str
    running: bool
    height: int | None
    app_hash: str | None
    catching_up: bool | None
    rpc_url: str
    api_url: str


def node_status(network: Network, index: int) -> NodeStatus:
    node = network.nodes[index]
    height = app_hash = catching_up = None
    try:
        sync = sync_call(node.rpc_url, "status", timeout=2)["sync_info"]
        height = int(sync["latest_block_height"])
        app_hash = str(sync["latest_app_hash"]).lower()
        catching_up = bool(sync["catching_up"])
    except (httpx.HTTPError, ValueError, KeyError):
        pass
    running = node_running(network, index)
    return NodeStatus(
        index, node.host, running, height, app_hash, catching_up, node.rpc_url, node.api_url
    )


def network_status(network: Network) -> list[NodeStatus]:
    return [node_status(network, n.index) for n in network.nodes]
