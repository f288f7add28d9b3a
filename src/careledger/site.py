"""One server for `careledger up`: the node API, the organisation's FHIR gateway and the
portal on one port, dispatched by path. `/fhir/...` and `/auth/...` go to the gateway,
`/`, `/index.html`, `/favicon.svg` and `/assets/...` to the portal, everything else (and the
lifespan) to the node."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from careledger.gateway.app import is_gateway_path
from careledger.web.app import is_portal_path


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
