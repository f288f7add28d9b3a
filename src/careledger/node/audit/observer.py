"""From read decisions to journaled access entries and the response's receipt.

The consent guard awaits `AuditObserver.audit(decisions, request)` before a route sends any
byte: each decision becomes one AccessEntry (the chain's module `audit`'s one format), the
entries are written to the journal and fsynced (group commit, `journal.py`), and the receipt
(`protocol/receipts.py`) is signed by this node's key. That is what "promised" means: an
entry a read was answered with is on this node's disk, and the reader holds the node's
signature on it. A journal that cannot take the entries refuses the read (503), so no read
is ever served without its entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson

from careledger.chain.app import QueryResult
from careledger.chain.codes import Code
from careledger.chain.modules.audit.entries import ALLOWED_OUTCOMES, AccessEntry
from careledger.crypto.keyfile import KeyFile
from careledger.node.audit.journal import AuditJournal, JournalError
from careledger.node.consent_guard import AccessDecision
from careledger.node.errors import ApiError
from careledger.protocol.receipts import AuditReceipt, sign_receipt

log = logging.getLogger(__name__)

MAY_ACT_TTL = 2.0  # seconds a "this node may act" answer of the chain is reused
OFF_LOOP = 64  # decisions above which entries and leaves are made in a worker thread

# Until the chain's answer names its basis, the allowed reasons that are not a grant's.
_ALLOWED_BY_REASON = {
    "patient": "patient",
    "delegate of the patient": "delegate",
    "author organisation": "author",
}
_REFUSED_BY_STATUS = {
    400: "malformed",
    403: "denied",
    404: "not_found",
    410: "erased",
    503: "unavailable",
}


def outcome_of(decision: AccessDecision) -> str:
    """The entry's outcome: the chain's basis of an allowed read when it names one, else
    what the reason says; a refusal's from its status (anything else is "unavailable")."""
    if decision.allowed:
        if decision.basis in ALLOWED_OUTCOMES:
            return decision.basis
        return _ALLOWED_BY_REASON.get(decision.reason, "grant")
    return _REFUSED_BY_STATUS.get(decision.status, "unavailable")


def access_entry(decision: AccessDecision) -> AccessEntry:
    """The access entry of one decision. A record is named with its patient and version, or
    none of them is (what the chain's batch format takes)."""
    anchored = bool(decision.patient and decision.record and decision.version >= 1)
    return AccessEntry(
        patient=decision.patient if anchored else "",
        record=decision.record if anchored else "",
        version=decision.version if anchored else 0,
        reader=decision.reader,
        org=decision.org,
        purpose=decision.purpose,
        outcome=outcome_of(decision),
        at=decision.at,
    )


def _entries_and_leaves(
    decisions: Sequence[AccessDecision],
) -> tuple[list[AccessEntry], list[bytes]]:
    entries = [access_entry(d) for d in decisions]
    return entries, [e.leaf() for e in entries]


class ChainQueries(Protocol):
    async def query(self, path: str, data: bytes) -> QueryResult: ...


class AuditObserver:
    """Journals every request's decisions and signs its receipt. No read at all without a
    node key, nor (when `chain` is given) while the chain does not let that key act as a
    node: its batches would all be refused, so its entries could never be committed."""

    def __init__(
        self,
        journal: AuditJournal,
        chain_id: str,
        node_key: KeyFile | None,
        chain: ChainQueries | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.chain_id = chain_id
        self.node_key = node_key
        self.chain = chain
        self.monotonic = monotonic
        self._may_act_until = 0.0  # a "may act" answer is reused until then (monotonic s)

    async def audit(self, decisions: Sequence[AccessDecision], request: str) -> AuditReceipt | None:
        """Journal the decisions' entries durably; the receipt for the request whose digest
        is `request`. ApiError 503 when the journal cannot take them, or when this node has
        no key to sign its batches and receipts with (its entries could never reach the
        chain): nothing is served."""
        if self.node_key is None:
            raise ApiError(
                503,
                "no_node_key",
                "not served: this node has no node key (keys/node.json), so it cannot commit "
                "the read's access entry on chain",
            )
        await self._require_node_may_act(self.node_key.did)
        if len(decisions) > OFF_LOOP:  # a big fetch: its leaves off the event loop
            entries, leaves = await asyncio.to_thread(_entries_and_leaves, decisions)
        else:
            entries, leaves = _entries_and_leaves(decisions)
        try:
            first = await self.journal.append([e.to_json() for e in entries])
        except JournalError as exc:
            raise ApiError(
                503,
                "unavailable",
                f"not served: the read could not be audited ({exc})",
                {"retry-after": "1"},
            ) from None
        key = self.node_key
        return sign_receipt(key.identity, self.chain_id, key.did, request, first, leaves)

    async def _require_node_may_act(self, did: str) -> None:
        """ApiError 503 unless the chain has `did` as a node that may act now (registered,
        its organisation a member). One identity query per MAY_ACT_TTL seconds while it may."""
        if self.chain is None or self.monotonic() < self._may_act_until:
            return
        found = await self.chain.query("identity/identity", orjson.dumps({"did": did}))
        if found.code not in (Code.OK, Code.NOT_FOUND):
            raise ApiError(503, "unavailable", f"not served: cannot ask the chain ({found.log})")
        ident = orjson.loads(found.value) if found.code == Code.OK else None
        if ident is None or ident.get("kind") != "node" or not ident.get("active"):
            raise ApiError(
                503,
                "node_not_registered",
                f"not served: this node's key {did} is not a node identity that may act on "
                "chain (not registered, or its organisation is not a member), so the read's "
                "access entry could not be committed",
            )
        self._may_act_until = self.monotonic() + MAY_ACT_TTL
