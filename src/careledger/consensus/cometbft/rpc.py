"""A small client of CometBFT's JSON-RPC (over HTTP POST): the calls the node API needs."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson


class RpcError(Exception):
    """CometBFT answered with a JSON-RPC error (e.g. "tx already exists in cache")."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.data = str(error.get("data", ""))
        self.message = str(error.get("message", ""))
        super().__init__(f"{method}: {self.message} {self.data}".strip())


class CometRpc:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, **params: Any) -> Any:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        response = await self.http.post("/", content=body)
        reply = orjson.loads(response.content)
        if reply.get("error"):
            raise RpcError(method, reply["error"])
        return reply["result"]

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("status")
        return result

    async def broadcast_tx_sync(self, raw: bytes) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "broadcast_tx_sync", tx=base64.b64encode(raw).decode()
        )
        return result

    async def block(self, height: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("block", height=str(height))
        return result

    async def block_results(self, height: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("block_results", height=str(height))
        return result

    async def tx(self, tx_hash: bytes, prove: bool = True) -> dict[str, Any]:
        encoded = base64.b64encode(tx_hash).decode()
        result: dict[str, Any] = await self.call("tx", hash=encoded, prove=prove)
        return result

    async def validators(self, height: int | None = None) -> dict[str, Any]:
        params = {"height": str(height)} if height else {}
        result: dict[str, Any] = await self.call("validators", **params, per_page="100")
        return result


def sync_call(url: str, method: str, timeout: float = 5.0, **params: Any) -> Any:
    """One blocking JSON-RPC call, for the CLI and the tests."""
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    response = httpx.post(url.rstrip("/") + "/", content=body, timeout=timeout)
    reply = orjson.loads(response.content)
    if reply.get("error"):
        raise RpcError(method, reply["error"])
    return reply["result"]
