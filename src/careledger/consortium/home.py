"""One organisation's node home on its own machine, and `careledger node init`.

The layout is a local network's node directory (localnet/network.py), so the node process, the
verifier and the tests read both the same way:

  DIR/member.json   the public member file (members.py), made by `node init`
  DIR/node.json     what the node process needs (node.network.NodeConfig): listen addresses,
                    the ABCI socket, CometBFT's RPC, the peers' API URLs
  DIR/app/          the application's data directory: genesis, state, blobs, keys/
  DIR/cometbft/     CometBFT's home: its node key, validator key, config, block store
  DIR/node.lock     held by a running `node start`
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from careledger.consensus.cometbft.binary import CometBftNotFound, cometbft_binary
from careledger.consensus.cometbft.config import node_id, validator_public_key
from careledger.consensus.cometbft.server import abci_socket_path
from careledger.consortium.members import (
    ConsortiumError,
    MemberFile,
    check_dialable,
    check_host_port,
)
from careledger.crypto.keyfile import KeyFile, KeyFileError
from careledger.crypto.keys import Identity
from careledger.crypto.privatefs import make_private_dir, replace_private_file, write_private_file
from careledger.node.datadir import DataDir, write_organisation_keys
from careledger.node.netconfig import APP_DIR, COMETBFT_HOME, CONFIG_FILE, NodeConfig

DEFAULT_P2P_PORT = 26656
DEFAULT_RPC_PORT = 26657  # CometBFT's RPC: always on 127.0.0.1
DEFAULT_API_PORT = 26658  # node API, FHIR gateway and portal


@dataclass(frozen=True)
class NodeHome:
    root: Path

    @property
    def member_file(self) -> Path:
        return self.root / "member.json"

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def app(self) -> DataDir:
        return DataDir(self.root / APP_DIR)

    @property
    def cometbft(self) -> Path:
        return self.root / COMETBFT_HOME

    @property
    def cometbft_genesis(self) -> Path:
        return self.cometbft / "config" / "genesis.json"

    @property
    def lock(self) -> Path:
        return self.root / "node.lock"

    def initialised(self) -> bool:
        return self.member_file.is_file()

    def member(self) -> MemberFile:
        """This node's member file, checked against the keys the directory holds: a
        directory assembled from two organisations' files is refused."""
        if not self.initialised():
            raise ConsortiumError(f"{self.root} is not a node home: run `careledger node init`")
        member = MemberFile.parse(self.member_file.read_bytes(), str(self.member_file))
        org, node = self.organisation_key(), self._key(self.app.node_key)
        held = {
            "did": org.did,
            "encryption_key": org.identity.encryption_public.hex(),
            "node_did": node.did,
            "node_encryption_key": node.identity.encryption_public.hex(),
            "validator_pub_key": validator_public_key(self.cometbft).hex(),
            "node_id": node_id(self.cometbft),
        }
        if member.encryption_key in _rotated_away(org):
            held["encryption_key"] = member.encryption_key  # the genesis's: rotated since
        for field, value in held.items():
            if getattr(member, field) != value:
                raise ConsortiumError(
                    f"{self.root}: member.json's {field} is not the key this directory holds "
                    "(files from two node homes mixed?)"
                )
        return member

    def organisation_key(self) -> KeyFile:
        return self._key(self.app.organisation_key)

    def config(self) -> NodeConfig:
        """node.json, checked: CometBFT's RPC answers anyone who reaches it (broadcast, the
        mempool, blocks), so a node.json pointing it off loopback, whether edited or restored,
        is refused rather than written into config.toml or dialled by `node status`."""
        try:
            config = NodeConfig.load(self.root)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConsortiumError(f"{self.config_file}: not a node configuration ({exc})") from None
        check_loopback_rpc(f"{self.config_file}: rpc_url", config.rpc_url)
        return config

    @staticmethod
    def _key(path: Path) -> KeyFile:
        try:
            return KeyFile.load(path)
        except KeyFileError as exc:
            raise ConsortiumError(str(exc)) from None


def _rotated_away(org: KeyFile) -> set[str]:
    """Encryption keys the organisation had before a key rotation (`node rotate-key`): the
    member file stays what the members agreed (the genesis names it so)."""
    return {Identity(p.master_secret).encryption_public.hex() for p in org.previous}


def init_node(
    root: Path,
    name: str,
    p2p_address: str,
    api_address: str | None = None,
    rpc_port: int = DEFAULT_RPC_PORT,
    *,
    https: bool = False,
) -> MemberFile:
    """Make a node home with fresh keys (the organisation's, its node's, CometBFT's node and
    validator keys); the member file to send to the other founders or to the sponsor."""
    home = NodeHome(root)
    if home.root.exists() and any(home.root.iterdir()):
        raise ConsortiumError(f"{root} is not empty: refusing to make keys over another node's")
    p2p_host, _ = check_host_port("--p2p", p2p_address)
    api_host, api_port = check_host_port("--api", api_address or f"{p2p_host}:{DEFAULT_API_PORT}")
    check_dialable("--p2p", p2p_address)  # the member file announces both to the others
    check_dialable("--api", f"{_url_host(api_host)}:{api_port}")
    if not 0 < rpc_port < 65536:
        raise ConsortiumError("--rpc-port must be 1..65535")
    binary = cometbft_command()
    make_private_dir(root)
    _run([binary, "init", "--home", str(home.cometbft)])
    make_private_dir(home.app.root)
    org, node = write_organisation_keys(home.app, name)
    member = MemberFile(
        name=name,
        did=org.did,
        encryption_key=org.identity.encryption_public.hex(),
        node_did=node.did,
        node_encryption_key=node.identity.encryption_public.hex(),
        validator_pub_key=validator_public_key(home.cometbft).hex(),
        node_id=node_id(home.cometbft),
        p2p_address=p2p_address,
        api_url=f"{'https' if https else 'http'}://{_url_host(api_host)}:{api_port}",
    )
    write_private_file(home.member_file, member.to_json())
    home.member_file.chmod(0o644)  # public by design: it is sent to the other members
    config = NodeConfig(
        node_dir=root,
        index=0,
        abci_address=f"unix://{abci_socket_path(root)}",
        api_host=api_host,
        api_port=api_port,
        rpc_url=f"http://127.0.0.1:{rpc_port}",
        peer_api_urls=(),
    )
    replace_private_file(home.config_file, config.to_json())
    return member


def check_loopback_rpc(what: str, url: str) -> None:
    """`url` is http://LOOPBACK-ADDRESS:PORT; ConsortiumError otherwise."""
    found = re.fullmatch(r"http://(\[[0-9a-fA-F:]+\]|[0-9.]+):([0-9]{1,5})", url)
    host = found.group(1).strip("[]") if found else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not found or not loopback or not 0 < int(found.group(2)) < 65536:
        raise ConsortiumError(
            f"{what} {url!r}: CometBFT's RPC must be http:// on a loopback address "
            "(127.0.0.1), never on a network interface"
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def cometbft_command() -> str:
    try:
        return cometbft_binary()
    except CometBftNotFound as exc:
        raise ConsortiumError(str(exc)) from None


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise ConsortiumError(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")
