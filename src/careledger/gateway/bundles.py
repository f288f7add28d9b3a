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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.gateway.context import Gateway
from careledger.gateway.http import (
    MAX_BUNDLE_BYTES,
    FhirResponse,
    check_format,
    etag,
    json_body,
    version_of_etag,
)
from careledger.gateway.outcome import (
    FhirError,
    entry_of,
    from_invalid_resource,
    from_records_error,
    operation_outcome,
)
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.resource_types import DIRECTORY_TYPES
from careledger.gateway.resources import CREATE, DELETE, UPDATE, Resources, Stored, Write
from careledger.wallet.fhir import InvalidResource, validate_resource
from careledger.wallet.refs import RecordsError

MAX_ENTRIES = 20_000  # Synthea's largest shared bundle has about 700
CLAIM_CODE_PREFIX = "claim code: "  # careledger import reads it (gateway/importer.py)
_METHODS = ("DELETE", "POST", "PUT", "GET")  # processing order
_TYPE = r"[A-Z][A-Za-z]{1,63}"
_ID = r"[A-Za-z0-9\-.]{1,64}"
_INSTANCE = re.compile(rf"({_TYPE})/({_ID})(?:/_history/([0-9]{{1,18}}))?")
_CONDITIONAL = re.compile(rf"({_TYPE})\?(.*)", re.S)
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
        processor = BundleProcessor(gateway, resources, principal, representation)
        answer = await run_in_threadpool(processor.process, bundle)
        return FhirResponse(answer)

    return [Route("/fhir", endpoint, methods=["POST"]), Route("/fhir/", endpoint, methods=["POST"])]


@dataclass
class _Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None = None  # the target: named, assigned or matched
    version: int | None = None  # a GET of one version
    condition: dict[str, str] | None = None  # a conditional PUT/DELETE/GET's query
    if_none_exist: dict[str, str] | None = None
    if_match: int | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    existing: bool = False  # ifNoneExist matched: nothing to write
    derived: bool = False  # a client's Provenance: the chain's own stands for it
    skip: bool = False  # a conditional DELETE that matched nothing
    answer: dict[str, Any] | None = None  # its response entry, once known

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


class BundleProcessor:
    def __init__(
        self,
        gateway: Gateway,
        resources: Resources,
        principal: Principal,
        representation: bool = False,
    ) -> None:
        self.gateway = gateway
        self.resources = resources
        self.principal = principal
        self.representation = representation
        self.base = gateway.base_url or ""
        self._references: dict[str, str] = {}  # fullUrl -> Type/id
        self._conditional: dict[str, str] = {}  # conditional reference -> Type/id
        self._claimed: set[tuple[str, str]] = set()  # ids this bundle assigned
        self._created: dict[str, Mapping[str, Any]] = {}  # Type/id -> what this bundle writes

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
        entries = [_fatal(i, self._parse, i, e) for i, e in enumerate(raw)]
        for entry in _in_order(entries):
            _fatal(entry.index, self._resolve_target, entry)
        for entry in entries:
            _fatal(entry.index, self._rewrite, entry)
        writing = [e for e in entries if _writes(e)]
        writes = [_fatal(e.index, self._write_of, e) for e in writing]
        try:
            stored = self.resources.write_many(self.principal, writes) if writes else []
        except (FhirError, InvalidResource, RecordsError) as exc:
            error = _as_fhir_error(exc)
            failed = writing[error.entry] if error.entry is not None else None
            raise _named(error, failed) from None
        for entry, result in zip(writing, stored, strict=True):
            entry.answer = self._written(entry, result)
        for entry in entries:
            if entry.answer is None:
                entry.answer = _fatal(entry.index, self._answer_without_write, entry)
        return _response_bundle("transaction-response", entries)

    # --- batch --------------------------------------------------------------------------

    def _batch(self, raw: list[Any]) -> dict[str, Any]:
        entries: list[_Entry] = []
        for index, item in enumerate(raw):
            try:
                entries.append(self._parse(index, item))
            except (FhirError, InvalidResource, RecordsError) as exc:
                failed = _Entry(index, "GET", "Bundle")
                failed.answer = _refusal(_as_fhir_error(exc))
                entries.append(failed)
        for entry in _in_order([e for e in entries if e.answer is None]):
            entry.answer = self._one(entry)
        return _response_bundle("batch-response", entries)

    def _one(self, entry: _Entry) -> dict[str, Any]:
        try:
            self._resolve_target(entry)
            self._rewrite(entry)
            if _writes(entry):
                [stored] = self.resources.write_many(self.principal, [self._write_of(entry)])
                return self._written(entry, stored)
            return self._answer_without_write(entry)
        except (FhirError, InvalidResource, RecordsError) as exc:
            return _refusal(_as_fhir_error(exc))

    # --- parsing ------------------------------------------------------------------------

    def _parse(self, index: int, raw: Any) -> _Entry:
        if not isinstance(raw, dict):
            raise FhirError(400, "an entry is a JSON object")
        request = raw.get("request")
        if not isinstance(request, dict):
            raise FhirError(400, "a batch or transaction entry needs its request")
        method, url = request.get("method"), request.get("url")
        if method not in _METHODS:
            raise FhirError(400, f"request.method {method!r} is not one of {', '.join(_METHODS)}")
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
            entry.if_none_exist = self._query(condition.partition("?")[2] or condition)
        if request.get("ifMatch"):
            entry.if_match = version_of_etag(str(request["ifMatch"]))
        return entry

    def _target_of(self, index: int, method: str, url: str) -> _Entry:
        path, _, query = url.partition("?")
        if method == "POST":
            if not _TYPE_ONLY.fullmatch(path) or query:
                raise FhirError(400, f"a POST entry's url is its resource type, not {url!r}")
            return _Entry(index, method, path)
        instance = _INSTANCE.fullmatch(path)
        if instance is not None and not query:
            if instance.group(3) and method != "GET":
                raise FhirError(400, f"only a GET may name a version: {url!r}")
            version = int(instance.group(3)) if instance.group(3) else None
            return _Entry(index, method, instance.group(1), instance.group(2), version)
        conditional = _CONDITIONAL.fullmatch(url)
        if conditional is not None:
            return _Entry(index, method, conditional.group(1), condition=self._query(query))
        raise FhirError(400, f"request.url {url!r} is not Type/id or Type?conditions")

    def _local(self, url: str) -> str:
        """A url or reference relative to this server (an absolute one of ours stripped)."""
        if self.base and url.startswith(self.base + "/"):
            return url[len(self.base) + 1 :]
        return url

    @staticmethod
    def _query(text: str) -> dict[str, str]:
        pairs = parse_qsl(text, keep_blank_values=True)
        if not pairs:
            raise FhirError(400, f"the condition {text!r} names no search parameter")
        return dict(pairs)

    # --- targets ------------------------------------------------------------------------

    def _resolve_target(self, entry: _Entry) -> None:
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
                self._references[entry.full_url] = entry.reference
            if entry.resource is not None and not entry.existing:
                self._created[entry.reference] = entry.resource

    def _check_get(self, entry: _Entry) -> None:
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

    def _post_target(self, entry: _Entry) -> None:
        if entry.if_none_exist is not None:
            # What is stored, and what an earlier entry of this Bundle creates (the same
            # conditional create twice in one Bundle creates once, as HAPI does).
            stored = self.resources.matching(
                entry.resource_type, entry.if_none_exist, self.principal
            )
            created = self._bundle_matches(entry.resource_type, entry.if_none_exist)
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

    def _rewrite(self, entry: _Entry) -> None:
        if entry.resource is None or entry.existing:
            return
        resource = self._rewritten(entry.resource, entry.resource_type)
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

    def _rewritten(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {
                key: (
                    self._reference(item, f"{path}.{key}")
                    if key == "reference" and isinstance(item, str)
                    else self._rewritten(item, f"{path}.{key}")
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._rewritten(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    def _reference(self, reference: str, path: str) -> str:
        found = self._references.get(reference)
        if found is not None:
            return found
        if reference.startswith("urn:uuid:"):
            raise FhirError(
                400,
                f"{path}: {reference} is no entry's fullUrl in this Bundle",
                issues=[(path, "unresolved urn:uuid reference")],
            )
        local = self._local(reference)
        conditional = _CONDITIONAL.fullmatch(local)
        if conditional is None:
            return local if local != reference else reference
        resolved = self._conditional.get(local)
        if resolved is None:
            resolved = self._conditional[local] = self._match_reference(
                conditional.group(1), conditional.group(2), path
            )
        return resolved

    def _match_reference(self, resource_type: str, query: str, path: str) -> str:
        """A conditional reference's one match: stored, or created by this Bundle."""
        criteria = self._query(query)
        stored = set(self.resources.matching(resource_type, criteria, self.principal))
        created = {
            target.split("/", 1)[1] for target in self._bundle_matches(resource_type, criteria)
        }
        matches = sorted(stored | created)
        if len(matches) == 1:
            return f"{resource_type}/{matches[0]}"
        status, many = (412, f"{len(matches)} match") if matches else (400, "none matches")
        raise FhirError(
            status,
            f"{path}: conditional reference {resource_type}?{query}: {many} (exactly one must)",
            issues=[(path, f"{resource_type}?{query}: {many}")],
        )

    def _bundle_matches(self, resource_type: str, criteria: Mapping[str, str]) -> list[str]:
        """Resources this Bundle creates that match `_id`/`identifier` criteria."""
        found = []
        for target, resource in self._created.items():
            kind, _, resource_id = target.partition("/")
            if kind == resource_type and _matches(resource, resource_id, criteria):
                found.append(target)
        return found

    # --- writes and answers -------------------------------------------------------------

    def _write_of(self, entry: _Entry) -> Write:
        if entry.method == "DELETE":
            return Write(DELETE, entry.resource_type, None, entry.resource_id, entry.if_match)
        action = CREATE if entry.method == "POST" else UPDATE
        return Write(action, entry.resource_type, entry.resource, entry.resource_id, entry.if_match)

    def _written(self, entry: _Entry, stored: Stored) -> dict[str, Any]:
        if stored.deleted and entry.method == "DELETE":
            return {"response": {"status": _status(204), "etag": etag(stored.version)}}
        status = 201 if stored.created else 200
        answer = self._located(entry.reference, stored, status)
        if stored.claim_code:
            answer["response"]["outcome"] = operation_outcome(
                "informational",
                f"{CLAIM_CODE_PREFIX}{stored.claim_code} (the patient's one-time claim code: "
                "give it to them once, out of band; the gateway keeps no copy)",
                severity="information",
            )
        return answer

    def _located(self, reference: str, stored: Stored, status: int) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "fullUrl": self._full_url(reference),
            "response": {
                "status": _status(status),
                "location": f"{reference}/_history/{stored.version}",
                "etag": etag(stored.version),
                "lastModified": stored.last_updated,
            },
        }
        if self.representation:
            answer["resource"] = stored.resource
        return answer

    def _answer_without_write(self, entry: _Entry) -> dict[str, Any]:
        if entry.skip:
            return {"response": {"status": _status(204)}}
        if entry.derived:
            return self._chain_provenance(entry)
        if entry.method == "GET":
            try:  # after a transaction's writes: a refusal answers this entry alone
                return self._get(entry)
            except (FhirError, InvalidResource, RecordsError) as exc:
                return _refusal(_as_fhir_error(exc))
        # ifNoneExist matched: the existing resource, nothing created (200, as HAPI answers).
        current = self._current(entry.reference)
        assert current is not None
        answer: dict[str, Any] = {
            "fullUrl": self._full_url(entry.reference),
            "response": {
                "status": _status(200),
                "location": f"{entry.reference}/_history/{current[0]}",
                "etag": etag(current[0]),
                "lastModified": current[1],
            },
        }
        return answer

    def _get(self, entry: _Entry) -> dict[str, Any]:
        if entry.condition is not None:
            return self._search(entry.resource_type, entry.condition)
        assert entry.resource_id is not None
        if entry.version is not None:
            stored = self.resources.vread(
                self.principal, entry.resource_type, entry.resource_id, entry.version
            )
        else:
            stored = self.resources.read(self.principal, entry.resource_type, entry.resource_id)
        answer = self._located(entry.reference, stored, 200)
        answer["resource"] = stored.resource
        return answer

    def _full_url(self, reference: str) -> str:
        return f"{self.base}/{reference}" if self.base else reference

    def _chain_provenance(self, entry: _Entry) -> dict[str, Any]:
        """A client's Provenance (current Synthea ends each bundle with one): not stored,
        since Provenance here is the chain's record of each version (gateway/views.py). The
        entry is answered with the chain's Provenance of its first target, which this
        transaction wrote, and says so."""
        assert entry.resource is not None
        targets = entry.resource.get("target") or [{}]
        reference = str(targets[0].get("reference", "")).split("/_history/")[0]
        kind, _, target_id = reference.partition("/")
        located = self.gateway.index.locate(kind, target_id) if target_id else None
        answer: dict[str, Any] = {"response": {"status": _status(200)}}
        note = (
            "not stored: Provenance is the chain's own record of each version written "
            f"(GET Provenance?target={reference})"
        )
        if located is not None:
            answer["response"]["location"] = f"Provenance/{located.record[:32]}-{located.version}"
        answer["response"]["outcome"] = operation_outcome("informational", note, "information")
        return answer

    def _search(self, resource_type: str, condition: Mapping[str, str]) -> dict[str, Any]:
        """A GET entry's search (`_id`, `identifier`): a searchset of what the caller may
        read (a record the node refuses is left out, its refusal audited)."""
        self.principal.require(resource_type, "s")
        found = []
        for resource_id in self.resources.matching(resource_type, condition, self.principal):
            try:
                found.append(self.resources.read(self.principal, resource_type, resource_id))
            except FhirError as exc:
                if exc.status not in (403, 404, 410):
                    raise
            except RecordsError as exc:
                if exc.status not in (403, 404, 410):
                    raise
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{self.base}/{resource_type}/{stored.resource['id']}",
                    "resource": stored.resource,
                    "search": {"mode": "match"},
                }
                for stored in found
            ],
        }
        return {"resource": bundle, "response": {"status": _status(200)}}


def _writes(entry: _Entry) -> bool:
    return entry.method in ("POST", "PUT", "DELETE") and not (
        entry.existing or entry.skip or entry.derived
    )


def _in_order(entries: list[_Entry]) -> list[_Entry]:
    return sorted(entries, key=lambda e: (_METHODS.index(e.method), e.index))


def _matches(resource: Mapping[str, Any], resource_id: str, criteria: Mapping[str, str]) -> bool:
    """Whether a resource of this Bundle meets `_id` and `identifier` criteria (token
    search: `system|value`, `|value` for no system, `value` for any system)."""
    if not set(criteria) <= {"_id", "identifier"}:
        return False
    if "_id" in criteria and criteria["_id"] != resource_id:
        return False
    if "identifier" in criteria:
        token = criteria["identifier"]
        system, _, value = token.partition("|") if "|" in token else (None, "", token)
        identifiers = resource.get("identifier") or []
        return any(
            isinstance(i, dict)
            and i.get("value") == value
            and (system is None or (i.get("system") or "") == system)
            for i in identifiers
        )
    return True


def _fatal(index: int, step: Callable[..., Any], *args: Any) -> Any:
    """`step(*args)`; a refusal fails the transaction, naming entry `index`."""
    try:
        return step(*args)
    except (FhirError, InvalidResource, RecordsError) as exc:
        error = _as_fhir_error(exc)
        error.entry = index
        raise _named(error, None) from None


def _as_fhir_error(exc: Exception) -> FhirError:
    """A refusal as a FhirError, still naming the write it is about."""
    if isinstance(exc, FhirError):
        return exc
    if isinstance(exc, InvalidResource):
        error = from_invalid_resource(exc)
    else:
        assert isinstance(exc, RecordsError)
        error = from_records_error(exc)
    error.entry = entry_of(exc)
    return error


def _named(error: FhirError, entry: _Entry | None) -> FhirError:
    """The transaction's refusal: the entry's own status, its index in the diagnostics and
    in each issue's expression."""
    index = entry.index if entry is not None else error.entry
    if index is None:
        return error
    where = f"Bundle.entry[{index}]"
    issues = [(_in_entry(where, loc), msg) for loc, msg in error.issues]
    named = FhirError(
        error.status,
        f"transaction failed at entry {index}: {error.diagnostics}; nothing was written",
        code=error.code,
        issues=issues or [(where, error.diagnostics)],
        headers=error.headers,
    )
    named.entry = index
    return named


def _in_entry(where: str, location: str) -> str:
    """A resource's location (`Observation.subject`) as the entry's (`Bundle.entry[3]
    .resource.subject`)."""
    _, dot, rest = location.partition(".")
    return f"{where}.resource.{rest}" if dot else f"{where}.resource"


def _refusal(error: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status(error.status), "outcome": error.outcome()}}


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _response_bundle(kind: str, entries: list[_Entry]) -> dict[str, Any]:
    ordered = sorted(entries, key=lambda e: e.index)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": kind,
        "entry": [e.answer for e in ordered],
    }
