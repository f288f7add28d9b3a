"""Signed HTTP requests: how a registered identity proves who it is to a node's blob routes.

    Authorization: CareLedger did=<did>, ts=<unix milliseconds>, sig=<base64url signature>

The signature is Ed25519, by the did's current key (as registered on-chain), over

    "careledger-http-v1" LF method LF path-with-query LF ts LF hex(SHA-256(body))

so it binds the method, the exact target, the moment and the body. A node refuses a
timestamp more than `MAX_SKEW_MS` away from its clock. Within that window a captured request
could be replayed; every signed route is either idempotent (a content-addressed upload) or a
read the same caller may repeat, so no nonce store is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from careledger.crypto.keys import Identity, verify_signature

SCHEME = "CareLedger"
LABEL = b"careledger-http-v1"
MAX_SKEW_MS = 5 * 60 * 1000
_HEADER = re.compile(
    r"CareLedger did=(?P<did>did:key:z[1-9A-HJ-NP-Za-km-z]{1,100}), ts=(?P<ts>[0-9]{1,16}), "
    r"sig=(?P<sig>[A-Za-z0-9_\-]{86}(?:==)?)"
)


class BadAuthorization(ValueError):
    """An Authorization header that is missing, malformed, stale or wrongly signed."""


@dataclass(frozen=True)
class SignedRequest:
    did: str
    ts_ms: int
    signature: bytes


def request_message(method: str, target: str, ts_ms: int, body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return b"\n".join(
        [LABEL, method.upper().encode(), target.encode(), str(ts_ms).encode(), body_hash.encode()]
    )


def authorization(
    identity: Identity, did: str, method: str, target: str, body: bytes, ts_ms: int
) -> str:
    """The Authorization header value for one request."""
    sig = identity.sign(request_message(method, target, ts_ms, body))
    return f"{SCHEME} did={did}, ts={ts_ms}, sig={base64.urlsafe_b64encode(sig).decode()}"


def parse_authorization(header: str | None) -> SignedRequest:
    if not header:
        raise BadAuthorization("this route needs an 'Authorization: CareLedger ...' header")
    match = _HEADER.fullmatch(header.strip())
    if match is None:
        raise BadAuthorization("Authorization must be 'CareLedger did=..., ts=..., sig=...'")
    try:
        signature = base64.urlsafe_b64decode(match["sig"] + "=" * (-len(match["sig"]) % 4))
    except (binascii.Error, ValueError):
        raise BadAuthorization("sig is not base64url") from None
    return SignedRequest(match["did"], int(match["ts"]), signature)


def check_request(
    signed: SignedRequest,
    public_key: bytes,
    method: str,
    target: str,
    body: bytes,
    now_ms: int,
) -> None:
    """BadAuthorization unless the request is fresh and signed by `public_key`."""
    if abs(now_ms - signed.ts_ms) > MAX_SKEW_MS:
        raise BadAuthorization(
            f"request timestamp is {abs(now_ms - signed.ts_ms) // 1000} s away from the node's "
            f"clock (limit {MAX_SKEW_MS // 1000} s)"
        )
    message = request_message(method, target, signed.ts_ms, body)
    if not verify_signature(public_key, signed.signature, message):
        raise BadAuthorization("request signature does not verify with the did's current key")
