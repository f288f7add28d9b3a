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

from careledger.gateway.views.audit_events import AuditEventView
from careledger.gateway.views.consent import ConsentView
from careledger.gateway.views.provenance import ProvenanceView
from careledger.gateway.views.routes import view_routes

__all__ = ["AuditEventView", "ConsentView", "ProvenanceView", "view_routes"]
