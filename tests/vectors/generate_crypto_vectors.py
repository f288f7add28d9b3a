"""GENERATOR of tests/vectors/crypto_vectors.json. Run by hand, never by the test suite.

    PYTHONPATH=src python tests/vectors/generate_crypto_vectors.py

Run it only when the scheme changes (docs/crypto.md), then review the diff of the JSON: the
test (tests/test_crypto_vectors.py) does not trust this script. It checks every value in the
JSON against an independent computation (hashlib, hmac, PyNaCl's libsodium, `cryptography`'s
primitives, rfc8785, published RFC vectors) and against the code, and it never writes the file.

ALL KEYS, SALTS AND NONCES HERE ARE PUBLIC TEST VECTORS, NEVER TO BE USED FOR REAL DATA.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from careledger.crypto import envelope, scopekeys
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.envelope import BlobOwner, RecordBinding, WrappedKey
from careledger.crypto.keys import Identity
from careledger.crypto.naming import record_name

VECTORS = Path(__file__).parent / "crypto_vectors.json"

RESOURCE = {
    "resourceType": "Observation",
    "id": "obs-test-1",
    "meta": {"versionId": "1"},
    "status": "final",
    "code": {"text": "Body temperature \u00e9\u2713"},
    "valueQuantity": {"value": 37.5, "unit": "Cel"},
    "effectiveDateTime": "2024-01-02T03:04:05Z",
}


def pattern(start: int) -> bytes:
    """32 recognisable bytes (start, start+1, ...): obviously a test value."""
    return bytes((start + i) % 256 for i in range(32))


def _frame(canonical: bytes) -> bytes:
    """Keep the stored zstd frame while it still holds these bytes: another zstd version may
    compress differently, and the frame is an input of the ciphertext."""
    if VECTORS.exists():
        stored = bytes.fromhex(json.loads(VECTORS.read_text())["record"]["zstd_frame"])
        if zstandard.ZstdDecompressor().decompress(stored) == canonical:
            return stored
    return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(canonical)


def build_vectors() -> dict[str, Any]:
    master = pattern(0x00)
    patient = Identity(master)
    identity = _identity_section(patient)
    scope_root = patient.secret("scope-keys")
    scope_key = scopekeys.derive_scope_key(scope_root, "diagnostics", 1)
    scope_public = scopekeys.ScopePublic("diagnostics", 1, scope_key.public_bytes)

    binding = RecordBinding(patient.did, "Observation", "obs-test-1", 1)
    canonical = canonical_bytes(RESOURCE)
    frame = _frame(canonical)
    data_key, nonce, salt = pattern(0x40), pattern(0x60)[:12], pattern(0x80)
    sealed = envelope._seal_frame(frame, canonical, binding, data_key, nonce, salt)

    # The record's on-chain name, keyed with the patient's naming key (docs/crypto.md 7.1).
    naming_key = patient.secret("naming-key")
    owner = BlobOwner(binding.patient, record_name(naming_key, "Observation", "obs-test-1"))
    ephemeral_1 = pattern(0xA0)
    info_1 = scopekeys.data_key_info(owner, scope_public.recipient)
    plaintext_1 = scopekeys.data_key_plaintext(data_key, binding)
    wrapped_1 = scopekeys._hpke_seal_with_ephemeral(
        scope_key.public_bytes, info_1, plaintext_1, ephemeral_1
    )

    grantee_private = pattern(0xC0)
    grantee_public = X25519PrivateKey.from_private_bytes(grantee_private).public_key()
    grantee = "did:key:z6MkTestVectorGranteeOnly"
    ephemeral_2 = pattern(0xE0)
    info_2 = scopekeys.grant_info(binding.patient, "diagnostics", 1, grantee)
    wrapped_2 = scopekeys._hpke_seal_with_ephemeral(
        grantee_public.public_bytes_raw(), info_2, scope_key.private_bytes(), ephemeral_2
    )
    blob = envelope.pack_record_blob(
        owner, [WrappedKey(scope_public.recipient, wrapped_1)], sealed.ciphertext
    )
    return {
        "WARNING": "PUBLIC TEST VECTORS: these keys protect nothing; never use them for data",
        "scheme": (
            "careledger records crypto v1, data-key wrap v2, record blob format 3 (docs/crypto.md)"
        ),
        "generated_by": "tests/vectors/generate_crypto_vectors.py (by hand; never by a test)",
        "identity": identity,
        "scope_key": {
            "master_secret": master.hex(),
            "secret_label": "scope-keys",
            "scope_root": scope_root.hex(),
            "scope": "diagnostics",
            "epoch": 1,
            "scope_private_key": scope_key.private_bytes().hex(),
            "scope_public_key": scope_key.public_bytes.hex(),
        },
        "record": {
            "patient": binding.patient,
            "resource_type": binding.resource_type,
            "resource_id": binding.resource_id,
            "version": binding.version,
            "resource": RESOURCE,
            "canonical_utf8": canonical.decode(),
            "canonical": canonical.hex(),
            "aad": binding.aad().hex(),
            "salt": salt.hex(),
            "commitment": sealed.commitment.hex(),
            "zstd_frame": frame.hex(),
            "data_key": data_key.hex(),
            "nonce": nonce.hex(),
            "ciphertext": sealed.ciphertext.hex(),
        },
        "data_key_wrap": {
            "recipient": scope_public.recipient,
            "info": info_1.hex(),
            "plaintext": plaintext_1.hex(),
            "ephemeral_private_key": ephemeral_1.hex(),
            "wrapped": wrapped_1.hex(),
        },
        "scope_key_grant": {
            "grantee": grantee,
            "grantee_private_key": grantee_private.hex(),
            "grantee_public_key": grantee_public.public_bytes_raw().hex(),
            "info": info_2.hex(),
            "ephemeral_private_key": ephemeral_2.hex(),
            "wrapped": wrapped_2.hex(),
        },
        "record_blob": {
            "naming_key": naming_key.hex(),
            "patient": owner.patient,
            "record": owner.record,
            "blob": blob.hex(),
            "sha256": hashlib.sha256(blob).hexdigest(),
        },
    }


def _identity_section(identity: Identity) -> dict[str, str]:
    keys = identity._derived()
    return {
        "master_secret": identity.master.hex(),
        "ed25519_seed": keys.signing.private_bytes_raw().hex(),
        "ed25519_public_key": identity.signing_public.hex(),
        "did": identity.did,
        "x25519_private_key": keys.encryption.private_bytes_raw().hex(),
        "x25519_public_key": identity.encryption_public.hex(),
    }


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(build_vectors(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}: review the diff before committing it")
