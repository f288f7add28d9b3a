"""Which chain queries a caller may ask through the node API, and about whom.

The chain answers any query from committed state; the node API is where the caller is known.
Consent says who treats whom, so its queries are answered only to the parties of that consent
(docs/security.md, "who treats whom"):

  consent/grants?patient=P     P, or an active delegate of P
  consent/readers?patient=P    P, or an active delegate of P
  consent/granted?grantee=G    G itself, or the organisation G acts for (its practitioners'
                               grants are the organisation's business: it holds their keys)
  consent/grant?id=X           X's patient, an active delegate of the patient, X's grantee,
                               or the organisation X's grantee acts for
  records/records?patient=P    P; a party of P's consent in force (a delegate, a grantee, or
  records/versions?patient=P   the organisation of one: `consent/party`); or an organisation
                               that wrote one of the records answered (their `org`)
  records/read_access          never: the consent guard's own question (node-side)
  consent/party                never: this guard's own question
  audit/log?patient=P          P only: who read a patient's records is the patient's to know
  audit/batch, audit/last_seq  member organisations and nodes (batch bookkeeping)
  consent/break_glasses?patient=P   P, or an active delegate of P
  consent/break_glass?id=X     X's patient, an active delegate of the patient, X's requester,
                               or any member organisation (its node releases shares for X)

The same parties guard a transaction's own bytes (`GET /txs/{hash}`), which say as much:
  audit/record_batch           member organisations and nodes, and the patients and readers
                               the batch names (a patient proves its log entries with it)
  consent/break_glass          as consent/break_glass?id= (the reason is in the payload)

Every other query is answered to any registered identity, as before. Member organisations'
node operators hold the whole state anyway; this guards the API, not the disk.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from careledger.chain.tx import decode_tx
from careledger.consensus.driver import ConsensusDriver
from careledger.node.auth import Caller
from careledger.node.errors import ApiError

NODE_ONLY = frozenset({"records/read_access", "consent/party"})
OF_A_PATIENT = frozenset({"consent/grants", "consent/readers", "consent/break_glasses"})
RECORDS_OF_A_PATIENT = frozenset({"records/records", "records/versions"})
AUDIT_LOG = "audit/log"
FOR_MEMBERS_AND_NODES = frozenset({"audit/batch", "audit/last_seq"})
MEMBER_KINDS = frozenset({"organisation", "node"})
RECORD_BATCH = "audit/record_batch"
BREAK_GLASS = "consent/break_glass"


class QueryGuard:
    def __init__(self, driver: ConsensusDriver) -> None:
        self.driver = driver

    async def check(self, caller: Caller, path: str, params: Mapping[str, str]) -> None:
        """ApiError 403 (404 for a node-only query) unless `caller` may ask this."""
        if path in NODE_ONLY:
            raise ApiError(404, "not_found", f"no query {path} on this API")
        if path in OF_A_PATIENT:
            await self._require_patient_side(caller, str(params.get("patient", "")), path)
        elif path == AUDIT_LOG:
            if not caller.did or params.get("patient", "") != caller.did:
                raise ApiError(403, "forbidden", "audit/log: a patient's access log is its own")
        elif path in FOR_MEMBERS_AND_NODES and caller.kind not in MEMBER_KINDS:
            raise ApiError(403, "forbidden", f"{path}: for member organisations and their nodes")
        elif path == "consent/granted":
            grantee = params.get("grantee", "")
            if not grantee or grantee not in (caller.did, caller.org):
                raise ApiError(
                    403, "forbidden", "only a grantee (or its organisation) lists its grants"
                )

    async def check_records(self, caller: Caller, params: Mapping[str, str], answer: Any) -> None:
        """After `records/records` or `records/versions`: 403 unless `caller` is the patient,
        a party of its consent, or the organisation that wrote one of the records answered
        (it reads what it wrote without a grant: docs/design-changes.md 13)."""
        patient = str(params.get("patient", ""))
        if caller.did == patient or await self._party(caller, patient):
            return
        rows = answer if isinstance(answer, list) else [answer, *answer.get("history", [])]
        if caller.org and any(row.get("org") == caller.org for row in rows):
            return
        raise ApiError(
            403, "forbidden", "a patient's records are listed only to the parties of its consent"
        )

    async def _party(self, caller: Caller, patient: str) -> bool:
        query = {"patient": patient, "did": caller.did, "at": str(int(time.time()))}
        if caller.org:
            query["org"] = caller.org
        found = await self.driver.query("consent/party", orjson.dumps(query))
        return found.code == 0 and bool(orjson.loads(found.value)["party"])

    async def check_grant(self, caller: Caller, grant: Mapping[str, Any]) -> None:
        """After `consent/grant?id=`: 403 unless `caller` is a party of the grant."""
        if caller.did in (grant.get("patient"), grant.get("grantee")):
            return
        if caller.org and caller.org in (grant.get("grantee"), grant.get("org")):
            return
        await self._require_patient_side(caller, str(grant.get("patient", "")), "consent/grant")

    async def check_break_glass(self, caller: Caller, glass: Mapping[str, Any]) -> None:
        """After `consent/break_glass?id=`: 403 unless `caller` is its patient or requester,
        or a member organisation or its node (the middleware admits them only while the
        organisation is a member), or an active delegate of the patient."""
        if caller.did in (glass.get("patient"), glass.get("requester")):
            return
        if caller.kind in ("organisation", "node"):
            return
        patient = str(glass.get("patient", ""))
        await self._require_patient_side(caller, patient, "consent/break_glass")

    async def check_transaction(self, caller: Caller, found: Mapping[str, Any]) -> None:
        """After `GET /txs/{hash}`: 403 unless `caller` may see this transaction's payload
        (the module's docstring: audit batches and break-glasses; every other type, as any
        query, to any registered identity)."""
        tx = decode_tx(bytes.fromhex(str(found["tx"]))).tx
        if tx.type == RECORD_BATCH and caller.kind not in MEMBER_KINDS:
            if caller.did not in tx.payload.get("parties", []):
                raise ApiError(
                    403,
                    "forbidden",
                    "an audit batch is shown to members, nodes and the parties it names",
                )
        elif tx.type == BREAK_GLASS:
            glass = {"patient": tx.payload.get("patient"), "requester": tx.sender}
            await self.check_break_glass(caller, glass)

    async def _require_patient_side(self, caller: Caller, patient: str, path: str) -> None:
        if caller.did == patient or await self._delegate_of(caller.did, patient):
            return
        raise ApiError(
            403, "forbidden", f"{path}: only the patient or a delegate of the patient may ask"
        )

    async def _delegate_of(self, did: str, patient: str) -> bool:
        if not patient:
            return False
        found = await self.driver.query("consent/grants", orjson.dumps({"patient": patient}))
        if found.code != 0:
            return False
        now = int(time.time())
        return any(
            g["action"] == "delegate"
            and g["grantee"] == did
            and not g["revoked_at"]
            and g["start"] <= now < g["end"]
            for g in orjson.loads(found.value)
        )
