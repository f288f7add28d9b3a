"""The read interceptor: the one place where this node decides who may read which blob.

Every read of a record blob through this node's API (`GET /blobs/{hash}`, `POST /blobs/fetch`)
is decided by `ConsentGuard.decide(caller, purpose, hashes, now)`, and nothing else: the
routes only render its decisions. One decision per hash, in order, each an `AccessDecision`
(who, for which organisation, which record, which purpose, when: allowed or denied, with a
reason and the grant that allowed it). Issue 9's audit subscribes to them (`observers`).

The decision itself is the chain's (`records/read_access`, which asks the consent keeper's
`read_decision`): ONE query per request, whatever the number of hashes, on the committed state
this node has. So a revocation takes effect here at the block that commits it, and every node
decides alike from the same state. What the node adds:

- **The time.** `at` is this node's wall clock in unix seconds, not the last block's time: a
  grant ends when its period says, even if blocks stall, and a read is not a consensus event
  (the chain's decision function takes the time as an argument).
- **The purpose** the reader states in the request target (`?purpose=TREAT`), which the request
  signature covers (the signed target includes the query string), so it cannot be changed in
  flight or replayed under another purpose. A code outside PURPOSES is refused by the route
  with 400 `malformed` before anything is decided (`stated_purpose`); no purpose at all is a
  decision like any other: the chain denies a non-patient with "no purpose stated" (403).
- **Bounded work.** The routes cap a request at MAX_FETCH hashes; malformed hashes are decided
  here (400) without asking the chain, and duplicates are asked once. The chain's decision
  scans only the grants indexed under the reader and its organisation for the patient.
- **Failing closed.** A chain query that fails denies every hash of the request (503); an
  observer that raises stops the read (the route answers 500, nothing is served), so a blob
  is never served without its decision reaching every observer.
- **Audit.** The `auditor` (issue 9, `node/audit/observer.py`) is awaited first: it journals
  the request's entries durably and signs a receipt, which the routes send as the
  `CareLedger-Audit` header (`protocol/receipts.py`). Observers are awaited after it, and
  both before `decide` returns, so before any byte of the response.

Replication between member nodes is not a read (ciphertext moves between custodians who hold
all of it anyway) and does not pass here: `POST /replication/fetch` admits member
organisations only (`require_replication_peer`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.datastructures import QueryParams

from careledger.chain.app import QueryResult
from careledger.chain.modules.consent import PURPOSES
from careledger.node.auth import Caller
from careledger.node.errors import ApiError
from careledger.protocol.receipts import HEADER as RECEIPT_HEADER
from careledger.protocol.receipts import AuditReceipt

READ_ACCESS = "records/read_access"
PURPOSE_PARAM = "purpose"
INLINE_DECISIONS = 4  # at most this many hashes are decided on the event loop
_HEX64 = re.compile(r"[0-9a-f]{64}")

Clock = Callable[[], int]


def wall_clock_s() -> int:
    """This node's clock in unix seconds: the `at` of its decisions."""
    return time.time_ns() // 1_000_000_000


@dataclass(frozen=True)
class AccessDecision:
    """One decision on one blob read: the shape every read decision has (and the audit's)."""

    blob: str  # the blob hash asked for
    reader: str  # the caller's did
    org: str  # the organisation the reader acts for ("" for a patient)
    patient: str  # whose record ("" when the blob anchors no record)
    record: str  # the record name ("" likewise)
    version: int  # the record version the blob holds (0 likewise)
    scope: str  # the record's scope ("" likewise)
    purpose: str  # as stated by the reader ("" for none)
    allowed: bool
    status: int  # 200 allowed; 400 malformed hash, 403 denied, 404 no record, 410 erased,
    # 503 the chain could not be asked
    reason: str  # why, in words ("patient", "grant ... is for purposes TREAT, not HRESCH")
    grant: str  # the grant that allowed it ("" otherwise)
    at: int  # unix seconds, this node's clock
    basis: str = ""  # the chain's basis of an allowed read: patient, author, grant, delegate,
    # emergency ("" when refused); the audit entry's outcome


class AccessObserver(Protocol):
    async def on_decision(self, decisions: Sequence[AccessDecision]) -> None:
        """Awaited with every request's decisions, in order, before anything is served. It
        runs on the node's event loop: await, do not block. Raising stops the read."""
        ...


class Auditor(Protocol):
    async def audit(self, decisions: Sequence[AccessDecision], request: str) -> AuditReceipt | None:
        """Journal the request's decisions durably before anything is served; the receipt for
        the request whose digest is `request` (None: this node signs none). Raising (ApiError
        503 when the journal is full) stops the read."""
        ...


@dataclass(frozen=True)
class Decided:
    """A request's decisions, one per hash in order, and the receipt of their audit."""

    decisions: list[AccessDecision]
    receipt: AuditReceipt | None = None

    def headers(self) -> dict[str, str]:
        """The response headers that carry the receipt."""
        return {} if self.receipt is None else {RECEIPT_HEADER: self.receipt.header()}


class QueryDriver(Protocol):
    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult: ...


class ConsentGuard:
    """Decides blob reads (see the module's docstring); `observers` hear every decision."""

    def __init__(self, driver: QueryDriver, clock: Clock = wall_clock_s) -> None:
        self.driver = driver
        self.clock = clock
        self.observers: list[AccessObserver] = []
        self.auditor: Auditor | None = None

    async def decide(
        self,
        caller: Caller,
        purpose: str,
        hashes: Sequence[str],
        now: int | None = None,
        request: str = "",
    ) -> Decided:
        """One decision per hash, in order, from one chain query; `now` defaults to the
        node's clock. The auditor journals them (for the request whose digest is `request`,
        `protocol/receipts.request_digest`) and observers hear them before this returns."""
        at = self.clock() if now is None else now
        asked = list(dict.fromkeys(h for h in hashes if _HEX64.fullmatch(h)))
        answers = await self._ask_chain(caller, purpose, asked, at) if asked else {}
        decisions = [
            _decision(caller, purpose, at, digest, answers.get(digest)) for digest in hashes
        ]
        receipt = None
        if self.auditor is not None:
            receipt = await self.auditor.audit(decisions, request)
        for observer in self.observers:
            await observer.on_decision(decisions)
        return Decided(decisions, receipt)

    async def _ask_chain(
        self, caller: Caller, purpose: str, hashes: list[str], at: int
    ) -> dict[str, dict[str, Any]]:
        query = {"reader": caller.did, "purpose": purpose, "at": at, "hashes": hashes}
        # A few hashes are decided on the event loop (tens of microseconds each: less than
        # a worker thread's hand-off); a big fetch's decisions in a worker thread.
        inline = len(hashes) <= INLINE_DECISIONS
        found = await self.driver.query(READ_ACCESS, orjson.dumps(query), inline=inline)
        if found.code != 0:
            unavailable = {"status": 503, "reason": f"cannot ask the chain: {found.log}"}
            return dict.fromkeys(hashes, unavailable)
        answers: list[dict[str, Any]] = orjson.loads(found.value)
        return dict(zip(hashes, answers, strict=True))


def _decision(
    caller: Caller, purpose: str, at: int, digest: str, answer: dict[str, Any] | None
) -> AccessDecision:
    if answer is None:  # not a hash: the chain was not asked
        answer = {"status": 400, "reason": f"not a blob hash: {digest[:80]!r}"}
    status = int(answer["status"])
    return AccessDecision(
        blob=digest,
        reader=caller.did,
        org=caller.org,
        patient=str(answer.get("patient", "")),
        record=str(answer.get("record", "")),
        version=int(answer.get("version", 0)),
        scope=str(answer.get("scope", "")),
        purpose=purpose,
        allowed=status == 200,
        status=status,
        reason=str(answer["reason"]),
        grant=str(answer.get("grant", "")),
        at=at,
        basis=str(answer.get("basis", "")),
    )


def stated_purpose(params: QueryParams) -> str:
    """The purpose a read states in its target (`?purpose=CODE`), "" for none; ApiError 400
    for anything else in the query string, or a purpose that is not one of PURPOSES."""
    unknown = set(params.keys()) - {PURPOSE_PARAM}
    if unknown:
        raise ApiError(400, "malformed", f"unknown query parameter {sorted(unknown)[0]!r}")
    stated = params.getlist(PURPOSE_PARAM)
    if len(stated) > 1:
        raise ApiError(400, "malformed", "state one purpose")
    if not stated:
        return ""
    if stated[0] not in PURPOSES:
        raise ApiError(
            400,
            "malformed",
            f"purpose {stated[0][:40]!r} is not one of {', '.join(PURPOSES)}",
        )
    return stated[0]


def require_replication_peer(caller: Caller) -> None:
    """ApiError 403 unless the caller is a member organisation (its node holds every
    ciphertext anyway). The authentication middleware already refused an identity that may
    not act now: an organisation passes it only while it is a member."""
    if caller.kind != "organisation":
        raise ApiError(
            403,
            "forbidden",
            f"{caller.did} is not a member organisation: replication is between members' nodes",
        )
