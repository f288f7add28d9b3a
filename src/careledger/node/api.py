"""The node HTTP API: submit transactions, read status, blocks, proofs and module queries.

Routes (JSON in, JSON out; transactions travel base64-encoded). `GET /status` is public;
every other route answers only signed requests of registered identities (`node/auth.py`),
and each takes at most the body its `Perimeter` says:
  GET  /status                     chain id, node id (the audience of signed requests),
                                   height, app hash
  POST /tx        {"tx", "wait"}   submit one transaction; with wait, answer once committed
  POST /txs       {"txs", "wait"}  submit many (a client's batch; one answer each)
                  {"txs", "wait": true, "stream": true}: NDJSON, line 1 {"admitted": [...]}
                  once the mempool answered each (in order), line 2 {"results": [...]} once
                  they are in blocks (a pipelining writer sends its next batch after line 1)
  GET  /blocks/{height}            header and transaction results
  GET  /txs/{hash}                 the transaction, its result, header and inclusion proof
  GET  /query/{module}/{name}?...  a module query with its parameters
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import Lifespan

from careledger.chain.tx import MAX_TX_BYTES
from careledger.consensus.driver import ConsensusDriver
from careledger.node.auth import ApiRoute, Perimeter, authentication, caller_of, load_node_id
from careledger.node.datadir import DataDir
from careledger.node.errors import (
    ApiError,
    from_chain_code,
    handle_api_error,
    handle_http_error,
    handle_unexpected,
)
from careledger.node.query_guard import RECORDS_OF_A_PATIENT, QueryGuard
from careledger.node.replay_cache import ReplayCache
from careledger.protocol.batches import MAX_BATCH, TXS_BODY

MAX_TX_BASE64 = 4 * ((MAX_TX_BYTES + 2) // 3)
TX_BODY = MAX_TX_BASE64 + 1024  # {"tx": "<base64>", "wait": true}
SQLITE_MAX_INT = 2**63 - 1
_UINT = re.compile(r"[0-9]{1,19}")


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def node_routes(
    driver: ConsensusDriver,
    node_id: str,
    status_extra: Callable[[], dict[str, Any]] | None = None,
) -> list[BaseRoute]:
    """`status_extra`: more public fields for `/status` (network mode: the replication
    backlog, a count that tells an operator how far this node's copies lag)."""
    queries = QueryGuard(driver)

    async def status(request: Request) -> Response:
        extra = status_extra() if status_extra is not None else {}
        return JSON({**await driver.status(), "node_id": node_id, **extra})

    async def submit_one(request: Request) -> Response:
        body = await _json_body(request)
        raw = _decode_tx(body.get("tx"))
        submission = await driver.submit(raw, wait=bool(body.get("wait", False)))
        if not submission.accepted:
            raise from_chain_code(submission.check_code, submission.check_log)
        return JSON(submission.to_json(), status_code=200 if submission.height else 202)

    async def submit_many(request: Request) -> Response:
        body = await _json_body(request)
        txs = body.get("txs")
        if not isinstance(txs, list) or not 0 < len(txs) <= MAX_BATCH:
            raise ApiError(
                400, "malformed", f"'txs' must be a list of 1 to {MAX_BATCH} transactions"
            )
        raws = [_decode_tx(t) for t in txs]
        wait = bool(body.get("wait", False))
        if wait and body.get("stream"):
            return StreamingResponse(
                _admitted_then_committed(raws), media_type="application/x-ndjson"
            )
        results = await asyncio.gather(*(driver.submit(raw, wait) for raw in raws))
        return JSON({"results": [r.to_json() for r in results]})

    async def _admitted_then_committed(raws: list[bytes]) -> AsyncIterator[bytes]:
        # Line 1 once the mempool answered every transaction (in order), line 2 once the
        # admitted ones are in blocks: a client may submit its next batch after line 1.
        admissions = await asyncio.gather(*(driver.admit(raw, True) for raw in raws))
        outcomes = asyncio.gather(*(a.outcome() for a in admissions))
        try:
            checked = [a.checked.to_json() for a in admissions]
            yield orjson.dumps({"admitted": checked}) + b"\n"
            results = await outcomes
        finally:
            outcomes.cancel()
        yield orjson.dumps({"results": [r.to_json() for r in results]}) + b"\n"

    async def block(request: Request) -> Response:
        height = _int_param(request.path_params["height"], "height")
        found = await driver.block(height)
        if found is None:
            raise ApiError(404, "not_found", f"no block at height {height}")
        return JSON(found)

    async def transaction(request: Request) -> Response:
        text = request.path_params["hash"]
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ApiError(400, "malformed", "a transaction hash is 64 hex characters")
        found = await driver.transaction(digest)
        if found is None:
            raise ApiError(404, "not_found", f"no committed transaction {text}")
        await queries.check_transaction(caller_of(request), found)
        return JSON(found)

    async def query(request: Request) -> Response:
        path = f"{request.path_params['module']}/{request.path_params['name']}"
        params = dict(request.query_params)
        caller = caller_of(request)
        await queries.check(caller, path, params)
        result = await driver.query(path, orjson.dumps(params))
        if result.code != 0:
            raise from_chain_code(result.code, result.log)
        if path == "consent/grant":
            await queries.check_grant(caller, orjson.loads(result.value))
        if path == "consent/break_glass":
            await queries.check_break_glass(caller, orjson.loads(result.value))
        if path in RECORDS_OF_A_PATIENT:
            await queries.check_records(caller, params, orjson.loads(result.value))
        return Response(result.value, media_type="application/json")

    return [
        ApiRoute("/status", status, perimeter=Perimeter(public=True)),
        ApiRoute("/tx", submit_one, methods=["POST"], perimeter=Perimeter(TX_BODY, registers=True)),
        ApiRoute("/txs", submit_many, methods=["POST"], perimeter=Perimeter(TXS_BODY)),
        ApiRoute("/blocks/{height}", block),
        ApiRoute("/txs/{hash}", transaction),
        ApiRoute("/query/{module}/{name}", query),
    ]


def exception_handlers() -> dict[Any, Any]:
    return {
        ApiError: handle_api_error,
        HTTPException: handle_http_error,
        Exception: handle_unexpected,
    }


def create_node_api(
    driver: ConsensusDriver,
    data: DataDir,
    extra_routes: Sequence[BaseRoute] = (),
    lifespan: Lifespan[Starlette] | None = None,
    replay: ReplayCache | None = None,
    status_extra: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """The node API of the node whose data directory is `data`, behind its authentication."""
    return Starlette(
        routes=[*node_routes(driver, load_node_id(data.root), status_extra), *extra_routes],
        exception_handlers=exception_handlers(),
        middleware=[authentication(driver, data, replay)],
        lifespan=lifespan,
    )


async def _json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object (the authentication middleware already capped its size)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed", f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed", "request body must be a JSON object")
    return body


def _decode_tx(value: object) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, "malformed", "'tx' must be a base64 string")
    if len(value) > (MAX_TX_BYTES * 4) // 3 + 8:
        raise ApiError(413, "oversized", f"transaction over {MAX_TX_BYTES} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ApiError(400, "malformed", f"'tx' is not base64: {exc}") from None


def _int_param(text: str, name: str) -> int:
    """A non-negative integer that SQLite can hold (signed 64 bits), written in plain ASCII
    digits: not `1_0`, `-1`, `+1`, ` 1` or other scripts' digits, which int() takes."""
    if not _UINT.fullmatch(text) or int(text) > SQLITE_MAX_INT:
        raise ApiError(400, "malformed", f"{name} must be an integer from 0 to {SQLITE_MAX_INT}")
    return int(text)
