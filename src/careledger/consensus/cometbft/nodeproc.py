"""One network node's application process: the ABCI server and the node HTTP API together.

`python -m careledger.consensus.cometbft.nodeproc --node-dir DIR` reads DIR/node.json
(written by localnet) and serves until SIGTERM. CometBFT runs beside it as its own process
and connects to the ABCI socket; the node API reads blocks and proofs from CometBFT's RPC.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from careledger.chain.app import Application
from careledger.chain.store import StateStore
from careledger.consensus.cometbft.driver import CometDriver
from careledger.consensus.cometbft.rpc import CometRpc
from careledger.consensus.cometbft.server import AbciHandler, AbciServer, Recorder
from careledger.crypto.keyfile import KeyFile
from careledger.node.anchor_guard import AnchorGuard
from careledger.node.api import create_node_api
from careledger.node.blobs import BlobService
from careledger.node.datadir import DataDir
from careledger.node.erasure import BlobEraser, sweep_erased
from careledger.node.replication import BlobReplicator
from careledger.storage.blobstore import BlobStore

RECORD_ENV = "CARELEDGER_ABCI_RECORD"  # a file to append every ABCI frame to (test vectors)


@dataclass(frozen=True)
class NodeConfig:
    node_dir: Path
    index: int
    abci_address: str
    api_host: str
    api_port: int
    rpc_url: str
    peer_api_urls: tuple[str, ...]

    @property
    def app_dir(self) -> Path:
        return self.node_dir / "app"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "index": self.index,
                "abci_address": self.abci_address,
                "api_host": self.api_host,
                "api_port": self.api_port,
                "rpc_url": self.rpc_url,
                "peer_api_urls": list(self.peer_api_urls),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, node_dir: Path) -> NodeConfig:
        data: dict[str, Any] = orjson.loads((node_dir / "node.json").read_bytes())
        return cls(
            node_dir=node_dir,
            index=int(data["index"]),
            abci_address=str(data["abci_address"]),
            api_host=str(data["api_host"]),
            api_port=int(data["api_port"]),
            rpc_url=str(data["rpc_url"]),
            peer_api_urls=tuple(str(u) for u in data["peer_api_urls"]),
        )


async def run_node(config: NodeConfig) -> int:
    """Serve until SIGTERM (0), or until the application halts on a local fault (1)."""
    data = DataDir(config.app_dir)
    store = StateStore(data.state)
    app = Application(store)
    handler = AbciHandler(app)
    server = AbciServer(handler, _recorder_from_env())
    rpc = CometRpc(config.rpc_url)
    driver = CometDriver(app, rpc)
    blobs = BlobStore(data.blobs)
    blobs.remove_stale_temporaries()
    replicator = BlobReplicator(blobs, config.peer_api_urls, KeyFile.load(data.organisation_key))
    blob_service = BlobService(blobs, driver, on_missing=replicator.want)
    for listener in (driver.on_commit, BlobEraser(blobs).on_commit, replicator.on_commit):
        app.on_commit(listener)
    sweep_erased(blobs, app)
    await server.start(config.abci_address)
    api = create_node_api(AnchorGuard(driver, blobs), blob_service.routes())
    web = uvicorn.Server(
        uvicorn.Config(
            api, host=config.api_host, port=config.api_port, log_level="warning", access_log=False
        )
    )
    server.on_halt = lambda: setattr(web, "should_exit", True)
    replicating = asyncio.create_task(replicator.run())
    try:
        await web.serve()
    finally:
        replicating.cancel()
        await server.close()
        await rpc.close()
        store.close()
    return 1 if server.halted else 0


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
    raise SystemExit(asyncio.run(run_node(NodeConfig.load(args.node_dir))))


if __name__ == "__main__":
    main()
