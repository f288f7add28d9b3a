"""The client side of SMART Backend Services, for `careledger token` and the tests: a key pair
for a new client, the key file `careledger clients add --new-key` writes, a signed assertion,
and a token from a token endpoint.

The key file (JSON, owner-only): {"client_id", "token_url", "key": the private JWK (with its
kid, alg, "use": "sig", "key_ops": ["sign"], as smart-fetch wants a JWKS entry)}.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from careledger.crypto.privatefs import write_private_file
from careledger.gateway.smart.assertion import JWT_BEARER, jws_registry

KEY_TYPES = {"EdDSA": ("OKP", "Ed25519"), "ES384": ("EC", "P-384"), "RS384": ("RSA", 2048)}
ASSERTION_LIFETIME = 240  # seconds: under the five minutes the gateway allows, with room


class TokenRequestError(Exception):
    """The token endpoint refused (its RFC 6749 error and description), or did not answer."""


def new_private_jwk(alg: str = "EdDSA") -> dict[str, Any]:
    """A fresh signing key for `alg` as a private JWK, its kid the RFC 7638 thumbprint."""
    if alg == "EdDSA":
        key: Any = OKPKey.generate_key("Ed25519")
    elif alg == "ES384":
        key = ECKey.generate_key("P-384")
    elif alg == "RS384":
        key = RSAKey.generate_key(2048)
    else:
        raise ValueError(f"alg {alg!r}: one of {', '.join(KEY_TYPES)}")
    private: dict[str, Any] = dict(key.as_dict(private=True))
    return private | {"kid": key.thumbprint(), "alg": alg, "use": "sig", "key_ops": ["sign"]}


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    public: dict[str, Any] = dict(JWKRegistry.import_key(private).as_dict(private=False))
    public.pop("key_ops", None)
    for member in ("kid", "alg", "use"):
        if member in private:
            public[member] = private[member]
    return public


@dataclass(frozen=True)
class ClientKey:
    """What `careledger token --key FILE` reads."""

    client_id: str
    token_url: str
    key: dict[str, Any] = field(repr=False)  # the private JWK: never printed

    def save(self, path: Path) -> None:
        document = {"client_id": self.client_id, "token_url": self.token_url, "key": self.key}
        write_private_file(path, orjson.dumps(document, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> ClientKey:
        try:
            document = orjson.loads(path.read_bytes())
            return cls(document["client_id"], document["token_url"], document["key"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a client key file: {exc}") from None


def sign_assertion(
    key: dict[str, Any],
    client_id: str,
    token_url: str,
    *,
    lifetime: int = ASSERTION_LIFETIME,
    now: float | None = None,
) -> str:
    """A private_key_jwt assertion: iss = sub = client id, aud = the token URL, a fresh jti."""
    issued = int(time.time() if now is None else now)
    header = {"alg": key["alg"], "typ": "JWT"}
    if "kid" in key:
        header["kid"] = key["kid"]
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": issued + lifetime,
        "jti": str(uuid.uuid4()),
    }
    private = JWKRegistry.import_key(key)
    return jwt.encode(header, claims, private, registry=jws_registry(key["alg"]))


def token_request(assertion: str, scope: str | None = None) -> dict[str, str]:
    """The form of a client_credentials token request."""
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    if scope:
        form["scope"] = scope
    return form


def request_token(
    client: ClientKey, scope: str | None = None, token_url: str | None = None
) -> dict[str, Any]:
    """The token endpoint's answer ({access_token, token_type, expires_in, scope})."""
    url = token_url or client.token_url
    assertion = sign_assertion(client.key, client.client_id, url)
    try:
        reply = httpx.post(url, data=token_request(assertion, scope), timeout=30)
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise TokenRequestError(f"{url} did not answer a token: {exc}") from None
    if reply.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        raise TokenRequestError(f"{url}: {reply.status_code} {error}: {description}")
    return body


def discover_token_url(fhir_base: str) -> str:
    """The token endpoint a FHIR server names in its .well-known/smart-configuration."""
    url = fhir_base.rstrip("/") + "/.well-known/smart-configuration"
    try:
        reply = httpx.get(url, timeout=30)
        found = reply.json().get("token_endpoint") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        raise TokenRequestError(f"{url} cannot be read: {exc}") from None
    if not isinstance(found, str):
        raise TokenRequestError(f"{url} names no token_endpoint")
    return found
