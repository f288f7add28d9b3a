"""Signed HTTP requests: how a registered identity proves who it is to a node.

    Authorization: CareLedger did=<did>, ts=<unix milliseconds>, nonce=<22 base64url>,
                   sig=<base64url Ed25519 signature>

(one line). The signature is by the did's current key (as registered on-chain; for a did that
is not registered yet, the key the did:key names) over

    "careledger-http-v3" LF chain id LF node id LF did LF METHOD LF target LF ts LF nonce LF
    hex(SHA-256(body))

`target` is the request target exactly as sent: the percent-encoded path and, if any, "?"
and the query string. So a signature binds the chain (a request is useless on another
chain), the node it is addressed to (its audience: useless at another node, even of the same
organisation), the did it speaks for (a did whose key another did shares, say after a key
rotation to the same key, cannot borrow it), the method, the exact target, the moment and
the body. A node refuses a timestamp more than `MAX_SKEW_MS` behind its clock or
`MAX_FUTURE_MS` ahead of it, and remembers every nonce of a registered caller it accepted
until that window has passed, so a captured request is refused if sent again (`node/auth.py`).

This module is pure: the caller passes the clock; `authorization` draws a fresh nonce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass

from careledger.crypto.keys import Identity, verify_signature

SCHEME = "CareLedger"
LABEL = b"careledger-http-v3"
MAX_SKEW_MS = 2 * 60 * 1000  # how old a request may be
MAX_FUTURE_MS = 5 * 1000  # how far ahead of the node's clock (clients keep NTP time)
NONCE_BYTES = 16
_B64URL = r"[A-Za-z0-9_\-]"
_HEADER = re.compile(
    r"CareLedger did=(?P<did>did:key:z[1-9A-HJ-NP-Za-km-z]{1,100}), ts=(?P<ts>[0-9]{1,16}), "
    rf"nonce=(?P<nonce>{_B64URL}{{22}}), sig=(?P<sig>{_B64URL}{{86}}(?:==)?)"
)
_NODE_ID = re.compile(r"[0-9a-f]{32}")


class BadAuthorization(ValueError):
    """An Authorization header that is missing, malformed, stale or wrongly signed."""


@dataclass(frozen=True)
class Audience:
    """The one node a request is for: its chain and its node id (both in its `GET /status`)."""

    chain_id: str
    node_id: str

    def __post_init__(self) -> None:
        if not self.chain_id or "\n" in self.chain_id:
            raise ValueError(f"not a chain id: {self.chain_id[:80]!r}")
        if not _NODE_ID.fullmatch(self.node_id):
            raise ValueError(f"a node id is 32 lowercase hex characters, not {self.node_id!r}")


@dataclass(frozen=True)
class SignedRequest:
    did: str
    ts_ms: int
    nonce: str
    signature: bytes


def new_node_id() -> str:
    return os.urandom(16).hex()


def new_nonce() -> str:
    return base64.urlsafe_b64encode(os.urandom(NONCE_BYTES)).decode().rstrip("=")


def request_message(
    audience: Audience,
    did: str,
    method: str,
    target: str,
    ts_ms: int,
    nonce: str,
    body_hash: bytes,
) -> bytes:
    """The signed bytes; `body_hash` is the SHA-256 of the body (of b"" when there is none)."""
    if "\n" in did:
        raise ValueError("a did has no line feed")
    return b"\n".join(
        [
            LABEL,
            audience.chain_id.encode(),
            audience.node_id.encode(),
            did.encode(),
            method.upper().encode(),
            target.encode(),
            str(ts_ms).encode(),
            nonce.encode(),
            body_hash.hex().encode(),
        ]
    )


def authorization(
    identity: Identity,
    did: str,
    audience: Audience,
    method: str,
    target: str,
    body: bytes,
    ts_ms: int,
    nonce: str | None = None,
) -> str:
    """The Authorization header value for one request (a fresh nonce unless one is given)."""
    nonce = nonce or new_nonce()
    body_hash = hashlib.sha256(body).digest()
    message = request_message(audience, did, method, target, ts_ms, nonce, body_hash)
    sig = base64.urlsafe_b64encode(identity.sign(message)).decode()
    return f"{SCHEME} did={did}, ts={ts_ms}, nonce={nonce}, sig={sig}"


def parse_authorization(header: str | None) -> SignedRequest:
    """The header's parts; BadAuthorization if it is missing or not of the form above."""
    if not header:
        raise BadAuthorization("this route needs an 'Authorization: CareLedger ...' header")
    match = _HEADER.fullmatch(header.strip())
    if match is None:
        raise BadAuthorization(
            "Authorization must be 'CareLedger did=..., ts=..., nonce=..., sig=...'"
        )
    try:
        signature = base64.urlsafe_b64decode(match["sig"] + "=" * (-len(match["sig"]) % 4))
    except (binascii.Error, ValueError):
        raise BadAuthorization("sig is not base64url") from None
    return SignedRequest(match["did"], int(match["ts"]), match["nonce"], signature)


def check_fresh(signed: SignedRequest, now_ms: int) -> None:
    """BadAuthorization unless the timestamp is at most MAX_SKEW_MS before `now_ms` and at
    most MAX_FUTURE_MS after it (a node remembers a nonce until its timestamp is stale, so a
    timestamp far ahead would hold its entry in the replay cache that much longer)."""
    if now_ms - signed.ts_ms > MAX_SKEW_MS:
        raise BadAuthorization(
            f"request timestamp is {(now_ms - signed.ts_ms) // 1000} s away from the node's "
            f"clock (limit {MAX_SKEW_MS // 1000} s)"
        )
    if signed.ts_ms - now_ms > MAX_FUTURE_MS:
        raise BadAuthorization(
            f"request timestamp is {(signed.ts_ms - now_ms) / 1000:.1f} s ahead of the node's "
            f"clock (limit {MAX_FUTURE_MS // 1000} s ahead): set the client's clock"
        )


def check_signature(
    signed: SignedRequest,
    public_key: bytes,
    audience: Audience,
    method: str,
    target: str,
    body_hash: bytes,
) -> None:
    """BadAuthorization unless `public_key` signed this request, for its did and this node."""
    message = request_message(
        audience, signed.did, method, target, signed.ts_ms, signed.nonce, body_hash
    )
    if not verify_signature(public_key, signed.signature, message):
        raise BadAuthorization(
            "request signature does not verify: not by the did's current key, or signed for "
            "another did, node, chain, target or body"
        )
