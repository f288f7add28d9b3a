"""The identity module's state: its keys and the only code that reads or writes them.

Layout under the `identity/` prefix:
  id/<did>                    the identity: kind, current keys, key history (`keys`: each
                              signing key and the height it took effect), organisation, active;
                              a patient's `enrolled_by`: the member whose voucher or
                              enrolment registered it;
                              a node's `org`: the member whose node it is
  member/<did>                a member organisation of the consortium
  staff/<org did>/<did>       a practitioner registered by an organisation
  proposal/<action>/<did>     an open vote to admit or remove an organisation
  used/<sha256>               a voucher or consent already used (vouchers.py), and when
  enrolled/<did>/<org did>    a member's enrolment of a patient's did, until the patient
                              registers with it (enrolments.py)
  key/<signing key hex>       the did a signing key belongs to: every did's own key and
                              every key rotated to, never deleted, so that a key signs for
                              one identity only (and a rotated-away key is never taken again)

Who may act (`acting_identity`): an active identity; an organisation only while it is a
member; a practitioner or a node only while active *and* its organisation is a member. A removed
organisation's practitioners keep their rows (with `active` true) but lose all authority the
moment the removal commits, without the removal having to touch each of them.
"""

from __future__ import annotations

from typing import Any

from careledger.chain.state import KV
from careledger.crypto.keys import ed25519_from_did

MODULE = "identity"
KINDS = ("organisation", "practitioner", "patient", "node")
# Kinds that act for an organisation (their `org`), and only while it is a member.
STAFF_KINDS = ("practitioner", "node")


class IdentityKeeper:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    @staticmethod
    def full_key(key: str) -> bytes:
        """The state store's key for one of this module's keys (to read ahead)."""
        return KV.full_key(MODULE, key)

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

    def acting_identity(self, did: str) -> dict[str, Any] | None:
        """The identity if it may act now (send transactions, write, vouch), else None."""
        ident = self.identity(did)
        return ident if ident is not None and self.may_act(ident) else None

    def may_act(self, ident: dict[str, Any]) -> bool:
        if not ident["active"]:
            return False
        if ident["kind"] == "organisation":
            return self.is_member(ident["did"])
        if ident["kind"] in STAFF_KINDS:
            return self.is_member(str(ident.get("org", "")))
        return True

    def acting_for(self, did: str) -> str | None:
        """The member organisation on whose authority `did` acts: itself for a member, its
        organisation for an active practitioner or node of a member; None for anyone else
        (patients, deregistered practitioners, those of a removed organisation)."""
        ident = self.acting_identity(did)
        if ident is None or ident["kind"] == "patient":
            return None
        return did if ident["kind"] == "organisation" else str(ident["org"])

    def signing_key(self, did: str) -> bytes:
        """The key that must sign for this did: its registered key, else the did's own."""
        ident = self.identity(did)
        if ident is not None:
            return bytes.fromhex(ident["signing_key"])
        return ed25519_from_did(did)

    def signing_keys_at(self, did: str, height: int) -> list[bytes]:
        """Every signing key in force for `did` at some point of block `height`, oldest first.

        Usually one. In the block that rotated the key, two (or more): transactions before
        the rotation were signed by the old key, those after it by the new one. Empty when
        the did was not registered at that height.
        """
        ident = self.identity(did)
        if ident is None:
            return []
        keys = [k for k in ident["keys"] if k["since"] <= height]
        before = [k for k in keys if k["since"] < height][-1:]
        during = [k for k in keys if k["since"] == height]
        return [bytes.fromhex(k["signing_key"]) for k in before + during]

    def signing_key_at(self, did: str, height: int) -> bytes | None:
        """The key in force for `did` at the end of block `height` (None if unregistered then).

        For a transaction in the very block that rotated the key, the key that signed it may
        be the previous one: `signing_keys_at` gives both.
        """
        keys = self.signing_keys_at(did, height)
        return keys[-1] if keys else None

    def key_holder(self, signing_key: str) -> str | None:
        """The did this signing key (hex) is or was the key of, if any."""
        value = self.kv.get(f"key/{signing_key}")
        return value if isinstance(value, str) else None

    def claim_key(self, signing_key: str, did: str) -> None:
        self.kv.set(f"key/{signing_key}", did)

    def statement_used(self, digest: str) -> bool:
        return self.kv.has(f"used/{digest}")

    def use_statement(self, digest: str, height: int) -> None:
        self.kv.set(f"used/{digest}", {"height": height})

    def is_enrolled(self, did: str, org: str) -> bool:
        return self.kv.has(f"enrolled/{did}/{org}")

    def enrol(self, did: str, org: str, height: int) -> None:
        self.kv.set(f"enrolled/{did}/{org}", {"height": height})

    def unenrol(self, did: str, org: str) -> None:
        self.kv.delete(f"enrolled/{did}/{org}")

    def is_member(self, did: str) -> bool:
        return self.kv.has(f"member/{did}")

    def members(self) -> list[dict[str, Any]]:
        return [value for _, value in self.kv.items("member/")]

    def member_with_validator_key(self, validator_pub_key: str) -> str | None:
        """The member whose consensus key this is, if any (keys are unique among members)."""
        for member in self.members():
            if member.get("validator_pub_key") == validator_pub_key:
                return str(member["did"])
        return None

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
