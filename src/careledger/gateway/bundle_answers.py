"""How a Bundle's entries are answered (gateway/bundles.py processes them): an entry written,
one answered without a write (skipped, matched by ifNoneExist, a GET, a client's
Provenance), and a GET entry's read or search."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from careledger.gateway.bundle_entries import Entry, as_fhir_error, refusal, status_text
from careledger.gateway.context import Gateway
from careledger.gateway.http import etag
from careledger.gateway.outcome import FhirError, operation_outcome
from careledger.gateway.principal import Principal
from careledger.gateway.resources import Resources
from careledger.gateway.stored import Stored
from careledger.wallet.fhir import InvalidResource
from careledger.wallet.refs import RecordsError

CLAIM_CODE_PREFIX = "claim code: "  # careledger import reads it (gateway/importer.py)
Current = Callable[[str], tuple[int, str] | None]


class EntryAnswers:
    """The answer of each entry of one Bundle, as the caller (`principal`) sees it."""

    def __init__(
        self,
        gateway: Gateway,
        resources: Resources,
        principal: Principal,
        representation: bool,
        base: str,
        current: Current,
    ) -> None:
        """`current`: the version and time of a resource as the Bundle sees it (what the
        Bundle itself wrote counts), or None."""
        self.gateway = gateway
        self.resources = resources
        self.principal = principal
        self.representation = representation
        self.base = base
        self.current = current

    def written(self, entry: Entry, stored: Stored) -> dict[str, Any]:
        if stored.deleted and entry.method == "DELETE":
            return {"response": {"status": status_text(204), "etag": etag(stored.version)}}
        status = 201 if stored.created else 200
        answer = self.located(entry.reference, stored, status)
        if stored.claim_code:
            answer["response"]["outcome"] = operation_outcome(
                "informational",
                f"{CLAIM_CODE_PREFIX}{stored.claim_code} (the patient's one-time claim code: "
                "give it to them once, out of band; the gateway keeps no copy)",
                severity="information",
            )
        return answer

    def located(self, reference: str, stored: Stored, status: int) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "fullUrl": self.full_url(reference),
            "response": {
                "status": status_text(status),
                "location": f"{reference}/_history/{stored.version}",
                "etag": etag(stored.version),
                "lastModified": stored.last_updated,
            },
        }
        if self.representation:
            answer["resource"] = stored.resource
        return answer

    def without_write(self, entry: Entry) -> dict[str, Any]:
        if entry.skip:
            return {"response": {"status": status_text(204)}}
        if entry.derived:
            return self.chain_provenance(entry)
        if entry.method == "GET":
            try:  # after a transaction's writes: a refusal answers this entry alone
                return self.get(entry)
            except (FhirError, InvalidResource, RecordsError) as exc:
                return refusal(as_fhir_error(exc))
        # ifNoneExist matched: the existing resource, nothing created (200, as HAPI answers).
        current = self.current(entry.reference)
        assert current is not None
        answer: dict[str, Any] = {
            "fullUrl": self.full_url(entry.reference),
            "response": {
                "status": status_text(200),
                "location": f"{entry.reference}/_history/{current[0]}",
                "etag": etag(current[0]),
                "lastModified": current[1],
            },
        }
        return answer

    def get(self, entry: Entry) -> dict[str, Any]:
        if entry.condition is not None:
            return self.search(entry.resource_type, entry.condition)
        assert entry.resource_id is not None
        if entry.version is not None:
            stored = self.resources.vread(
                self.principal, entry.resource_type, entry.resource_id, entry.version
            )
        else:
            stored = self.resources.read(self.principal, entry.resource_type, entry.resource_id)
        answer = self.located(entry.reference, stored, 200)
        answer["resource"] = stored.resource
        return answer

    def full_url(self, reference: str) -> str:
        return f"{self.base}/{reference}" if self.base else reference

    def chain_provenance(self, entry: Entry) -> dict[str, Any]:
        """A client's Provenance (current Synthea ends each bundle with one): not stored,
        since Provenance here is the chain's record of each version (gateway/views/). The
        entry is answered with the chain's Provenance of its first target, which this
        transaction wrote, and says so."""
        assert entry.resource is not None
        targets = entry.resource.get("target") or [{}]
        reference = str(targets[0].get("reference", "")).split("/_history/")[0]
        kind, _, target_id = reference.partition("/")
        located = self.gateway.index.locate(kind, target_id) if target_id else None
        answer: dict[str, Any] = {"response": {"status": status_text(200)}}
        note = (
            "not stored: Provenance is the chain's own record of each version written "
            f"(GET Provenance?target={reference})"
        )
        if located is not None:
            answer["response"]["location"] = f"Provenance/{located.record[:32]}-{located.version}"
        answer["response"]["outcome"] = operation_outcome("informational", note, "information")
        return answer

    def search(self, resource_type: str, condition: Mapping[str, str]) -> dict[str, Any]:
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
        return {"resource": bundle, "response": {"status": status_text(200)}}
