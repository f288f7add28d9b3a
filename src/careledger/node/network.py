"""One network node's application process: the ABCI server and the node HTTP API together.

`python -m careledger.node.network --node-dir DIR` reads DIR/node.json (written by
`careledger.localnet`) and serves until SIGTERM: the node `build_node` makes for the CometBFT
driver, with the other nodes as replication peers. CometBFT runs beside it as its own process
and connects to the ABCI socket; the node API reads blocks and proofs from CometBFT's RPC.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from careledger.chain.app import IncompatibleState, LocalFault, UpgradeRequired
from careledger.consensus.cometbft.server import Recorder
from careledger.node.builder import CometBft, build_node, serve
from careledger.node.rules import BadRulesHook
from careledger.node.tls import TlsConfigError, TlsSettings

log = logging.getLogger(__name__)

RECORD_ENV = "CARELEDGER_ABCI_RECORD"  # a file to append every ABCI frame to (test vectors)

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


def _recorder_from_env() -> Recorder | None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return None
    sink = open(path, "ab")  # noqa: SIM115 - open for the life of the process

    def record(direction: str, body: bytes) -> None:
        sink.write(orjson.dumps({"dir": direction, "hex": body.hex()}) + b"\n")
        sink.flush()

    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = NodeConfig.load(args.node_dir)
    consensus = CometBft(config.abci_address, config.rpc_url, _recorder_from_env())
    try:
        node = build_node(config.app_dir, consensus, peers=config.peer_api_urls, tls=config.tls)
    except TlsConfigError as exc:
        raise SystemExit(f"error: {exc}") from None  # the operator's mistake, not a crash
    except (IncompatibleState, LocalFault, BadRulesHook) as exc:
        if not isinstance(exc, UpgradeRequired):  # that one logged its reason already
            log.critical("the node cannot start: %s", exc)
        raise SystemExit(1) from None  # before the ABCI socket opens: CometBFT cannot start
    try:
        serve(node, config.api_host, config.api_port, tls=config.tls)
    finally:
        node.close()
    if node.halted() is not None:
        raise SystemExit(1)  # the application halted on a local fault (logged): CometBFT stops


if __name__ == "__main__":
    main()
