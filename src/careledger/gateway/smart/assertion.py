"""The client's private_key_jwt assertion (SMART Backend Services, RFC 7523), checked with
joserfc: which registered client signed it, and that it is fresh, meant for this token
endpoint and never seen before.

Checked in this order, so that nothing but "who are you" is told to a party that cannot sign:
1. the header: `alg` one of RS384, ES384, EdDSA (never `none`, never an HMAC: a public key
   used as an HMAC secret is the classic confusion), the compact form, a bounded size;
2. `iss` == `sub` == a registered client id;
3. the signature, with a key of that client that fits `alg` (and `kid`, when given);
4. `aud` is this token endpoint's URL, `exp` present, not past, at most five minutes ahead;
5. `jti` never used before by this client: recorded in gateway.sqlite until `exp`.
Every failure is `invalid_client` (RFC 7523 3.2).
"""

from __future__ import annotations

import copy
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from careledger.gateway.db import GatewayDb
from careledger.gateway.smart.clients import (
    ALGORITHMS,
    MAX_KEYS,
    Client,
    ClientError,
    ClientRegistry,
    algorithms_of,
    public_key,
)


class _Registry(jws.JWSRegistry):
    """joserfc's JWS algorithms, "EdDSA" without its warning: RFC 9864 deprecates the name
    (it could mean Ed448 too) for "Ed25519"; SMART clients still send it, and here it is
    only ever verified with an Ed25519 key (algorithms_of), which is what the RFC wants."""

    algorithms = dict(jws.JWSRegistry.algorithms)  # noqa: RUF012 (joserfc reads the class)
    algorithms["EdDSA"] = copy.copy(algorithms["EdDSA"])
    algorithms["EdDSA"].security_warning = None


def jws_registry(alg: str) -> jws.JWSRegistry:
    """A registry allowing `alg` alone."""
    return _Registry(algorithms=[alg])


JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_BYTES = 8 * 1024
MAX_LIFETIME = 300  # seconds an assertion may live (exp - now)
SKEW = 30  # seconds of clock difference tolerated either way
MAX_JTI = 256
JWKS_MAX_BYTES = 64 * 1024
JWKS_TIMEOUT = 5.0
JWKS_TTL = 300.0  # a fetched key set is used this long
JWKS_REFRESH_AFTER = 30.0  # an unknown kid refetches the set, at most this often


class InvalidAssertion(Exception):
    """The assertion does not authenticate a client: the token endpoint's invalid_client."""


@dataclass
class _Fetched:
    keys: list[dict[str, Any]]
    at: float


class JwksCache:
    """Key sets of clients registered with a JWKS URL: fetched with a size and time bound,
    without redirects, kept JWKS_TTL seconds; an unknown kid refetches, rate-limited, so that
    a key rotation is seen without letting anyone make the gateway fetch at will."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(timeout=JWKS_TIMEOUT, follow_redirects=False, transport=transport)
        self._sets: dict[str, _Fetched] = {}
        self._lock = threading.Lock()

    def keys(self, url: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            cached = self._sets.get(url)
        fresh = cached is not None and now - cached.at < JWKS_TTL
        recently = cached is not None and now - cached.at < JWKS_REFRESH_AFTER
        if cached is not None and ((fresh and not refresh) or recently):
            return cached.keys
        try:
            keys = self._fetch(url)
        except InvalidAssertion:
            if cached is not None:
                return cached.keys  # the key server is down: the last good set still holds
            raise
        with self._lock:
            self._sets[url] = _Fetched(keys, now)
        return keys

    def _fetch(self, url: str) -> list[dict[str, Any]]:
        try:
            with self._http.stream("GET", url, headers={"accept": "application/json"}) as reply:
                if reply.status_code != 200:
                    raise InvalidAssertion(f"the client's JWKS URL answered {reply.status_code}")
                body = bytearray()
                for chunk in reply.iter_bytes():
                    body += chunk
                    if len(body) > JWKS_MAX_BYTES:
                        raise InvalidAssertion("the client's JWKS is over 64 KiB")
        except httpx.HTTPError as exc:
            raise InvalidAssertion(f"the client's JWKS URL cannot be read: {exc}") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidAssertion("the client's JWKS URL did not answer JSON") from None
        found = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(found, list):
            raise InvalidAssertion('the client\'s JWKS URL did not answer {"keys": [...]}')
        return list(_usable(found[:MAX_KEYS]))

    def close(self) -> None:
        self._http.close()


def _usable(keys: list[Any]) -> Iterator[dict[str, Any]]:
    """The public signing keys among a fetched set (others, e.g. encryption keys, skipped)."""
    for key in keys:
        try:
            yield public_key(key)
        except ClientError:
            continue


class AssertionVerifier:
    def __init__(self, registry: ClientRegistry, db: GatewayDb, jwks: JwksCache) -> None:
        self.registry = registry
        self.db = db
        self.jwks = jwks

    def verify(self, assertion: str, token_url: str, now: float | None = None) -> Client:
        """The client the assertion authenticates, its jti now recorded; or InvalidAssertion."""
        when = time.time() if now is None else now
        header, claims = _unverified(assertion)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidAssertion(
                f"alg {alg!r} is not accepted: sign with {', '.join(ALGORITHMS)}"
            )
        client = self._client_of(claims)
        self._check_signature(assertion, alg, header.get("kid"), client)
        _check_claims(claims, token_url, when)
        self._record_jti(client.client_id, claims["jti"], int(claims["exp"]) + SKEW, when)
        return client

    def _client_of(self, claims: dict[str, Any]) -> Client:
        issuer, subject = claims.get("iss"), claims.get("sub")
        if not isinstance(issuer, str) or issuer != subject:
            raise InvalidAssertion("iss and sub must both be the client id")
        client = self.registry.get(issuer)
        if client is None:
            raise InvalidAssertion(f"no client {issuer!r} is registered here")
        return client

    def _check_signature(self, assertion: str, alg: str, kid: Any, client: Client) -> None:
        candidates = self._candidates(client, alg, kid, refresh=False)
        if not candidates and client.jwks_url is not None:
            candidates = self._candidates(client, alg, kid, refresh=True)
        if not candidates:
            named = f" and kid {kid!r}" if kid is not None else ""
            raise InvalidAssertion(f"the client has no key for alg {alg}{named}")
        for key in candidates:
            try:
                jws.deserialize_compact(assertion.encode(), key, registry=jws_registry(alg))
            except JoseError:
                continue
            return
        raise InvalidAssertion("the assertion's signature does not verify")

    def _candidates(self, client: Client, alg: str, kid: Any, *, refresh: bool) -> list[Any]:
        keys: list[dict[str, Any]] = list(client.jwks.get("keys", []))
        if client.jwks_url is not None:
            try:
                keys += self.jwks.keys(client.jwks_url, refresh=refresh)
            except InvalidAssertion:
                if not keys:
                    raise
        return _fitting(keys, alg, kid)

    def _record_jti(self, client_id: str, jti: str, keep_until: int, now: float) -> None:
        try:
            with self.db.write() as connection:
                connection.execute("DELETE FROM smart_assertion_ids WHERE expires < ?", (int(now),))
                connection.execute(
                    "INSERT INTO smart_assertion_ids VALUES (?, ?, ?)",
                    (client_id, jti, keep_until),
                )
        except sqlite3.IntegrityError:
            raise InvalidAssertion("this assertion's jti was used before") from None


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, to find the client and its key (trusted only once verified)."""
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise InvalidAssertion(f"the assertion is over {MAX_ASSERTION_BYTES} bytes")
    try:
        compact = jws.extract_compact(assertion.encode())
        claims = orjson.loads(compact.payload or b"")
    except (JoseError, orjson.JSONDecodeError, ValueError, UnicodeError):
        raise InvalidAssertion("the assertion is not a compact signed JWT") from None
    if not isinstance(claims, dict):
        raise InvalidAssertion("the assertion's claims are not a JSON object")
    return dict(compact.headers()), claims


def _fitting(keys: list[dict[str, Any]], alg: str, kid: Any) -> list[Any]:
    """The keys that may have signed with `alg`: of the right type and curve, with no other
    `alg`; with a `kid`, the key of that kid, else (a JWK registered without kid) any
    kid-less key, whose signature then decides."""
    fitting = []
    for key in keys:
        if key.get("alg", alg) != alg:
            continue
        imported = JWKRegistry.import_key(key)
        if alg in algorithms_of(imported):
            fitting.append((key.get("kid"), imported))
    if kid is not None and any(key_id == kid for key_id, _ in fitting):
        return [imported for key_id, imported in fitting if key_id == kid]
    if kid is not None:
        return [imported for key_id, imported in fitting if key_id is None]
    return [imported for _, imported in fitting]


def _check_claims(claims: dict[str, Any], token_url: str, now: float) -> None:
    audience = claims.get("aud")
    if audience != token_url and not (isinstance(audience, list) and token_url in audience):
        raise InvalidAssertion(f"aud must be this token endpoint, {token_url}")
    expires = _number(claims, "exp")
    if expires is None:
        raise InvalidAssertion("exp is missing")
    if expires < now - SKEW:
        raise InvalidAssertion("the assertion has expired")
    if expires > now + MAX_LIFETIME + SKEW:
        raise InvalidAssertion(f"exp is more than {MAX_LIFETIME} seconds ahead")
    not_before = _number(claims, "nbf")
    if not_before is not None and not_before > now + SKEW:
        raise InvalidAssertion("the assertion is not valid yet (nbf)")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise InvalidAssertion(f"jti must be a string of 1 to {MAX_JTI} characters")


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidAssertion(f"{name} must be a number of seconds")
    return float(value)
