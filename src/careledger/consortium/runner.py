"""`careledger node start`: one organisation's node, in the foreground.

Everything is checked before anything is written (`prepare`): the node home's keys against its
member file, the genesis (this organisation's own entry, validators that are the founders',
the same genesis as the directory already holds), the peers. Then `run`: the application
(node API, FHIR gateway and portal on one port, the ABCI server on a Unix socket) in this
process, CometBFT as a child process once the socket listens. SIGTERM or SIGINT stops CometBFT
first, then the application; if CometBFT dies, the node stops too (exit status 1), so a
process supervisor (systemd, a container runtime) restarts both together.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from careledger.chain.app import IncompatibleState, LocalFault
from careledger.chain.genesis import Genesis
from careledger.consensus.cometbft.config import (
    NetSettings,
    NodeAddress,
    edit_config_toml,
    node_config_values,
)
from careledger.consensus.cometbft.server import abci_socket_path
from careledger.consortium.ceremony import genesis_hash, verify_genesis
from careledger.consortium.home import NodeHome, cometbft_command
from careledger.consortium.members import (
    ConsortiumError,
    MemberFile,
    check_host_port,
    parse_peers,
)
from careledger.crypto.privatefs import replace_private_file, write_private_file
from careledger.node.netconfig import NodeConfig
from careledger.node.server import ServerControl
from careledger.node.tls import TlsConfigError, TlsSettings

log = logging.getLogger(__name__)
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class StartPlan:
    """What `node start` will write and run, every part of it already checked."""

    home: NodeHome
    member: MemberFile
    genesis: Genesis
    genesis_raw: bytes
    peers: tuple[str, ...]
    config: NodeConfig
    settings: NetSettings
    p2p_listen: str  # HOST:PORT CometBFT binds (the member file's address unless told)


def prepare(
    home: NodeHome,
    genesis_raw: bytes,
    peers: str,
    peer_api: str = "",
    *,
    join: bool = False,
    name: str | None = None,
    settings: NetSettings | None = None,
    tls: TlsSettings | None = None,
    listen_p2p: str | None = None,
    listen_api: str | None = None,
) -> StartPlan:
    """Check a start before writing anything; ConsortiumError says what is wrong. `tls`:
    the node's certificate, key and the members' CA bundle (node/tls.py), checked here."""
    member = home.member()
    if name is not None and name != member.name:
        raise ConsortiumError(
            f"{home.root} is {member.name!r}'s node home, not {name!r}'s: refusing to start "
            "another organisation's node"
        )
    genesis = verify_genesis(genesis_raw, None if join else member)
    _require_same_chain(home, genesis, genesis_raw)
    peer_api_urls = _peer_api_urls(peer_api, member.api_url)
    checked = _checked_tls(tls, peer_api_urls)
    # The ABCI socket follows the home (a moved or restored home, or an edited node.json,
    # never points at another node's socket: starting unlinks whatever is at that path).
    config = replace(
        home.config(),
        abci_address=f"unix://{abci_socket_path(home.root)}",
        peer_api_urls=peer_api_urls,
        tls=checked,
    )
    if listen_api is not None:  # e.g. 0.0.0.0 in a container; others still use api_url
        api_host, api_port = check_host_port("--listen-api", listen_api)
        config = replace(config, api_host=api_host, api_port=api_port)
    if listen_p2p is not None:
        check_host_port("--listen-p2p", listen_p2p)
    return StartPlan(
        home,
        member,
        genesis,
        genesis_raw,
        parse_peers(peers, member.node_id),
        config,
        settings or NetSettings(),
        listen_p2p or member.p2p_address,
    )


def _checked_tls(tls: TlsSettings | None, peer_api_urls: tuple[str, ...]) -> TlsSettings:
    """The settings, checked against the peers; a certificate needs the bundle too (this
    node's own gateway reaches its HTTPS port in the same process, trusting the bundle)."""
    tls = tls or TlsSettings()
    if tls.serves_https and not tls.verifies_peers:
        raise ConsortiumError("--tls-cert needs --tls-ca (the members' CA bundle, yours in it)")
    try:
        tls.check(peer_api_urls)
    except TlsConfigError as exc:
        raise ConsortiumError(str(exc)) from None
    return tls


def _require_same_chain(home: NodeHome, genesis: Genesis, raw: bytes) -> None:
    """A directory that has run one chain never starts another (its state, blocks and
    CometBFT's block store belong to the first)."""
    if not home.app.exists():
        return
    held = home.app.load_genesis()
    if held.to_json() != genesis.to_json() or (
        home.cometbft_genesis.is_file()
        and genesis_hash(home.cometbft_genesis.read_bytes()) != genesis_hash(raw)
    ):
        raise ConsortiumError(
            f"{home.root} belongs to chain {held.chain_id} (genesis "
            f"{genesis_hash(home.cometbft_genesis.read_bytes())[:16]}...); this genesis is "
            f"{genesis.chain_id}'s ({genesis_hash(raw)[:16]}...). Use a new node home."
        )


def _peer_api_urls(value: str, own: str) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in value.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")) or " " in url:
            raise ConsortiumError(f"--peer-api: {url!r} is not an http(s) URL")
        if url == own:
            raise ConsortiumError(f"--peer-api: {url} is this node's own API")
    return urls


def install(plan: StartPlan) -> None:
    """Write the genesis, config.toml and node.json (idempotent for a restart)."""
    home = plan.home
    write_private_file(home.app.genesis, plan.genesis.to_json())
    write_private_file(home.cometbft_genesis, plan.genesis_raw)
    host, _, port = plan.member.p2p_address.rpartition(":")
    address = NodeAddress(
        index=0,
        host=host.strip("[]"),
        p2p_port=int(port),
        rpc_port=int(plan.config.rpc_url.rpartition(":")[2]),
        api_port=plan.config.api_port,
        node_id=plan.member.node_id,
    )
    values = node_config_values(
        address, plan.peers, plan.config.abci_address, plan.settings, _moniker(plan.member)
    )
    # CometBFT's RPC where node.json says (127.0.0.1 and `--rpc-port` of `node init`);
    # P2P bound where told, announced at the member file's address.
    values[("rpc", "laddr")] = plan.config.rpc_url.replace("http://", "tcp://", 1)
    values[("p2p", "laddr")] = f"tcp://{plan.p2p_listen}"
    edit_config_toml(home.cometbft / "config" / "config.toml", values)
    replace_private_file(home.config_file, plan.config.to_json())


def _moniker(member: MemberFile) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in member.name)[:64]


@contextlib.contextmanager
def node_lock(home: NodeHome) -> Iterator[None]:
    """Held while the node runs: a second start on the same directory is refused."""
    fd = os.open(home.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConsortiumError(f"{home.root} is in use by a running node") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def run(plan: StartPlan, on_ready: Callable[[str], None] = print) -> int:
    """Serve until stopped; the exit status (0 after SIGTERM/SIGINT, 1 after a fault)."""
    from careledger.node.builder import CometBft, build_node
    from careledger.node.tls import dial
    from careledger.site import organisation_gateway, serve_site
    from careledger.web.enrolment import OpenEnrolment

    config = plan.config
    try:
        node = build_node(
            config.app_dir,
            CometBft(config.abci_address, config.rpc_url),
            peers=config.peer_api_urls,
            tls=config.tls,
        )
    except (IncompatibleState, LocalFault) as exc:  # e.g. an upgrade this software lacks
        raise ConsortiumError(str(exc)) from None
    comet = CometBftChild(plan.home)
    local_url = config.tls.local_url(dial(config.api_host), config.api_port)
    verify = config.tls.client_context()
    gateway = organisation_gateway(plan.home.app, local_url, None, verify)
    enrolment = OpenEnrolment(local_url, plan.home.organisation_key(), open=False, verify=verify)
    gateway.start()

    def supervise(control: ServerControl) -> None:
        comet.attach(control)
        watcher = threading.Thread(target=comet.run, args=(config.abci_address, on_ready))
        watcher.daemon = True
        watcher.start()

    try:
        serve_site(
            node, gateway, enrolment, config.api_host, config.api_port, supervise, config.tls
        )
    finally:
        comet.stop()
        node.close()
    return 1 if node.halted() is not None or comet.failed else 0


class CometBftChild:
    """CometBFT as this process's child: started once the ABCI socket listens. A signal to
    the node stops CometBFT first (SIGTERM, SIGKILL after STOP_TIMEOUT), then the server; if
    CometBFT exits on its own, the node stops too and reports the failure."""

    def __init__(self, home: NodeHome) -> None:
        self.home = home
        self.process: subprocess.Popen[bytes] | None = None
        self.failed = False
        self._stopping = False
        self._control: ServerControl | None = None
        self._lock = threading.Lock()

    @property
    def log_path(self) -> Path:
        return self.home.root / "cometbft.log"

    def attach(self, control: ServerControl) -> None:
        self._control = control
        control.on_signal = self.stop_first

    def run(self, abci_address: str, ready: Callable[[str], None]) -> None:
        control = self._control
        assert control is not None, "attach() first"
        path = abci_address.removeprefix("unix://")
        if not _wait_listening(path, lambda: self._stopping or control.stopping):
            control.stop()
            return
        with self._lock:
            if self._stopping:
                control.stop()
                return
            with open(self.log_path, "ab") as out:
                self.process = subprocess.Popen(
                    [cometbft_command(), "start", "--home", str(self.home.cometbft)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
        ready(f"CometBFT started (pid {self.process.pid}); its log: {self.log_path}")
        code = self.process.wait()
        if not (self._stopping or control.stopping):
            log.error("CometBFT exited with status %s; stopping the node", code)
            self.failed = True
        control.stop()

    def stop_first(self) -> None:
        """The node was asked to stop: CometBFT first (its exit then stops the server)."""
        with self._lock:
            self._stopping = True
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            timer = threading.Timer(STOP_TIMEOUT, self._kill_if_alive, args=(process,))
            timer.daemon = True
            timer.start()
        elif self._control is not None:
            self._control.stop()

    @staticmethod
    def _kill_if_alive(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()

    def stop(self) -> None:
        """After the server stopped (whatever stopped it): make sure CometBFT is gone."""
        with self._lock:
            self._stopping = True
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(path: str, cancelled: Callable[[], bool]) -> bool:
    while not cancelled():
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
            contextlib.suppress(OSError),
        ):
            probe.connect(path)
            return True
        time.sleep(0.05)
    return False


def read_file(path: Path, what: str, limit: int) -> bytes:
    """A file the operator named, refused clearly when missing or too large."""
    try:
        if path.stat().st_size > limit:
            raise ConsortiumError(f"{what} {path}: larger than {limit} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ConsortiumError(f"{what} {path}: {exc.strerror}") from None
