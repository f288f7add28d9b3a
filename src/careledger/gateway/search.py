"""FHIR search: `GET /fhir/{type}?...` and `POST /fhir/{type}/_search` (form body), answered
with a searchset Bundle, and `find` for the gateway's own lookups (conditional references,
If-None-Exist in gateway/bundles.py and gateway/interactions.py).

What a caller gets is decided twice. The index narrows the matches to what the caller's grants
and its organisation's own writing let it read (index/search.py `Access`, from the chain's
`consent/granted` for the caller at this moment), so that `total` and the pages count nothing
else; then the page's records are read through the node as the caller (its key, its purpose),
which decides consent again on each blob and audits every read. A record the node refuses,
or finds erased or deleted, is left out of the page (and an erased one out of the index).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from careledger.gateway.context import Gateway
from careledger.gateway.directory import Directory
from careledger.gateway.http import FhirResponse, check_format
from careledger.gateway.index.params import extract
from careledger.gateway.index.reading import read_readable
from careledger.gateway.index.search import (
    Access,
    IndexSearch,
    Query,
    matches_values,
    parse_query,
)
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.resource_types import (
    DIRECTORY_TYPES,
    NOT_STORED,
    RESOURCE_TYPES,
    VIEW_TYPES,
)
from careledger.gateway.shaping import shaped
from careledger.wallet.node_client import NodeError
from careledger.wallet.records import RecordsClient

RECORD_TYPES = RESOURCE_TYPES - DIRECTORY_TYPES - VIEW_TYPES - NOT_STORED
MAX_FORM_BYTES = 64 * 1024


@dataclass
class Searchset:
    total: int
    matches: list[tuple[Located, dict[str, Any]]]
    included: list[tuple[Located, dict[str, Any]]] = field(default_factory=list)


# --- the API the other parts of the gateway call ------------------------------------------------


def access_of(gateway: Gateway, principal: Principal) -> Access:
    """What `principal` may read now: its grants as the chain lists them (one query, signed
    as the principal: `consent/granted` answers only the grantee), and what its organisation
    wrote."""
    now = int(time.time())
    client = gateway.records_for(principal)
    try:
        grants = client.node.query("consent/granted", grantee=principal.did, at=str(now))
    except NodeError as exc:
        raise FhirError(502, f"the node did not list the caller's grants: {exc.message}") from None
    return Access.of_grants(grants, principal.did, gateway.organisation.did, principal.purpose, now)


def find(
    gateway: Gateway, principal: Principal, resource_type: str, items: Sequence[tuple[str, str]]
) -> list[Located]:
    """Every match of a search that `principal` may read, unread (for conditional references
    and If-None-Exist: "exactly one match"), of a patient's records or of the directory
    (whose Located name no patient or record). 400 for a malformed or unknown parameter."""
    principal.require(resource_type, "s")
    query = parse_query(resource_type, items)
    query.count, query.offset = 10**9, 0
    if resource_type in DIRECTORY_TYPES:  # Practitioner?identifier=..., the usual case
        return [located for located, _ in search_directory(gateway, principal, query).matches]
    return IndexSearch(gateway.index).run(query, access_of(gateway, principal)).page


def search(gateway: Gateway, principal: Principal, query: Query) -> Searchset:
    """The query's page, read through the node as `principal`, with its includes."""
    principal.require(query.resource_type, "s")
    found = IndexSearch(gateway.index).run(query, access_of(gateway, principal))
    client = gateway.records_for(principal)
    matches = read_readable(gateway.index, client, found.page)
    result = Searchset(found.total, matches)
    if query.include and not query.summary_count:
        result.included = _included(gateway, client, principal, matches)
    return result


def search_directory(gateway: Gateway, principal: Principal, query: Query) -> Searchset:
    """A search of the organisation's directory (no patient's data: every client of the
    organisation sees it), matched in memory: it holds hundreds of resources, not records."""
    principal.require(query.resource_type, "s")
    if query.sort or query.include:
        raise FhirError(400, "the directory's searches take no _sort or _include")
    directory = Directory(gateway.db)
    matched = []
    for resource_id in directory.ids(query.resource_type):
        entry = directory.latest(query.resource_type, resource_id)
        if entry is None or entry.resource is None:
            continue
        values = extract(entry.resource, entry.last_updated)
        if matches_values(query, resource_id, values):
            located = Located(
                query.resource_type, resource_id, "", "", entry.version, entry.last_updated, False
            )
            matched.append((located, entry.resource))
    page = [] if query.summary_count else matched[query.offset : query.offset + query.count]
    return Searchset(len(matched), page)


def _included(
    gateway: Gateway,
    client: RecordsClient,
    principal: Principal,
    matches: Sequence[tuple[Located, dict[str, Any]]],
) -> list[tuple[Located, dict[str, Any]]]:
    """The Patient of each match (`_include=X:patient` / `:subject`), read the same way."""
    if not principal.scopes.allows("Patient", "r") and not principal.scopes.allows("Patient", "s"):
        return []
    patients: dict[str, Located] = {}
    for located, _ in matches:
        patient_id = gateway.index.patient_id(located.patient)
        found = gateway.index.locate("Patient", patient_id) if patient_id else None
        if found is not None and not found.deleted:
            patients.setdefault(found.id, found)
    return read_readable(gateway.index, client, list(patients.values()))


# --- HTTP ----------------------------------------------------------------------------------------


def search_routes(gateway: Gateway) -> list[BaseRoute]:
    async def get(request: Request) -> FhirResponse:
        return await _answer(gateway, request, list(request.query_params.multi_items()))

    async def post(request: Request) -> FhirResponse:
        form = await search_form(request)
        return await _answer(gateway, request, [*request.query_params.multi_items(), *form])

    return [
        Route("/{resource_type}", get, methods=["GET"]),
        Route("/{resource_type}/_search", post, methods=["POST"]),
    ]


async def search_form(request: Request) -> list[tuple[str, str]]:
    """The form body of a `POST .../_search`: 415 another media type, 413 over
    MAX_FORM_BYTES (read in chunks: a chunked body is cut off as early), 400 not a form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise FhirError(415, f"_search takes a form body, not {kind!r}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FhirError(413, f"a search form is at most {MAX_FORM_BYTES} bytes")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise FhirError(400, "the _search body is not a form") from None


async def _answer(gateway: Gateway, request: Request, items: list[tuple[str, str]]) -> FhirResponse:
    check_format(request)
    principal = principal_of(request)
    resource_type = str(request.path_params["resource_type"])
    if resource_type not in RECORD_TYPES | DIRECTORY_TYPES:
        raise FhirError(404, f"{resource_type} is not searched here")
    lenient = "handling=lenient" in request.headers.get("prefer", "").replace(" ", "")
    query = parse_query(resource_type, items, lenient=lenient)
    if resource_type in DIRECTORY_TYPES:
        found = await run_in_threadpool(search_directory, gateway, principal, query)
    else:
        found = await run_in_threadpool(search, gateway, principal, query)
    return FhirResponse(searchset_bundle(gateway.fhir_base(request), query, found))


def searchset_bundle(base: str, query: Query, found: Searchset) -> dict[str, Any]:
    """A FHIR searchset Bundle with absolute self, next and previous links."""

    def link(relation: str, offset: int) -> dict[str, str]:
        kept = [(k, v) for k, v in query.kept if k != "_count"]
        paging = [("_count", str(query.count)), ("_offset", str(offset))]
        url = f"{base}/{query.resource_type}?{urlencode(kept + paging)}"
        return {"relation": relation, "url": url}

    links = [link("self", query.offset)]
    if not query.summary_count:
        if query.offset + query.count < found.total and query.count > 0:
            links.append(link("next", query.offset + query.count))
        if query.offset > 0:
            links.append(link("previous", max(0, query.offset - query.count)))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": found.total,
        "link": links,
    }
    entries = [
        _entry(base, shaped(resource, query.shape), "match") for _, resource in found.matches
    ]
    entries += [_entry(base, resource, "include") for _, resource in found.included]
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(base: str, resource: dict[str, Any], mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }
