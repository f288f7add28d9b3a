"""A network node's directory and its config file (node.json), read by the node process
(node/network.py), the tools that make and inspect such directories (localnet, consortium,
verify) and `node status`: kept apart from the process so they need not import the node."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from careledger.node.tls import TlsSettings

# A network node's directory: node.json, the application's data directory, CometBFT's home.
CONFIG_FILE = "node.json"
APP_DIR = "app"
COMETBFT_HOME = "cometbft"


def is_network_node(node_dir: Path) -> bool:
    return (node_dir / CONFIG_FILE).is_file() and (node_dir / APP_DIR).is_dir()


@dataclass(frozen=True)
class NodeConfig:
    node_dir: Path
    index: int
    abci_address: str
    api_host: str
    api_port: int
    rpc_url: str
    peer_api_urls: tuple[str, ...]
    tls: TlsSettings = field(default_factory=TlsSettings)  # none: plain HTTP (node/tls.py)

    @property
    def app_dir(self) -> Path:
        return self.node_dir / APP_DIR

    @property
    def cometbft_home(self) -> Path:
        return self.node_dir / COMETBFT_HOME

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "index": self.index,
                "abci_address": self.abci_address,
                "api_host": self.api_host,
                "api_port": self.api_port,
                "rpc_url": self.rpc_url,
                "peer_api_urls": list(self.peer_api_urls),
                **({"tls": _tls_json(self.tls)} if self.tls.configured else {}),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, node_dir: Path) -> NodeConfig:
        data: dict[str, Any] = orjson.loads((node_dir / CONFIG_FILE).read_bytes())
        return cls(
            node_dir=node_dir,
            index=int(data["index"]),
            abci_address=str(data["abci_address"]),
            api_host=str(data["api_host"]),
            api_port=int(data["api_port"]),
            rpc_url=str(data["rpc_url"]),
            peer_api_urls=tuple(str(u) for u in data["peer_api_urls"]),
            tls=_tls_from_json(data.get("tls", {})),
        )


def _tls_json(tls: TlsSettings) -> dict[str, str]:
    paths = {"cert": tls.cert, "key": tls.key, "ca": tls.ca}
    return {name: str(path) for name, path in paths.items() if path is not None}


def _tls_from_json(data: dict[str, str]) -> TlsSettings:
    def path(name: str) -> Path | None:
        return Path(data[name]) if data.get(name) else None

    return TlsSettings(path("cert"), path("key"), path("ca"))
