"""GENERATOR of tests/vectors/escrow_vectors.json. Run by hand, never by the test suite.

    PYTHONPATH=src python tests/vectors/generate_escrow_vectors.py

The break-glass escrow (crypto/escrow.py, docs/crypto.md "Break-glass escrow"). Shamir's
polynomial and HPKE are randomised, so the vectors fix what a second implementation must
reproduce or accept: the secret S, its shares (any k of them give S back), K, the bundle's
bytes and, for a fixed nonce, the sealed bundle. tests/test_escrow.py checks every value
against an independent computation and against the code; it never writes the file.

ALL SECRETS HERE ARE PUBLIC TEST VECTORS, NEVER TO BE USED FOR REAL DATA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from careledger.crypto import escrow
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity

VECTORS = Path(__file__).parent / "escrow_vectors.json"
SCOPES = ("clinical", "diagnostics", "medications")


def pattern(start: int, size: int = 32) -> bytes:
    return bytes((start + i) % 256 for i in range(size))


def build_vectors() -> dict[str, Any]:
    patient = KeyFile(Identity(pattern(0x00)).did, "patient", Identity(pattern(0x00)))
    secret, escrow_id, nonce = pattern(0x10, 16), pattern(0x20, 16).hex(), pattern(0x60, 12)
    bundle = escrow.EmergencyBundle(
        patient.did, patient.naming_key, tuple(patient.scope_key(s, 1) for s in SCOPES)
    )
    shares = _stored_shares() or escrow.split_secret(secret, escrow_id, 2, 3)
    return {
        "note": "public test vectors: the secrets here protect nothing",
        "patient": patient.did,
        "escrow": escrow_id,
        "secret": secret.hex(),
        "threshold": 2,
        "shares": [{"index": s.index, "value": s.value.hex()} for s in shares],
        "emergency_key": escrow.emergency_key(secret, patient.did).hex(),
        "bundle": bundle.to_bytes().decode(),
        "aad": escrow.bundle_aad(patient.did, escrow_id).hex(),
        "nonce": nonce.hex(),
        "sealed": escrow.seal_bundle(bundle, secret, escrow_id, nonce).hex(),
        "share_info": escrow.share_info(patient.did, escrow_id, "did:example:member", 1).hex(),
        "release_info": escrow.release_info(
            patient.did, escrow_id, "did:example:member", 1, "did:example:requester"
        ).hex(),
    }


def _stored_shares() -> list[escrow.Share]:
    """Keep the stored shares (Shamir's coefficients are random) while they still give S."""
    if not VECTORS.exists():
        return []
    stored = json.loads(VECTORS.read_text())
    return [
        escrow.Share(stored["escrow"], s["index"], bytes.fromhex(s["value"]))
        for s in stored["shares"]
    ]


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(build_vectors(), indent=2) + "\n")
    print(f"wrote {VECTORS}")
