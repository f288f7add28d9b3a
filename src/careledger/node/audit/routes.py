"""`GET /audit/entries?first=F&count=N`: where a reader's receipted entries went.

A reader holding a receipt (`protocol/receipts.py`: entries first..first+count-1 of this
node's journal) asks where each entry is on chain: `{"entries": [{"seq", "committed", "tx",
"height", "index"}]}` in journal order (`tx` "" and `index` -1 while no batch holds it). Only
the reader of every entry in the range may ask (403 otherwise): the journal is the node's,
and whose records others read is no one else's business. The answer carries no entry: the
reader checks the batch on chain against the receipt's digest (`wallet/audit.py`), so the node
cannot answer with other entries than it receipted.
"""

from __future__ import annotations

import re

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from careledger.node.audit.journal import AuditJournal
from careledger.node.auth import ApiRoute, caller_of
from careledger.node.errors import ApiError
from careledger.protocol.frames import MAX_FETCH

_UINT = re.compile(r"[0-9]{1,18}")


class AuditRoutes:
    def __init__(self, journal: AuditJournal) -> None:
        self.journal = journal

    def routes(self) -> list[BaseRoute]:
        return [ApiRoute("/audit/entries", self.entries)]

    async def entries(self, request: Request) -> Response:
        caller = caller_of(request)
        params = request.query_params
        if set(params) != {"first", "count"}:
            raise ApiError(400, "malformed", "give first and count (a receipt's), nothing else")
        first = _number(params["first"], "first", 1)
        count = _number(params["count"], "count", 1)
        if count > MAX_FETCH:
            raise ApiError(400, "malformed", f"count is at most {MAX_FETCH} (a read's entries)")
        located = await self.journal.locate(first, count)
        if any(row.entry.get("reader") != caller.did for row in located):
            raise ApiError(403, "forbidden", "only their reader may locate journal entries")
        body = {
            "entries": [
                {
                    "seq": row.seq,
                    "committed": row.committed,
                    "tx": row.tx_hash,
                    "height": row.height,
                    "index": row.index,
                }
                for row in located
            ]
        }
        return Response(orjson.dumps(body), media_type="application/json")


def _number(text: str, name: str, low: int) -> int:
    if not _UINT.fullmatch(text) or int(text) < low:
        raise ApiError(400, "malformed", f"{name} must be an integer from {low}")
    return int(text)
