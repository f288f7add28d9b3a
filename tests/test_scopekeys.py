"""Scope keys, data-key wrapping and scope-key grants."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from careledger.crypto.envelope import BlobOwner, RecordBinding, WrappedKey
from careledger.crypto.hpke import SUITE
from careledger.crypto.scopekeys import (
    WRAP_OVERHEAD,
    WRAPPED_NAMING_KEY_SIZE,
    ScopePublic,
    UnwrapError,
    _hpke_seal_with_ephemeral,
    data_key_info,
    derive_scope_key,
    naming_grant_info,
    unwrap_data_key,
    unwrap_naming_key,
    unwrap_scope_key,
    wrap_data_key,
    wrap_naming_key,
    wrap_scope_key,
    wrap_to_scope,
)

ROOT = os.urandom(32)
BINDING = RecordBinding("pseudonym-1", "Observation", "obs-1", 1)
NAME = "5e" * 32  # the record's on-chain name (any 64 hex: the wrap does not compute it)
OWNER = BlobOwner("pseudonym-1", NAME)
GRANTEE = "did:key:z6MkOrganisationForTests"


def public_of(scope: str = "clinical", epoch: int = 0) -> ScopePublic:
    pair = derive_scope_key(ROOT, scope, epoch)
    return ScopePublic(scope, epoch, pair.public_bytes)


def test_derivation_is_deterministic_and_separates_scopes_and_epochs() -> None:
    same = derive_scope_key(ROOT, "clinical", 0)
    assert same.private_bytes() == derive_scope_key(ROOT, "clinical", 0).private_bytes()
    others = {
        derive_scope_key(ROOT, "clinical", 1).public_bytes,
        derive_scope_key(ROOT, "medications", 0).public_bytes,
        derive_scope_key(os.urandom(32), "clinical", 0).public_bytes,
    }
    assert same.public_bytes not in others and len(others) == 3
    assert same.recipient == "scope/clinical/0"


@pytest.mark.parametrize(("scope", "epoch"), [("", 0), ("a/b", 0), ("x", -1), ("x", 2**32)])
def test_bad_scope_names_and_epochs_are_refused(scope: str, epoch: int) -> None:
    with pytest.raises(ValueError):
        derive_scope_key(ROOT, scope, epoch)


def test_wrap_and_unwrap_a_data_key_knowing_only_the_owner() -> None:
    """Wrap v2: the reader gives the patient and the record's name (what the chain and the
    blob header say) and learns the data key with the record's type, id and version."""
    data_key = os.urandom(32)
    wrapped = wrap_to_scope(data_key, BINDING, NAME, public_of())
    assert wrapped.recipient == "scope/clinical/0"
    plaintext_size = 32 + 2 + len("Observation") + 2 + len("obs-1") + 4
    assert len(wrapped.wrapped) == WRAP_OVERHEAD + plaintext_size
    unwrapped = unwrap_data_key(wrapped, OWNER, derive_scope_key(ROOT, "clinical", 0))
    assert unwrapped.data_key == data_key and unwrapped.binding == BINDING
    assert data_key.hex() not in repr(unwrapped)


def test_unwrap_fails_with_another_scope_epoch_record_patient_or_label() -> None:
    wrapped = wrap_to_scope(os.urandom(32), BINDING, NAME, public_of())
    key = derive_scope_key(ROOT, "clinical", 0)
    with pytest.raises(UnwrapError):
        unwrap_data_key(wrapped, OWNER, derive_scope_key(ROOT, "clinical", 1))
    with pytest.raises(UnwrapError):  # moved to another record of the patient
        unwrap_data_key(wrapped, BlobOwner("pseudonym-1", "ab" * 32), key)
    with pytest.raises(UnwrapError):  # moved to another patient's record of the same name
        unwrap_data_key(wrapped, BlobOwner("pseudonym-2", NAME), key)
    relabelled = WrappedKey("scope/clinical/7", wrapped.wrapped)
    with pytest.raises(UnwrapError):
        unwrap_data_key(relabelled, OWNER, key)


def test_unwrap_fails_on_any_flipped_byte() -> None:
    wrapped = wrap_to_scope(os.urandom(32), BINDING, NAME, public_of())
    key = derive_scope_key(ROOT, "clinical", 0)
    for position in range(len(wrapped.wrapped)):
        altered = bytearray(wrapped.wrapped)
        altered[position] ^= 0x80
        with pytest.raises(UnwrapError):
            unwrap_data_key(WrappedKey(wrapped.recipient, bytes(altered)), OWNER, key)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"k" * 31,  # shorter than a data key
        b"k" * 32,  # a data key alone (what a v1 wrap held)
        b"k" * 32 + b"\x00\x0bObservation\x00\x05obs-1\x00\x00\x00",  # version cut short
        b"k" * 32 + b"\x00\x0bObservation\x00\x05obs-1\x00\x00\x00\x01!",  # a byte more
        b"k" * 32 + b"\x00\x0bObservation\x00\x05obs-1\x00\x00\x00\x00",  # version 0
        b"k" * 32 + b"\x00\x0bobservation\x00\x05obs-1\x00\x00\x00\x01",  # not a type
        b"k" * 32 + b"\x00\x0bObservation\x00\x05obs/1\x00\x00\x00\x01",  # not an id
        b"k" * 32 + b"\x00\x0bObservation\x00\x05ob\xff-1\x00\x00\x00\x01",  # not UTF-8
    ],
)
def test_a_wrap_whose_plaintext_is_not_key_type_id_version_is_refused(plaintext: bytes) -> None:
    """A writer's wrap that HPKE opens but does not hold exactly data key, lp(type), lp(id),
    u32(version >= 1) is refused, never half-read."""
    public = public_of()
    info = data_key_info(OWNER, public.recipient)
    sealed = SUITE.encrypt(
        plaintext,
        X25519PrivateKey.from_private_bytes(
            derive_scope_key(ROOT, "clinical", 0).private_bytes()
        ).public_key(),
        info,
    )
    with pytest.raises(UnwrapError, match="type, id and version"):
        unwrap_data_key(
            WrappedKey(public.recipient, sealed), OWNER, derive_scope_key(ROOT, "clinical", 0)
        )


def test_direct_recipient_wrap_with_raw_public_key() -> None:
    org = X25519PrivateKey.generate()
    data_key = os.urandom(32)
    wrapped = wrap_data_key(data_key, BINDING, NAME, GRANTEE, org.public_key().public_bytes_raw())
    assert unwrap_data_key(wrapped, OWNER, org).data_key == data_key


def test_grant_gives_the_grantee_the_scope_key() -> None:
    scope_key = derive_scope_key(ROOT, "diagnostics", 2)
    org = X25519PrivateKey.generate()
    sealed = wrap_scope_key(scope_key, "pseudonym-1", GRANTEE, org.public_key())
    public = ScopePublic("diagnostics", 2, scope_key.public_bytes)
    granted = unwrap_scope_key(sealed, "pseudonym-1", public, GRANTEE, org)
    assert granted.private_bytes() == scope_key.private_bytes()
    # With the granted key the organisation opens records wrapped to that scope.
    data_key = os.urandom(32)
    wrapped = wrap_to_scope(data_key, BINDING, NAME, public)
    assert unwrap_data_key(wrapped, OWNER, granted).data_key == data_key


def test_grant_fails_for_another_grantee_patient_or_scope() -> None:
    scope_key = derive_scope_key(ROOT, "diagnostics", 2)
    org = X25519PrivateKey.generate()
    sealed = wrap_scope_key(scope_key, "pseudonym-1", GRANTEE, org.public_key())
    public = ScopePublic("diagnostics", 2, scope_key.public_bytes)
    with pytest.raises(UnwrapError):
        unwrap_scope_key(sealed, "pseudonym-1", public, GRANTEE, X25519PrivateKey.generate())
    with pytest.raises(UnwrapError):
        unwrap_scope_key(sealed, "pseudonym-2", public, GRANTEE, org)
    with pytest.raises(UnwrapError):
        unwrap_scope_key(sealed, "pseudonym-1", public, "did:key:zSomeoneElse", org)
    with pytest.raises(UnwrapError):
        unwrap_scope_key(
            sealed,
            "pseudonym-1",
            ScopePublic("diagnostics", 3, scope_key.public_bytes),
            GRANTEE,
            org,
        )


def test_grant_of_a_key_that_is_not_the_published_one_is_refused() -> None:
    impostor = derive_scope_key(os.urandom(32), "clinical", 0)
    org = X25519PrivateKey.generate()
    sealed = wrap_scope_key(impostor, "pseudonym-1", GRANTEE, org.public_key())
    with pytest.raises(UnwrapError, match="public key"):
        unwrap_scope_key(sealed, "pseudonym-1", public_of(), GRANTEE, org)


# RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM), sequence 0.
RFC9180_A1 = {
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "ct": "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
    "6d8770ac83d07bea87e13c512a",
}


def test_internal_hpke_reproduces_rfc9180_a1() -> None:
    v = {k: bytes.fromhex(x) for k, x in RFC9180_A1.items()}
    out = _hpke_seal_with_ephemeral(
        v["pkRm"], v["info"], b"Beauty is truth, truth beauty", v["skEm"],
        aad=b"Count-0", aead_id=0x0001,
    )  # fmt: skip
    assert out == v["enc"] + v["ct"]


def test_internal_hpke_and_cryptography_hpke_agree() -> None:
    recipient = X25519PrivateKey.generate()
    ours = _hpke_seal_with_ephemeral(
        recipient.public_key().public_bytes_raw(), b"info", b"payload", os.urandom(32)
    )
    assert SUITE.decrypt(ours, recipient, b"info") == b"payload"


# --- the naming key ---------------------------------------------------------------------


def test_naming_key_wraps_to_a_grantee_and_opens_only_for_it() -> None:
    naming_key = os.urandom(32)
    org = X25519PrivateKey.generate()
    wrapped = wrap_naming_key(naming_key, "pseudonym-1", GRANTEE, org.public_key())
    assert len(wrapped) == WRAPPED_NAMING_KEY_SIZE == 80
    assert unwrap_naming_key(wrapped, "pseudonym-1", GRANTEE, org) == naming_key
    # The same bytes for another patient, another grantee, another key: refused.
    with pytest.raises(UnwrapError, match="naming key"):
        unwrap_naming_key(wrapped, "pseudonym-2", GRANTEE, org)
    with pytest.raises(UnwrapError):
        unwrap_naming_key(wrapped, "pseudonym-1", "did:key:z6MkSomeoneElse", org)
    with pytest.raises(UnwrapError):
        unwrap_naming_key(wrapped, "pseudonym-1", GRANTEE, X25519PrivateKey.generate())
    altered = bytearray(wrapped)
    altered[40] ^= 1
    with pytest.raises(UnwrapError):
        unwrap_naming_key(bytes(altered), "pseudonym-1", GRANTEE, org)


def test_a_wrapped_scope_key_does_not_open_as_a_naming_key() -> None:
    # Domain separation: a scope-key grant to the same grantee is not a naming-key grant.
    org = X25519PrivateKey.generate()
    scope_grant = wrap_scope_key(
        derive_scope_key(ROOT, "clinical", 1), "p", GRANTEE, org.public_key()
    )
    with pytest.raises(UnwrapError):
        unwrap_naming_key(scope_grant, "p", GRANTEE, org)


def test_naming_key_info_and_size_checks() -> None:
    assert naming_grant_info("p", "g") == b"careledger-naming-key-grant-v1\x00\x01p\x00\x01g"
    with pytest.raises(ValueError, match="32 bytes"):
        wrap_naming_key(b"short", "p", GRANTEE, X25519PrivateKey.generate().public_key())


def test_naming_key_wrap_matches_rfc9180_seal_with_a_given_ephemeral_key() -> None:
    # The info string is the one the portal must build: pin it through the reference sealer.
    org = X25519PrivateKey.generate()
    naming_key = bytes(range(32))
    sealed = _hpke_seal_with_ephemeral(
        org.public_key().public_bytes_raw(),
        naming_grant_info("p", GRANTEE),
        naming_key,
        bytes(range(0xA0, 0xC0)),
    )
    assert unwrap_naming_key(sealed, "p", GRANTEE, org) == naming_key
