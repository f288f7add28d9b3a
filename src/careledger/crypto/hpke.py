"""HPKE (RFC 9180, base mode) as every key wrap of the project uses it: DHKEM(X25519),
HKDF-SHA256, AES-256-GCM (`cryptography`'s implementation). Scope keys, naming keys, data
keys (`scopekeys.py`) and break-glass shares (`escrow.py`) are all wrapped with SUITE; each
caller binds its own `info` string and turns a failed open into its own error."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


def x25519_public(key: X25519PublicKey | bytes) -> X25519PublicKey:
    """The key as an X25519PublicKey; ValueError for raw bytes of the wrong length."""
    if isinstance(key, X25519PublicKey):
        return key
    if len(key) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return X25519PublicKey.from_public_bytes(key)
