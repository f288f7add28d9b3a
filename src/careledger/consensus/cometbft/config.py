"""CometBFT node settings for a local consortium: the tuned config.toml values and genesis.

`cometbft init` writes a complete config.toml for its version; we change only the keys below,
in place, so every other default stays CometBFT's own.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from careledger.chain.genesis import Genesis

GENESIS_POWER = 10  # the same power the identity module gives an admitted organisation


@dataclass(frozen=True)
class NetSettings:
    """The knobs that decide throughput and latency, recorded with every benchmark.

    timeout_commit: how long a node waits after a commit to gather more votes and
        transactions before the next height; shorter means lower latency, less batching.
    create_empty_blocks: kept on, so heights advance and a stopped quorum is visible.
    mempool_size / cache_size: room for a burst of tens of thousands of transactions.
    mempool_broadcast: with gossip off, each transaction is checked by one node instead of
        all N (a quarter of the CheckTx work on 4 nodes), but waits for its receiving node's
        turn to propose, and stays pending while that node is down.
    flush_throttle: how long p2p messages are held to be batched; CometBFT's 100ms default
        adds up to that much delay per gossip hop.
    """

    timeout_commit: str = "300ms"
    timeout_propose: str = "2s"
    create_empty_blocks: bool = True
    create_empty_blocks_interval: str = "1s"
    mempool_size: int = 100_000
    mempool_cache_size: int = 200_000
    mempool_recheck: bool = True
    mempool_broadcast: bool = True  # gossip txs to every node; off: only the receiver proposes it
    flush_throttle: str = "10ms"
    p2p_rate: int = 20_000_000  # bytes/s each way per peer
    log_level: str = "state:info,*:error"
    tx_index: str = "kv"  # needed by the `tx` RPC that gives inclusion proofs

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NodeAddress:
    index: int
    host: str
    p2p_port: int
    rpc_port: int
    api_port: int
    node_id: str = ""

    @property
    def rpc_host(self) -> str:
        """CometBFT's RPC answers anyone who reaches it (broadcast, blocks, the mempool), so it
        listens on loopback only: the node's own address if that is a loopback one (a local
        network gives each node its own 127.0.0.x), else 127.0.0.1."""
        return self.host if _is_loopback(self.host) else "127.0.0.1"

    @property
    def rpc_url(self) -> str:
        return f"http://{self.rpc_host}:{self.rpc_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def p2p(self) -> str:
        return f"{self.node_id}@{self.host}:{self.p2p_port}"


def node_config_values(
    node: NodeAddress,
    peers: Sequence[str],
    proxy_app: str,
    settings: NetSettings,
    moniker: str = "",
) -> dict[tuple[str, str], object]:
    """(section, key) -> value for one node's config.toml; "" is the top-level section.
    `peers`: the other nodes as ID@HOST:PORT."""
    return {
        ("", "proxy_app"): proxy_app,
        ("", "moniker"): moniker or f"node{node.index}",
        ("", "log_level"): settings.log_level,
        # Every listener but P2P on loopback or off (see NodeAddress.rpc_host).
        ("", "priv_validator_laddr"): "",
        ("rpc", "laddr"): f"tcp://{node.rpc_host}:{node.rpc_port}",
        ("rpc", "grpc_laddr"): "",
        ("rpc", "pprof_laddr"): "",
        ("rpc", "unsafe"): False,
        ("rpc", "cors_allowed_origins"): [],
        ("instrumentation", "prometheus"): False,
        ("instrumentation", "prometheus_listen_addr"): f"{node.rpc_host}:26660",
        ("rpc", "max_body_bytes"): 64_000_000,
        ("rpc", "timeout_broadcast_tx_commit"): "30s",
        ("rpc", "max_request_batch_size"): 1000,  # clients batch broadcast_tx_sync calls
        ("p2p", "laddr"): f"tcp://{node.host}:{node.p2p_port}",
        ("p2p", "external_address"): f"{node.host}:{node.p2p_port}",
        ("p2p", "persistent_peers"): ",".join(peers),
        ("p2p", "addr_book_strict"): False,  # peers are on private loopback addresses
        ("p2p", "allow_duplicate_ip"): True,
        ("p2p", "pex"): False,  # the peer list is fixed: every validator knows every other
        ("p2p", "flush_throttle_timeout"): settings.flush_throttle,
        ("p2p", "send_rate"): settings.p2p_rate,
        ("p2p", "recv_rate"): settings.p2p_rate,
        ("mempool", "size"): settings.mempool_size,
        ("mempool", "cache_size"): settings.mempool_cache_size,
        ("mempool", "recheck"): settings.mempool_recheck,
        ("mempool", "broadcast"): settings.mempool_broadcast,
        ("consensus", "timeout_commit"): settings.timeout_commit,
        ("consensus", "timeout_propose"): settings.timeout_propose,
        ("consensus", "create_empty_blocks"): settings.create_empty_blocks,
        ("consensus", "create_empty_blocks_interval"): settings.create_empty_blocks_interval,
        ("tx_index", "indexer"): settings.tx_index,
    }


def edit_config_toml(path: Path, values: dict[tuple[str, str], object]) -> None:
    text = path.read_text()
    for (section, key), value in values.items():
        text = set_toml_value(text, section, key, value)
    path.write_text(text)


def set_toml_value(text: str, section: str, key: str, value: object) -> str:
    """Replace `key = ...` inside `[section]` of CometBFT's flat config.toml."""
    start, end = _section_span(text, section)
    pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
    found = pattern.search(text, start, end)
    if found is None:
        raise KeyError(f"config.toml has no {key!r} in section [{section}]")
    return text[: found.start()] + f"{key} = {_toml(value)}" + text[found.end() :]


def _section_span(text: str, section: str) -> tuple[int, int]:
    headers = list(re.finditer(r"^\[([^\]]+)\]\s*$", text, re.MULTILINE))
    if not section:
        return 0, headers[0].start() if headers else len(text)
    for i, header in enumerate(headers):
        if header.group(1) == section:
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            return header.end(), end
    raise KeyError(f"config.toml has no section [{section}]")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- keys and genesis ------------------------------------------------------------------------


def validator_public_key(home: Path) -> bytes:
    """The raw Ed25519 public key of a node's priv_validator_key.json."""
    data = orjson.loads((home / "config" / "priv_validator_key.json").read_bytes())
    return base64.b64decode(data["pub_key"]["value"])


def node_id(home: Path) -> str:
    """CometBFT's node id: the first 20 bytes of SHA-256 of the node key's public half, hex."""
    data = orjson.loads((home / "config" / "node_key.json").read_bytes())
    public = base64.b64decode(data["priv_key"]["value"])[32:]
    return hashlib.sha256(public).digest()[:20].hex()


def validator_address(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:20].hex().upper()


def cometbft_genesis(template: dict[str, Any], genesis: Genesis) -> dict[str, Any]:
    """CometBFT's genesis.json: our genesis as its app_state, founders as its validators."""
    validators = [
        {
            "address": validator_address(key),
            "pub_key": {
                "type": "tendermint/PubKeyEd25519",
                "value": base64.b64encode(key).decode(),
            },
            "power": str(GENESIS_POWER),
            "name": org.name,
        }
        for org in genesis.organisations
        if (key := bytes.fromhex(org.validator_pub_key))
    ]
    return {
        **template,
        "genesis_time": genesis.genesis_time,
        "chain_id": genesis.chain_id,
        "initial_height": "1",
        "validators": validators,
        "app_hash": "",
        "app_state": orjson.loads(genesis.to_json()),
    }
