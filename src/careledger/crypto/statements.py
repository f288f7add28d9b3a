"""Statements a patient or an identity signs outside a transaction, so that others can check
them later without trusting whoever relays them.

- A scope key statement: the patient vouches that `public_key` is their key for `scope` at
  `epoch`. Writers check it before wrapping a data key, so a node that answers a query with
  a key of its own is caught (DESIGN.md, Records).
- A rotation statement: an identity moves to new keys. The old key signs it (the
  certificate: the chain of certificates leads from the did's own key to the current one)
  and the new key signs it (the proof of possession: nobody rotates to a key they do not
  hold).

Bytes are RFC 8785 of a flat object with a `domain` that differs per statement, so that a
signature over one kind of statement is never a signature over another.
"""

from __future__ import annotations

from careledger.crypto.canonical import canonical_bytes

SCOPE_KEY_DOMAIN = "careledger/scope-key/v1"
ROTATION_DOMAIN = "careledger/rotate-key/v1"


def scope_key_statement(
    chain_id: str, patient: str, scope: str, epoch: int, public_key_hex: str
) -> bytes:
    """What a patient signs when publishing a scope public key (hex, 32 bytes)."""
    return canonical_bytes(
        {
            "domain": SCOPE_KEY_DOMAIN,
            "chain_id": chain_id,
            "patient": patient,
            "scope": scope,
            "epoch": epoch,
            "public_key": public_key_hex,
        }
    )


def rotation_statement(
    chain_id: str, did: str, signing_key_hex: str, encryption_key_hex: str
) -> bytes:
    """What the old key (certificate) and the new key (proof) sign when `did` rotates."""
    return canonical_bytes(
        {
            "domain": ROTATION_DOMAIN,
            "chain_id": chain_id,
            "did": did,
            "signing_key": signing_key_hex,
            "encryption_key": encryption_key_hex,
        }
    )
