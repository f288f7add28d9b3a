"""The gateway's ASGI app, and how it sits beside the node API in one server.

`gateway_app` assembles the routes of each part (each a route factory taking the `Gateway`),
the bearer-token middleware and the one exception-handler table. `careledger.site.compose`
serves it beside the node API and the portal: `/fhir/...` and `/auth/...` come here.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from careledger.gateway.break_glass import break_glass_routes
from careledger.gateway.bundles import bundle_routes
from careledger.gateway.capability import capability_routes
from careledger.gateway.context import Gateway
from careledger.gateway.everything import everything_routes
from careledger.gateway.interactions import interaction_routes
from careledger.gateway.outcome import HANDLERS
from careledger.gateway.smart.middleware import BearerAuth
from careledger.gateway.smart.tokens import TokenStore, token_routes
from careledger.gateway.views import view_routes


def gateway_routes(gateway: Gateway) -> list[BaseRoute]:
    """Every route of the gateway, under /fhir (FHIR) and /auth (the token endpoint)."""
    from careledger.gateway.search import search_routes

    fhir: list[BaseRoute] = [*capability_routes(gateway)]
    fhir += view_routes(gateway)  # before search and interactions: views are read-only
    fhir += everything_routes(gateway)
    fhir += break_glass_routes(gateway)
    fhir += search_routes(gateway)  # GET /{type}, POST /{type}/_search
    fhir += interaction_routes(gateway)  # after the fixed paths: /{type}/{id} takes any pair
    auth: list[BaseRoute] = [*token_routes(gateway)]
    return [*bundle_routes(gateway), Mount("/auth", routes=auth), Mount("/fhir", routes=fhir)]


def gateway_app(gateway: Gateway) -> Starlette:
    tokens = TokenStore(gateway.db, gateway.organisation.did)
    app = Starlette(
        routes=gateway_routes(gateway),
        exception_handlers=HANDLERS,
        middleware=[Middleware(BearerAuth, tokens=tokens)],
    )
    app.state.gateway = gateway
    return app


def is_gateway_path(path: str) -> bool:
    return path == "/fhir" or any(path.startswith(prefix) for prefix in ("/fhir/", "/auth/"))
