"""Read-only FHIR views of what the chain holds: Consent, Provenance, AuditEvent.

Nothing here is stored as a resource: each view is computed from the chain (and, for
AuditEvent, from the receipts the gateway kept) when asked. Writes are refused (405).

    Consent      the grants the organisation and its practitioners hold (`consent/granted`,
                 asked as the organisation), each as `wallet/fhir_consent/to_fhir.py` writes
                 it; id = the grant id. Search: `patient`, `_id`, `status`.
    Provenance   one per version of a record the gateway indexes: target `Type/id/_history/v`,
                 recorded = the anchor's block time, the author (and the organisation it wrote
                 for) as agents, the anchor transaction as entity, and its Ed25519 signature
                 (the signature of the transaction, over its RFC 8785 body). id =
                 `<32 hex of the record name>-<version>`. Search: `target`, `patient`.
    AuditEvent   the access entries of this organisation's reads, proven on chain: the node
                 receipts every read (gateway/receipts.py keeps them), and this view asks the
                 node where the receipted entries went and checks them against their batch
                 (`wallet/audit.check_receipt`), then maps each with `to_audit_event` (BALP
                 read). A refused read (403) is an entry like any other, outcome 4. id =
                 `<32 hex of the batch transaction>-<index>`. Search: `patient`, `outcome`.

Patients appear as `Patient/<id>` where the index knows their Patient resource, beside
their did (identifier `urn:ietf:rfc:3986`).
"""

from __future__ import annotations

import re
import threading
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.chain.modules.records.events import RecordAnchored
from careledger.chain.tx import decode_tx
from careledger.gateway import receipts
from careledger.gateway.context import Gateway
from careledger.gateway.http import FhirResponse, check_format
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.search import search_form
from careledger.protocol.receipts import BadReceipt
from careledger.wallet.audit import (
    DID_SYSTEM,
    OUTCOME_CODES,
    NotAudited,
    Receipted,
    check_receipt,
    to_audit_event,
)
from careledger.wallet.evidence import ProofError
from careledger.wallet.fhir_consent.to_fhir import consent_from_grant
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.records import RecordRef, RecordsError

DEFAULT_COUNT = 100
MAX_COUNT = 1000
MAX_PROVENANCE_RECORDS = 200  # records one Provenance search looks at (each costs chain reads)
RESOLVE_PER_REQUEST = 32  # receipts proven per AuditEvent request (each costs chain reads)
RECEIPT_PATIENCE = 300.0  # seconds a receipt may stay unproven before it counts as failed
TX_SYSTEM = "urn:careledger:tx"
RECORD_SYSTEM = "urn:careledger:record"
SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_PROVENANCE_ID = re.compile(r"([0-9a-f]{32})-([0-9]{1,10})")
_AUDIT_ID = re.compile(r"[0-9a-f]{32}-[0-9]{1,6}")
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def view_routes(gateway: Gateway) -> list[BaseRoute]:
    views = Views(gateway)
    methods = ["GET", "HEAD", *_WRITE_METHODS]
    routes: list[BaseRoute] = []
    for kind, search, read in (
        ("Consent", views.search_consents, views.read_consent),
        ("Provenance", views.search_provenance, views.read_provenance),
        ("AuditEvent", views.search_audit_events, views.read_audit_event),
    ):
        routes.append(Route(f"/{kind}", _type_endpoint(kind, search), methods=methods))
        routes.append(
            Route(f"/{kind}/{{id}}", _instance_endpoint(kind, search, read), methods=methods)
        )
    return routes


Search = Callable[[Principal, Mapping[str, str]], list[dict[str, Any]]]
Read = Callable[[Principal, str], dict[str, Any]]


def _refuse_writes(kind: str, request: Request) -> None:
    if request.method in _WRITE_METHODS:
        raise FhirError(
            405,
            f"{kind} is a read-only view of what the chain holds: {request.method} is not "
            "supported",
            headers={"allow": "GET, HEAD"},
        )


def _type_endpoint(kind: str, search: Search) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        _refuse_writes(kind, request)
        return await _search(kind, search, request, dict(request.query_params))

    return endpoint


def _instance_endpoint(
    kind: str, search: Search, read: Read
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        resource_id = request.path_params["id"]
        if resource_id == "_search" and request.method == "POST":
            form = await search_form(request)  # bounded: 413 past MAX_FORM_BYTES
            return await _search(kind, search, request, dict(request.query_params) | dict(form))
        _refuse_writes(kind, request)
        check_format(request)
        principal = principal_of(request)
        principal.require(kind, "r")
        return FhirResponse(await run_in_threadpool(read, principal, resource_id))

    return endpoint


async def _search(kind: str, search: Search, request: Request, params: dict[str, str]) -> Response:
    check_format(request)
    principal = principal_of(request)
    principal.require(kind, "s")
    count = _count(params.pop("_count", None))
    offset = _offset(params.pop("_offset", None))
    params.pop("_format", None)
    found = await run_in_threadpool(search, principal, params)
    gateway: Gateway = request.app.state.gateway
    page = Page(gateway.fhir_base(request), kind, params, count, offset)
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


def _only(params: Mapping[str, str], allowed: Iterable[str], kind: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise FhirError(
            400,
            f"{kind} search supports {', '.join(sorted(allowed))}, not {', '.join(unknown)}",
        )


class Views:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._as_organisation = gateway.node.signed_as(gateway.organisation)
        self._readers: dict[str, NodeClient] = {}
        self._resolving = threading.Lock()

    # --- patients -----------------------------------------------------------------------

    def _patient_did(self, value: str) -> str:
        """The did of `patient=Patient/x` (or `x`, or a did itself); 404-free: an unknown
        patient matches nothing."""
        text = value.removeprefix(self.gateway.base_url or "").lstrip("/")
        if text.startswith("did:"):
            return text
        patient_id = text.removeprefix("Patient/")
        return self.gateway.index.patient_did(patient_id) or f"unknown:{patient_id}"

    def _patient_reference(self, did: str) -> dict[str, Any]:
        reference: dict[str, Any] = {
            "type": "Patient",
            "identifier": {"system": DID_SYSTEM, "value": did},
        }
        patient_id = self.gateway.index.patient_id(did)
        if patient_id is not None:
            reference["reference"] = f"Patient/{patient_id}"
        return reference

    # --- Consent ------------------------------------------------------------------------

    def _grants(self) -> list[dict[str, Any]]:
        """Every live grant to the organisation or one of its practitioners, newest first."""
        found: dict[str, dict[str, Any]] = {}
        for grantee in [
            self.gateway.organisation.did,
            *(k.did for k in self.gateway.practitioner_keys()),
        ]:
            try:
                rows = self._as_organisation.query("consent/granted", grantee=grantee)
            except NodeError as exc:
                raise FhirError(502, f"the node did not list the grants: {exc.message}") from None
            for grant in rows:
                found.setdefault(str(grant["id"]), grant)
        return sorted(found.values(), key=lambda g: (-int(g["height"]), str(g["id"])))

    def _consent(self, grant: Mapping[str, Any]) -> dict[str, Any]:
        consent = consent_from_grant(grant)
        consent["patient"] = self._patient_reference(str(grant["patient"]))
        return consent

    def search_consents(
        self, principal: Principal, params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        _only(params, {"patient", "_id", "status"}, "Consent")
        grants = self._grants()
        if "patient" in params:
            did = self._patient_did(params["patient"])
            grants = [g for g in grants if g["patient"] == did]
        if "_id" in params:
            grants = [g for g in grants if g["id"] in params["_id"].split(",")]
        consents = [self._consent(g) for g in grants]
        if "status" in params:
            consents = [c for c in consents if c["status"] == params["status"]]
        return consents

    def read_consent(self, principal: Principal, consent_id: str) -> dict[str, Any]:
        for grant in self._grants():
            if grant["id"] == consent_id:
                return self._consent(grant)
        raise FhirError(404, f"no Consent/{consent_id} among the organisation's grants")

    # --- Provenance ---------------------------------------------------------------------

    def search_provenance(
        self, principal: Principal, params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        _only(params, {"target", "patient"}, "Provenance")
        if "target" in params:
            located, version = self._target(params["target"])
            if "patient" in params and located.patient != self._patient_did(params["patient"]):
                return []
            return self._provenances(principal, [located], version)
        if "patient" in params:
            did = self._patient_did(params["patient"])
            records = self.gateway.index.of_patient(did)[:MAX_PROVENANCE_RECORDS]
            return self._provenances(principal, records, None)
        raise FhirError(400, "search Provenance by target (Type/id) or patient")

    def read_provenance(self, principal: Principal, provenance_id: str) -> dict[str, Any]:
        match = _PROVENANCE_ID.fullmatch(provenance_id)
        located = self._by_record_prefix(match.group(1)) if match else None
        if match is None or located is None:
            raise FhirError(404, f"no Provenance/{provenance_id}")
        found = self._provenances(principal, [located], int(match.group(2)))
        if not found:
            raise FhirError(404, f"no Provenance/{provenance_id}")
        return found[0]

    def _target(self, text: str) -> tuple[Located, int | None]:
        parts = text.removeprefix(self.gateway.base_url or "").strip("/").split("/")
        if len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
            raise FhirError(400, f"target must be Type/id or Type/id/_history/n, not {text!r}")
        located = self.gateway.index.locate(parts[0], parts[1])
        if located is None:
            raise FhirError(404, f"no {parts[0]}/{parts[1]} here")
        version = int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else None
        return located, version

    def _by_record_prefix(self, prefix: str) -> Located | None:
        with self.gateway.db.read() as sql:
            row = sql.execute(
                "SELECT resource_type, id FROM resources WHERE substr(record, 1, 32) = ?",
                (prefix,),
            ).fetchone()
        return self.gateway.index.locate(str(row[0]), str(row[1])) if row else None

    def _provenances(
        self, principal: Principal, records: list[Located], version: int | None
    ) -> list[dict[str, Any]]:
        client = self.gateway.records_for(principal)
        blocks: dict[int, dict[str, Any]] = {}
        found = []
        for located in records:
            if not principal.scopes.allows(located.resource_type, "r"):
                continue  # the token may not read the target: nor its provenance
            ref = RecordRef(located.patient, located.resource_type, located.id, located.record)
            try:
                history = client.versions(ref)["history"]
            except RecordsError as exc:
                if exc.status in (403, 404):
                    continue
                raise
            for anchor in history:
                if version is None or anchor["version"] == version:
                    found.append(self._provenance(client.node, located, anchor, blocks))
        return found

    def _provenance(
        self,
        node: NodeClient,
        located: Located,
        anchor: Mapping[str, Any],
        blocks: dict[int, dict[str, Any]],
    ) -> dict[str, Any]:
        height = int(anchor["height"])
        block = blocks.get(height)
        if block is None:
            block = blocks[height] = _node(node.block, height)
        tx_hash = _anchor_tx(block, located, anchor)
        signed = decode_tx(bytes.fromhex(str(_node(node.transaction, tx_hash)["tx"])))
        recorded = _fhir_instant(str(block["header"]["time"]))
        number = int(anchor["version"])
        author = {"identifier": {"system": DID_SYSTEM, "value": str(anchor["author"])}}
        agent: dict[str, Any] = {
            "type": _concept(PROVENANCE_AGENT, "author", "Author"),
            "who": author,
        }
        if anchor.get("org"):
            agent["onBehalfOf"] = {
                "type": "Organization",
                "identifier": {"system": DID_SYSTEM, "value": str(anchor["org"])},
            }
        operation = "DELETE" if anchor["tombstone"] else ("CREATE" if number == 1 else "UPDATE")
        return {
            "resourceType": "Provenance",
            "id": f"{located.record[:32]}-{number}",
            "target": [{"reference": f"{located.resource_type}/{located.id}/_history/{number}"}],
            "recorded": recorded,
            "activity": _concept(DATA_OPERATION, operation),
            "agent": [agent],
            "entity": [
                {
                    "role": "source",
                    "what": {
                        "display": f"anchor transaction at height {height}",
                        "identifier": {"system": TX_SYSTEM, "value": tx_hash},
                    },
                }
            ],
            "signature": [
                {
                    "type": [
                        {
                            "system": SIGNATURE_TYPE,
                            "code": "1.2.840.10065.1.12.1.1",
                            "display": "Author's Signature",
                        }
                    ],
                    "when": recorded,
                    "who": author,
                    # The Ed25519 signature of the anchor transaction, over its RFC 8785 body
                    # (docs/chain.md); the transaction is GET /txs/<entity identifier>.
                    "targetFormat": "application/json",
                    "sigFormat": "application/octet-stream",
                    "data": b64encode(signed.signature).decode(),
                }
            ],
        }

    # --- AuditEvent ---------------------------------------------------------------------

    def search_audit_events(
        self, principal: Principal, params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        _only(params, {"patient", "outcome", "_id"}, "AuditEvent")
        self.resolve_receipts()
        clauses, values = [], []
        if "patient" in params:
            clauses.append("patient = ?")
            values.append(self._patient_did(params["patient"]))
        if "_id" in params:
            clauses.append("id = ?")
            values.append(params["_id"])
        if "outcome" in params:  # FHIR codes (0, 4, 8) -> the entries' outcomes
            wanted = params["outcome"].split(",")
            names = sorted(name for name, code in OUTCOME_CODES.items() if code in wanted)
            clauses.append(f"outcome IN ({', '.join('?' * len(names)) or 'NULL'})")
            values += names
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.gateway.audit_db.read() as sql:
            rows = sql.execute(
                f"SELECT event FROM audit_events {where} ORDER BY at DESC, id LIMIT ?",
                (*values, MAX_COUNT),
            ).fetchall()
        return [self._audit_event(orjson.loads(row[0])) for row in rows]

    def read_audit_event(self, principal: Principal, event_id: str) -> dict[str, Any]:
        if _AUDIT_ID.fullmatch(event_id):
            self.resolve_receipts()
            with self.gateway.audit_db.read() as sql:
                row = sql.execute(
                    "SELECT event FROM audit_events WHERE id = ?", (event_id,)
                ).fetchone()
            if row is not None:
                return self._audit_event(orjson.loads(row[0]))
        raise FhirError(404, f"no AuditEvent/{event_id}")

    def _audit_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A stored event with its patient (and record) as FHIR references where known."""
        for entity in event.get("entity", []):
            identifier = entity.get("what", {}).get("identifier", {})
            if identifier.get("system") == DID_SYSTEM:
                patient_id = self.gateway.index.patient_id(str(identifier["value"]))
                if patient_id is not None:
                    entity["what"]["reference"] = f"Patient/{patient_id}"
        return event

    def resolve_receipts(self, limit: int = RESOLVE_PER_REQUEST) -> None:
        """Prove the entries of pending receipts on chain and keep them as AuditEvents."""
        with self._resolving:
            for kept in receipts.pending_receipts(self.gateway.audit_db, limit):
                self._resolve(kept)

    def _resolve(self, kept: receipts.KeptReceipt) -> None:
        node = self._reader_node(kept.reader)
        receipt = kept.receipt
        try:
            located = node.get(
                "/audit/entries", first=str(receipt.first), count=str(receipt.entries)
            )
            committed = all(row.get("committed") for row in located["entries"])
            if not committed:
                if time.time() - kept.received > RECEIPT_PATIENCE:
                    receipts.settle_receipt(
                        self.gateway.audit_db, kept, receipts.FAILED, "not on chain"
                    )
                return
            proven = check_receipt(Receipted(receipt, kept.request), node, grace=0)
        except BadReceipt as exc:  # not the node's signature for this read: never will be
            receipts.settle_receipt(self.gateway.audit_db, kept, receipts.FAILED, str(exc)[:500])
            return
        except (NodeError, NotAudited, ProofError) as exc:
            # Perhaps not yet (the block that proves the batch is not in, the node is busy):
            # asked again next time, until the receipt is older than RECEIPT_PATIENCE.
            if time.time() - kept.received > RECEIPT_PATIENCE:
                receipts.settle_receipt(
                    self.gateway.audit_db, kept, receipts.FAILED, str(exc)[:500]
                )
            return
        with self.gateway.audit_db.write() as sql:
            for access in proven:
                event = to_audit_event(access)
                event["id"] = f"{access.tx[:32]}-{access.index}"
                sql.execute(
                    "INSERT OR REPLACE INTO audit_events (id, patient, at, outcome, event) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        event["id"],
                        access.entry.patient,
                        access.entry.at,
                        access.entry.outcome,
                        orjson.dumps(event).decode(),
                    ),
                )
            sql.execute(
                "UPDATE audit_receipts SET state = ? WHERE node = ? AND first = ?",
                (receipts.PROVEN, receipt.node, receipt.first),
            )

    def _reader_node(self, reader: str) -> NodeClient:
        node = self._readers.get(reader)
        if node is None:
            node = self._readers[reader] = self.gateway.node.signed_as(self.gateway.key_of(reader))
        return node


def _anchor_tx(block: Mapping[str, Any], located: Located, anchor: Mapping[str, Any]) -> str:
    """The hash of the block's transaction that anchored this version (by its event)."""
    for tx in block.get("txs", []):
        if tx.get("code"):
            continue
        for event in tx.get("events", []):
            anchored = RecordAnchored.from_json(event)
            if (
                anchored is not None
                and anchored.patient == located.patient
                and anchored.record == located.record
                and anchored.version == str(anchor["version"])
            ):
                return str(tx["hash"])
    raise FhirError(
        502,
        f"the node's block {block.get('header', {}).get('height')} holds no "
        f"anchor of {located.resource_type}/{located.id} version {anchor['version']}",
    )


def _node(method: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    try:
        return method(*args)
    except NodeError as exc:
        raise FhirError(502, f"the node did not answer: {exc.message}") from None


def _fhir_instant(block_time: str) -> str:
    """A block time (RFC 3339, nanoseconds) as a FHIR instant in milliseconds."""
    head, _, fraction = block_time.rstrip("Z").partition(".")
    return f"{head}.{(fraction + '000')[:3]}Z"


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}
