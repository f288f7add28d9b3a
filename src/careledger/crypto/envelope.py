"""Record envelope encryption: one FHIR resource version -> one sealed ciphertext.

The scheme, byte for byte and with test vectors, is in ``docs/crypto.md``. In short:

    canonical  = RFC 8785 (JCS) bytes of the resource
    commitment = SHA-256("careledger-commitment-v1" || salt || canonical)
    plaintext  = salt (32) || zstd frame of canonical
    ciphertext = 0x01 || nonce (12) || AES-256-GCM(data_key, nonce, plaintext, aad)
    aad        = "careledger-record-v1" || lp(patient) || lp(type) || lp(id) || u32(version)

The data key is fresh for every record version and never leaves this module unwrapped except
in :class:`SealedRecord`, whose caller wraps it (``scopekeys``) and then forgets it.
The salt travels inside the ciphertext, so whoever can decrypt can also open the commitment,
and erasing the ciphertext erases the salt: the on-chain commitment then reveals nothing.

Wrapped data keys are stored beside the ciphertext in one off-chain *record blob*
(:func:`pack_record_blob`), never in a transaction, so that erasure can delete them. The
blob's header names the record it belongs to (:class:`BlobOwner`, read alone by
:func:`record_blob_owner`), so that nodes can refuse a blob anchored or erased as another's.
Each wrapped data key carries the record's type, id and version (format 3), so a reader that
knows only the record's on-chain name can open it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from careledger.crypto.canonical import canonical_bytes

DATA_KEY_SIZE = 32
NONCE_SIZE = 12
SALT_SIZE = 32
TAG_SIZE = 16
COMMITMENT_SIZE = 32
CIPHERTEXT_FORMAT = 0x01
ZSTD_LEVEL = 3
# Upper bound on one decompressed resource: a writer (who alone can produce a valid
# ciphertext) must not be able to make readers allocate without bound.
MAX_RESOURCE_BYTES = 64 * 1024 * 1024

AAD_LABEL = b"careledger-record-v1"
COMMITMENT_LABEL = b"careledger-commitment-v1"
# Format 3: the header names its record (since 2) and its data keys are wrapped with the
# record's type, id and version, to its name (wrap v2, since 3): docs/crypto.md 6.1 and 7.
BLOB_MAGIC = b"CLB\x03"
_OLD_FORMATS = {
    1: "its header does not name its record",
    2: "its data keys are wrapped to the record's FHIR id (wrap v1), so only a reader that "
    "already knows the id can open it",
}

_MIN_CIPHERTEXT = 1 + NONCE_SIZE + SALT_SIZE + TAG_SIZE
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # the FHIR `id` datatype
_RECORD_NAME = re.compile(r"[0-9a-f]{64}")
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
_MAX_OWNER_HEADER = len(BLOB_MAGIC) + 2 * (2 + _MAX_U16)  # magic, lp(patient), lp(record)
# The most bytes a valid owner header takes (a patient of 255 bytes, a 64-hex record name):
# a node reads this much of a stored blob to learn its owner, never the whole blob.
OWNER_HEADER_BYTES = len(BLOB_MAGIC) + 2 + 255 + 2 + 64


class EnvelopeError(Exception):
    """Base class of every error raised by this module."""


class InvalidBinding(EnvelopeError, ValueError):
    """A record binding (patient, type, id, version) that cannot be encoded unambiguously."""


class BindingMismatch(EnvelopeError, ValueError):
    """The resource's own resourceType, id or meta.versionId disagree with its binding."""


class DecryptionError(EnvelopeError):
    """Wrong key, wrong record binding, or a ciphertext altered in any byte."""


class CommitmentMismatch(EnvelopeError):
    """A plaintext that does not open the salted commitment it is checked against."""


class MalformedBlob(EnvelopeError, ValueError):
    """A record blob whose header cannot be parsed."""


# --- binding ------------------------------------------------------------------------------


def length_prefixed(text: str) -> bytes:
    """u16 big-endian byte length || UTF-8 bytes: the one string encoding of every label."""
    raw = text.encode("utf-8")
    if len(raw) > _MAX_U16:
        raise InvalidBinding(f"string of {len(raw)} bytes is too long to encode")
    return struct.pack(">H", len(raw)) + raw


def u32(value: int) -> bytes:
    if not 0 <= value <= _MAX_U32:
        raise InvalidBinding(f"{value} does not fit in an unsigned 32-bit integer")
    return struct.pack(">I", value)


@dataclass(frozen=True)
class RecordBinding:
    """What a ciphertext belongs to. Decryption under any other binding fails.

    ``patient`` is the patient's on-chain pseudonym (never a name or an identifier in clear);
    ``version`` is the record version, 1 for the first write (FHIR meta.versionId = str(version)).
    """

    patient: str
    resource_type: str
    resource_id: str
    version: int

    def __post_init__(self) -> None:
        if not _valid_patient(self.patient):
            raise InvalidBinding("patient pseudonym must be 1 to 255 UTF-8 bytes, without NUL")
        if not _RESOURCE_TYPE.fullmatch(self.resource_type):
            raise InvalidBinding(f"not a FHIR resource type: {self.resource_type!r}")
        if not _RESOURCE_ID.fullmatch(self.resource_id):
            raise InvalidBinding(f"not a FHIR id: {self.resource_id!r}")
        if isinstance(self.version, bool) or not 1 <= self.version <= _MAX_U32:
            raise InvalidBinding(f"version must be an integer from 1 to 2**32-1: {self.version!r}")

    def encode(self) -> bytes:
        """lp(patient) || lp(resource_type) || lp(resource_id) || u32(version)."""
        return (
            length_prefixed(self.patient)
            + length_prefixed(self.resource_type)
            + length_prefixed(self.resource_id)
            + u32(self.version)
        )

    def aad(self) -> bytes:
        return AAD_LABEL + self.encode()


def _valid_patient(patient: str) -> bool:
    """1 to 255 UTF-8 bytes, no NUL."""
    return bool(patient) and "\x00" not in patient and len(patient.encode()) <= 255


# --- canonical bytes ----------------------------------------------------------------------


def parse_json(data: bytes) -> Any:
    return orjson.loads(data)


# --- commitment ---------------------------------------------------------------------------


def commit(canonical: bytes, salt: bytes) -> bytes:
    """SHA-256(label || salt || canonical): hiding (random salt) and binding (SHA-256)."""
    if len(salt) != SALT_SIZE:
        raise ValueError(f"a commitment salt is {SALT_SIZE} bytes")
    return hashlib.sha256(COMMITMENT_LABEL + salt + canonical).digest()


def verify_commitment(canonical: bytes, salt: bytes, commitment: bytes) -> None:
    """Raise CommitmentMismatch unless ``commitment`` commits to ``canonical`` with ``salt``."""
    if not _constant_time_equal(commit(canonical, salt), commitment):
        raise CommitmentMismatch("the resource does not match the anchored commitment")


def _constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- seal and open ------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedRecord:
    """The result of sealing one record version. Wrap ``data_key``, then drop it."""

    ciphertext: bytes
    data_key: bytes = field(repr=False)
    commitment: bytes
    salt: bytes = field(repr=False)


@dataclass(frozen=True)
class OpenedRecord:
    """A decrypted record version: its canonical bytes and the salt of its commitment."""

    canonical: bytes
    salt: bytes = field(repr=False)

    @property
    def commitment(self) -> bytes:
        return commit(self.canonical, self.salt)

    def resource(self) -> dict[str, Any]:
        value = parse_json(self.canonical)
        assert isinstance(value, dict)  # sealed from a dict, authenticated since
        return value


def seal_record(resource: Mapping[str, Any], binding: RecordBinding) -> SealedRecord:
    """Canonicalise, compress and encrypt one resource under a fresh data key."""
    check_resource_matches(resource, binding)
    return _seal_canonical(
        canonical_bytes(resource),
        binding,
        data_key=os.urandom(DATA_KEY_SIZE),
        nonce=os.urandom(NONCE_SIZE),
        salt=os.urandom(SALT_SIZE),
    )


def open_record(ciphertext: bytes, data_key: bytes, binding: RecordBinding) -> OpenedRecord:
    """Decrypt and decompress; DecryptionError for a wrong key, binding or altered byte."""
    if len(data_key) != DATA_KEY_SIZE:
        raise DecryptionError(f"a data key is {DATA_KEY_SIZE} bytes, not {len(data_key)}")
    if len(ciphertext) < _MIN_CIPHERTEXT or ciphertext[0] != CIPHERTEXT_FORMAT:
        raise DecryptionError("not a CareLedger v1 record ciphertext")
    nonce = ciphertext[1 : 1 + NONCE_SIZE]
    try:
        plaintext = AESGCM(data_key).decrypt(nonce, ciphertext[1 + NONCE_SIZE :], binding.aad())
    except InvalidTag as exc:
        raise DecryptionError(
            "record ciphertext does not decrypt: wrong key, wrong record, or altered bytes"
        ) from exc
    salt, frame = plaintext[:SALT_SIZE], plaintext[SALT_SIZE:]
    return OpenedRecord(canonical=_decompress(frame), salt=salt)


def check_resource_matches(resource: Mapping[str, Any], binding: RecordBinding) -> None:
    """The resource must describe itself as the record it is sealed as."""
    if resource.get("resourceType") != binding.resource_type:
        raise BindingMismatch(
            f"resourceType {resource.get('resourceType')!r} != {binding.resource_type!r}"
        )
    if "id" in resource and resource["id"] != binding.resource_id:
        raise BindingMismatch(f"id {resource['id']!r} != {binding.resource_id!r}")
    meta = resource.get("meta")
    version_id = meta.get("versionId") if isinstance(meta, Mapping) else None
    if version_id is not None and version_id != str(binding.version):
        raise BindingMismatch(f"meta.versionId {version_id!r} != {str(binding.version)!r}")


def _seal_canonical(
    canonical: bytes, binding: RecordBinding, *, data_key: bytes, nonce: bytes, salt: bytes
) -> SealedRecord:
    """Deterministic core of seal_record (test vectors pass fixed key, nonce and salt)."""
    return _seal_frame(_compress(canonical), canonical, binding, data_key, nonce, salt)


def _seal_frame(
    frame: bytes,
    canonical: bytes,
    binding: RecordBinding,
    data_key: bytes,
    nonce: bytes,
    salt: bytes,
) -> SealedRecord:
    if len(data_key) != DATA_KEY_SIZE or len(nonce) != NONCE_SIZE or len(salt) != SALT_SIZE:
        raise ValueError("data key, nonce or salt of the wrong size")
    sealed = AESGCM(data_key).encrypt(nonce, salt + frame, binding.aad())
    return SealedRecord(
        ciphertext=bytes([CIPHERTEXT_FORMAT]) + nonce + sealed,
        data_key=data_key,
        commitment=commit(canonical, salt),
        salt=salt,
    )


# zstandard contexts are not thread-safe; one per thread avoids re-allocating them per record.
_zstd = threading.local()


def _compress(canonical: bytes) -> bytes:
    if len(canonical) > MAX_RESOURCE_BYTES:
        raise ValueError(f"resource of {len(canonical)} bytes exceeds {MAX_RESOURCE_BYTES}")
    compressor = getattr(_zstd, "compressor", None)
    if compressor is None:
        compressor = _zstd.compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_content_size=True, write_checksum=False
        )
    frame: bytes = compressor.compress(canonical)
    return frame


def _decompress(frame: bytes) -> bytes:
    declared = zstandard.frame_content_size(frame) if len(frame) >= 4 else -1
    if declared > MAX_RESOURCE_BYTES:
        raise DecryptionError(f"record declares {declared} bytes, over {MAX_RESOURCE_BYTES}")
    decompressor = getattr(_zstd, "decompressor", None)
    if decompressor is None:
        decompressor = _zstd.decompressor = zstandard.ZstdDecompressor()
    try:
        canonical: bytes = decompressor.decompress(frame, max_output_size=MAX_RESOURCE_BYTES)
    except zstandard.ZstdError as exc:
        raise DecryptionError(f"record plaintext is not a zstd frame: {exc}") from exc
    return canonical


# --- record blob: wrapped keys beside the ciphertext --------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    """A record's data key wrapped (HPKE) to one recipient.

    ``recipient`` names the key it is wrapped to: ``scope/<scope>/<epoch>`` for a patient's
    scope key, or a did:key for a direct recipient. It is part of the HPKE info string, with
    the record's owner; the record's type, id and version are in the wrapped plaintext
    (``scopekeys.wrap_data_key``, wrap v2).
    """

    recipient: str
    wrapped: bytes


@dataclass(frozen=True)
class BlobOwner:
    """The record a blob belongs to, named in its header: nodes refuse to store, anchor or
    erase a blob for any other record, so a blob hash seen in a mempool cannot be claimed.

    ``patient`` is the patient's did (1 to 255 UTF-8 bytes, no NUL); ``record`` is the
    on-chain record name, 64 lowercase hex characters (``records.keeper.record_name``).
    """

    patient: str
    record: str

    def __post_init__(self) -> None:
        if not isinstance(self.patient, str) or not _valid_patient(self.patient):
            raise InvalidBinding("a blob's patient is 1 to 255 UTF-8 bytes, without NUL")
        if not isinstance(self.record, str) or not _RECORD_NAME.fullmatch(self.record):
            raise InvalidBinding(f"not a record name (64 hex): {str(self.record)[:80]!r}")

    def encode(self) -> bytes:
        return length_prefixed(self.patient) + length_prefixed(self.record)


@dataclass(frozen=True)
class RecordBlob:
    """What the blob store holds for one record version, and what its anchor hashes."""

    owner: BlobOwner
    wrapped_keys: tuple[WrappedKey, ...]
    ciphertext: bytes

    def key_for(self, recipient: str) -> bytes:
        for key in self.wrapped_keys:
            if key.recipient == recipient:
                return key.wrapped
        raise LookupError(f"no data key wrapped to {recipient!r} in this record blob")


def pack_record_blob(
    owner: BlobOwner, wrapped_keys: Sequence[WrappedKey], ciphertext: bytes
) -> bytes:
    """ "CLB\\x02" || lp(patient) || lp(record) || u8 count
    || count x (lp(recipient) || lp_bytes(wrapped)) || ciphertext (docs/crypto.md, section 7)."""
    if not 1 <= len(wrapped_keys) <= 255:
        raise ValueError("a record blob carries 1 to 255 wrapped keys")
    parts = [BLOB_MAGIC, owner.encode(), bytes([len(wrapped_keys)])]
    for key in wrapped_keys:
        if len(key.wrapped) > _MAX_U16:
            raise ValueError("wrapped key too long")
        parts += [length_prefixed(key.recipient), struct.pack(">H", len(key.wrapped)), key.wrapped]
    parts.append(ciphertext)
    return b"".join(parts)


def record_blob_owner(blob: bytes) -> BlobOwner:
    """The record a blob names in its header, reading the header only (no key is unwrapped).

    MalformedBlob for anything that is not a format 3 record blob with a valid owner.
    """
    return _read_owner(blob)[0]


def unpack_record_blob(blob: bytes) -> RecordBlob:
    owner, offset = _read_owner(blob)
    if offset >= len(blob):
        raise MalformedBlob("record blob header is truncated")
    count, offset = blob[offset], offset + 1
    keys = []
    for _ in range(count):
        recipient_raw, offset = _read_lp(blob, offset)
        wrapped, offset = _read_lp(blob, offset)
        keys.append(
            WrappedKey(recipient=_utf8(recipient_raw, "wrapped-key recipient"), wrapped=wrapped)
        )
    if count == 0 or offset >= len(blob):
        raise MalformedBlob("record blob has no wrapped key or no ciphertext")
    return RecordBlob(owner=owner, wrapped_keys=tuple(keys), ciphertext=blob[offset:])


def _read_owner(blob: bytes) -> tuple[BlobOwner, int]:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise MalformedBlob("a record blob is bytes")
    blob = bytes(blob[:_MAX_OWNER_HEADER])  # the header only: no copy of a large blob
    if blob[:3] == BLOB_MAGIC[:3] and len(blob) > 3 and blob[3] != BLOB_MAGIC[3]:
        why = _OLD_FORMATS.get(blob[3], "unknown format")
        raise MalformedBlob(
            f"record blob format {blob[3]} is not read ({why}); only format {BLOB_MAGIC[3]}"
        )
    if not blob.startswith(BLOB_MAGIC):
        raise MalformedBlob("not a CareLedger record blob")
    patient_raw, offset = _read_lp(blob, len(BLOB_MAGIC))
    record_raw, offset = _read_lp(blob, offset)
    try:
        owner = BlobOwner(_utf8(patient_raw, "patient"), _utf8(record_raw, "record name"))
    except InvalidBinding as exc:
        raise MalformedBlob(f"record blob header: {exc}") from None
    return owner, offset


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBlob(f"record blob {what} is not UTF-8") from exc


def _read_lp(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 2 > len(blob):
        raise MalformedBlob("record blob header is truncated")
    (length,) = struct.unpack_from(">H", blob, offset)
    end = offset + 2 + length
    if end > len(blob):
        raise MalformedBlob("record blob header is truncated")
    return blob[offset + 2 : end], end
