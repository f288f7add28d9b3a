"""Registered backend clients: who may ask the token endpoint for a token, with which keys.

A client is registered by the organisation's operator (`careledger clients add`), never by
the client itself: its public keys (a JWK or a JWKS, and optionally a JWKS URL the gateway
fetches), the identity it acts as (a practitioner whose key file the organisation keeps, or
the organisation itself), the SMART scopes a token of it may carry at most, and the purpose
of use its reads state.

The tables of the whole smart/ package live in one SCHEMA (gateway.sqlite): clients, the
tokens issued to them (removed with their client) and the assertion ids seen (kept until the
assertion expires, so that none is accepted twice).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from careledger.chain.modules.purposes import PURPOSES
from careledger.gateway.db import GatewayDb
from careledger.gateway.smart.scopes import InvalidScope, ScopeSet, parse_scopes

SCHEMA = """
CREATE TABLE IF NOT EXISTS smart_clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    did TEXT,                  -- NULL: the organisation itself
    scopes TEXT NOT NULL,
    purpose TEXT NOT NULL,
    jwks TEXT NOT NULL,        -- {"keys": [...]}, public keys only (may be empty with a URL)
    jwks_url TEXT,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS smart_tokens (
    token_hash TEXT PRIMARY KEY,   -- sha256 of the bearer token: the token itself is not kept
    client_id TEXT NOT NULL REFERENCES smart_clients(client_id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    expires INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS smart_tokens_expires ON smart_tokens(expires);
CREATE TABLE IF NOT EXISTS smart_assertion_ids (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX IF NOT EXISTS smart_assertion_ids_expires ON smart_assertion_ids(expires);
"""

ALGORITHMS = ("RS384", "ES384", "EdDSA")  # what assertions may be signed with
MAX_KEYS = 16  # keys of one client (each may be tried for an assertion without a kid)
MIN_RSA_BITS = 2048
DEFAULT_SCOPES = "system/*.cruds"
DEFAULT_PURPOSE = "TREAT"
MAX_NAME = 200


class ClientError(ValueError):
    """A registration refused: a private or unusable key, a bad scope, purpose or URL."""


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    did: str | None  # the practitioner it acts as; None: the organisation
    scopes: ScopeSet  # the most a token of this client may carry
    purpose: str
    jwks: dict[str, Any] = field(repr=False)
    jwks_url: str | None
    created: int


class ClientRegistry:
    def __init__(self, db: GatewayDb) -> None:
        self.db = db

    def register(
        self,
        *,
        jwks: dict[str, Any] | None = None,
        jwk: dict[str, Any] | None = None,
        jwks_url: str | None = None,
        did: str | None = None,
        scopes: str = DEFAULT_SCOPES,
        purpose: str = DEFAULT_PURPOSE,
        name: str = "",
    ) -> str:
        """A new client's id. Keys: a JWKS, a single JWK, a JWKS URL, or a URL with keys."""
        keys = _public_keys(jwks, jwk)
        if not keys and jwks_url is None:
            raise ClientError("a client needs a public key: a JWK, a JWKS or a JWKS URL")
        if jwks_url is not None:
            check_jwks_url(jwks_url)
        try:
            granted = parse_scopes(scopes)
        except InvalidScope as exc:
            raise ClientError(str(exc)) from None
        if purpose not in PURPOSES:
            raise ClientError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
        if len(name) > MAX_NAME:
            raise ClientError(f"a client's name is at most {MAX_NAME} characters")
        client_id = secrets.token_hex(16)
        with self.db.write() as connection:
            connection.execute(
                "INSERT INTO smart_clients VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    client_id,
                    name,
                    did,
                    granted.text,
                    purpose,
                    orjson.dumps({"keys": keys}).decode(),
                    jwks_url,
                    int(time.time()),
                ),
            )
        return client_id

    def get(self, client_id: str) -> Client | None:
        with self.db.read() as connection:
            row = connection.execute(
                "SELECT * FROM smart_clients WHERE client_id = ?", (client_id,)
            ).fetchone()
        return None if row is None else _client(row)

    def list(self) -> list[Client]:
        with self.db.read() as connection:
            rows = connection.execute("SELECT * FROM smart_clients ORDER BY created").fetchall()
        return [_client(row) for row in rows]

    def remove(self, client_id: str) -> bool:
        """Forget a client and every token it holds (they stop working at once)."""
        with self.db.write() as connection:
            cursor = connection.execute(
                "DELETE FROM smart_clients WHERE client_id = ?", (client_id,)
            )
        return cursor.rowcount > 0


def _client(row: sqlite3.Row | tuple[Any, ...]) -> Client:
    client_id, name, did, scopes, purpose, jwks, jwks_url, created = row
    return Client(
        client_id, name, did, parse_scopes(scopes), purpose, orjson.loads(jwks), jwks_url, created
    )


def _public_keys(jwks: dict[str, Any] | None, jwk: dict[str, Any] | None) -> list[dict[str, Any]]:
    found: list[Any] = []
    if jwks is not None:
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ClientError('a JWKS is a JSON object {"keys": [...]}')
        found += jwks["keys"]
    if jwk is not None:
        found.append(jwk)
    if len(found) > MAX_KEYS:
        raise ClientError(f"at most {MAX_KEYS} keys per client")
    return [public_key(key) for key in found]


def public_key(key: Any) -> dict[str, Any]:
    """`key` checked as a public signing key the gateway accepts (RSA of 2048 bits or more,
    EC P-384, OKP Ed25519; `alg`, if given, one of ALGORITHMS and fitting the key): its public
    JWK. A private key is refused rather than stripped: whoever sent it has leaked it."""
    if not isinstance(key, dict):
        raise ClientError("a JWK is a JSON object")
    if any(part in key for part in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise ClientError("that is a private or secret key: register the public key only")
    try:
        imported = JWKRegistry.import_key(key)
    except (JoseError, ValueError, TypeError) as exc:
        raise ClientError(f"not a usable JWK: {exc}") from None
    alg = key.get("alg")
    if alg is not None and alg not in ALGORITHMS:
        raise ClientError(f"alg {alg!r}: assertions are signed with {', '.join(ALGORITHMS)}")
    fitting = algorithms_of(imported)
    if not fitting:
        raise ClientError("the key must be RSA (2048 bits or more), EC P-384 or OKP Ed25519")
    if alg is not None and alg not in fitting:
        raise ClientError(f"alg {alg!r} does not fit a {key.get('kty')} key")
    if key.get("use") not in (None, "sig"):
        raise ClientError('a signing key has "use": "sig" (or none)')
    public: dict[str, Any] = dict(imported.as_dict(private=False))
    public.pop("key_ops", None)  # a private key's ["sign"] would forbid verifying with it
    for member in ("kid", "alg", "use"):
        if member in key:
            public[member] = key[member]
    return public


def algorithms_of(key: Any) -> tuple[str, ...]:
    """The ALGORITHMS a (joserfc) key can verify."""
    if isinstance(key, RSAKey):
        bits = key.raw_value.key_size
        return ("RS384",) if bits >= MIN_RSA_BITS else ()
    if isinstance(key, ECKey):
        return ("ES384",) if key.curve_name == "P-384" else ()
    if isinstance(key, OKPKey):
        return ("EdDSA",) if key.curve_name == "Ed25519" else ()
    return ()


def check_jwks_url(url: str) -> None:
    """https, or http to this machine only (a test, or a key server beside the gateway)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return
    raise ClientError(f"JWKS URL {url!r}: https only (http for loopback)")
