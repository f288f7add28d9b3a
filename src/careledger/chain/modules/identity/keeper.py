"""The identity module's state: its keys and the only code that reads or writes them.

Layout under the `identity/` prefix:
  id/<did>                    the identity: kind, current keys, organisation, active
  member/<did>                a member organisation of the consortium
  staff/<org did>/<did>       a practitioner registered by an organisation
  proposal/<action>/<did>     an open vote to admit or remove an organisation
"""

from __future__ import annotations

from typing import Any

from careledger.chain.state import KV
from careledger.crypto.keys import ed25519_from_did

MODULE = "identity"
KINDS = ("organisation", "practitioner", "patient")


class IdentityKeeper:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    def identity(self, did: str) -> dict[str, Any] | None:
        value = self.kv.get(f"id/{did}")
        return value if isinstance(value, dict) else None

    def active(self, did: str, kind: str | None = None) -> dict[str, Any] | None:
        ident = self.identity(did)
        if ident is None or not ident["active"] or (kind and ident["kind"] != kind):
            return None
        return ident

    def put_identity(self, ident: dict[str, Any]) -> None:
        self.kv.set(f"id/{ident['did']}", ident)

    def signing_key(self, did: str) -> bytes:
        """The key that must sign for this did: its registered key, else the did's own."""
        ident = self.identity(did)
        if ident is not None:
            return bytes.fromhex(ident["signing_key"])
        return ed25519_from_did(did)

    def is_member(self, did: str) -> bool:
        return self.kv.has(f"member/{did}")

    def members(self) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items("member/")]

    def put_member(self, member: dict[str, Any]) -> None:
        self.kv.set(f"member/{member['did']}", member)

    def remove_member(self, did: str) -> None:
        self.kv.delete(f"member/{did}")

    def add_staff(self, org: str, did: str) -> None:
        self.kv.set(f"staff/{org}/{did}", 1)

    def remove_staff(self, org: str, did: str) -> None:
        self.kv.delete(f"staff/{org}/{did}")

    def staff(self, org: str) -> list[str]:
        prefix = f"staff/{org}/"
        return [key[len(prefix) :] for key, _ in self.kv.items(prefix)]

    def proposal(self, action: str, subject: str) -> dict[str, Any] | None:
        value = self.kv.get(f"proposal/{action}/{subject}")
        return value if isinstance(value, dict) else None

    def put_proposal(self, proposal: dict[str, Any]) -> None:
        self.kv.set(f"proposal/{proposal['action']}/{proposal['subject']}", proposal)

    def close_proposal(self, action: str, subject: str) -> None:
        self.kv.delete(f"proposal/{action}/{subject}")

    def proposals(self) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items("proposal/")]
