"""The SMART parts below HTTP, on a real gateway.sqlite: scope narrowing and the principal's
403, the assertion's time limits at their edges (a clock passed in), the registry's refusals,
and the JWKS cache's bounds (a real key server on loopback)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from careledger.gateway.context import SCHEMAS
from careledger.gateway.db import GatewayDb
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.smart import assertion as assertion_module
from careledger.gateway.smart.assertion import (
    MAX_LIFETIME,
    SKEW,
    AssertionVerifier,
    InvalidAssertion,
    JwksCache,
)
from careledger.gateway.smart.backend_client import new_private_jwk, public_jwk, sign_assertion
from careledger.gateway.smart.clients import ClientError, ClientRegistry
from careledger.gateway.smart.scopes import parse_scopes

TOKEN_URL = "https://gateway.example/auth/token"
OBSERVATION_AND_PATIENT = "system/Observation.rs system/Patient.r"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[GatewayDb]:
    database = GatewayDb.open(tmp_path / "gateway.sqlite", SCHEMAS)
    try:
        yield database
    finally:
        database.close()


# --- scopes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "requested", "granted"),
    [
        ("system/*.cruds", "system/Observation.rs", "system/Observation.rs"),
        ("system/*.read", "system/Patient.read", "system/Patient.read"),
        ("system/Observation.rs", "system/*.read", "system/Observation.rs"),
        (OBSERVATION_AND_PATIENT, "system/*.rs", OBSERVATION_AND_PATIENT),
        ("system/*.rs", "system/*.cruds", "system/*.rs"),
        ("system/Observation.rs", "system/Patient.rs", ""),
        ("system/*.write", "system/Observation.read", ""),
    ],
)  # fmt: skip
def test_narrowing_keeps_what_both_allow(registered: str, requested: str, granted: str) -> None:
    narrowed = parse_scopes(registered).narrowed_to(parse_scopes(requested))
    assert narrowed.text == granted
    assert narrowed.granted == (parse_scopes(granted).granted if granted else frozenset())


def test_a_principal_refuses_what_its_scopes_do_not_cover() -> None:
    principal = Principal("c", "did:x", parse_scopes("system/Observation.rs"), "TREAT")
    principal.require("Observation", "r")
    principal.require("Observation", "s")
    for resource_type, letter in [("Patient", "r"), ("Observation", "c"), ("Observation", "u")]:
        with pytest.raises(FhirError) as refused:
            principal.require(resource_type, letter)
        assert refused.value.status == 403


# --- the registry ------------------------------------------------------------------------


def test_the_registry_refuses_unusable_keys(db: GatewayDb) -> None:
    registry = ClientRegistry(db)
    p256 = dict(ECKey.generate_key("P-256").as_dict(private=False))
    small_rsa = {"kty": "RSA", "n": "sXch", "e": "AQAB"}
    cases: list[tuple[dict[str, Any], str]] = [
        (new_private_jwk("EdDSA"), "private"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "private or secret"),
        (public_jwk(new_private_jwk("EdDSA")) | {"alg": "ES384"}, "does not fit"),
        (public_jwk(new_private_jwk("EdDSA")) | {"alg": "HS256"}, "alg"),
        (public_jwk(new_private_jwk("EdDSA")) | {"use": "enc"}, "sig"),
        (p256, "P-384"),
        (small_rsa, "2048|usable"),
    ]
    for jwk, says in cases:
        with pytest.raises(ClientError, match=says):
            registry.register(jwk=jwk)
    with pytest.raises(ClientError, match="public key"):
        registry.register()
    with pytest.raises(ClientError, match="https"):
        registry.register(jwks_url="http://keys.example/jwks")
    assert registry.list() == []


def test_a_registered_client_keeps_only_public_members(db: GatewayDb) -> None:
    registry = ClientRegistry(db)
    key = public_jwk(new_private_jwk("ES384"))
    client_id = registry.register(jwks={"keys": [key]}, name="x", purpose="HPAYMT")
    client = registry.get(client_id)
    assert client is not None
    assert client.jwks == {"keys": [key]} and client.purpose == "HPAYMT" and client.did is None


# --- the assertion's time limits, at their edges -----------------------------------------


@pytest.fixture
def signer(db: GatewayDb) -> tuple[AssertionVerifier, str, dict[str, Any]]:
    registry = ClientRegistry(db)
    key = new_private_jwk("EdDSA")
    client_id = registry.register(jwk=public_jwk(key))
    return AssertionVerifier(registry, db, JwksCache()), client_id, key


def test_exp_limits_at_their_edges(signer: tuple[AssertionVerifier, str, dict[str, Any]]) -> None:
    verifier, client_id, key = signer
    now = 1_800_000_000.0

    def made(lifetime: int) -> str:
        return sign_assertion(key, client_id, TOKEN_URL, lifetime=lifetime, now=now)

    assert verifier.verify(made(MAX_LIFETIME + SKEW), TOKEN_URL, now=now).client_id == client_id
    with pytest.raises(InvalidAssertion, match="ahead"):
        verifier.verify(made(MAX_LIFETIME + SKEW + 1), TOKEN_URL, now=now)
    assert verifier.verify(made(-SKEW), TOKEN_URL, now=now).client_id == client_id
    with pytest.raises(InvalidAssertion, match="expired"):
        verifier.verify(made(-SKEW - 1), TOKEN_URL, now=now)


def test_a_jti_is_forgotten_only_after_its_assertion_expired(
    signer: tuple[AssertionVerifier, str, dict[str, Any]], db: GatewayDb
) -> None:
    verifier, client_id, key = signer
    now = 1_800_000_000.0
    first = sign_assertion(key, client_id, TOKEN_URL, lifetime=60, now=now)
    verifier.verify(first, TOKEN_URL, now=now)
    with pytest.raises(InvalidAssertion, match="used before"):
        verifier.verify(first, TOKEN_URL, now=now + 60)  # still within exp + skew
    later = now + 60 + SKEW + 1
    verifier.verify(sign_assertion(key, client_id, TOKEN_URL, now=later), TOKEN_URL, now=later)
    with db.read() as connection:
        (kept,) = connection.execute("SELECT count(*) FROM smart_assertion_ids").fetchone()
    assert kept == 1  # the first one's row was purged: the table does not grow for ever


# --- the JWKS cache ----------------------------------------------------------------------


class KeyServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("location", "/jwks")
                    self.end_headers()
                    return
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_a_rotated_key_is_fetched_once_the_refresh_interval_passed(
    db: GatewayDb, key_server: KeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ClientRegistry(db)
    old, new = new_private_jwk("ES384"), new_private_jwk("ES384")
    key_server.keys = [public_jwk(old)]
    client_id = registry.register(jwks_url=key_server.base + "/jwks")
    verifier = AssertionVerifier(registry, db, JwksCache())
    verifier.verify(sign_assertion(old, client_id, TOKEN_URL), TOKEN_URL)
    key_server.keys = [public_jwk(old), public_jwk(new)]  # the client rotates
    rotated = sign_assertion(new, client_id, TOKEN_URL)
    with pytest.raises(InvalidAssertion, match="no key"):  # refetch rate-limited
        verifier.verify(rotated, TOKEN_URL)
    assert key_server.hits == 1
    clock = time.monotonic() + assertion_module.JWKS_REFRESH_AFTER + 1
    monkeypatch.setattr(assertion_module.time, "monotonic", lambda: clock)
    assert verifier.verify(rotated, TOKEN_URL).client_id == client_id
    assert key_server.hits == 2


def test_the_jwks_fetch_follows_no_redirect(db: GatewayDb, key_server: KeyServer) -> None:
    key = new_private_jwk("EdDSA")
    key_server.keys = [public_jwk(key)]
    registry = ClientRegistry(db)
    client_id = registry.register(jwks_url=key_server.base + "/redirect")
    verifier = AssertionVerifier(registry, db, JwksCache())
    with pytest.raises(InvalidAssertion, match="302"):
        verifier.verify(sign_assertion(key, client_id, TOKEN_URL), TOKEN_URL)


def test_an_unreachable_jwks_url_is_invalid_client(db: GatewayDb) -> None:
    registry = ClientRegistry(db)
    key = new_private_jwk("EdDSA")
    client_id = registry.register(jwks_url="http://127.0.0.1:9/jwks")  # discard port
    verifier = AssertionVerifier(registry, db, JwksCache())
    with pytest.raises(InvalidAssertion, match="cannot be read"):
        verifier.verify(sign_assertion(key, client_id, TOKEN_URL, now=None), TOKEN_URL)
