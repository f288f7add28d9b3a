"""Keys and identities: Ed25519 for signing, X25519 for encryption, did:key names.

Every person and organisation is one 32-byte master secret. Their keys are derived from it
with HKDF under distinct labels, and a patient's master secret is derived from a 24-word
BIP-39 recovery phrase, so that the phrase alone restores the identity.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mnemonic import Mnemonic
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()

# Multicodec prefixes (unsigned varint) of did:key.
_ED25519_PUB = b"\xed\x01"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}

_KDF_SALT = b"careledger/keys/v1"
PHRASE_WORDS = 24


class KeyError_(ValueError):
    """A key, did or recovery phrase that cannot be used."""


def derive_secret(master: bytes, label: str, length: int = 32) -> bytes:
    """A 32-byte secret for one purpose; distinct labels give independent secrets."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=_KDF_SALT, info=label.encode())
    return hkdf.derive(master)


# --- did:key -------------------------------------------------------------------------------


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + out


def _b58decode(text: str) -> bytes:
    n, index = 0, _B58_INDEX
    c = ""
    # One lookup per character, not a test and a lookup: every new sender's did is decoded
    # once (ed25519_from_did), 5.0 -> 2.9 us for a did:key.
    try:
        for c in text:
            n = n * 58 + index[c]
    except KeyError:
        raise KeyError_(f"invalid base58 character {c!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + body


def did_from_ed25519(public_key: bytes) -> str:
    return "did:key:z" + _b58encode(_ED25519_PUB + public_key)


@lru_cache(maxsize=65536)
def ed25519_from_did(did: str) -> bytes:
    """The raw Ed25519 public key named by a did:key; KeyError_ for anything else."""
    if not isinstance(did, str) or not did.startswith("did:key:z") or len(did) > 128:
        raise KeyError_(f"not an Ed25519 did:key: {str(did)[:80]!r}")
    raw = _b58decode(did[len("did:key:z") :])
    if not raw.startswith(_ED25519_PUB) or len(raw) != 34:
        raise KeyError_(f"not an Ed25519 did:key: {did[:80]!r}")
    return raw[2:]


# The base58 part of an Ed25519 did:key spells a number from 0xed01 followed by 32 zero bytes
# to 0xed01 followed by 32 0xff bytes: always 47 characters, none of them a leading "1" (a
# zero byte), and base58 strings of one length order as the numbers they spell (the alphabet
# is in ASCII order). So a string of 47 base58 characters between these two is one.
_ED25519_B58_FIRST = _b58encode(_ED25519_PUB + bytes(32))
_ED25519_B58_LAST = _b58encode(_ED25519_PUB + b"\xff" * 32)
_ED25519_B58 = re.compile(f"[{_B58}]{{{len(_ED25519_B58_FIRST)}}}")


def check_ed25519_did(did: str) -> None:
    """KeyError_ unless `did` is an Ed25519 did:key, as `ed25519_from_did` decides, without
    decoding the base58 of one that is: a payload's dids are checked before its sender is
    (chain/decoded.py), so anyone may have every node check 500 of them (an enrolment), and
    a decoding costs about 3 us a did. Anything else is decided (and its reason given) by
    `ed25519_from_did` itself."""
    body = did[len("did:key:z") :] if isinstance(did, str) and did.startswith("did:key:z") else ""
    if _ED25519_B58_FIRST <= body <= _ED25519_B58_LAST and _ED25519_B58.fullmatch(body):
        return
    ed25519_from_did(did)


# --- signatures ----------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _verify_key(raw: bytes) -> VerifyKey:
    return VerifyKey(raw)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """The one signature check every validator runs, a consensus rule: libsodium's Ed25519.

    libsodium's verification is strict (canonical S, no small-order keys) and twice as fast
    as OpenSSL's through `cryptography` on our machines (63 vs 120 microseconds); keys and
    signing stay with `cryptography`, since Ed25519 signatures are deterministic.
    """
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        _verify_key(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


# --- identities ----------------------------------------------------------------------------


# HKDF labels. Key labels and `Identity.secret()` labels live in disjoint namespaces: no
# label passed to secret() can derive a signing or encryption seed.
SIGNING_LABEL = "careledger/v1/ed25519"
ENCRYPTION_LABEL = "careledger/v1/x25519"
SECRET_LABEL_PREFIX = "careledger/v1/secret/"
_SECRET_LABEL = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")


@dataclass(frozen=True)
class Identity:
    """A person's or organisation's keys, derived from one master secret.

    The derived private keys are cached on the instance (never in a global cache keyed by the
    secret), and neither the master secret nor a derived key appears in repr() or str().
    """

    master: bytes = field(repr=False)
    _keys: _DerivedKeys | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.master, bytes) or len(self.master) != 32:
            raise KeyError_("a master secret is 32 bytes")

    def __repr__(self) -> str:
        return f"Identity(did={self.did!r})"

    __str__ = __repr__

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    def _derived(self) -> _DerivedKeys:
        keys = self._keys
        if keys is None:
            keys = _DerivedKeys.from_master(self.master)
            object.__setattr__(self, "_keys", keys)  # a cache: frozen for everything else
        return keys

    @property
    def _signing(self) -> Ed25519PrivateKey:
        return self._derived().signing

    @property
    def _encryption(self) -> X25519PrivateKey:
        return self._derived().encryption

    @property
    def signing_public(self) -> bytes:
        return self._derived().signing_public

    @property
    def encryption_public(self) -> bytes:
        return self._derived().encryption_public

    @property
    def encryption_private(self) -> X25519PrivateKey:
        return self._encryption

    @property
    def did(self) -> str:
        """The did:key of this identity's signing key (its name until a key rotation)."""
        return did_from_ed25519(self.signing_public)

    def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message)

    def secret(self, label: str) -> bytes:
        """A secret derived for one purpose (e.g. scope keys), independent of the others.

        Derived under ``careledger/v1/secret/<label>``, a namespace apart from the key labels,
        so that no label yields the signing or encryption seed. ``label`` is 1 to 64 of
        ``a-z 0-9 . _ / -``, starting with a letter or digit.
        """
        if not isinstance(label, str) or not _SECRET_LABEL.fullmatch(label):
            raise KeyError_(f"not a secret label: {str(label)[:80]!r}")
        return derive_secret(self.master, SECRET_LABEL_PREFIX + label)


@dataclass(frozen=True, repr=False, eq=False)
class _DerivedKeys:
    signing: Ed25519PrivateKey
    encryption: X25519PrivateKey
    signing_public: bytes
    encryption_public: bytes

    @classmethod
    def from_master(cls, master: bytes) -> _DerivedKeys:
        signing = Ed25519PrivateKey.from_private_bytes(derive_secret(master, SIGNING_LABEL))
        encryption = X25519PrivateKey.from_private_bytes(derive_secret(master, ENCRYPTION_LABEL))
        return cls(
            signing,
            encryption,
            signing.public_key().public_bytes(_RAW, _RAW_PUB),
            encryption.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    def __repr__(self) -> str:
        return "_DerivedKeys(<secret>)"


# --- recovery phrase -----------------------------------------------------------------------

_MNEMONIC = Mnemonic("english")


def new_recovery_phrase() -> str:
    """24 BIP-39 words (256 bits of entropy)."""
    return _MNEMONIC.generate(strength=256)


def identity_from_phrase(phrase: str) -> Identity:
    words = " ".join(phrase.lower().split())
    if len(words.split()) != PHRASE_WORDS:
        raise KeyError_(f"a recovery phrase has {PHRASE_WORDS} words")
    if not _MNEMONIC.check(words):
        raise KeyError_("recovery phrase has an unknown word or a wrong checksum")
    seed = Mnemonic.to_seed(words)
    return Identity(derive_secret(seed, "careledger/v1/master-from-phrase"))
