"""A client of the node HTTP API, and a signer that keeps its own nonce.

    node = NodeClient(url, keyfile)                 # every request signed as keyfile.did
    node = NodeClient(url, identity, did=did)       # an Identity (did: its did:key by default)
    NodeClient(url).status()                        # unsigned: only /status answers

Requests are signed by `protocol.signing.RequestSigner` (an `httpx.Auth`), for the node's
chain and node id, which it reads from the node's `/status` once.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.protocol.batches import request_batches
from careledger.protocol.signing import RequestSigner


def default_tls() -> ssl.SSLContext:
    """httpx's default verifying context, made once per trust setting and shared: loading
    the CA bundle took ~40 ms per client, more than reading a patient's records."""
    return _tls_for(os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))


@functools.lru_cache(maxsize=4)
def _tls_for(cert_file: str, cert_dir: str) -> ssl.SSLContext:
    # The arguments key the cache: httpx reads these variables when it makes the context.
    return httpx.create_ssl_context(verify=True)


class NodeError(Exception):
    """The node refused a request; `code` is its machine-readable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NodeClient:
    def __init__(
        self,
        url: str,
        identity: KeyFile | Identity | None = None,
        *,
        did: str | None = None,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify`: how an https:// node's certificate is checked (httpx's `verify`: a
        context trusting the consortium's CA bundle, for a node that serves TLS)."""
        self.url = url.rstrip("/")
        if verify is True:
            verify = default_tls()
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout, verify=verify)
        self.auth: RequestSigner | None = None
        if isinstance(identity, KeyFile):
            self.auth = RequestSigner(identity.identity, did or identity.did)
        elif identity is not None:
            self.auth = RequestSigner(identity, did or identity.did)

    @property
    def did(self) -> str | None:
        """The did this client signs as (None: unsigned)."""
        return self.auth.did if self.auth else None

    def signed_as(self, identity: KeyFile | Identity, *, did: str | None = None) -> NodeClient:
        """A client of the same node (sharing its connections) that signs as `identity`."""
        client = NodeClient(self.url, identity, did=did, http=self.http)
        if client.auth is not None and self.auth is not None:
            client.auth.audience = self.auth.audience  # the same node: no second /status
        return client

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, auth=self.auth, **kwargs)
        if response.status_code >= 400:
            self._call_error(response)
        return response.json()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/status")
        return result

    def submit(self, raw: bytes, wait: bool = True) -> dict[str, Any]:
        """Submit signed bytes; with wait, the answer says the block and its result code."""
        body = {"tx": base64.b64encode(raw).decode(), "wait": wait}
        result: dict[str, Any] = self._call("POST", "/tx", json=body)
        return result

    def submit_many(self, raws: list[bytes], wait: bool = False) -> list[dict[str, Any]]:
        """Submit `raws` in order, in as many POST /txs as the node's limits need; their
        results in the same order."""
        results: list[dict[str, Any]] = []
        for batch in request_batches(raws):
            body = {"txs": [base64.b64encode(r).decode() for r in batch], "wait": wait}
            results += self._call("POST", "/txs", json=body)["results"]
        return results

    def submit_pipelined(self, raws: list[bytes]) -> PendingBatch:
        """Submit many and return once the mempool admitted them (in order); the batch's
        `results()` waits for their blocks. Meanwhile the caller may submit its next batch."""
        body = {"txs": [base64.b64encode(r).decode() for r in raws], "wait": True, "stream": True}
        request = self.http.build_request("POST", "/txs", json=body)
        response = self.http.send(request, auth=self.auth, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                self._call_error(response)
            lines = response.iter_lines()
            admitted: list[dict[str, Any]] = orjson.loads(next(lines))["admitted"]
        except BaseException:
            response.close()
            raise
        return PendingBatch(admitted, response, lines)

    def _call_error(self, response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            raise NodeError(response.status_code, error["code"], error["message"])
        except (ValueError, KeyError, TypeError):
            raise NodeError(response.status_code, "http_error", response.text) from None

    def block(self, height: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/blocks/{height}")
        return result

    def transaction(self, tx_hash: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/txs/{tx_hash}")
        return result

    def query(self, path: str, **params: str) -> Any:
        return self._call("GET", f"/query/{path}", params=params)

    def get(self, path: str, **params: str) -> Any:
        """A signed GET of another route (e.g. /audit/entries); its JSON."""
        return self._call("GET", path, params=params)


class PendingBatch:
    """A batch the mempool answered (`admitted`, one check result each); `results()` waits
    for the block answers (one each, in order) and closes the stream."""

    def __init__(
        self, admitted: list[dict[str, Any]], response: httpx.Response, lines: Iterator[str]
    ) -> None:
        self.admitted = admitted
        self._response = response
        self._lines = lines

    def results(self) -> list[dict[str, Any]]:
        try:
            line = next(self._lines, "")
        finally:
            self._response.close()
        if not line:
            raise NodeError(502, "incomplete", "the node closed the stream before the results")
        results: list[dict[str, Any]] = orjson.loads(line)["results"]
        return results

    def close(self) -> None:
        self._response.close()


class Signer:
    """Signs transactions for one did with its current keys, numbering them itself.

    The first nonce comes from the node (`auth/nonce`), or from `last_nonce`: a new identity
    registering itself passes 0 (the node answers nothing else to an unregistered did).
    """

    def __init__(
        self, client: NodeClient, did: str, identity: Identity, last_nonce: int | None = None
    ) -> None:
        self.client = client
        self.did = did
        self.identity = identity
        self._chain_id: str | None = None
        self._nonce: int | None = last_nonce
        self._lock = threading.Lock()

    def sign(self, type_: str, payload: dict[str, Any]) -> bytes:
        with self._lock:
            if self._chain_id is None:
                self._chain_id = str(self.client.status()["chain_id"])
            if self._nonce is None:
                self._nonce = int(self.client.query("auth/nonce", did=self.did)["last_nonce"])
            self._nonce += 1
            tx = Tx(self._chain_id, type_, self.did, self._nonce, payload)
        return tx.sign(self.identity)

    def send(self, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign, submit and wait for the block; NodeError if the block's result is a failure."""
        result = self.client.submit(self.sign(type_, payload), wait=True)
        if result.get("code"):
            raise NodeError(422, f"code_{result['code']}", str(result.get("log", "")))
        return result
