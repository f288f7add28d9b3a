"""The test vectors of docs/crypto.md, checked twice and never written here.

1. Every value of tests/vectors/crypto_vectors.json is recomputed *independently* of the code
   under test: hmac/hashlib for HKDF and SHA-256 (the HKDF helper itself checked against RFC
   5869), PyNaCl's libsodium for Ed25519 and X25519 public keys (checked against RFC 8032 and
   RFC 7748), `cryptography`'s AES-GCM and HPKE primitives directly, `rfc8785` for canonical
   JSON, and the byte layouts written out here from the document.
2. The code reproduces every value.

So a change of the code cannot pass by regenerating the file: the JSON must also agree with
the independent computation. The file is made by tests/vectors/generate_crypto_vectors.py, by
hand. Anything missing (a module, a package) fails the collection; nothing is skipped.

ALL KEYS, SALTS AND NONCES HERE ARE PUBLIC TEST VECTORS, NEVER TO BE USED FOR REAL DATA.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
import rfc8785
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.signing import SigningKey

from careledger.crypto import envelope, scopekeys
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.envelope import BlobOwner, RecordBinding, WrappedKey
from careledger.crypto.keys import Identity
from careledger.crypto.naming import record_name

VECTORS = Path(__file__).parent / "vectors" / "crypto_vectors.json"
HPKE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


@pytest.fixture(scope="module")
def v() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def h(value: str) -> bytes:
    return bytes.fromhex(value)


# --- independent primitives, each checked against its published vectors ------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with hmac, written out here (not the code's HKDF)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def x25519_public(private: bytes) -> bytes:
    """libsodium's X25519 (clamping), not `cryptography`'s OpenSSL one the code uses."""
    return bytes(nacl.bindings.crypto_scalarmult_base(private))


def ed25519_public(seed: bytes) -> bytes:
    """libsodium's Ed25519, not `cryptography`'s OpenSSL one the code uses."""
    return bytes(SigningKey(seed).verify_key)


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def lp(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def test_hkdf_helper_reproduces_rfc5869_test_case_1() -> None:
    okm = hkdf_sha256(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm == h(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    by_cryptography = HKDF(hashes.SHA256(), 42, bytes(range(13)), bytes(range(0xF0, 0xFA)))
    assert by_cryptography.derive(b"\x0b" * 22) == okm


def test_x25519_implementations_reproduce_rfc7748() -> None:
    alice = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_public = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    bob_public = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert x25519_public(alice) == alice_public and x25519_public(bob) == bob_public
    assert X25519PrivateKey.from_private_bytes(alice).public_key().public_bytes_raw() == (
        alice_public
    )
    assert bytes(nacl.bindings.crypto_scalarmult(alice, bob_public)) == shared


def test_ed25519_implementations_reproduce_rfc8032_test_1() -> None:
    seed = h("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = h("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = h(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert ed25519_public(seed) == public
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert key.public_key().public_bytes_raw() == public
    assert key.sign(b"") == signature == SigningKey(seed).sign(b"").signature
    Ed25519PublicKey.from_public_bytes(public).verify(signature, b"")


def test_base58_helper_reproduces_the_base58_draft_examples() -> None:
    assert base58btc(b"Hello World!") == "2NEpo7TZRRrLZSi2U"
    assert base58btc(h("0000287fb4cd")) == "11233QC4"


# --- 1. the stored values against the independent computation ---------------------------


def test_identity_vectors_are_hkdf_then_libsodium(v: dict[str, Any]) -> None:
    ident, salt = v["identity"], b"careledger/keys/v1"
    master = h(ident["master_secret"])
    assert master == bytes(range(32))
    seed = hkdf_sha256(master, salt, b"careledger/v1/ed25519")
    private = hkdf_sha256(master, salt, b"careledger/v1/x25519")
    assert ident["ed25519_seed"] == seed.hex()
    assert ident["ed25519_public_key"] == ed25519_public(seed).hex()
    assert ident["did"] == "did:key:z" + base58btc(b"\xed\x01" + ed25519_public(seed))
    assert ident["x25519_private_key"] == private.hex()
    assert ident["x25519_public_key"] == x25519_public(private).hex()


def test_scope_key_vectors_are_hkdf_then_libsodium(v: dict[str, Any]) -> None:
    sk = v["scope_key"]
    assert sk["master_secret"] == v["identity"]["master_secret"]
    assert sk["secret_label"] == "scope-keys"
    root = hkdf_sha256(
        h(sk["master_secret"]), b"careledger/keys/v1", b"careledger/v1/secret/scope-keys"
    )
    assert sk["scope_root"] == root.hex()
    label = b"careledger-scope-key-v1"
    info = label + lp(sk["scope"]) + struct.pack(">I", sk["epoch"])
    private = HKDF(hashes.SHA256(), 32, label, info).derive(root)
    assert sk["scope_private_key"] == private.hex()
    assert sk["scope_public_key"] == x25519_public(private).hex()


def test_record_vectors_are_jcs_sha256_and_aes_gcm(v: dict[str, Any]) -> None:
    rec = v["record"]
    assert rec["patient"] == v["identity"]["did"]
    canonical = rfc8785.dumps(rec["resource"])
    assert rec["canonical"] == canonical.hex() and rec["canonical_utf8"] == canonical.decode()
    binding = (
        lp(rec["patient"])
        + lp(rec["resource_type"])
        + lp(rec["resource_id"])
        + struct.pack(">I", rec["version"])
    )
    aad = b"careledger-record-v1" + binding
    assert rec["aad"] == aad.hex()
    salt = h(rec["salt"])
    commitment = hashlib.sha256(b"careledger-commitment-v1" + salt + canonical).digest()
    assert rec["commitment"] == commitment.hex()
    frame = h(rec["zstd_frame"])
    assert zstandard.ZstdDecompressor().decompress(frame) == canonical
    nonce, data_key = h(rec["nonce"]), h(rec["data_key"])
    sealed = b"\x01" + nonce + AESGCM(data_key).encrypt(nonce, salt + frame, aad)
    assert rec["ciphertext"] == sealed.hex()


def test_data_key_wrap_vector_is_rfc9180_hpke(v: dict[str, Any]) -> None:
    """Wrap v2: the info names the owner (patient, record name) and the recipient, never the
    id; the plaintext carries the data key, then the record's type, id and version."""
    rec, wrap, blob = v["record"], v["data_key_wrap"], v["record_blob"]
    info = (
        b"careledger-datakey-wrap-v2"
        + lp(rec["patient"])
        + lp(blob["record"])
        + lp(wrap["recipient"])
    )
    assert wrap["recipient"] == "scope/diagnostics/1"
    assert wrap["info"] == info.hex()
    plaintext = (
        h(rec["data_key"])
        + lp(rec["resource_type"])
        + lp(rec["resource_id"])
        + struct.pack(">I", rec["version"])
    )
    assert wrap["plaintext"] == plaintext.hex()
    wrapped = h(wrap["wrapped"])
    assert len(wrapped) == 32 + len(plaintext) + 16
    assert wrapped[:32] == x25519_public(h(wrap["ephemeral_private_key"]))  # enc
    scope_private = X25519PrivateKey.from_private_bytes(h(v["scope_key"]["scope_private_key"]))
    assert HPKE.decrypt(wrapped, scope_private, info) == plaintext


def test_scope_key_grant_vector_is_rfc9180_hpke(v: dict[str, Any]) -> None:
    grant = v["scope_key_grant"]
    info = (
        b"careledger-scopekey-grant-v1"
        + lp(v["record"]["patient"])
        + lp("diagnostics")
        + struct.pack(">I", 1)
        + lp(grant["grantee"])
    )
    assert grant["info"] == info.hex()
    grantee_private = h(grant["grantee_private_key"])
    assert grant["grantee_public_key"] == x25519_public(grantee_private).hex()
    wrapped = h(grant["wrapped"])
    assert wrapped[:32] == x25519_public(h(grant["ephemeral_private_key"]))
    opened = HPKE.decrypt(wrapped, X25519PrivateKey.from_private_bytes(grantee_private), info)
    assert opened == h(v["scope_key"]["scope_private_key"])


def test_record_blob_vector_is_the_documented_layout(v: dict[str, Any]) -> None:
    rec, blob = v["record"], v["record_blob"]
    naming_key = hkdf_sha256(
        h(v["identity"]["master_secret"]),
        b"careledger/keys/v1",
        b"careledger/v1/secret/naming-key",
    )
    assert blob["naming_key"] == naming_key.hex()
    message = b"careledger-record-name-v2" + lp(rec["resource_type"]) + lp(rec["resource_id"])
    name = hmac.new(naming_key, message, hashlib.sha256).hexdigest()
    assert blob["patient"] == rec["patient"] and blob["record"] == name
    wrapped = h(v["data_key_wrap"]["wrapped"])
    expected = (
        b"CLB\x03"
        + lp(blob["patient"])
        + lp(blob["record"])
        + b"\x01"
        + lp(v["data_key_wrap"]["recipient"])
        + struct.pack(">H", len(wrapped))
        + wrapped
        + h(rec["ciphertext"])
    )
    assert blob["blob"] == expected.hex()
    assert blob["sha256"] == hashlib.sha256(expected).hexdigest()


def test_vectors_say_they_are_test_vectors(v: dict[str, Any]) -> None:
    assert "PUBLIC TEST VECTORS" in v["WARNING"]
    fixed = [v["identity"]["master_secret"], v["record"]["data_key"], v["record"]["salt"]]
    assert [x[:8] for x in fixed] == ["00010203", "40414243", "80818283"]


# --- 2. the code reproduces every stored value ------------------------------------------


def test_code_derives_the_identity_vectors(v: dict[str, Any]) -> None:
    ident = v["identity"]
    identity = Identity(h(ident["master_secret"]))
    assert identity.signing_public.hex() == ident["ed25519_public_key"]
    assert identity.did == ident["did"]
    assert identity.encryption_public.hex() == ident["x25519_public_key"]
    assert identity.encryption_private.private_bytes_raw().hex() == ident["x25519_private_key"]
    assert identity.secret("scope-keys").hex() == v["scope_key"]["scope_root"]
    assert identity.secret("naming-key").hex() == v["record_blob"]["naming_key"]


def test_code_derives_the_scope_key_vectors(v: dict[str, Any]) -> None:
    sk = v["scope_key"]
    pair = scopekeys.derive_scope_key(h(sk["scope_root"]), sk["scope"], sk["epoch"])
    assert pair.private_bytes().hex() == sk["scope_private_key"]
    assert pair.public_bytes.hex() == sk["scope_public_key"]


def _binding(v: dict[str, Any]) -> RecordBinding:
    rec = v["record"]
    return RecordBinding(rec["patient"], rec["resource_type"], rec["resource_id"], rec["version"])


def test_code_seals_the_record_vectors(v: dict[str, Any]) -> None:
    rec = v["record"]
    binding = _binding(v)
    assert canonical_bytes(rec["resource"]).hex() == rec["canonical"]
    assert binding.aad().hex() == rec["aad"]
    sealed = envelope._seal_frame(
        h(rec["zstd_frame"]),
        h(rec["canonical"]),
        binding,
        h(rec["data_key"]),
        h(rec["nonce"]),
        h(rec["salt"]),
    )
    assert sealed.ciphertext.hex() == rec["ciphertext"]
    assert sealed.commitment.hex() == rec["commitment"]


def test_envelope_compression_is_the_documented_zstd_setting(v: dict[str, Any]) -> None:
    # Not a compatibility requirement (readers accept any zstd frame), but a change here means
    # the vectors were made with other settings than the code uses.
    assert envelope._compress(h(v["record"]["canonical"])).hex() == v["record"]["zstd_frame"]


def test_code_wraps_and_grants_as_the_vectors(v: dict[str, Any]) -> None:
    wrap, grant, sk = v["data_key_wrap"], v["scope_key_grant"], v["scope_key"]
    binding = _binding(v)
    owner = BlobOwner(binding.patient, v["record_blob"]["record"])
    info_1 = scopekeys.data_key_info(owner, wrap["recipient"])
    assert info_1.hex() == wrap["info"]
    plaintext = scopekeys.data_key_plaintext(h(v["record"]["data_key"]), binding)
    assert plaintext.hex() == wrap["plaintext"]
    sealed_1 = scopekeys._hpke_seal_with_ephemeral(
        h(sk["scope_public_key"]), info_1, plaintext, h(wrap["ephemeral_private_key"])
    )
    assert sealed_1.hex() == wrap["wrapped"]
    info_2 = scopekeys.grant_info(binding.patient, "diagnostics", 1, grant["grantee"])
    assert info_2.hex() == grant["info"]
    sealed_2 = scopekeys._hpke_seal_with_ephemeral(
        h(grant["grantee_public_key"]),
        info_2,
        h(sk["scope_private_key"]),
        h(grant["ephemeral_private_key"]),
    )
    assert sealed_2.hex() == grant["wrapped"]


def test_code_packs_the_record_blob_vector(v: dict[str, Any]) -> None:
    rec, blob = v["record"], v["record_blob"]
    owner = BlobOwner(blob["patient"], blob["record"])
    keys = [WrappedKey(v["data_key_wrap"]["recipient"], h(v["data_key_wrap"]["wrapped"]))]
    packed = envelope.pack_record_blob(owner, keys, h(rec["ciphertext"]))
    assert packed.hex() == blob["blob"]
    assert envelope.record_blob_owner(packed) == owner


def test_vectors_open_with_the_public_api(v: dict[str, Any]) -> None:
    rec, grant = v["record"], v["scope_key_grant"]
    binding = _binding(v)
    scope = scopekeys.ScopePublic("diagnostics", 1, h(v["scope_key"]["scope_public_key"]))
    grantee = X25519PrivateKey.from_private_bytes(h(grant["grantee_private_key"]))
    scope_key = scopekeys.unwrap_scope_key(
        h(grant["wrapped"]), rec["patient"], scope, grant["grantee"], grantee
    )
    parsed = envelope.unpack_record_blob(h(v["record_blob"]["blob"]))
    assert parsed.owner == BlobOwner(rec["patient"], v["record_blob"]["record"])
    # Knowing only the owner (patient, name) and the label: the wrap says type, id, version.
    unwrapped = scopekeys.unwrap_data_key(parsed.wrapped_keys[0], parsed.owner, scope_key)
    assert unwrapped.data_key.hex() == rec["data_key"]
    assert unwrapped.binding == binding
    naming_key = h(v["record_blob"]["naming_key"])
    assert record_name(naming_key, binding.resource_type, binding.resource_id) == (
        parsed.owner.record
    )
    opened = envelope.open_record(parsed.ciphertext, unwrapped.data_key, unwrapped.binding)
    assert opened.resource() == rec["resource"]
    assert opened.commitment.hex() == rec["commitment"]


def test_keyed_record_names_match_an_independent_hmac() -> None:
    """crypto/naming.py against the formula written out with the standard library: HMAC-SHA256
    under the naming key of the label, then the type and the id, each u16-length-prefixed."""
    key = bytes(range(32))
    for resource_type, resource_id in (("Observation", "obs-1"), ("Condition", "é" * 40)):
        message = b"careledger-record-name-v2"
        for part in (resource_type, resource_id):
            raw = part.encode()
            message += len(raw).to_bytes(2, "big") + raw
        expected = hmac.new(key, message, hashlib.sha256).hexdigest()
        assert record_name(key, resource_type, resource_id) == expected
    assert record_name(key, "Observation", "a") != record_name(bytes(32), "Observation", "a")
