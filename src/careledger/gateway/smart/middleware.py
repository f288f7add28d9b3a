"""Every request to the gateway needs a bearer token, but the few a client needs to get one.

Pure ASGI (no buffering of bodies, nothing in the way of streaming), installed around the
whole gateway app, so it runs before routing: a path that does not exist answers 401 to a
caller without a token, as it does to one with, only later, 404. The token is looked up in
the thread pool (SQLite under the database's lock: never on the event loop, which the node
API shares). A valid token puts its `Principal` in the ASGI scope under PRINCIPAL.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from careledger.gateway.outcome import FhirError, outcome_response
from careledger.gateway.principal import PRINCIPAL
from careledger.gateway.smart.tokens import TokenStore

PUBLIC_PATHS = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/auth/token"})
REALM = 'Bearer realm="careledger"'
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]{16,512}=*) *", re.IGNORECASE)


class BearerAuth:
    def __init__(self, app: ASGIApp, tokens: TokenStore) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = _authorization(scope)
        if header is None:
            await _refuse("a bearer token is needed (POST /auth/token)", REALM)(
                scope, receive, send
            )
            return
        match = _BEARER.fullmatch(header)
        principal = None
        if match is not None:
            principal = await run_in_threadpool(self.tokens.principal, match.group(1))
        if principal is None:
            challenge = f'{REALM}, error="invalid_token"'
            await _refuse("the bearer token is unknown, malformed or expired", challenge)(
                scope, receive, send
            )
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def _refuse(message: str, challenge: str) -> ASGIApp:
    return outcome_response(FhirError(401, message, headers={"www-authenticate": challenge}))
