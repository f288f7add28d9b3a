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
  records/read_access          never: it is the consent guard's own question (node-side)

Every other query is answered to any registered identity, as before. Member organisations'
node operators hold the whole state anyway; this guards the API, not the disk.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from careledger.consensus.driver import ConsensusDriver
from careledger.node.auth import Caller
from careledger.node.errors import ApiError

NODE_ONLY = frozenset({"records/read_access"})
OF_A_PATIENT = frozenset({"consent/grants", "consent/readers"})


class QueryGuard:
    def __init__(self, driver: ConsensusDriver) -> None:
        self.driver = driver

    async def check(self, caller: Caller, path: str, params: Mapping[str, str]) -> None:
        """ApiError 403 (404 for a node-only query) unless `caller` may ask this."""
        if path in NODE_ONLY:
            raise ApiError(404, "not_found", f"no query {path} on this API")
        if path in OF_A_PATIENT:
            await self._require_patient_side(caller, str(params.get("patient", "")), path)
        elif path == "consent/granted":
            grantee = params.get("grantee", "")
            if not grantee or grantee not in (caller.did, caller.org):
                raise ApiError(
                    403, "forbidden", "only a grantee (or its organisation) lists its grants"
                )

    async def check_grant(self, caller: Caller, grant: Mapping[str, Any]) -> None:
        """After `consent/grant?id=`: 403 unless `caller` is a party of the grant."""
        if caller.did in (grant.get("patient"), grant.get("grantee")):
            return
        if caller.org and caller.org in (grant.get("grantee"), grant.get("org")):
            return
        await self._require_patient_side(caller, str(grant.get("patient", "")), "consent/grant")

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
