"""`careledger gateway`: the FHIR gateway alone, in front of a node that runs elsewhere.

The same app as `careledger up` mounts beside its node API (`gateway_app`), served by its
own uvicorn: it talks to the node API at `--node` over HTTP, acts with the organisation's key
file (`--as`) and its practitioners' (`--keys`), and keeps its index, directory, clients and
claim packages in `--data-dir`. The organisation's key never leaves this machine; the node
sees only signed requests and ciphertext.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import uvicorn

from careledger.crypto.keyfile import KeyFile
from careledger.gateway.app import gateway_app
from careledger.gateway.context import Gateway


class GatewayStartError(Exception):
    pass


def check_node(node_url: str) -> str:
    """The chain id the node at `node_url` serves (GatewayStartError if it does not answer)."""
    try:
        response = httpx.get(node_url.rstrip("/") + "/status", timeout=10)
        response.raise_for_status()
        return str(response.json()["chain_id"])
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise GatewayStartError(f"no CareLedger node answers at {node_url}: {exc}") from None


def serve_gateway(
    node_url: str,
    organisation: KeyFile,
    data_dir: Path,
    keys_dir: Path | None,
    host: str,
    port: int,
    base_url: str | None,
) -> None:
    """Serve the gateway until SIGINT or SIGTERM."""
    gateway = Gateway(node_url, organisation, data_dir, keys_dir=keys_dir, base_url=base_url)
    gateway.start()
    try:
        config = uvicorn.Config(
            gateway_app(gateway), host=host, port=port, log_level="warning", access_log=False
        )
        uvicorn.Server(config).run()
    finally:
        gateway.close()
