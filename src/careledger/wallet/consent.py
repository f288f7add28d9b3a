"""Consent as the patient gives it: grant, revoke, list (the chain's consent module).

    consent = ConsentClient(NodeClient(url), patient_keyfile)
    grant_id = consent.grant(org_did, scopes=BROAD_SCOPES, purposes=("TREAT",), end=...)
    consent.revoke(grant_id)      # and new epochs for everyone else who still holds the keys

A grant is enforced twice. By keys: a read grant wraps the granted scopes' private keys (every
epoch published so far) and the patient's naming key to the grantee organisation's
encryption key, so the organisation can open those records, including ones written later in
the same epoch. By policy: the nodes serve a blob only to a caller the committed grants allow,
for the purpose it states (a practitioner-level grant is enforced only there: the keys are
the organisation's).

A revocation ends the policy at the next block. Cryptographically the revoked party still
holds the old epochs' keys, so the revoke also starts a new epoch of every scope it covered
and, once those are committed, wraps the new keys to the remaining grantees of that scope:
records written afterwards go to the new epoch, which the revoked party cannot open.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from careledger.chain.modules.records import scope_key_payload
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.scopekeys import BROAD_SCOPES, wrap_naming_key, wrap_scope_key
from careledger.wallet.node_client import NodeClient, Signer
from careledger.wallet.refs import RecordsError, raise_for

DEFAULT_PURPOSES = ("TREAT",)
YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class Recipient:
    """Who a grant names and whose encryption key its wrapped keys are for."""

    grantee: str
    holder: str  # the organisation (or, for a delegate, the grantee itself)
    holder_key: bytes


class ConsentClient:
    """The patient's consent: every call signs as the patient (`keyfile`)."""

    def __init__(self, node: NodeClient | str, keyfile: KeyFile) -> None:
        self.node = (NodeClient(node) if isinstance(node, str) else node).signed_as(keyfile)
        self.keyfile = keyfile
        self.patient = keyfile.did
        self.signer = Signer(self.node, keyfile.did, keyfile.identity)

    # --- reading ---------------------------------------------------------------------------

    def grants(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """The patient's grants, newest first (revoked ones too unless `active_only`)."""
        found: list[dict[str, Any]] = self.node.query("consent/grants", patient=self.patient)
        now = int(time.time())
        if active_only:
            found = [g for g in found if not g["revoked_at"] and g["end"] > now]
        return found

    def grant_detail(self, grant_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.node.query("consent/grant", id=grant_id)
        return found

    # --- granting ----------------------------------------------------------------------------

    def grant(
        self,
        grantee: str,
        *,
        action: str = "read",
        scopes: Sequence[str] = BROAD_SCOPES,
        purposes: Sequence[str] = DEFAULT_PURPOSES,
        end: int | None = None,
        start: int | None = None,
        records: Sequence[str] = (),
    ) -> str:
        """Grant `grantee` (an organisation, one practitioner, or a delegate) `action` on
        `scopes` (or only `records` of them) for `purposes` until `end` (unix seconds; a
        year from now by default). Returns the grant's id once committed."""
        start = int(time.time()) if start is None else start
        payload: dict[str, Any] = {
            "id": os.urandom(16).hex(),
            "patient": self.patient,
            "grantee": grantee,
            "action": action,
            "scopes": list(scopes),
            "start": start,
            "end": start + YEAR if end is None else end,
        }
        if action == "read" or purposes:
            payload["purposes"] = list(purposes)
        if records:
            payload["records"] = list(records)
        recipient = self.recipient(grantee, action)
        payload["naming_key"] = self._wrapped_naming_key(recipient)
        if action != "write":  # a writer names records; only readers open them
            keys = self._wrapped_scope_keys(recipient, scopes, self.published_epochs())
            if keys:
                payload["keys"] = keys
        self._submit([self.signer.sign("consent/grant", payload)], "grant")
        return str(payload["id"])

    def recipient(self, grantee: str, action: str) -> Recipient:
        """Whose key the grant's wrapped keys are for: the organisation (for a practitioner,
        its organisation: the cryptographic boundary), or a delegate itself."""
        ident = self.node.query("identity/identity", did=grantee)
        holder = grantee
        if action != "delegate" and ident["kind"] == "practitioner":
            holder = str(ident["org"])
            ident = self.node.query("identity/identity", did=holder)
        return Recipient(grantee, holder, bytes.fromhex(ident["encryption_key"]))

    def _wrapped_naming_key(self, recipient: Recipient) -> str:
        return wrap_naming_key(
            self.keyfile.naming_key, self.patient, recipient.holder, recipient.holder_key
        ).hex()

    def _wrapped_scope_keys(
        self, recipient: Recipient, scopes: Iterable[str], epochs: dict[str, list[int]]
    ) -> list[dict[str, Any]]:
        keys = []
        for scope in scopes:
            for epoch in epochs.get(scope, []):
                pair = self.keyfile.scope_key(scope, epoch)
                wrapped = wrap_scope_key(pair, self.patient, recipient.holder, recipient.holder_key)
                keys.append({"scope": scope, "epoch": epoch, "wrapped": wrapped.hex()})
        return keys

    def published_epochs(self) -> dict[str, list[int]]:
        epochs: dict[str, list[int]] = {}
        for row in self.node.query("records/scope_keys", patient=self.patient):
            epochs.setdefault(row["scope"], []).append(int(row["epoch"]))
        return {scope: sorted(found) for scope, found in epochs.items()}

    # --- revoking ------------------------------------------------------------------------------

    def revoke(self, grant_id: str) -> list[str]:
        """Revoke a grant; if it held keys, start a new epoch of each scope it covered and
        share the new keys with the remaining grantees of that scope (the revocation and the
        new epochs in one submission, the shares in the next). Returns the scopes that moved
        to a new epoch."""
        grant = self.grant_detail(grant_id)
        txs = [self.signer.sign("consent/revoke", {"id": grant_id})]
        rotated: list[str] = []
        shares: list[bytes] = []
        if grant["action"] != "write":
            rotated = list(grant["scopes"])
            epochs, shares = self._new_epochs(rotated, exclude=grant_id)
            txs += epochs
        self._submit(txs, "revoke")
        if shares:
            self._submit(shares, "revoke")
        return rotated

    def rotate(self, scopes: Sequence[str], *, exclude: str = "") -> None:
        """Start a new epoch of `scopes` for the current grantees (after a delegate revoked
        a grant, or to retire keys that may have leaked)."""
        epochs, shares = self._new_epochs(scopes, exclude=exclude)
        self._submit(epochs, "rotate")
        if shares:
            self._submit(shares, "rotate")

    def _new_epochs(
        self, scopes: Sequence[str], *, exclude: str
    ) -> tuple[list[bytes], list[bytes]]:
        """The new epochs' scope keys, and their shares with the remaining grantees: two
        submissions, since a share names a published epoch and a batch's transactions reach
        a network's mempools in no set order (nor all in one block)."""
        chain_id = str(self.node.status()["chain_id"])
        current = {s: max(e) for s, e in self.published_epochs().items()}
        new_epochs = {scope: current.get(scope, 0) + 1 for scope in scopes}
        epochs = [
            self.signer.sign(
                "records/publish_scope_key",
                scope_key_payload(
                    self.keyfile.identity,
                    chain_id,
                    scope,
                    epoch,
                    self.keyfile.scope_key(scope, epoch).public_bytes.hex(),
                    self.patient,
                ),
            )
            for scope, epoch in new_epochs.items()
        ]
        shares = []
        for grant in self.grants(active_only=True):
            # A delegation's revocation revokes the grants its delegate made under it too.
            revoked = exclude and exclude in (grant["id"], grant.get("delegation"))
            if revoked or grant["action"] == "write":
                continue
            shared = [s for s in grant["scopes"] if s in new_epochs]
            if not shared:
                continue
            recipient = self.recipient(grant["grantee"], grant["action"])
            keys = self._wrapped_scope_keys(recipient, shared, {s: [new_epochs[s]] for s in shared})
            shares.append(self.signer.sign("consent/share_keys", {"id": grant["id"], "keys": keys}))
        return epochs, shares

    def _submit(self, txs: list[bytes], what: str) -> None:
        results = self.node.submit_many(txs, wait=True)
        for result in results:
            raise_for(result, what)
        if len(results) != len(txs):
            raise RecordsError(f"{what}: the node answered {len(results)} of {len(txs)}", 502)
