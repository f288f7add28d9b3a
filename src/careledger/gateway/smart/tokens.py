"""POST /auth/token (SMART Backend Services: client_credentials with a private_key_jwt
assertion) and the bearer tokens it issues.

A token is opaque (32 random bytes, url-safe), good for TOKEN_LIFETIME seconds; gateway.sqlite
keeps only its SHA-256, with the client and the scopes granted, so a stolen database file
yields no usable token, and removing a client ends its tokens at once.

Errors follow RFC 6749 5.2: a JSON body {error, error_description}, 400, or 401 for
invalid_client (the client failed to authenticate); never cached.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from careledger.gateway.db import GatewayDb
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.smart.assertion import (
    JWT_BEARER,
    AssertionVerifier,
    InvalidAssertion,
    JwksCache,
)
from careledger.gateway.smart.clients import Client, ClientRegistry
from careledger.gateway.smart.scopes import InvalidScope, ScopeSet, parse_scopes

if TYPE_CHECKING:
    from careledger.gateway.context import Gateway

TOKEN_LIFETIME = 300
MAX_FORM_BYTES = 16 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


class TokenError(Exception):
    """An RFC 6749 error: `error` code, a description, the status (400, 401 invalid_client)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = 401 if error == "invalid_client" else 400

    def response(self) -> JSONResponse:
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, self.status, headers=NO_STORE)


@dataclass(frozen=True)
class ActingAs:
    """Who a client's token acts as, for the client to show (RFC 6749 5.1 allows extra
    parameters): the practitioner it is bound to (`practitioner`, `practitioner_name`: a page
    that signs in with the client's key says "Dr. Demo", not a client id), and the
    organisation (`organization`, `organization_name`)."""

    organization: str
    organization_name: str
    practitioner: str | None = None
    practitioner_name: str = ""

    def fields(self) -> dict[str, str]:
        found = {"organization": self.organization, "organization_name": self.organization_name}
        if self.practitioner is not None:
            found |= {
                "practitioner": self.practitioner,
                "practitioner_name": self.practitioner_name,
            }
        return found


@dataclass(frozen=True)
class Issued:
    access_token: str
    scopes: ScopeSet
    expires_in: int
    acting_as: ActingAs | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": self.scopes.text,
        }
        return body | (self.acting_as.fields() if self.acting_as else {})


class TokenStore:
    """Tokens issued, by their hash; the principal a token acts as."""

    def __init__(self, db: GatewayDb, organisation_did: str) -> None:
        self.db = db
        self.organisation_did = organisation_did

    def issue(self, client: Client, scopes: ScopeSet, now: float | None = None) -> Issued:
        when = int(time.time() if now is None else now)
        token = secrets.token_urlsafe(32)
        with self.db.write() as connection:
            connection.execute("DELETE FROM smart_tokens WHERE expires < ?", (when,))
            connection.execute(
                "INSERT INTO smart_tokens VALUES (?, ?, ?, ?)",
                (_hash(token), client.client_id, scopes.text, when + TOKEN_LIFETIME),
            )
        return Issued(token, scopes, TOKEN_LIFETIME)

    def principal(self, token: str, now: float | None = None) -> Principal | None:
        """Who `token` acts as; None if it is unknown, expired, or its client was removed."""
        when = time.time() if now is None else now
        with self.db.read() as connection:
            row = connection.execute(
                "SELECT t.client_id, t.scopes, t.expires, c.did, c.purpose"
                " FROM smart_tokens t JOIN smart_clients c USING (client_id)"
                " WHERE t.token_hash = ?",
                (_hash(token),),
            ).fetchone()
        if row is None or row[2] <= when:
            return None
        client_id, scopes, _, did, purpose = row
        return Principal(client_id, did or self.organisation_did, parse_scopes(scopes), purpose)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_url(gateway: Gateway, request: Request) -> str:
    """This token endpoint's absolute URL (what an assertion's `aud` must be): beside the
    FHIR base, `/auth/token` in place of its `/fhir`."""
    base = gateway.fhir_base(request)
    root = base.removesuffix("/fhir")
    return root + "/auth/token"


class TokenEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = ClientRegistry(gateway.db)
        self.jwks = JwksCache()
        self.verifier = AssertionVerifier(self.registry, gateway.db, self.jwks)
        self.tokens = TokenStore(gateway.db, gateway.organisation.did)

    async def respond(self, request: Request) -> JSONResponse:
        try:
            form = await _form(request)
            url = token_url(self.gateway, request)
            issued = await run_in_threadpool(self.grant, form, url)
        except TokenError as exc:
            return exc.response()
        return JSONResponse(issued.body(), headers=NO_STORE)

    def grant(self, form: dict[str, str], url: str) -> Issued:
        """Blocking (a JWKS URL may be fetched, SQLite written): run in the thread pool."""
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise TokenError("invalid_request", "grant_type is missing")
        if grant_type != "client_credentials":
            raise TokenError("unsupported_grant_type", "only client_credentials is supported")
        if form.get("client_assertion_type") != JWT_BEARER:
            raise TokenError("invalid_request", f"client_assertion_type must be {JWT_BEARER}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise TokenError("invalid_request", "client_assertion is missing")
        requested = _requested_scopes(form.get("scope"))
        try:
            client = self.verifier.verify(assertion, url)
        except InvalidAssertion as exc:
            raise TokenError("invalid_client", str(exc)) from None
        acting_as = self._check_binding(client)
        granted = client.scopes if requested is None else client.scopes.narrowed_to(requested)
        if not granted.granted:
            raise TokenError(
                "invalid_scope", f"this client may ask for no more than {client.scopes.text}"
            )
        return replace(self.tokens.issue(client, granted), acting_as=acting_as)

    def _check_binding(self, client: Client) -> ActingAs:
        """The identity a client acts as must still be one the gateway holds a key for; who
        that is, by name (the key files name their holder)."""
        organisation = self.gateway.organisation
        acting_as = ActingAs(organisation.did, organisation.name)
        if client.did is None:
            return acting_as
        try:
            practitioner = self.gateway.key_of(client.did)
        except FhirError:
            raise TokenError(
                "invalid_grant",
                f"the gateway holds no key for {client.did}, this client's identity",
            ) from None
        return replace(
            acting_as, practitioner=practitioner.did, practitioner_name=practitioner.name
        )

    def close(self) -> None:
        self.jwks.close()


def _requested_scopes(text: str | None) -> ScopeSet | None:
    """The scopes asked for; None (the client's registered ones) when none are named."""
    if text is None or not text.strip():
        return None
    try:
        return parse_scopes(text)
    except InvalidScope as exc:
        raise TokenError("invalid_scope", str(exc)) from None


async def _form(request: Request) -> dict[str, str]:
    """The form body: bounded, urlencoded, each parameter at most once (RFC 6749 3.2)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise TokenError("invalid_request", f"send the parameters as {FORM_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise TokenError("invalid_request", f"the request is over {MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise TokenError("invalid_request", "the body is not a urlencoded form") from None
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:
        raise TokenError("invalid_request", f"parameters given twice: {', '.join(repeated)}")
    return {name: values[0] for name, values in parsed.items()}


def token_routes(gateway: Gateway) -> list[BaseRoute]:
    """POST /auth/token (mounted under /auth)."""
    endpoint = TokenEndpoint(gateway)
    return [Route("/token", endpoint.respond, methods=["POST"])]
