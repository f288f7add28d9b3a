"""Break-glass escrow: a patient's emergency keys, split k-of-n among the member organisations.

    S       = 16 random bytes, fresh for every escrow
    K       = HKDF-SHA256(ikm=S, salt=none, info=EMERGENCY_LABEL || lp(patient))    32 bytes
    sealed  = nonce(12) || AES-256-GCM(K, nonce, bundle, aad=lp(patient) || escrow id)
    bundle  = RFC 8785 JSON {"naming_key", "patient", "scope_keys": [{"epoch",
              "private_key", "scope"}, ...]}: the opened scopes' private keys and the naming key
    shares  = Shamir k-of-n over GF(2^128) of S (pycryptodome's `Shamir`), share i for the
              i-th member in sorted did order, each HPKE-wrapped to that member's X25519 key
              with info = SHARE_LABEL || lp(patient) || escrow id || lp(member) || u32(i)
    release = a member's node unwraps its share and HPKE-wraps it to the requester's key
              with info = RELEASE_LABEL || lp(patient) || escrow id || lp(member) || u32(i)
              || lp(requester) (`rewrap_share`)

The requester combines k released shares into S, derives K and opens the bundle. Fewer than k
distinct shares cannot give S: `combine_shares` refuses them (`NotEnoughShares`), and a wrong
S (shares of another escrow, a forged share) fails AES-GCM's tag (`BundleError`), never a
wrong bundle. Rationale, the choice of k and what membership changes do: docs/crypto.md,
"Break-glass escrow". The chain decides when a member may release (consent/break_glass); this
module only does the cryptography. Errors are raised, and no secret appears in a repr.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from careledger.crypto.canonical import NotCanonical, canonical_bytes, parse_canonical
from careledger.crypto.envelope import length_prefixed, u32
from careledger.crypto.hpke import SUITE, x25519_public
from careledger.crypto.scopekeys import SCOPES, ScopeKeyPair, ScopePublic

EMERGENCY_LABEL = b"careledger-emergency-v1"
SHARE_LABEL = b"careledger-emergency-share-v1"
RELEASE_LABEL = b"careledger-emergency-release-v1"
SECRET_SIZE = 16  # Shamir over GF(2^128): pycryptodome splits 16-byte secrets
ESCROW_ID_SIZE = 16
NONCE_SIZE = 12
KEY_SIZE = 32
# HPKE enc (32) + the share (16) + tag (16)
WRAPPED_SHARE_SIZE = 32 + SECRET_SIZE + 16
MAX_MEMBERS = 255  # pycryptodome's shares are indexed by one byte


class EscrowError(Exception):
    """Base class of the errors of this module."""


class ShareError(EscrowError):
    """A share that does not unwrap, belongs to another escrow, or contradicts another."""


class NotEnoughShares(EscrowError):
    """Fewer distinct shares than the escrow's threshold: the secret cannot be had."""


class BundleError(EscrowError):
    """A sealed bundle that does not open: wrong secret (too few or foreign shares), another
    patient or escrow, altered bytes; or a bundle that is not one."""


# --- the secret and its shares ------------------------------------------------------------


def new_secret() -> bytes:
    return os.urandom(SECRET_SIZE)


def new_escrow_id() -> str:
    return os.urandom(ESCROW_ID_SIZE).hex()


@dataclass(frozen=True)
class Share:
    """Share `index` (1..n) of the secret of escrow `escrow` (hex id). repr() hides the
    value."""

    escrow: str
    index: int
    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_escrow_id(self.escrow)
        if isinstance(self.index, bool) or not 1 <= self.index <= MAX_MEMBERS:
            raise ShareError(f"a share index is 1 to {MAX_MEMBERS}, not {self.index!r}")
        if len(self.value) != SECRET_SIZE:
            raise ShareError(f"a share is {SECRET_SIZE} bytes")


def split_secret(secret: bytes, escrow: str, threshold: int, count: int) -> list[Share]:
    """`count` shares of `secret`, any `threshold` of which give it back (indexes 1..count)."""
    _check_secret(secret)
    _check_threshold(threshold, count)
    return [Share(escrow, i, v) for i, v in Shamir.split(threshold, count, secret)]


def combine_shares(shares: Sequence[Share], escrow: str, threshold: int) -> bytes:
    """The secret from `threshold` distinct shares of escrow `escrow`.

    ShareError for a share of another escrow or two different shares of one index;
    NotEnoughShares for fewer than `threshold` distinct shares (Shamir would answer a wrong
    secret without complaint, so the count is checked here, and AES-GCM catches the rest)."""
    by_index: dict[int, Share] = {}
    for share in shares:
        if share.escrow != escrow:
            raise ShareError(f"share {share.index} belongs to escrow {share.escrow}, not {escrow}")
        seen = by_index.setdefault(share.index, share)
        if not hmac.compare_digest(seen.value, share.value):
            raise ShareError(f"two different shares of index {share.index}")
    if len(by_index) < threshold:
        raise NotEnoughShares(
            f"{len(by_index)} distinct share(s) of escrow {escrow}; {threshold} are needed"
        )
    chosen = [by_index[i] for i in sorted(by_index)[:threshold]]
    return Shamir.combine([(s.index, s.value) for s in chosen])


# --- the emergency key and the bundle -----------------------------------------------------


def emergency_key(secret: bytes, patient: str) -> bytes:
    """K = HKDF-SHA256(ikm=S, no salt, info=EMERGENCY_LABEL || lp(patient)), 32 bytes."""
    _check_secret(secret)
    info = EMERGENCY_LABEL + length_prefixed(patient)
    return HKDF(hashes.SHA256(), KEY_SIZE, None, info).derive(secret)


def bundle_aad(patient: str, escrow: str) -> bytes:
    """lp(patient) || escrow id (16 bytes)."""
    return length_prefixed(patient) + _check_escrow_id(escrow)


@dataclass(frozen=True)
class EmergencyBundle:
    """What an escrow protects: the opened scopes' private keys and the naming key of
    `patient`. repr() shows the patient and the (scope, epoch) pairs, never a key."""

    patient: str
    naming_key: bytes = field(repr=False)
    scope_keys: tuple[ScopeKeyPair, ...] = ()

    def __post_init__(self) -> None:
        if len(self.naming_key) != 32:
            raise BundleError("a naming key is 32 bytes")
        object.__setattr__(self, "scope_keys", tuple(self.scope_keys))
        pairs = [(k.scope, k.epoch) for k in self.scope_keys]
        if len(set(pairs)) != len(pairs):
            raise BundleError("a bundle holds each (scope, epoch) once")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(s for s in SCOPES if any(k.scope == s for k in self.scope_keys))

    def scope_pair(self, scope: str, epoch: int) -> ScopeKeyPair | None:
        for pair in self.scope_keys:
            if (pair.scope, pair.epoch) == (scope, epoch):
                return pair
        return None

    def check_against(self, published: Mapping[tuple[str, int], ScopePublic]) -> None:
        """BundleError unless every scope key matches the key the patient published."""
        for pair in self.scope_keys:
            public = published.get((pair.scope, pair.epoch))
            if public is None or not hmac.compare_digest(public.public_key, pair.public_bytes):
                raise BundleError(
                    f"the bundle's {pair.scope} key of epoch {pair.epoch} is not the one the "
                    "patient published"
                )

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "patient": self.patient,
                "naming_key": self.naming_key.hex(),
                "scope_keys": [
                    {"scope": k.scope, "epoch": k.epoch, "private_key": k.private_bytes().hex()}
                    for k in sorted(self.scope_keys, key=lambda k: (k.scope, k.epoch))
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, patient: str) -> EmergencyBundle:
        try:
            value = parse_canonical(data)
            if value["patient"] != patient:
                raise BundleError(f"the bundle is {value['patient']}'s, not {patient}'s")
            keys = tuple(_scope_pair(k) for k in value["scope_keys"])
            return cls(patient, bytes.fromhex(value["naming_key"]), keys)
        except (NotCanonical, KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"not an emergency bundle: {type(exc).__name__}") from None


def _scope_pair(entry: Any) -> ScopeKeyPair:
    secret = bytes.fromhex(entry["private_key"])
    if len(secret) != 32 or entry["scope"] not in SCOPES:
        raise ValueError("not a scope key")
    return ScopeKeyPair(
        entry["scope"], int(entry["epoch"]), X25519PrivateKey.from_private_bytes(secret)
    )


def seal_bundle(
    bundle: EmergencyBundle, secret: bytes, escrow: str, nonce: bytes | None = None
) -> bytes:
    """nonce || AES-256-GCM(K, nonce, bundle, aad). `nonce` only for test vectors."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
    key = emergency_key(secret, bundle.patient)
    aad = bundle_aad(bundle.patient, escrow)
    return nonce + AESGCM(key).encrypt(nonce, bundle.to_bytes(), aad)


def open_bundle(sealed: bytes, secret: bytes, patient: str, escrow: str) -> EmergencyBundle:
    """The bundle; BundleError for a wrong secret, patient or escrow, or altered bytes."""
    key = emergency_key(secret, patient)
    nonce, ciphertext = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
    try:
        plain = AESGCM(key).decrypt(nonce, ciphertext, bundle_aad(patient, escrow))
    except (InvalidTag, ValueError):
        raise BundleError(
            f"escrow {escrow} does not open: the shares do not give its secret (too few, or "
            "of another escrow), or the sealed bundle is not this patient's or was altered"
        ) from None
    return EmergencyBundle.from_bytes(plain, patient)


# --- wrapping shares to members, and releasing them to a requester ------------------------


def share_info(patient: str, escrow: str, member: str, index: int) -> bytes:
    """SHARE_LABEL || lp(patient) || escrow id || lp(member) || u32(index)."""
    return (
        SHARE_LABEL
        + length_prefixed(patient)
        + _check_escrow_id(escrow)
        + length_prefixed(member)
        + u32(index)
    )


def release_info(patient: str, escrow: str, member: str, index: int, requester: str) -> bytes:
    """RELEASE_LABEL || lp(patient) || escrow id || lp(member) || u32(index) ||
    lp(requester)."""
    return (
        RELEASE_LABEL
        + length_prefixed(patient)
        + _check_escrow_id(escrow)
        + length_prefixed(member)
        + u32(index)
        + length_prefixed(requester)
    )


def wrap_share(
    share: Share, patient: str, member: str, member_public: X25519PublicKey | bytes
) -> bytes:
    """HPKE-wrap a share to the member organisation that keeps it."""
    info = share_info(patient, share.escrow, member, share.index)
    return SUITE.encrypt(share.value, x25519_public(member_public), info)


def unwrap_share(
    wrapped: bytes,
    patient: str,
    escrow: str,
    member: str,
    index: int,
    member_private: X25519PrivateKey,
) -> Share:
    """A member's share; ShareError for another key, patient, escrow, member, index or byte."""
    info = share_info(patient, escrow, member, index)
    return Share(escrow, index, _open(wrapped, member_private, info, "share"))


def rewrap_share(
    wrapped: bytes,
    patient: str,
    escrow: str,
    member: str,
    index: int,
    member_private: X25519PrivateKey,
    requester: str,
    requester_public: X25519PublicKey | bytes,
) -> bytes:
    """A member's node releasing its share: unwrap with the member's key, wrap to the
    requester (what `POST /break-glass/share` answers). ShareError if it does not unwrap."""
    share = unwrap_share(wrapped, patient, escrow, member, index, member_private)
    info = release_info(patient, escrow, member, index, requester)
    return SUITE.encrypt(share.value, x25519_public(requester_public), info)


def unwrap_released_share(
    wrapped: bytes,
    patient: str,
    escrow: str,
    member: str,
    index: int,
    requester: str,
    requester_private: X25519PrivateKey,
) -> Share:
    """A share a member released to `requester`; ShareError if it is not one."""
    info = release_info(patient, escrow, member, index, requester)
    return Share(escrow, index, _open(wrapped, requester_private, info, "released share"))


# --- a whole escrow -----------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedShare:
    org: str
    index: int
    wrapped: bytes

    def to_json(self) -> dict[str, Any]:
        return {"org": self.org, "index": self.index, "wrapped": self.wrapped.hex()}


@dataclass(frozen=True)
class Escrow:
    """An escrow's public parts (what `consent/open_emergency` carries): no secret in it."""

    patient: str
    escrow: str
    threshold: int
    members: tuple[str, ...]
    shares: tuple[WrappedShare, ...]
    sealed: bytes = field(repr=False)


def make_escrow(
    bundle: EmergencyBundle,
    members: Mapping[str, X25519PublicKey | bytes],
    threshold: int,
    *,
    escrow: str | None = None,
    secret: bytes | None = None,
) -> Escrow:
    """Seal `bundle` under a fresh secret and split it among `members` (did -> encryption
    key), share i to the i-th member in sorted did order, any `threshold` of them opening it.
    `escrow` and `secret` only for tests and vectors."""
    escrow = escrow or new_escrow_id()
    secret = secret or new_secret()
    order = sorted(members)
    shares = split_secret(secret, escrow, threshold, len(order))
    wrapped = tuple(
        WrappedShare(org, s.index, wrap_share(s, bundle.patient, org, members[org]))
        for org, s in zip(order, shares, strict=True)
    )
    sealed = seal_bundle(bundle, secret, escrow)
    return Escrow(bundle.patient, escrow, threshold, tuple(order), wrapped, sealed)


def open_escrow(
    sealed: bytes, shares: Sequence[Share], patient: str, escrow: str, threshold: int
) -> EmergencyBundle:
    """The bundle from `threshold` released shares: NotEnoughShares, ShareError or
    BundleError otherwise."""
    return open_bundle(sealed, combine_shares(shares, escrow, threshold), patient, escrow)


# --- helpers ------------------------------------------------------------------------------


def _check_secret(secret: bytes) -> None:
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"an escrow secret is {SECRET_SIZE} bytes")


def _check_threshold(threshold: int, count: int) -> None:
    if not 1 <= count <= MAX_MEMBERS:
        raise ValueError(f"an escrow has 1 to {MAX_MEMBERS} members, not {count}")
    if not 1 <= threshold <= count:
        raise ValueError(f"a threshold is 1 to the {count} members, not {threshold}")


def _check_escrow_id(escrow: str) -> bytes:
    try:
        raw = bytes.fromhex(escrow)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != ESCROW_ID_SIZE or escrow != escrow.lower():
        raise ShareError(f"an escrow id is {ESCROW_ID_SIZE} bytes in lowercase hex")
    return raw


def _open(wrapped: bytes, private_key: X25519PrivateKey, info: bytes, what: str) -> bytes:
    try:
        value = SUITE.decrypt(wrapped, private_key, info)
    except Exception as exc:  # cryptography raises InvalidTag or ValueError for bad input
        raise ShareError(
            f"{what} does not unwrap: wrong key, patient, escrow, member or index, or altered bytes"
        ) from exc
    if len(value) != SECRET_SIZE:
        raise ShareError(f"the wrapped value is not a {SECRET_SIZE}-byte share")
    return value
