"""Queries: `<module>/<query>` with JSON parameters, answered from a committed state (the
state store, or a snapshot of it), as `Application.query` and `query_snapshot` ask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import orjson

from careledger.chain import auth
from careledger.chain.answers import QueryResult
from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.base import Module, Payload
from careledger.chain.state import KV, Readable
from careledger.chain.store import LastCommit


class CommittedState(Readable, Protocol):
    """What a query reads: the state store, or a snapshot of it."""

    def last_commit(self) -> LastCommit: ...


def answer_query(
    modules: Mapping[str, Module], state: CommittedState, path: str, data: bytes
) -> QueryResult:
    """The answer to one query; a bad path or bad parameters get a code, never an
    exception."""
    height = state.last_commit().height
    try:
        params = orjson.loads(data) if data else {}
        if not isinstance(params, dict):
            raise TxFailure(Code.MALFORMED, "query parameters must be a JSON object")
        value = _answer(modules, state, path, Payload(params, Code.MALFORMED))
    except orjson.JSONDecodeError as exc:
        return QueryResult(Code.MALFORMED, f"query parameters are not JSON: {exc}", height=height)
    except TxFailure as failure:
        return QueryResult(failure.code, failure.log, height=height)
    return QueryResult(Code.OK, value=orjson.dumps(value), height=height)


def _answer(
    modules: Mapping[str, Module], state: CommittedState, path: str, params: Payload
) -> object:
    module_name, _, query_name = path.strip("/").partition("/")
    if module_name == auth.MODULE and query_name == "nonce":
        did = params.text("did", max_len=128)
        params.done()
        return {"did": did, "last_nonce": auth.last_nonce(KV(state, auth.MODULE), did)}
    module = modules.get(module_name)
    handler = module.queries.get(query_name) if module else None
    if module is None or handler is None:
        raise TxFailure(Code.NOT_FOUND, f"unknown query {path[:64]!r}")
    return handler(KV(state, module.name), params)
