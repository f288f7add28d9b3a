"""The patient's key hierarchy: scope keys, data-key wrapping, and scope-key grants.

    scope_root                     32 bytes, from the patient's master secret (recovery phrase)
      -> scope key (scope, epoch)  X25519, HKDF-derived, so the phrase restores every epoch
           <- data key of a record  HPKE-wrapped by the writer to the scope's public key,
                                    with the record's type, id and version (wrap v2)
      -> grant                     the scope private key HPKE-wrapped to a grantee

HPKE is RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, single shot
with empty AAD; every binding goes into ``info``. Exact bytes and test vectors: docs/crypto.md.
Public functions use ``cryptography``'s HPKE (fresh ephemeral key per call); the private
``_hpke_seal_with_ephemeral`` re-implements sealing with a given ephemeral key only so that
test vectors can pin the output; tests check both produce what the other opens.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from careledger.crypto.envelope import (
    DATA_KEY_SIZE,
    BlobOwner,
    InvalidBinding,
    RecordBinding,
    WrappedKey,
    length_prefixed,
    u32,
)
from careledger.crypto.hpke import SUITE, x25519_public

# --- scopes -------------------------------------------------------------------------------

# The names of the access scopes. Which FHIR resource goes into which scope is policy, not
# cryptography: it lives in wallet/scopes.py (the resource-type table and the security labels
# that make a record sensitive, documented in docs/sensitive-data.md).
CLINICAL = "clinical"
DIAGNOSTICS = "diagnostics"
MEDICATIONS = "medications"
ADMINISTRATIVE = "administrative"
FINANCIAL = "financial"
SENSITIVE = "sensitive"
SCOPES = (CLINICAL, DIAGNOSTICS, MEDICATIONS, ADMINISTRATIVE, FINANCIAL, SENSITIVE)
# What "all" means in a grant: every scope but `sensitive`, which a grant must name.
BROAD_SCOPES = SCOPES[:5]


class ScopeKeyError(Exception):
    """Base class of the errors of this module."""


class UnwrapError(ScopeKeyError):
    """A wrapped key that does not open: wrong private key, wrong binding, or altered bytes."""


# --- scope key derivation -----------------------------------------------------------------

SCOPE_KEY_LABEL = b"careledger-scope-key-v1"
DATA_KEY_WRAP_LABEL = b"careledger-datakey-wrap-v2"
SCOPE_KEY_GRANT_LABEL = b"careledger-scopekey-grant-v1"
_RAW = serialization.Encoding.Raw


@dataclass(frozen=True)
class ScopeKeyPair:
    """A patient's X25519 key pair for one scope and epoch."""

    scope: str
    epoch: int
    private_key: X25519PrivateKey = field(repr=False, compare=False)

    @property
    def public_key(self) -> X25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(_RAW, serialization.PublicFormat.Raw)

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def recipient(self) -> str:
        return scope_recipient(self.scope, self.epoch)


def scope_recipient(scope: str, epoch: int) -> str:
    """The name of a scope key inside a record blob and an HPKE info string."""
    _check_scope(scope, epoch)
    return f"scope/{scope}/{epoch}"


def derive_scope_key(scope_root: bytes, scope: str, epoch: int) -> ScopeKeyPair:
    """sk = HKDF-SHA256(ikm=scope_root, salt=label, info=label || lp(scope) || u32(epoch))."""
    if len(scope_root) != 32:
        raise ValueError("a scope root secret is 32 bytes")
    _check_scope(scope, epoch)
    info = SCOPE_KEY_LABEL + length_prefixed(scope) + u32(epoch)
    secret = _hkdf_expand(_hkdf_extract(SCOPE_KEY_LABEL, scope_root), info, 32)
    return ScopeKeyPair(scope, epoch, X25519PrivateKey.from_private_bytes(secret))


def _check_scope(scope: str, epoch: int) -> None:
    if not scope or not scope.isascii() or "/" in scope or len(scope) > 64:
        raise ValueError(f"not a scope name: {scope!r}")
    if isinstance(epoch, bool) or not 0 <= epoch <= 0xFFFFFFFF:
        raise ValueError(f"an epoch is an integer from 0 to 2**32-1: {epoch!r}")


# --- wrapping a record's data key ---------------------------------------------------------

ENC_SIZE = 32
WRAP_OVERHEAD = ENC_SIZE + 16  # HPKE's enc and the AEAD tag around the plaintext


@dataclass(frozen=True)
class UnwrappedDataKey:
    """A record's data key and the record version its writer wrapped it for.

    ``binding`` (patient, type, id, version) is what the wrap *says*: the reader checks type
    and version against the anchor, and the record's AES-GCM associated data, which binds
    the id, authenticates it when the ciphertext opens (docs/crypto.md 6.1).
    """

    data_key: bytes = field(repr=False)
    binding: RecordBinding


def data_key_info(owner: BlobOwner, recipient: str) -> bytes:
    """label || lp(patient) || lp(record name) || lp(recipient): what the reader knows from
    the chain and the blob header alone, before it learns the record's type and id."""
    return DATA_KEY_WRAP_LABEL + owner.encode() + length_prefixed(recipient)


def data_key_plaintext(data_key: bytes, binding: RecordBinding) -> bytes:
    """data_key (32) || lp(resource_type) || lp(resource_id) || u32(version)."""
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError(f"a data key is {DATA_KEY_SIZE} bytes")
    return (
        data_key
        + length_prefixed(binding.resource_type)
        + length_prefixed(binding.resource_id)
        + u32(binding.version)
    )


def wrap_data_key(
    data_key: bytes,
    binding: RecordBinding,
    record: str,
    recipient: str,
    public_key: X25519PublicKey | bytes,
) -> WrappedKey:
    """HPKE-wrap a data key, with the record's type, id and version, to one recipient (a
    scope key, see ScopeKeyPair.recipient, or a did:key) for the record named `record`."""
    owner = BlobOwner(binding.patient, record)
    wrapped = SUITE.encrypt(
        data_key_plaintext(data_key, binding),
        x25519_public(public_key),
        data_key_info(owner, recipient),
    )
    return WrappedKey(recipient=recipient, wrapped=wrapped)


def wrap_to_scope(
    data_key: bytes, binding: RecordBinding, record: str, scope_public: ScopePublic
) -> WrappedKey:
    """The writer's call: wrap to the patient's current scope public key (from the chain)."""
    return wrap_data_key(data_key, binding, record, scope_public.recipient, scope_public.public_key)


def unwrap_data_key(
    wrapped: WrappedKey, owner: BlobOwner, private_key: X25519PrivateKey | ScopeKeyPair
) -> UnwrappedDataKey:
    """Recover a data key and the (type, id, version) it was wrapped with, knowing only the
    record's owner (patient and on-chain name, as the blob header and the chain give them).
    UnwrapError if the key, the record, the recipient or any byte is wrong."""
    secret = private_key.private_key if isinstance(private_key, ScopeKeyPair) else private_key
    info = data_key_info(owner, wrapped.recipient)
    plaintext = _hpke_open(wrapped.wrapped, secret, info, "data key")
    return UnwrappedDataKey(plaintext[:DATA_KEY_SIZE], _wrapped_binding(owner.patient, plaintext))


def _wrapped_binding(patient: str, plaintext: bytes) -> RecordBinding:
    """The (type, id, version) after the data key; every byte accounted for."""
    try:
        if len(plaintext) < DATA_KEY_SIZE:
            raise ValueError("too short")
        resource_type, offset = _read_lp(plaintext, DATA_KEY_SIZE)
        resource_id, offset = _read_lp(plaintext, offset)
        if len(plaintext) != offset + 4:
            raise ValueError("wrong length")
        (version,) = struct.unpack_from(">I", plaintext, offset)
        return RecordBinding(patient, resource_type, resource_id, version)
    except (ValueError, UnicodeDecodeError, InvalidBinding):
        raise UnwrapError(
            "wrapped value is not a data key with its record's type, id and version"
        ) from None


def _read_lp(data: bytes, offset: int) -> tuple[str, int]:
    if offset + 2 > len(data):
        raise ValueError("truncated")
    (length,) = struct.unpack_from(">H", data, offset)
    end = offset + 2 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[offset + 2 : end].decode("utf-8"), end


@dataclass(frozen=True)
class ScopePublic:
    """The public half of a scope key as published on-chain."""

    scope: str
    epoch: int
    public_key: bytes

    @property
    def recipient(self) -> str:
        return scope_recipient(self.scope, self.epoch)


# --- granting a scope key -----------------------------------------------------------------


def grant_info(patient: str, scope: str, epoch: int, grantee: str) -> bytes:
    """label || lp(patient) || lp(scope) || u32(epoch) || lp(grantee)."""
    _check_scope(scope, epoch)
    return (
        SCOPE_KEY_GRANT_LABEL
        + length_prefixed(patient)
        + length_prefixed(scope)
        + u32(epoch)
        + length_prefixed(grantee)
    )


def wrap_scope_key(
    scope_key: ScopeKeyPair, patient: str, grantee: str, grantee_public: X25519PublicKey | bytes
) -> bytes:
    """HPKE-wrap a scope private key to a grantee (an organisation's X25519 key)."""
    info = grant_info(patient, scope_key.scope, scope_key.epoch, grantee)
    return SUITE.encrypt(scope_key.private_bytes(), x25519_public(grantee_public), info)


def unwrap_scope_key(
    wrapped: bytes,
    patient: str,
    scope: ScopePublic,
    grantee: str,
    grantee_private: X25519PrivateKey,
) -> ScopeKeyPair:
    """Recover a granted scope key and check it against the scope's published public key."""
    info = grant_info(patient, scope.scope, scope.epoch, grantee)
    secret = _hpke_open(wrapped, grantee_private, info, "scope key")
    if len(secret) != 32:
        raise UnwrapError("wrapped value is not a scope key")
    pair = ScopeKeyPair(scope.scope, scope.epoch, X25519PrivateKey.from_private_bytes(secret))
    if not hmac.compare_digest(pair.public_bytes, scope.public_key):
        raise UnwrapError("granted scope key does not match the scope's public key")
    return pair


# --- granting the naming key --------------------------------------------------------------

NAMING_KEY_GRANT_LABEL = b"careledger-naming-key-grant-v1"
NAMING_KEY_SIZE = 32
WRAPPED_NAMING_KEY_SIZE = WRAP_OVERHEAD + NAMING_KEY_SIZE


def naming_grant_info(patient: str, grantee: str) -> bytes:
    """label || lp(patient) || lp(grantee)."""
    return NAMING_KEY_GRANT_LABEL + length_prefixed(patient) + length_prefixed(grantee)


def wrap_naming_key(
    naming_key: bytes, patient: str, grantee: str, grantee_public: X25519PublicKey | bytes
) -> bytes:
    """HPKE-wrap the patient's naming key (crypto/naming.py) to a grantee: 80 bytes."""
    if len(naming_key) != NAMING_KEY_SIZE:
        raise ValueError(f"a naming key is {NAMING_KEY_SIZE} bytes")
    return SUITE.encrypt(
        naming_key, x25519_public(grantee_public), naming_grant_info(patient, grantee)
    )


def unwrap_naming_key(
    wrapped: bytes, patient: str, grantee: str, grantee_private: X25519PrivateKey
) -> bytes:
    """Recover a granted naming key; UnwrapError for a wrong key, patient, grantee or byte."""
    naming_key = _hpke_open(
        wrapped, grantee_private, naming_grant_info(patient, grantee), "naming key"
    )
    if len(naming_key) != NAMING_KEY_SIZE:
        raise UnwrapError("wrapped value is not a naming key")
    return naming_key


# --- HPKE helpers -------------------------------------------------------------------------


def _hpke_open(wrapped: bytes, private_key: X25519PrivateKey, info: bytes, what: str) -> bytes:
    try:
        return SUITE.decrypt(wrapped, private_key, info)
    except Exception as exc:  # cryptography raises InvalidTag or ValueError for bad input
        raise UnwrapError(
            f"{what} does not unwrap: wrong private key, wrong record or grant, or altered bytes"
        ) from exc


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


# RFC 9180 identifiers of the suite.
_KEM_ID, _KDF_ID, _AEAD_AES_128_GCM, _AEAD_AES_256_GCM = 0x0020, 0x0001, 0x0001, 0x0002


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _hkdf_extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return _hkdf_expand(prk, struct.pack(">H", n) + b"HPKE-v1" + suite_id + label + info, n)


def _hpke_seal_with_ephemeral(
    recipient_public: bytes,
    info: bytes,
    plaintext: bytes,
    ephemeral_private: bytes,
    *,
    aad: bytes = b"",
    aead_id: int = _AEAD_AES_256_GCM,
) -> bytes:
    """RFC 9180 SealBase with a given ephemeral key: enc || ciphertext. For test vectors only."""
    eph = X25519PrivateKey.from_private_bytes(ephemeral_private)
    enc = eph.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    dh = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    kem_suite = b"KEM" + struct.pack(">H", _KEM_ID)
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    shared = _labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + recipient_public, 32)
    key, base_nonce = _key_schedule(shared, info, aead_id)
    return enc + AESGCM(key).encrypt(base_nonce, plaintext, aad)


def _key_schedule(shared_secret: bytes, info: bytes, aead_id: int) -> tuple[bytes, bytes]:
    suite_id = b"HPKE" + struct.pack(">HHH", _KEM_ID, _KDF_ID, aead_id)
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash  # mode_base
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    key_size = 16 if aead_id == _AEAD_AES_128_GCM else 32
    key = _labeled_expand(suite_id, secret, b"key", context, key_size)
    return key, _labeled_expand(suite_id, secret, b"base_nonce", context, 12)
