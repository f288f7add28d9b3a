"""The views' HTTP routes: search and read of each view, paged searchset Bundles, writes
refused (405)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.gateway.context import Gateway
from careledger.gateway.http import FhirResponse, check_format
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import principal_of
from careledger.gateway.search import search_form
from careledger.gateway.views.audit_events import AuditEventView
from careledger.gateway.views.base import MAX_COUNT, View
from careledger.gateway.views.consent import ConsentView
from careledger.gateway.views.provenance import ProvenanceView

DEFAULT_COUNT = 100
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
Endpoint = Callable[[Request], Awaitable[Response]]


def view_routes(gateway: Gateway) -> list[BaseRoute]:
    methods = ["GET", "HEAD", *_WRITE_METHODS]
    routes: list[BaseRoute] = []
    views: tuple[View, ...] = (
        ConsentView(gateway),
        ProvenanceView(gateway),
        AuditEventView(gateway),
    )
    for view in views:
        routes.append(Route(f"/{view.kind}", _type_endpoint(view), methods=methods))
        routes.append(Route(f"/{view.kind}/{{id}}", _instance_endpoint(view), methods=methods))
    return routes


def _refuse_writes(kind: str, request: Request) -> None:
    if request.method in _WRITE_METHODS:
        raise FhirError(
            405,
            f"{kind} is a read-only view of what the chain holds: {request.method} is not "
            "supported",
            headers={"allow": "GET, HEAD"},
        )


def _type_endpoint(view: View) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        _refuse_writes(view.kind, request)
        return await _search(view, request, dict(request.query_params))

    return endpoint


def _instance_endpoint(view: View) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        resource_id = request.path_params["id"]
        if resource_id == "_search" and request.method == "POST":
            form = await search_form(request)  # bounded: 413 past MAX_FORM_BYTES
            return await _search(view, request, dict(request.query_params) | dict(form))
        _refuse_writes(view.kind, request)
        check_format(request)
        principal = principal_of(request)
        principal.require(view.kind, "r")
        return FhirResponse(await run_in_threadpool(view.read, principal, resource_id))

    return endpoint


async def _search(view: View, request: Request, params: dict[str, str]) -> Response:
    check_format(request)
    principal = principal_of(request)
    principal.require(view.kind, "s")
    count = _count(params.pop("_count", None))
    offset = _offset(params.pop("_offset", None))
    params.pop("_format", None)
    found = await run_in_threadpool(view.search, principal, params)
    gateway: Gateway = request.app.state.gateway
    page = Page(gateway.fhir_base(request), view.kind, params, count, offset)
    return FhirResponse(searchset(page, found))


def _count(text: str | None) -> int:
    if text is None:
        return DEFAULT_COUNT
    if not text.isdigit():
        raise FhirError(400, f"_count must be a number, not {text!r}")
    return min(int(text), MAX_COUNT)


def _offset(text: str | None) -> int:
    if text is None:
        return 0
    if not text.isdigit() or len(text) > 9:
        raise FhirError(400, f"_offset must be a number below 10^9, not {text!r}")
    return int(text)


@dataclass(frozen=True)
class Page:
    """One page of a view's search: absolute `self`/`next`/`previous` links (as search.py
    writes them), so that a client pages through every match (fhirpy's fetch_all)."""

    base: str
    kind: str
    params: Mapping[str, str]
    count: int
    offset: int

    def url(self, offset: int) -> str:
        query = urlencode({**self.params, "_count": self.count, "_offset": offset})
        return f"{self.base}/{self.kind}?{query}"


def searchset(page: Page, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A searchset Bundle of the page's resources (`total`: all that matched)."""
    links = [{"relation": "self", "url": page.url(page.offset)}]
    if page.offset + page.count < len(resources) and page.count > 0:
        links.append({"relation": "next", "url": page.url(page.offset + page.count)})
    if page.offset > 0:
        links.append({"relation": "previous", "url": page.url(max(0, page.offset - page.count))})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": links,
        "entry": [
            {
                "fullUrl": f"{page.base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources[page.offset : page.offset + page.count]
        ],
    }
