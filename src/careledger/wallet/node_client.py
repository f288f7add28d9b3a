"""A client of the node HTTP API, and a signer that keeps its own nonce."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity


class NodeError(Exception):
    """The node refused a request; `code` is its machine-readable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NodeClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
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
        body = {"txs": [base64.b64encode(r).decode() for r in raws], "wait": wait}
        results: list[dict[str, Any]] = self._call("POST", "/txs", json=body)["results"]
        return results

    def submit_pipelined(self, raws: list[bytes]) -> PendingBatch:
        """Submit many and return once the mempool admitted them (in order); the batch's
        `results()` waits for their blocks. Meanwhile the caller may submit its next batch."""
        body = {"txs": [base64.b64encode(r).decode() for r in raws], "wait": True, "stream": True}
        response = self.http.send(self.http.build_request("POST", "/txs", json=body), stream=True)
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
    """Signs transactions for one did with its current keys, numbering them itself."""

    def __init__(self, client: NodeClient, did: str, identity: Identity) -> None:
        self.client = client
        self.did = did
        self.identity = identity
        self._chain_id: str | None = None
        self._nonce: int | None = None
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
