"""Batch and transaction Bundles posted to the base URL (`POST /fhir`).

A **transaction** is all or nothing: every entry is parsed, its target resolved (ids
assigned, `ifNoneExist` and conditional URLs matched), every reference rewritten, and every
write checked by `Resources.write_many` (scopes, FHIR validity, whose record, If-Match)
before anything is written. The first refusal answers the whole Bundle: one
OperationOutcome with the refused entry's status, naming it (`Bundle.entry[i]`), and nothing
is written. A **batch** answers each entry on its own (batch-response: each entry's status,
an OperationOutcome for a refused one).

As the FHIR specification says (http.html#trules):
- entries are processed DELETE, then POST, then PUT, then GET; the response lists them in
  the request's order;
- a POST entry whose `fullUrl` is `urn:uuid:<uuid>` gets that uuid as its id when no
  resource of its type has it yet (else a new uuid4), and every reference to that fullUrl
  anywhere in the Bundle becomes `Type/id`;
- a conditional reference (`Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99`) is
  resolved as HAPI FHIR does: exactly one match (stored, or created by this Bundle) becomes
  its `Type/id`; none or several fail the entry (412 for several, 400 for none);
- `request.ifNoneExist` on a POST: one match is not created again (200, its location);
  several are 412; a conditional PUT or DELETE (`Type?identifier=...`) acts on its one
  match (several: 412), creates (PUT) or does nothing (DELETE) when none.

Conditions match on `_id` and `identifier` (`Resources.matching`). A Patient the gateway
enrols gets its claim code in its entry's `response.outcome` (an information issue, "claim
code: ...") once. Bounds: the body (MAX_BUNDLE_BYTES, and orjson's nesting limit), and
MAX_ENTRIES entries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.gateway.bundle_answers import EntryAnswers
from careledger.gateway.bundle_entries import (
    METHODS,
    Entry,
    as_fhir_error,
    fatal,
    in_order,
    is_write,
    named,
    refusal,
    response_bundle,
)
from careledger.gateway.bundle_references import CONDITIONAL, References, condition_query
from careledger.gateway.context import Gateway
from careledger.gateway.http import (
    MAX_BUNDLE_BYTES,
    FhirResponse,
    check_format,
    json_body,
    version_of_etag,
)
from careledger.gateway.outcome import (
    FhirError,
)
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.resource_types import DIRECTORY_TYPES
from careledger.gateway.resources import Resources
from careledger.gateway.stored import CREATE, DELETE, UPDATE, Write
from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.refs import RecordsError

MAX_ENTRIES = 20_000  # Synthea's largest shared bundle has about 700
_TYPE = r"[A-Z][A-Za-z]{1,63}"
_ID = r"[A-Za-z0-9\-.]{1,64}"
_INSTANCE = re.compile(rf"({_TYPE})/({_ID})(?:/_history/([0-9]{{1,18}}))?")
_TYPE_ONLY = re.compile(_TYPE)
_UUID_URL = re.compile(r"urn:uuid:([0-9a-fA-F\-]{36})")


def bundle_routes(gateway: Gateway) -> list[BaseRoute]:
    """`POST /fhir` (outside the /fhir mount: the base URL itself)."""
    resources = Resources(gateway)

    async def endpoint(request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        bundle = await json_body(request, MAX_BUNDLE_BYTES)
        representation = "return=representation" in request.headers.get("prefer", "")
        processor = BundleProcessor(
            gateway, resources, principal, representation, gateway.fhir_base(request)
        )
        answer = await run_in_threadpool(processor.process, bundle)
        return FhirResponse(answer)

    return [Route("/fhir", endpoint, methods=["POST"]), Route("/fhir/", endpoint, methods=["POST"])]


class BundleProcessor:
    def __init__(
        self,
        gateway: Gateway,
        resources: Resources,
        principal: Principal,
        representation: bool = False,
        base: str | None = None,
    ) -> None:
        """`base`: the absolute FHIR base the request came to (`Gateway.fhir_base`): the
        answer's fullUrls are absolute (Bundle.entry.fullUrl), and an absolute url of ours
        in a request or a reference is taken as the relative one."""
        self.gateway = gateway
        self.resources = resources
        self.principal = principal
        self.representation = representation
        self.base = base or gateway.base_url or ""
        self._claimed: set[tuple[str, str]] = set()  # ids this bundle assigned
        self.references = References(resources, principal, self._local)
        self.answers = EntryAnswers(
            gateway, resources, principal, representation, self.base, self._current
        )

    def process(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        if bundle.get("resourceType") != "Bundle":
            raise FhirError(400, "POST to the base URL takes a Bundle (batch or transaction)")
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise FhirError(
                400,
                f"a Bundle of type {kind!r} is not processed here: post a batch or a transaction",
                issues=[("Bundle.type", "must be 'batch' or 'transaction'")],
            )
        raw = bundle.get("entry") or []
        if not isinstance(raw, list):
            raise FhirError(400, "Bundle.entry must be a list")
        if len(raw) > MAX_ENTRIES:
            raise FhirError(413, f"a Bundle holds at most {MAX_ENTRIES} entries, not {len(raw)}")
        if kind == "transaction":
            return self._transaction(raw)
        return self._batch(raw)

    # --- transaction --------------------------------------------------------------------

    def _transaction(self, raw: list[Any]) -> dict[str, Any]:
        entries = [fatal(i, self._parse, i, e) for i, e in enumerate(raw)]
        for entry in in_order(entries):
            fatal(entry.index, self._resolve_target, entry)
        for entry in entries:
            fatal(entry.index, self._rewrite, entry)
        writing = [e for e in entries if is_write(e)]
        writes = [fatal(e.index, self._write_of, e) for e in writing]
        try:
            stored = self.resources.write_many(self.principal, writes) if writes else []
        except (FhirError, InvalidResource, RecordsError) as exc:
            error = as_fhir_error(exc)
            failed = writing[error.entry] if error.entry is not None else None
            raise named(error, failed) from None
        for entry, result in zip(writing, stored, strict=True):
            entry.answer = self.answers.written(entry, result)
        for entry in entries:
            if entry.answer is None:
                entry.answer = fatal(entry.index, self.answers.without_write, entry)
        return response_bundle("transaction-response", entries)

    # --- batch --------------------------------------------------------------------------

    def _batch(self, raw: list[Any]) -> dict[str, Any]:
        entries: list[Entry] = []
        for index, item in enumerate(raw):
            try:
                entries.append(self._parse(index, item))
            except (FhirError, InvalidResource, RecordsError) as exc:
                failed = Entry(index, "GET", "Bundle")
                failed.answer = refusal(as_fhir_error(exc))
                entries.append(failed)
        for entry in in_order([e for e in entries if e.answer is None]):
            entry.answer = self._one(entry)
        return response_bundle("batch-response", entries)

    def _one(self, entry: Entry) -> dict[str, Any]:
        try:
            self._resolve_target(entry)
            self._rewrite(entry)
            if is_write(entry):
                [stored] = self.resources.write_many(self.principal, [self._write_of(entry)])
                return self.answers.written(entry, stored)
            return self.answers.without_write(entry)
        except (FhirError, InvalidResource, RecordsError) as exc:
            return refusal(as_fhir_error(exc))

    # --- parsing ------------------------------------------------------------------------

    def _parse(self, index: int, raw: Any) -> Entry:
        if not isinstance(raw, dict):
            raise FhirError(400, "an entry is a JSON object")
        request = raw.get("request")
        if not isinstance(request, dict):
            raise FhirError(400, "a batch or transaction entry needs its request")
        method, url = request.get("method"), request.get("url")
        if method not in METHODS:
            raise FhirError(400, f"request.method {method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(url, str) or not url:
            raise FhirError(400, "request.url is required")
        entry = self._target_of(index, method, self._local(url))
        full_url = raw.get("fullUrl")
        entry.full_url = full_url if isinstance(full_url, str) else None
        if method in ("POST", "PUT"):
            resource = raw.get("resource")
            if not isinstance(resource, dict):
                raise FhirError(400, f"a {method} entry needs its resource")
            if resource.get("resourceType") != entry.resource_type:
                raise FhirError(
                    400,
                    f"the resource is a {resource.get('resourceType')}, the url names a "
                    f"{entry.resource_type}",
                )
            entry.resource = resource
            entry.derived = entry.resource_type == "Provenance"  # POST, or PUT (careledger import)
        if method == "POST" and request.get("ifNoneExist"):
            condition = str(request["ifNoneExist"])
            entry.if_none_exist = condition_query(condition.partition("?")[2] or condition)
        if request.get("ifMatch"):
            entry.if_match = version_of_etag(str(request["ifMatch"]))
        return entry

    def _target_of(self, index: int, method: str, url: str) -> Entry:
        path, _, query = url.partition("?")
        if method == "POST":
            if not _TYPE_ONLY.fullmatch(path) or query:
                raise FhirError(400, f"a POST entry's url is its resource type, not {url!r}")
            return Entry(index, method, path)
        instance = _INSTANCE.fullmatch(path)
        if instance is not None and not query:
            if instance.group(3) and method != "GET":
                raise FhirError(400, f"only a GET may name a version: {url!r}")
            version = int(instance.group(3)) if instance.group(3) else None
            return Entry(index, method, instance.group(1), instance.group(2), version)
        conditional = CONDITIONAL.fullmatch(url)
        if conditional is not None:
            return Entry(index, method, conditional.group(1), condition=condition_query(query))
        raise FhirError(400, f"request.url {url!r} is not Type/id or Type?conditions")

    def _local(self, url: str) -> str:
        """A url or reference relative to this server (an absolute one of ours stripped)."""
        if self.base and url.startswith(self.base + "/"):
            return url[len(self.base) + 1 :]
        return url

    # --- targets ------------------------------------------------------------------------

    def _resolve_target(self, entry: Entry) -> None:
        """Which resource each entry acts on, and the Type/id its fullUrl stands for."""
        if entry.method == "POST":
            self._post_target(entry)
        elif entry.method == "GET":
            self._check_get(entry)
        elif entry.condition is not None:
            matches = self.resources.matching(entry.resource_type, entry.condition, self.principal)
            if len(matches) > 1:
                raise FhirError(
                    412, f"{len(matches)} {entry.resource_type} resources match the condition"
                )
            if matches:
                entry.resource_id = matches[0]
            elif entry.method == "PUT":
                entry.resource_id = self._new_id(entry.resource_type, None)
            elif entry.method == "DELETE":
                entry.skip = True
            else:
                raise FhirError(404, f"no {entry.resource_type} matches the condition")
        if entry.resource_id and entry.method in ("POST", "PUT"):
            if entry.full_url:
                self.references.by_full_url[entry.full_url] = entry.reference
            if entry.resource is not None and not entry.existing:
                self.references.created[entry.reference] = entry.resource

    def _check_get(self, entry: Entry) -> None:
        """A GET's scope, and that its resource exists, before a transaction writes."""
        self.principal.require(entry.resource_type, "s" if entry.condition else "r")
        if entry.resource_id is not None and self._current(entry.reference) is None:
            raise FhirError(404, f"{entry.reference} is not known here")

    def _current(self, reference: str) -> tuple[int, str] | None:
        """(version, lastUpdated) of a resource as the gateway knows it, without reading
        it through the node (None: unknown)."""
        kind, _, resource_id = reference.partition("/")
        if kind in DIRECTORY_TYPES:
            entry = self.resources.directory.latest(kind, resource_id)
            return (entry.version, entry.last_updated) if entry is not None else None
        located = self.gateway.index.locate(kind, resource_id)
        return (located.version, located.last_updated) if located is not None else None

    def _post_target(self, entry: Entry) -> None:
        if entry.if_none_exist is not None:
            # What is stored, and what an earlier entry of this Bundle creates (the same
            # conditional create twice in one Bundle creates once, as HAPI does).
            stored = self.resources.matching(
                entry.resource_type, entry.if_none_exist, self.principal
            )
            created = self.references.created_matching(entry.resource_type, entry.if_none_exist)
            matches = sorted(set(stored) | {target.split("/", 1)[1] for target in created})
            if len(matches) > 1:
                raise FhirError(
                    412,
                    f"ifNoneExist: {len(matches)} {entry.resource_type} resources match",
                )
            if matches:
                entry.resource_id, entry.existing = matches[0], True
                return
        wanted = _UUID_URL.fullmatch(entry.full_url or "")
        entry.resource_id = self._new_id(entry.resource_type, wanted.group(1) if wanted else None)

    def _new_id(self, resource_type: str, wanted: str | None) -> str:
        """`wanted` (a fullUrl's uuid) if no resource of the type has it, else a uuid4."""
        if wanted is not None:
            key = (resource_type, wanted)
            if key not in self._claimed and not self.resources.exists(resource_type, wanted):
                self._claimed.add(key)
                return wanted
        return str(uuid.uuid4())

    # --- references ---------------------------------------------------------------------

    def _rewrite(self, entry: Entry) -> None:
        if entry.resource is None or entry.existing:
            return
        resource = self.references.rewritten(entry.resource, entry.resource_type)
        if entry.method == "POST" or "id" not in resource:
            resource["id"] = entry.resource_id  # a create's id is the server's (FHIR)
        elif entry.condition is not None and resource["id"] != entry.resource_id:
            raise FhirError(
                400,
                f"the resource's id {resource['id']!r} is not the id the condition matched "
                f"({entry.resource_id!r})",
            )
        if entry.derived:
            validate_resource(resource)  # checked like any entry, though not stored
        entry.resource = resource

    # --- writes and answers -------------------------------------------------------------

    def _write_of(self, entry: Entry) -> Write:
        if entry.method == "DELETE":
            return Write(DELETE, entry.resource_type, None, entry.resource_id, entry.if_match)
        action = CREATE if entry.method == "POST" else UPDATE
        return Write(action, entry.resource_type, entry.resource, entry.resource_id, entry.if_match)
