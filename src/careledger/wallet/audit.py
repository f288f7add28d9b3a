"""The patient's access log, each entry proven on chain, and checking a node's read receipts.

    log = AuditClient(node_url, patient_keyfile).access_log()   # alerts, then entries
    for access in log.entries: ...                               # newest first, each proven
    to_audit_event(access)                                       # a FHIR R4B AuditEvent

**Proofs.** The log (`audit/log`, answered to the patient only) names, for each entry, the
`audit/record_batch` transaction that carried it and its index there. For each batch (one
proof per transaction, cached) the client fetches `GET /txs/{hash}`'s evidence and checks it
(`wallet/evidence.py`: the transaction is in its block, at its position, with code 0), then
that the transaction is a batch signed by the node the log names, with the seq the log names,
and that the batch's entry at `index`, decoded, IS the log's entry (same leaf). So a node that
alters an entry in its answer, or points at another batch, is caught: `ProofError`.

The block is trusted by the trust anchor the caller gives (a CometBFT validator set, or
trusted block hashes); without one, each block's hash is asked of the same node (as
`verify-record --node`): the log is then as good as that node's word on its blocks, and every
entry is still checked against the transaction the block commits to.

**Receipts.** Every read answer carries the node's signed receipt (`protocol/receipts.py`).
`check_receipt` asks the node where the receipted entries went (`GET /audit/entries`, to the
reader only) and proves each on chain like a log entry; the digest of the leaves found must be
the receipt's. If they are not all on chain within `grace` seconds, or are not the promised
ones, it raises `NotAudited`: the reader then holds the node's signature on a promise the chain
does not show, together with its own signed request (docs/security.md, "A node that served a
read and did not commit its entry").
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from careledger.chain.modules.audit.entries import ALLOWED_OUTCOMES, AccessEntry, BadBatch
from careledger.chain.modules.audit.entries import decode_batch as decode_entries
from careledger.crypto.keyfile import KeyFile
from careledger.protocol.receipts import (
    HEADER,
    AuditReceipt,
    BadReceipt,
    leaves_digest,
    request_digest,
)
from careledger.wallet.evidence import (
    ProofError,
    TrustAnchor,
    TrustedHeaders,
    VerifiedBlock,
    VerifiedTx,
    check_tx_evidence,
)
from careledger.wallet.node_client import NodeClient, NodeError

RECORD_BATCH = "audit/record_batch"
PAGE = 500  # entries per audit/log query (the chain's maximum)
EVIDENCE_WAIT = 30.0  # seconds to wait for a transaction's evidence (CometBFT: block H+1)
RECEIPT_GRACE = 30.0  # seconds a node has to commit what it receipted


class NotAudited(Exception):
    """A node receipted entries that the chain does not show (missing, or other entries)."""

    def __init__(self, message: str, receipt: AuditReceipt) -> None:
        super().__init__(message)
        self.receipt = receipt


@dataclass(frozen=True)
class LoggedAccess:
    """One entry of the patient's log, and where it is on chain."""

    entry: AccessEntry  # compact: the record named by its 16-byte prefix
    height: int
    tx: str
    node: str  # the node that served the read (and signed its batch)
    seq: int  # the batch's sequence number of that node
    index: int  # the entry's position in its batch
    block: VerifiedBlock | None = None  # set once its proof is checked


@dataclass(frozen=True)
class AccessLog:
    alerts: list[dict[str, Any]]  # break-glass alerts, newest first: shown before entries
    entries: list[LoggedAccess]  # newest first


@dataclass
class _Proofs:
    """Checked batch transactions, by hash: one proof per batch however many entries."""

    node: NodeClient
    trust: TrustAnchor | None
    checked: dict[str, tuple[VerifiedTx, list[AccessEntry]]] = field(default_factory=dict)

    def batch(self, tx: str, height: int) -> tuple[VerifiedTx, list[AccessEntry]]:
        found = self.checked.get(tx)
        if found is None:
            found = self.checked[tx] = self._check(tx, height)
        return found

    def _check(self, tx: str, height: int) -> tuple[VerifiedTx, list[AccessEntry]]:
        evidence = _evidence(self.node, tx)
        trust = self.trust if self.trust is not None else self._node_block_hash(height)
        verified = check_tx_evidence(evidence, trust, required=True)
        signed = verified.tx
        if signed.hash.hex() != tx.lower():
            raise ProofError(f"the node's evidence for {tx} is of another transaction")
        if verified.block.height != height:
            raise ProofError(f"transaction {tx} is in block {verified.block.height}, not {height}")
        if signed.tx.type != RECORD_BATCH:
            raise ProofError(f"transaction {tx} is a {signed.tx.type}, not an {RECORD_BATCH}")
        if signed.tx.payload.get("node") != signed.tx.sender:
            raise ProofError(f"batch {tx} names another node than the one that signed it")
        try:
            return verified, decode_entries(signed.tx.payload)
        except BadBatch as exc:
            raise ProofError(f"batch {tx} does not decode: {exc}") from None

    def _node_block_hash(self, height: int) -> TrustedHeaders:
        return TrustedHeaders({height: str(self.node.block(height)["hash"])})

    def prove(self, access: LoggedAccess) -> LoggedAccess:
        """The access with its block, once its batch shows exactly this entry at its index;
        ProofError otherwise."""
        verified, entries = self.batch(access.tx, access.height)
        payload = verified.tx.tx.payload
        if verified.tx.tx.sender != access.node or payload.get("seq") != access.seq:
            raise ProofError(
                f"transaction {access.tx} is batch {payload.get('seq')} of "
                f"{verified.tx.tx.sender}, not batch {access.seq} of {access.node}"
            )
        if not 0 <= access.index < len(entries):
            raise ProofError(f"batch {access.tx} has no entry {access.index}")
        if entries[access.index].leaf() != access.entry.leaf():
            raise ProofError(
                f"entry {access.index} of batch {access.tx} is not the entry the log shows "
                "(altered)"
            )
        return LoggedAccess(
            access.entry,
            access.height,
            access.tx,
            access.node,
            access.seq,
            access.index,
            verified.block,
        )


class AuditClient:
    """The patient's access log through one node, signed as the patient."""

    def __init__(
        self, node: str | NodeClient, keyfile: KeyFile, trust: TrustAnchor | None = None
    ) -> None:
        if isinstance(node, NodeClient):
            self.node = node.signed_as(keyfile)
        else:
            self.node = NodeClient(node, keyfile)
        self.patient = keyfile.did
        self.trust = trust
        self._proofs = _Proofs(self.node, trust)

    def close(self) -> None:
        self.node.close()

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, verify: bool = True) -> list[LoggedAccess]:
        """Every access entry of the patient, newest first; with verify, each entry's proof
        checked (ProofError naming the first that fails)."""
        return self.access_log(verify).entries

    def access_log(self, verify: bool = True) -> AccessLog:
        """Break-glass alerts and every access entry, newest first (proofs as in `log`)."""
        alerts: list[dict[str, Any]] = []
        entries: list[LoggedAccess] = []
        for page in self._pages():
            alerts += [a for a in page.get("alerts", []) if a not in alerts]
            entries += [_logged(row, self.patient) for row in page.get("entries", [])]
        if verify:
            entries = [self.prove(access) for access in entries]
        return AccessLog(alerts, entries)

    def prove(self, access: LoggedAccess) -> LoggedAccess:
        """The entry with its verified block; ProofError if its batch does not show it."""
        return self._proofs.prove(access)

    def _pages(self) -> Iterator[dict[str, Any]]:
        before = ""
        while True:
            params = {"patient": self.patient, "limit": str(PAGE)}
            if before:
                params["before"] = before
            page = self.node.query("audit/log", **params)
            yield page
            before = str(page.get("next") or "")
            if not before:
                return


def _logged(row: Mapping[str, Any], patient: str) -> LoggedAccess:
    try:
        entry = AccessEntry.from_json(row["entry"])
        access = LoggedAccess(
            entry,
            int(row["height"]),
            str(row["tx"]),
            str(row["node"]),
            int(row["seq"]),
            int(row["index"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"the node's log holds an entry that is not one: {exc}") from None
    if entry.patient != patient:
        raise ProofError(f"the node's log of {patient} holds an entry of {entry.patient}")
    return access


# --- receipts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipted:
    """A read's receipt and the digest of the request it answers."""

    receipt: AuditReceipt
    request: str


def receipt_of(response: httpx.Response) -> Receipted:
    """The receipt on a read's response (BadReceipt if none), with its request's digest."""
    receipt = AuditReceipt.parse(response.headers.get(HEADER))
    return Receipted(receipt, request_digest(response.request.headers.get("authorization", "")))


def check_receipt(
    receipted: Receipted,
    node: NodeClient,
    *,
    grace: float = RECEIPT_GRACE,
    trust: TrustAnchor | None = None,
) -> list[LoggedAccess]:
    """Prove that the node committed every entry it receipted for this read: the entries, as
    proven on chain, in order. `node` is a client of the node that served the read, signed as
    the reader. BadReceipt if the receipt is not the node's signature for this request;
    NotAudited if the entries are not all on chain after `grace` seconds, or are not the ones
    the receipt promised; ProofError if the node's evidence does not verify."""
    receipt = receipted.receipt
    chain_id = str(node.status()["chain_id"])
    receipt.check(chain_id, receipted.request, _node_signing_key(node, receipt.node))
    located = _located_on_chain(node, receipt, grace)
    proofs = _Proofs(node, trust)
    proven = [proofs.prove(_as_logged(row, receipt, proofs)) for row in located]
    if len({(p.tx, p.index) for p in proven}) != len(proven):
        raise NotAudited("the node shows one entry on chain for two of its promises", receipt)
    if leaves_digest([p.entry.leaf() for p in proven]) != receipt.digest:
        raise NotAudited(
            f"the entries node {receipt.node} committed are not the {receipt.entries} it "
            "receipted for this read (their digest differs)",
            receipt,
        )
    return proven


def _node_signing_key(node: NodeClient, did: str) -> bytes:
    try:
        identity = node.query("identity/identity", did=did)
    except NodeError as exc:
        raise BadReceipt(f"the receipt's node {did} is not a registered identity: {exc}") from None
    if identity.get("kind") != "node":
        raise BadReceipt(f"the receipt is signed by {did}, a {identity.get('kind')}, not a node")
    return bytes.fromhex(str(identity["signing_key"]))


def _located_on_chain(
    node: NodeClient, receipt: AuditReceipt, grace: float
) -> list[dict[str, Any]]:
    """Where the node says the receipted entries went, once all are committed."""
    deadline = time.monotonic() + grace
    params = {"first": str(receipt.first), "count": str(receipt.entries)}
    while True:
        try:
            located = list(node.get("/audit/entries", **params)["entries"])
        except NodeError as exc:
            message = f"the node does not show the receipted entries: {exc}"
            raise NotAudited(message, receipt) from None
        committed = [row for row in located if row.get("committed")]
        if len(located) == receipt.entries and len(committed) == receipt.entries:
            return located
        if time.monotonic() > deadline:
            raise NotAudited(
                f"{receipt.entries - len(committed)} of the {receipt.entries} entries node "
                f"{receipt.node} receipted (journal {receipt.first}..) are not on chain after "
                f"{grace:g} s: it served a read it did not audit",
                receipt,
            )
        time.sleep(0.25)


def _as_logged(row: Mapping[str, Any], receipt: AuditReceipt, proofs: _Proofs) -> LoggedAccess:
    """A located entry as a log entry, its content taken from the batch itself (the reader
    holds the leaves' digest, not the entries)."""
    tx, index = str(row["tx"]), int(row["index"])
    verified, entries = proofs.batch(tx, int(row["height"]))
    if not 0 <= index < len(entries):
        raise ProofError(f"batch {tx} has no entry {index}")
    seq = int(verified.tx.tx.payload["seq"])
    return LoggedAccess(entries[index], verified.block.height, tx, receipt.node, seq, index)


# --- FHIR ---------------------------------------------------------------------------------------

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DID_SYSTEM = "urn:ietf:rfc:3986"
RECORD_SYSTEM = "urn:careledger:record"
OUTCOME_CODES = {  # AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure
    **dict.fromkeys(ALLOWED_OUTCOMES, "0"),
    "denied": "4",
    "not_found": "4",
    "malformed": "4",
    "erased": "4",
    "unavailable": "8",
}


def to_audit_event(access: LoggedAccess) -> dict[str, Any]:
    """The access as a FHIR R4B AuditEvent shaped after the Basic Audit Log Patterns' "read"
    (type rest, subtype read, action R, outcome 0/4/8; the reader as the requesting agent,
    its organisation beside it; the patient and the record as entities; the purpose of use).
    Identities are dids (`urn:ietf:rfc:3986`), the record its on-chain name prefix."""
    entry = access.entry
    recorded = dt.datetime.fromtimestamp(entry.at, dt.UTC).isoformat().replace("+00:00", "Z")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": RESTFUL_INTERACTION, "code": "read", "display": "read"}],
        "action": "R",
        "recorded": recorded,
        "outcome": OUTCOME_CODES[entry.outcome],
        "outcomeDesc": entry.outcome,
        "agent": _agents(entry),
        "source": {"observer": _did(access.node), "site": f"batch {access.seq} of the node"},
        "entity": _entities(entry, access),
    }
    if entry.purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": entry.purpose}]}]
    return event


def _did(did: str) -> dict[str, Any]:
    return {"identifier": {"system": DID_SYSTEM, "value": did}}


def _agents(entry: AccessEntry) -> list[dict[str, Any]]:
    reader = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "recipient"}]},
        "who": _did(entry.reader),
        "requestor": True,
    }
    if entry.purpose:
        reader["purposeOfUse"] = [{"coding": [{"system": ACT_REASON, "code": entry.purpose}]}]
    agents = [reader]
    if entry.org:
        agents.append({"who": _did(entry.org), "requestor": False})
    return agents


def _entities(entry: AccessEntry, access: LoggedAccess) -> list[dict[str, Any]]:
    if not entry.patient:
        return []
    patient = {
        "what": _did(entry.patient),
        "type": {"system": OBJECT_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }
    record = {
        "what": {"identifier": {"system": RECORD_SYSTEM, "value": entry.record}},
        "type": {"system": OBJECT_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        "detail": [{"type": "version", "valueString": str(entry.version)}],
    }
    return [patient, record]


def _evidence(node: NodeClient, tx: str) -> dict[str, Any]:
    deadline = time.monotonic() + EVIDENCE_WAIT
    while True:
        evidence = node.transaction(tx).get("evidence")
        if evidence:
            return dict(evidence)
        if time.monotonic() > deadline:
            raise ProofError(f"the node gives no proof of {tx}: the block after it is not in")
        time.sleep(0.25)
