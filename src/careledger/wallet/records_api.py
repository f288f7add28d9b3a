"""The node's records endpoints as the records SDK calls them.

Blobs go up and come back through signed `POST /blobs` and `POST /blobs/fetch?purpose=CODE`
(batch frames, `protocol.frames`; the purpose is in the signed target); the records module's
chain queries give a patient's scope keys, records and version history. The node's refusals
become `RecordsError` with its status.

Every fetch's answer must carry the node's audit receipt for that request and its entries,
signed by a node identity of the chain (`protocol/receipts.py`): a node that serves a read
without promising its access entries is refused at once (RecordsError 502), and what it
promised can be proven later (`wallet/audit.check_receipt`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from careledger.crypto.scopekeys import ScopePublic
from careledger.protocol.frames import pack_frames, unpack_results
from careledger.protocol.receipts import HEADER, AuditReceipt, BadReceipt, request_digest
from careledger.wallet.keyring import verified_scope_keys
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.refs import RecordRef, RecordsError


class RecordsApi:
    """Blob transfer and records queries through a signed NodeClient; `purpose`: the
    PurposeOfUse code (TREAT, HRESCH, ...) its reads state unless a fetch names another."""

    def __init__(self, node: NodeClient, purpose: str = "") -> None:
        self.node = node
        self.purpose = purpose
        self._chain_id = ""
        self._node_keys: dict[str, bytes] = {}  # node did -> its registered signing key
        # Called with every receipt checked and its request's digest (a gateway keeps them
        # to show its reads as AuditEvents: gateway/receipts.py).
        self.on_receipt: Callable[[AuditReceipt, str], None] | None = None

    def _signed(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        response = self.node.http.request(method, path, content=body, auth=self.node.auth)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message, code = str(error["message"]), str(error["code"])
            except (ValueError, KeyError, TypeError):
                message, code = response.text, "http_error"
            raise RecordsError(f"{code}: {message}", response.status_code)
        return response

    def upload(self, blobs: Sequence[bytes]) -> list[str]:
        """Store blobs on the node (durable when this returns); their hashes."""
        body = self._signed("POST", "/blobs", pack_frames(blobs)).content
        hashes: list[str] = orjson.loads(body)["hashes"]
        return hashes

    def fetch(self, hashes: Sequence[str], purpose: str | None = None) -> list[tuple[int, bytes]]:
        """(status, blob or error message) for each hash, from one request, read for
        `purpose` (default: this api's). A patient reading its own records needs none; anyone
        else is refused every blob without one (403 "no purpose stated")."""
        purpose = self.purpose if purpose is None else purpose
        path = f"/blobs/fetch?purpose={quote(purpose)}" if purpose else "/blobs/fetch"
        response = self._signed("POST", path, orjson.dumps({"hashes": list(hashes)}))
        self._check_receipt(response, len(hashes))
        return unpack_results(response.content)

    def _check_receipt(self, response: httpx.Response, entries: int) -> None:
        """RecordsError 502 unless the answer carries a receipt of `entries` entries for this
        request, signed by a node identity of this chain."""
        try:
            receipt = AuditReceipt.parse(response.headers.get(HEADER))
            if receipt.entries != entries:
                raise BadReceipt(f"it receipts {receipt.entries} entries for {entries} reads")
            request = request_digest(response.request.headers.get("authorization", ""))
            receipt.check(self._chain(), request, self._node_key(receipt.node))
        except BadReceipt as exc:
            raise RecordsError(f"not audited: {exc}", 502) from None
        if self.on_receipt is not None:
            self.on_receipt(receipt, request)

    def _node_key(self, did: str) -> bytes:
        """The signing key of node `did` as the chain registered it (asked once per node)."""
        key = self._node_keys.get(did)
        if key is None:
            identity = self._query("identity/identity", did=did)
            if identity.get("kind") != "node":
                raise BadReceipt(f"the receipt is signed by {did}, not a node of the chain")
            key = self._node_keys[did] = bytes.fromhex(str(identity["signing_key"]))
        return key

    def _chain(self) -> str:
        if not self._chain_id:
            self._chain_id = str(self.node.status()["chain_id"])
        return self._chain_id

    def _query(self, path: str, **params: str) -> Any:
        try:
            return self.node.query(path, **params)
        except NodeError as exc:
            raise RecordsError(exc.message, exc.status) from None

    def scope_keys(self, patient: str) -> dict[str, ScopePublic]:
        """The patient's current scope public keys, by scope, each checked against the
        patient's signature (wallet/keyring.py): UntrustedKey if any is not the patient's,
        404 if the patient is unknown."""
        identity = self._query("identity/identity", did=patient)
        rows = self._query("records/scope_keys", patient=patient)
        return verified_scope_keys(identity, rows, self._chain())

    def records(self, patient: str) -> list[dict[str, Any]]:
        """A patient's records, each with its latest anchor."""
        found: list[dict[str, Any]] = self._query("records/records", patient=patient)
        return found

    def latest_versions(self, patient: str) -> dict[str, int]:
        """The patient's latest version of each record, by record name (none if unknown)."""
        try:
            return {rec["record"]: rec["versions"] for rec in self.records(patient)}
        except RecordsError as exc:
            if exc.status == 404:
                return {}
            raise

    def versions(self, ref: RecordRef) -> dict[str, Any]:
        return self.versions_named(ref.patient, ref.name, str(ref))

    def versions_named(self, patient: str, name: str, what: str = "") -> dict[str, Any]:
        """The record named `name` (its on-chain name) with every version's anchor."""
        try:
            found: dict[str, Any] = self._query("records/versions", patient=patient, record=name)
        except RecordsError as exc:
            if exc.status == 404:
                raise RecordsError(f"no record {what or name} for {patient}", 404) from None
            raise
        return found
