"""Open enrolment: the node's organisation vouches for an identity made in the portal.

A patient who creates an identity in the page has a did the chain does not know; the chain
takes its `identity/register_patient` only with a member's voucher naming that did
(chain/modules/identity/vouchers.py). A hospital's patient portal lets people sign up, so a
node whose operator turns open enrolment on (`careledger up --open-enrolment`; `--demo` does)
signs such vouchers for anyone who asks:

    POST /portal/voucher   {"did": "did:key:z6Mk..."}   ->   {"voucher": {...}, "chain_id"}

What this gives away is bounded: a voucher names one did, expires after
`ENROLMENT_VOUCHER_BLOCKS`, and lets that did register a patient identity, which can read
nothing but its own records. What it must not give is a flood of identities: vouchers are
rate-limited per client address (an IPv6 client by its /64) and in total (429 with
Retry-After), so a script can register at most `TOTAL_PER_MINUTE` identities a minute. A
closed node answers 403 `enrolment_closed`: the patient then pastes a voucher its clinic gave
it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import ssl
import time
from dataclasses import dataclass, field

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse

from careledger.chain.modules.identity.vouchers import ENROLMENT_VOUCHER_BLOCKS, sign_voucher
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import KeyError_, ed25519_from_did

MAX_BODY = 512
TOTAL_PER_MINUTE = 30
PER_ADDRESS_PER_MINUTE = 5
MAX_ADDRESSES = 10_000  # the per-address table's bound; when full, the oldest buckets go


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimit:
    """A token bucket per key: `per_minute` requests a minute, bursts up to `per_minute`."""

    per_minute: int
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float) -> float:
        """0 when a request may go now, else the seconds until one may."""
        bucket = self.buckets.pop(key, None) or _Bucket(float(self.per_minute), now)
        rate = self.per_minute / 60.0
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        self.buckets[key] = bucket  # re-inserted: dict order is least recently used first
        while len(self.buckets) > MAX_ADDRESSES:
            del self.buckets[next(iter(self.buckets))]
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate


class OpenEnrolment:
    """Signs register_patient vouchers with the organisation's key (see the module doc)."""

    def __init__(
        self,
        node_url: str,
        organisation: KeyFile,
        *,
        open: bool,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.node_url = node_url
        self.verify = verify
        self.organisation = organisation
        self.open = open
        self.total = RateLimit(TOTAL_PER_MINUTE)
        self.per_address = RateLimit(PER_ADDRESS_PER_MINUTE)

    async def handle(self, request: Request) -> JSONResponse:
        if request.method != "POST":
            return _error(405, "method_not_allowed", 'POST a JSON object {"did": ...}')
        if not self.open:
            return _error(
                403,
                "enrolment_closed",
                "This node does not enrol patients who sign up themselves: ask your clinic "
                "for an enrolment voucher.",
            )
        did = await _requested_did(request)
        if isinstance(did, JSONResponse):
            return did
        address = client_key(request.client.host if request.client else "")
        now = time.monotonic()
        # The total is charged only for a request its address may make: a single address
        # hammering the endpoint is refused by its own bucket and must not drain the shared
        # one, which would shut open enrolment for everyone else.
        wait = self.per_address.take(address, now) or self.total.take("", now)
        if wait > 0:
            return _rate_limited(wait)
        return await self._voucher(did)

    async def _voucher(self, did: str) -> JSONResponse:
        try:
            async with httpx.AsyncClient(timeout=10, verify=self.verify) as http:
                status = (await http.get(f"{self.node_url}/status")).json()
        except (httpx.HTTPError, ValueError):
            return _error(503, "unavailable", "The node is not answering: try again shortly.")
        expires_at = int(status["height"]) + ENROLMENT_VOUCHER_BLOCKS
        voucher = sign_voucher(
            self.organisation.identity,
            status["chain_id"],
            "register_patient",
            did,
            expires_at,
            org_did=self.organisation.did,
        )
        return JSONResponse({"voucher": voucher, "chain_id": status["chain_id"]})


def client_key(host: str) -> str:
    """The rate limit's key for a client address: an IPv6 client is its /64, since one
    subscriber holds a whole /64 and could otherwise sign up from 2**64 "addresses"."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


async def _requested_did(request: Request) -> str | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return _error(411, "length_required", "send a Content-Length (no chunked body)")
    if int(declared) > MAX_BODY:
        return _error(413, "oversized", f"at most {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _error(413, "oversized", f"at most {MAX_BODY} bytes")
    try:
        parsed = json.loads(body)
        did = parsed["did"]
        if not isinstance(did, str) or set(parsed) != {"did"}:
            raise TypeError
        ed25519_from_did(did)
    except (ValueError, KeyError, TypeError, KeyError_):
        return _error(400, "malformed", 'send {"did": "did:key:z6Mk..."}: a did:key of Ed25519')
    return did


def _rate_limited(wait: float) -> JSONResponse:
    response = _error(429, "rate_limited", "Too many sign-ups: try again in a minute.")
    response.headers["Retry-After"] = str(math.ceil(wait))
    return response


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
