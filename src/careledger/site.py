"""One server for `careledger up`: the node API, the organisation's FHIR gateway and the
portal on one port, dispatched by path. `/fhir/...` and `/auth/...` go to the gateway,
`/`, `/index.html`, `/favicon.svg` and `/assets/...` to the portal, everything else (and the
lifespan) to the node."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from careledger.crypto.keyfile import KeyFile
from careledger.gateway.app import gateway_app, is_gateway_path
from careledger.gateway.context import Gateway
from careledger.node.builder import Node, serve
from careledger.node.datadir import DataDir
from careledger.node.server import ServerControl
from careledger.node.tls import TlsSettings
from careledger.web.app import is_portal_path, portal_app
from careledger.web.enrolment import OpenEnrolment


def compose(node: ASGIApp, gateway: ASGIApp, portal: ASGIApp | None = None) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if is_gateway_path(path):
                return await gateway(scope, receive, send)
            if portal is not None and is_portal_path(path):
                return await portal(scope, receive, send)
        await node(scope, receive, send)

    return app


def organisation_gateway(
    data: DataDir, node_url: str, base_url: str | None, verify: ssl.SSLContext | bool = True
) -> Gateway:
    """The FHIR gateway of the organisation whose node keeps `data`, talking to `node_url`
    (this process's own node API), its files in `data`'s parent `gateway/`."""
    return Gateway(
        node_url,
        KeyFile.load(data.organisation_key),
        data.root / "gateway",
        keys_dir=data.keys,
        base_url=base_url,
        verify=verify,
    )


def serve_site(
    node: Node[Any],
    gateway: Gateway,
    enrolment: OpenEnrolment,
    host: str,
    port: int,
    supervise: Callable[[ServerControl], None] | None = None,
    tls: TlsSettings | None = None,
) -> None:
    """Serve node API, gateway and portal on one port until stopped (node/builder.py serve);
    closes the gateway after. The caller started the gateway and closes the node. `tls`
    with a certificate: HTTPS only (node/tls.py)."""
    try:
        serve(
            node,
            host,
            port,
            beside=lambda node_api: compose(node_api, gateway_app(gateway), portal_app(enrolment)),
            supervise=supervise,
            tls=tls,
        )
    finally:
        gateway.close()
