"""The FHIR REST interactions on single resources: create, read, vread, update, delete and
instance and type history (the service layer is resources.py; this module only speaks HTTP).

    POST   /fhir/{type}                      create (If-None-Exist: conditional create)
    GET    /fhir/{type}/{id}                 read (If-None-Match: 304)
    GET    /fhir/{type}/{id}/_history/{vid}  vread
    PUT    /fhir/{type}/{id}                 update (If-Match: 412 when stale; creates if absent)
    DELETE /fhir/{type}/{id}                 delete (a tombstone version)
    GET    /fhir/{type}/{id}/_history        instance history
    GET    /fhir/{type}/_history             type history (_since, _count)

Responses carry ETag (W/"version"), Last-Modified, and for writes Location (the version's
URL); `Prefer: return=minimal | representation | OperationOutcome` chooses the body of a
write. A created Patient's one-time claim code is in the `CareLedger-Claim-Code` header,
only in that response. Every refusal is raised (outcome.py renders it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.gateway.context import Gateway
from careledger.gateway.http import (
    MAX_RESOURCE_BYTES,
    FhirResponse,
    check_format,
    etag,
    http_date,
    json_body,
    version_of_etag,
)
from careledger.gateway.outcome import FhirError, operation_outcome
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.resources import Resources
from careledger.gateway.stored import MAX_TYPE_HISTORY, Stored, check_id, check_type

CLAIM_CODE_HEADER = "CareLedger-Claim-Code"
DEFAULT_HISTORY_COUNT = 100


def interaction_routes(gateway: Gateway) -> list[BaseRoute]:
    resources = Resources(gateway)
    endpoints = _Endpoints(gateway, resources)
    return [
        Route("/{type}", endpoints.create, methods=["POST"]),
        Route("/{type}/_history", endpoints.type_history, methods=["GET"]),
        Route("/{type}/{id}", endpoints.read, methods=["GET"]),
        Route("/{type}/{id}", endpoints.update, methods=["PUT"]),
        Route("/{type}/{id}", endpoints.delete, methods=["DELETE"]),
        Route("/{type}/{id}/_history", endpoints.history, methods=["GET"]),
        Route("/{type}/{id}/_history/{vid}", endpoints.vread, methods=["GET"]),
    ]


class _Endpoints:
    def __init__(self, gateway: Gateway, resources: Resources) -> None:
        self.gateway = gateway
        self.resources = resources

    async def create(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind = request.path_params["type"]
        check_type(kind, writing=True)
        _no_search_in_url(request)
        resource = await json_body(request, MAX_RESOURCE_BYTES)
        if resource.get("resourceType") != kind:
            raise FhirError(400, f"the body is a {resource.get('resourceType')}, not a {kind}")
        condition = request.headers.get("if-none-exist")
        if condition is not None:
            existing = await run_in_threadpool(self._existing, principal, kind, condition)
            if existing is not None:
                return self._written(request, existing, 200)
        stored = await run_in_threadpool(self.resources.create, principal, resource)
        return self._written(request, stored, 201)

    def _existing(self, principal: Principal, kind: str, condition: str) -> Stored | None:
        """The resource If-None-Exist names, if exactly one matches (412 if several)."""
        criteria = dict(parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True))
        # (a repeated parameter keeps its last value: If-None-Exist names one match)
        if not criteria:
            raise FhirError(400, f"If-None-Exist {condition!r} names no search parameter")
        principal.require(kind, "s")
        found = self.resources.matching(kind, criteria, principal)
        if len(found) > 1:
            raise FhirError(412, f"If-None-Exist matches {len(found)} {kind} resources")
        return self.resources.read(principal, kind, found[0]) if found else None

    async def read(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind, resource_id = _type_and_id(request)
        stored = await run_in_threadpool(self.resources.read, principal, kind, resource_id)
        headers = self._headers(request, stored, location=False)
        wanted = request.headers.get("if-none-match")
        if wanted is not None and _names_version(wanted, stored.version):
            return Response(status_code=304, headers=headers)
        return FhirResponse(stored.resource, 200, headers)

    async def vread(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind, resource_id = _type_and_id(request)
        version = _version_number(request.path_params["vid"])
        stored = await run_in_threadpool(
            self.resources.vread, principal, kind, resource_id, version
        )
        return FhirResponse(stored.resource, 200, self._headers(request, stored, location=False))

    async def update(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind, resource_id = _type_and_id(request)
        check_type(kind, writing=True)
        resource = await json_body(request, MAX_RESOURCE_BYTES)
        if_match = request.headers.get("if-match")
        version = version_of_etag(if_match) if if_match is not None else None
        stored = await run_in_threadpool(
            self.resources.update, principal, kind, resource_id, resource, version
        )
        return self._written(request, stored, 201 if stored.created else 200)

    async def delete(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind, resource_id = _type_and_id(request)
        check_type(kind, writing=True)
        if_match = request.headers.get("if-match")
        version = version_of_etag(if_match) if if_match is not None else None
        stored = await run_in_threadpool(
            self.resources.delete, principal, kind, resource_id, version
        )
        outcome = operation_outcome(
            "informational",
            f"{kind}/{resource_id} deleted (version {stored.version})",
            "information",
        )
        headers = {"ETag": etag(stored.version), "Last-Modified": http_date(stored.last_updated)}
        return FhirResponse(outcome, 200, headers)

    async def history(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind, resource_id = _type_and_id(request)
        versions = await run_in_threadpool(self.resources.history, principal, kind, resource_id)
        return FhirResponse(self._history_bundle(request, versions))

    async def type_history(self, request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        kind = request.path_params["type"]
        since = request.query_params.get("_since")
        count = _count(request.query_params.get("_count"))
        versions = await run_in_threadpool(
            self.resources.type_history, principal, kind, since, count
        )
        return FhirResponse(self._history_bundle(request, versions))

    # --- responses -----------------------------------------------------------------------

    def _headers(self, request: Request, stored: Stored, location: bool) -> dict[str, str]:
        headers = {"ETag": etag(stored.version), "Last-Modified": http_date(stored.last_updated)}
        url = self._version_url(request, stored)
        headers["Location" if location else "Content-Location"] = url
        return headers

    def _version_url(self, request: Request, stored: Stored) -> str:
        base = self.gateway.fhir_base(request)
        kind, resource_id = stored.resource["resourceType"], stored.resource["id"]
        return f"{base}/{kind}/{resource_id}/_history/{stored.version}"

    def _written(self, request: Request, stored: Stored, status: int) -> Response:
        """The answer to a write, with the body `Prefer: return=` asks for."""
        headers = self._headers(request, stored, location=True)
        if stored.claim_code is not None:
            headers[CLAIM_CODE_HEADER] = stored.claim_code
            headers["Cache-Control"] = "no-store"
        prefer = _prefer_return(request)
        if prefer == "minimal":
            return Response(status_code=status, headers=headers)
        if prefer == "OperationOutcome":
            kind, resource_id = stored.resource["resourceType"], stored.resource["id"]
            verb = "created" if stored.created else "stored"
            message = f"{kind}/{resource_id} {verb} as version {stored.version}"
            outcome = operation_outcome("informational", message, "information")
            return FhirResponse(outcome, status, headers)
        return FhirResponse(stored.resource, status, headers)

    def _history_bundle(self, request: Request, versions: list[Stored]) -> dict[str, Any]:
        base = self.gateway.fhir_base(request)
        self_url = base + request.url.path.removeprefix("/fhir")
        if request.url.query:
            self_url += "?" + request.url.query
        return {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(versions),
            "link": [{"relation": "self", "url": self_url}],
            "entry": [_history_entry(base, stored) for stored in versions],
        }


def _history_entry(base: str, stored: Stored) -> dict[str, Any]:
    kind, resource_id = stored.resource["resourceType"], stored.resource["id"]
    response = {
        "status": "204 No Content"
        if stored.deleted
        else "201 Created"
        if stored.version == 1
        else "200 OK",
        "etag": etag(stored.version),
        "lastModified": stored.last_updated,
    }
    entry: dict[str, Any] = {"fullUrl": f"{base}/{kind}/{resource_id}"}
    if stored.deleted:
        entry["request"] = {"method": "DELETE", "url": f"{kind}/{resource_id}"}
    elif stored.version == 1:
        entry["resource"] = stored.resource
        entry["request"] = {"method": "POST", "url": kind}
    else:
        entry["resource"] = stored.resource
        entry["request"] = {"method": "PUT", "url": f"{kind}/{resource_id}"}
    entry["response"] = response
    return entry


def _type_and_id(request: Request) -> tuple[str, str]:
    kind, resource_id = request.path_params["type"], request.path_params["id"]
    check_type(kind)
    check_id(resource_id)
    return kind, resource_id


def _version_number(text: str) -> int:
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise FhirError(400, f"{text!r} is not a version number")
    return int(text)


def _count(text: str | None) -> int:
    if text is None:
        return DEFAULT_HISTORY_COUNT
    if not text.isdigit():
        raise FhirError(400, f"_count {text!r} is not a number")
    return min(int(text), MAX_TYPE_HISTORY)


def _no_search_in_url(request: Request) -> None:
    """400 for a create whose URL carries a search (`POST Patient?identifier=...`, the form
    fhirpy's get_or_create() sends): ignored, it would create a duplicate each time. FHIR R4's
    conditional create names its search in If-None-Exist."""
    searched = sorted({name for name in request.query_params if name not in ("_format", "_pretty")})
    if searched:
        raise FhirError(
            400,
            f"a create takes no search parameters ({', '.join(searched)}): "
            "name them in If-None-Exist for a conditional create",
        )


def _names_version(if_none_match: str, version: int) -> bool:
    """Whether If-None-Match names `version`: `W/"3"`, `"3"`, `*`, or a bare `3` (HAPI takes
    it; fhirpy's refresh() sends meta.versionId as it is)."""
    names = (etag(version), f'"{version}"', str(version), "*")
    return any(tag.strip() in names for tag in if_none_match.split(","))


def _prefer_return(request: Request) -> str:
    """What `Prefer: return=...` asks for (default: representation)."""
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip() == "return" and value.strip() in (
            "minimal",
            "representation",
            "OperationOutcome",
        ):
            return value.strip()
    return "representation"
