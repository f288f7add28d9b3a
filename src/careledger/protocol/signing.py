"""Request signing for clients of the node API, as an `httpx.Auth`.

    auth = RequestSigner(keyfile.identity, keyfile.did)
    httpx.get(url + "/query/identity/members", auth=auth)

Every request is signed for the node it goes to (`crypto/requestsig.py`): the signer learns the
node's chain id and node id from its public `GET /status` the first time it signs a request
for it (one extra round trip, once), unless given an `Audience`. One signer serves one node; a
client of several nodes keeps one signer per node. Works with `httpx.Client` and
`httpx.AsyncClient`; each request gets a fresh nonce and timestamp, so a retried request is a
new request, never a replay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator

import httpx
import orjson

from careledger.crypto.keys import Identity
from careledger.crypto.requestsig import Audience, authorization

STATUS_PATH = b"/status"


class UnknownNode(httpx.HTTPError):
    """The node's /status did not say which chain and node it is."""


class RequestSigner(httpx.Auth):
    def __init__(self, identity: Identity, did: str, audience: Audience | None = None) -> None:
        self.identity = identity
        self.did = did
        self.audience = audience

    def __repr__(self) -> str:
        return f"RequestSigner(did={self.did!r}, audience={self.audience!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if self.audience is None:
            response = yield _status_request(request)
            response.read()
            self.audience = _audience_of(response)
        request.read()
        yield self._signed(request, self.audience)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.audience is None:
            response = yield _status_request(request)
            await response.aread()
            self.audience = _audience_of(response)
        await request.aread()
        yield self._signed(request, self.audience)

    def _signed(self, request: httpx.Request, audience: Audience) -> httpx.Request:
        target = request.url.raw_path.decode("ascii")
        ts_ms = time.time_ns() // 1_000_000
        request.headers["authorization"] = authorization(
            self.identity, self.did, audience, request.method, target, request.content, ts_ms
        )
        return request


def _status_request(request: httpx.Request) -> httpx.Request:
    return httpx.Request("GET", request.url.copy_with(raw_path=STATUS_PATH))


def _audience_of(response: httpx.Response) -> Audience:
    try:
        status = orjson.loads(response.content)
        return Audience(str(status["chain_id"]), str(status["node_id"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UnknownNode(
            f"{response.request.url} answered {response.status_code} without a chain id and "
            "node id: not a CareLedger node?"
        ) from None
