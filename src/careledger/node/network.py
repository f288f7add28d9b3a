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
from pathlib import Path

import orjson

from careledger.chain.app import IncompatibleState, LocalFault, UpgradeRequired
from careledger.consensus.cometbft.server import Recorder
from careledger.node.builder import CometBft, build_node, serve
from careledger.node.netconfig import NodeConfig
from careledger.node.rules import BadRulesHook
from careledger.node.tls import TlsConfigError

log = logging.getLogger(__name__)

RECORD_ENV = "CARELEDGER_ABCI_RECORD"  # a file to append every ABCI frame to (test vectors)


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
