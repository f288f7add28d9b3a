"""The test vectors of docs/crypto.md: the code must reproduce them byte for byte.

ALL KEYS, SALTS AND NONCES HERE ARE PUBLIC TEST VECTORS, NEVER TO BE USED FOR REAL DATA.
Regenerate (only when the scheme version changes): python tests/test_crypto_vectors.py --write
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from careledger.crypto import envelope, scopekeys
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.envelope import RecordBinding, WrappedKey

VECTORS = Path(__file__).parent / "vectors" / "crypto_vectors.json"


def pattern(start: int) -> bytes:
    """32 recognisable bytes (start, start+1, ...): obviously a test value."""
    return bytes((start + i) % 256 for i in range(32))


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def build_vectors(frame: bytes | None = None) -> dict[str, Any]:
    """All vectors; ``frame`` pins the zstd output, which another zstd version may change."""
    master = pattern(0x00)
    scope_root = hkdf_sha256(master, b"careledger/keys/v1", b"careledger/v1/scope-keys")
    scope_key = scopekeys.derive_scope_key(scope_root, "diagnostics", 1)
    scope_public = scopekeys.ScopePublic("diagnostics", 1, scope_key.public_bytes)

    resource = {
        "resourceType": "Observation",
        "id": "obs-test-1",
        "meta": {"versionId": "1"},
        "status": "final",
        "code": {"text": "Body temperature \u00e9\u2713"},
        "valueQuantity": {"value": 37.5, "unit": "Cel"},
        "effectiveDateTime": "2024-01-02T03:04:05Z",
    }
    binding = RecordBinding("pseudonym-test-0001", "Observation", "obs-test-1", 1)
    canonical = canonical_bytes(resource)
    if frame is None:
        frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(canonical)
    assert zstandard.ZstdDecompressor().decompress(frame) == canonical
    data_key, nonce, salt = pattern(0x40), pattern(0x60)[:12], pattern(0x80)
    sealed = envelope._seal_frame(frame, canonical, binding, data_key, nonce, salt)

    ephemeral_1 = pattern(0xA0)
    info_1 = scopekeys.data_key_info(binding, scope_public.recipient)
    wrapped_1 = scopekeys._hpke_seal_with_ephemeral(
        scope_key.public_bytes, info_1, data_key, ephemeral_1
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
        [WrappedKey(scope_public.recipient, wrapped_1)], sealed.ciphertext
    )
    return {
        "WARNING": "PUBLIC TEST VECTORS: these keys protect nothing; never use them for data",
        "scheme": "careledger records crypto v1 (docs/crypto.md)",
        "scope_key": {
            "master_secret": master.hex(),
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
            "resource": resource,
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
        "record_blob": {"blob": blob.hex(), "sha256": hashlib.sha256(blob).hexdigest()},
    }


def stored() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())  # type: ignore[no-any-return]


def test_code_reproduces_the_stored_vectors() -> None:
    vectors = stored()
    assert build_vectors(bytes.fromhex(vectors["record"]["zstd_frame"])) == vectors


def test_envelope_compression_is_the_documented_zstd_setting() -> None:
    # Not a compatibility requirement (readers accept any zstd frame), but a change here means
    # the vectors were made with other settings than the code uses.
    canonical = bytes.fromhex(stored()["record"]["canonical"])
    assert envelope._compress(canonical).hex() == stored()["record"]["zstd_frame"]


def test_vectors_open_with_the_public_api() -> None:
    v = stored()
    record, wrap, grant = v["record"], v["data_key_wrap"], v["scope_key_grant"]
    binding = RecordBinding(
        record["patient"], record["resource_type"], record["resource_id"], record["version"]
    )
    scope = scopekeys.ScopePublic(
        "diagnostics", 1, bytes.fromhex(v["scope_key"]["scope_public_key"])
    )
    grantee = X25519PrivateKey.from_private_bytes(bytes.fromhex(grant["grantee_private_key"]))
    scope_key = scopekeys.unwrap_scope_key(
        bytes.fromhex(grant["wrapped"]), record["patient"], scope, grant["grantee"], grantee
    )
    parsed = envelope.unpack_record_blob(bytes.fromhex(v["record_blob"]["blob"]))
    data_key = scopekeys.unwrap_data_key(parsed.wrapped_keys[0], binding, scope_key)
    assert data_key.hex() == record["data_key"]
    assert parsed.wrapped_keys[0].wrapped.hex() == wrap["wrapped"]
    opened = envelope.open_record(parsed.ciphertext, data_key, binding)
    assert opened.resource() == record["resource"]
    assert opened.commitment.hex() == record["commitment"]


def test_scope_root_matches_the_identity_secret_when_keys_module_exists() -> None:
    try:
        from careledger.crypto.keys import Identity
    except ImportError:  # the foundation's keys module is optional for this check
        return
    master = bytes.fromhex(stored()["scope_key"]["master_secret"])
    identity = Identity(master)
    assert identity.secret("scope-keys").hex() == stored()["scope_key"]["scope_root"]


if __name__ == "__main__" and "--write" in sys.argv:
    VECTORS.write_text(json.dumps(build_vectors(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {VECTORS}")
