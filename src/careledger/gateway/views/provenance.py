"""Provenance: one per version of a record the gateway indexes, checked against the chain.

Target `Type/id/_history/v`; recorded = the anchor's block time; the author (and the
organisation it wrote for) as agents; the anchor transaction as entity, and its Ed25519
signature (over the transaction's RFC 8785 body). id = `<32 hex of the record name>-<version>`.
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Mapping
from typing import Any

from careledger.chain.modules.records.events import RecordAnchored
from careledger.chain.tx import decode_tx
from careledger.gateway.context import Gateway
from careledger.gateway.index.store import Located
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.views.base import Patients, concept, fhir_instant, node_answer, only
from careledger.wallet.audit import DID_SYSTEM
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordRef, RecordsError

MAX_PROVENANCE_RECORDS = 200  # records one Provenance search looks at (each costs chain reads)
TX_SYSTEM = "urn:careledger:tx"
SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_PROVENANCE_ID = re.compile(r"([0-9a-f]{32})-([0-9]{1,10})")


class ProvenanceView:
    kind = "Provenance"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.patients = Patients(gateway)

    def search(self, principal: Principal, params: Mapping[str, str]) -> list[dict[str, Any]]:
        only(params, {"target", "patient"}, self.kind)
        if "target" in params:
            located, version = self._target(params["target"])
            if "patient" in params and located.patient != self.patients.did(params["patient"]):
                return []
            return self._provenances(principal, [located], version)
        if "patient" in params:
            did = self.patients.did(params["patient"])
            records = self.gateway.index.of_patient(did)[:MAX_PROVENANCE_RECORDS]
            return self._provenances(principal, records, None)
        raise FhirError(400, "search Provenance by target (Type/id) or patient")

    def read(self, principal: Principal, resource_id: str) -> dict[str, Any]:
        match = _PROVENANCE_ID.fullmatch(resource_id)
        located = self._by_record_prefix(match.group(1)) if match else None
        if match is None or located is None:
            raise FhirError(404, f"no Provenance/{resource_id}")
        found = self._provenances(principal, [located], int(match.group(2)))
        if not found:
            raise FhirError(404, f"no Provenance/{resource_id}")
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
                    found.append(_provenance(client.node, located, anchor, blocks))
        return found


def _provenance(
    node: NodeClient,
    located: Located,
    anchor: Mapping[str, Any],
    blocks: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    height = int(anchor["height"])
    block = blocks.get(height)
    if block is None:
        block = blocks[height] = node_answer(node.block, height)
    tx_hash = _anchor_tx(block, located, anchor)
    signed = decode_tx(bytes.fromhex(str(node_answer(node.transaction, tx_hash)["tx"])))
    recorded = fhir_instant(str(block["header"]["time"]))
    number = int(anchor["version"])
    author = {"identifier": {"system": DID_SYSTEM, "value": str(anchor["author"])}}
    agent: dict[str, Any] = {"type": concept(PROVENANCE_AGENT, "author", "Author"), "who": author}
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
        "activity": concept(DATA_OPERATION, operation),
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
