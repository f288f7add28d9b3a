"""`GET /fhir/Patient/{id}/$everything`: a patient's records the caller may read.

The Patient, then every live record of theirs the gateway indexes and the token's scopes
allow, read through the node in one fetch per page (so consent decides and the node audits
each read: a record the caller may not read is left out, its refusal audited), plus the
directory resources (Organization, Practitioner, Location, ...) the page's records reference,
as `search.mode` "include". A searchset Bundle; `total` counts the patient's records (the
includes are not counted, as FHIR says); pages of `_count` (default DEFAULT_COUNT, at most
MAX_COUNT) with absolute `next`/`previous` links (`_offset`). `_type` (comma-separated)
narrows the record types.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.gateway.context import Gateway
from careledger.gateway.http import FhirResponse, check_format
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.resource_types import DIRECTORY_TYPES
from careledger.gateway.resources import Resources
from careledger.wallet.refs import RecordRef, RecordsError

DEFAULT_COUNT = 1000
MAX_COUNT = 5000  # one fetch of the node (protocol.frames.MAX_FETCH)
_PARAMS = frozenset({"_count", "_offset", "_type", "_format"})
_DIRECTORY_REFERENCE = re.compile(
    rf"(?:.*/)?({'|'.join(sorted(DIRECTORY_TYPES))})/([A-Za-z0-9\-.]{{1,64}})"
)


def everything_routes(gateway: Gateway) -> list[BaseRoute]:
    resources = Resources(gateway)

    async def endpoint(request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        params = dict(request.query_params)
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise FhirError(400, f"$everything takes {', '.join(sorted(_PARAMS))}, not {unknown}")
        count = _number(params.get("_count"), DEFAULT_COUNT, 1, MAX_COUNT, "_count")
        offset = _number(params.get("_offset"), 0, 0, 10**9, "_offset")
        types = set(params["_type"].split(",")) if params.get("_type") else None
        page = Page(request.path_params["id"], count, offset, types)
        everything = Everything(gateway, resources, principal)
        bundle = await run_in_threadpool(everything.page, page, gateway.fhir_base(request))
        return FhirResponse(bundle)

    return [Route("/Patient/{id}/$everything", endpoint, methods=["GET"])]


class Page:
    def __init__(self, patient_id: str, count: int, offset: int, types: set[str] | None) -> None:
        self.patient_id = patient_id
        self.count = count
        self.offset = offset
        self.types = types

    def link(self, base: str, offset: int) -> str:
        query: dict[str, str] = {"_count": str(self.count), "_offset": str(offset)}
        if self.types:
            query["_type"] = ",".join(sorted(self.types))
        return f"{base}/Patient/{self.patient_id}/$everything?{urlencode(query)}"


class Everything:
    def __init__(self, gateway: Gateway, resources: Resources, principal: Principal) -> None:
        self.gateway = gateway
        self.resources = resources
        self.principal = principal

    def page(self, page: Page, base: str) -> dict[str, Any]:
        self.principal.require("Patient", "r")
        did = self.gateway.index.patient_did(page.patient_id)
        if did is None:
            raise FhirError(404, f"Patient/{page.patient_id} is not known here")
        records = self._records(did, page.types)
        chosen = records[page.offset : page.offset + page.count]
        matched = self._read(chosen)
        included = self._directory(matched)
        links = [{"relation": "self", "url": page.link(base, page.offset)}]
        if page.offset + page.count < len(records):
            links.append({"relation": "next", "url": page.link(base, page.offset + page.count)})
        if page.offset > 0:
            previous = max(0, page.offset - page.count)
            links.append({"relation": "previous", "url": page.link(base, previous)})
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(records),
            "link": links,
            "entry": [_entry(base, r, "match") for r in matched]
            + [_entry(base, r, "include") for r in included],
        }

    def _records(self, did: str, types: set[str] | None) -> list[Located]:
        """The patient's live records the token may read: the Patient first."""
        found = [
            located
            for located in self.gateway.index.of_patient(did)
            if not located.deleted
            and (types is None or located.resource_type in types | {"Patient"})
            and self.principal.scopes.allows(located.resource_type, "r")
        ]
        return sorted(found, key=lambda r: (r.resource_type != "Patient", r.resource_type, r.id))

    def _read(self, chosen: list[Located]) -> list[dict[str, Any]]:
        """The records, decrypted; one the node refuses (no consent, erased) left out."""
        if not chosen:
            return []
        client = self.gateway.records_for(self.principal, chosen[0].patient)
        refs = [RecordRef(r.patient, r.resource_type, r.id, r.record) for r in chosen]
        try:
            return client.read_many(refs)
        except RecordsError:
            pass  # one of them is refused or gone: read them one by one, keep the rest
        found = []
        for ref in refs:
            try:
                found.append(client.read(ref))
            except RecordsError as exc:
                if exc.status not in (403, 404, 410):
                    raise
        return found

    def _directory(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The directory resources the records reference, each once."""
        wanted: dict[tuple[str, str], None] = {}
        for record in records:
            for reference in _references(record):
                match = _DIRECTORY_REFERENCE.fullmatch(reference)
                if match is not None:
                    wanted[(match.group(1), match.group(2))] = None
        found = []
        for kind, resource_id in wanted:
            if not self.principal.scopes.allows(kind, "r"):
                continue
            try:
                found.append(self.resources.read(self.principal, kind, resource_id).resource)
            except FhirError as exc:
                if exc.status not in (404, 410):
                    raise
        return found


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _entry(base: str, resource: Mapping[str, Any], mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _number(text: str | None, default: int, low: int, high: int, name: str) -> int:
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise FhirError(400, f"{name} must be a number from {low} to {high}, not {text!r}")
    return int(text)
