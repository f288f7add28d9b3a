"""The break-glass escrow (crypto/escrow.py): split, wrap, release, combine, open.

Each refusal is an attack performed against the real code: too few shares, shares of another
escrow, a forged share, a share released to someone else, a bundle of another patient. The
vectors (tests/vectors/escrow_vectors.json) are checked against an independent computation:
HKDF with hmac/hashlib, AES-GCM with `cryptography`, Shamir's interpolation in GF(2^128)
written out here.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from careledger.crypto import escrow
from careledger.crypto.escrow import (
    BundleError,
    EmergencyBundle,
    NotEnoughShares,
    Share,
    ShareError,
)
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity

VECTORS = json.loads((Path(__file__).parent / "vectors" / "escrow_vectors.json").read_text())
SCOPES = ("clinical", "diagnostics", "medications")


def _patient() -> KeyFile:
    ident = Identity.generate()
    return KeyFile(ident.did, "patient", ident)


def _bundle(patient: KeyFile) -> EmergencyBundle:
    return EmergencyBundle(
        patient.did, patient.naming_key, tuple(patient.scope_key(s, 1) for s in SCOPES)
    )


def _members(count: int) -> dict[str, Identity]:
    idents = [Identity.generate() for _ in range(count)]
    return {i.did: i for i in idents}


def _released(made: escrow.Escrow, orgs: dict[str, Identity], requester: Identity) -> list[Share]:
    """Every member releases its share to `requester`, as the node route does."""
    shares = []
    for wrapped in made.shares:
        released = escrow.rewrap_share(
            wrapped.wrapped,
            made.patient,
            made.escrow,
            wrapped.org,
            wrapped.index,
            orgs[wrapped.org].encryption_private,
            requester.did,
            requester.encryption_public,
        )
        shares.append(
            escrow.unwrap_released_share(
                released,
                made.patient,
                made.escrow,
                wrapped.org,
                wrapped.index,
                requester.did,
                requester.encryption_private,
            )
        )
    return shares


def test_k_of_n_released_shares_open_the_bundle_and_any_k_will_do() -> None:
    patient, orgs, requester = _patient(), _members(4), Identity.generate()
    made = escrow.make_escrow(
        _bundle(patient), {d: i.encryption_public for d, i in orgs.items()}, threshold=3
    )
    assert made.members == tuple(sorted(orgs))
    assert [s.index for s in made.shares] == [1, 2, 3, 4]
    shares = _released(made, orgs, requester)
    for chosen in itertools.combinations(shares, 3):
        bundle = escrow.open_escrow(made.sealed, chosen, patient.did, made.escrow, 3)
        assert bundle.naming_key == patient.naming_key
        assert bundle.scopes == SCOPES
        pair = bundle.scope_pair("clinical", 1)
        assert (
            pair is not None and pair.public_bytes == patient.scope_key("clinical", 1).public_bytes
        )


def test_fewer_than_k_shares_yield_nothing() -> None:
    patient, orgs, requester = _patient(), _members(3), Identity.generate()
    made = escrow.make_escrow(
        _bundle(patient), {d: i.encryption_public for d, i in orgs.items()}, threshold=2
    )
    shares = _released(made, orgs, requester)
    with pytest.raises(NotEnoughShares, match=r"1 distinct share.*2 are needed"):
        escrow.open_escrow(made.sealed, shares[:1], patient.did, made.escrow, 2)
    # The same share twice is still one share.
    with pytest.raises(NotEnoughShares):
        escrow.open_escrow(made.sealed, [shares[0], shares[0]], patient.did, made.escrow, 2)
    # A requester who lies about the threshold gets a wrong secret, which AES-GCM refuses.
    with pytest.raises(BundleError, match="does not open"):
        escrow.open_escrow(made.sealed, shares[:1], patient.did, made.escrow, 1)


def test_shares_of_another_escrow_are_refused() -> None:
    patient, orgs, requester = _patient(), _members(3), Identity.generate()
    keys = {d: i.encryption_public for d, i in orgs.items()}
    first = escrow.make_escrow(_bundle(patient), keys, threshold=2)
    second = escrow.make_escrow(_bundle(patient), keys, threshold=2)
    mixed = [_released(first, orgs, requester)[0], _released(second, orgs, requester)[1]]
    with pytest.raises(ShareError, match="belongs to escrow"):
        escrow.open_escrow(first.sealed, mixed, patient.did, first.escrow, 2)
    # Relabelled as the first escrow's, the second's share gives a wrong secret: refused.
    relabelled = [mixed[0], Share(first.escrow, mixed[1].index, mixed[1].value)]
    with pytest.raises(BundleError):
        escrow.open_escrow(first.sealed, relabelled, patient.did, first.escrow, 2)
    # A member's wrapped share of one escrow does not unwrap as another escrow's.
    org = first.shares[0]
    with pytest.raises(ShareError, match="does not unwrap"):
        escrow.unwrap_share(
            org.wrapped, patient.did, second.escrow, org.org, org.index,
            orgs[org.org].encryption_private,
        )  # fmt: skip


def test_two_different_shares_of_one_index_are_refused() -> None:
    escrow_id = escrow.new_escrow_id()
    shares = escrow.split_secret(escrow.new_secret(), escrow_id, 2, 3)
    forged = Share(escrow_id, 1, bytes(16))
    with pytest.raises(ShareError, match="two different shares of index 1"):
        escrow.combine_shares([shares[0], forged, shares[1]], escrow_id, 2)


def test_a_released_share_opens_only_for_its_requester_and_member_index() -> None:
    patient, orgs = _patient(), _members(3)
    requester, other = Identity.generate(), Identity.generate()
    made = escrow.make_escrow(
        _bundle(patient), {d: i.encryption_public for d, i in orgs.items()}, threshold=2
    )
    wrapped = made.shares[0]
    member = orgs[wrapped.org]
    released = escrow.rewrap_share(
        wrapped.wrapped, patient.did, made.escrow, wrapped.org, wrapped.index,
        member.encryption_private, requester.did, requester.encryption_public,
    )  # fmt: skip
    with pytest.raises(ShareError):  # another identity's key
        escrow.unwrap_released_share(
            released, patient.did, made.escrow, wrapped.org, wrapped.index,
            other.did, other.encryption_private,
        )  # fmt: skip
    with pytest.raises(ShareError):  # claimed as another member's index
        escrow.unwrap_released_share(
            released, patient.did, made.escrow, wrapped.org, 2,
            requester.did, requester.encryption_private,
        )  # fmt: skip
    # A member cannot release a share it was not given.
    intruder = Identity.generate()
    with pytest.raises(ShareError):
        escrow.rewrap_share(
            wrapped.wrapped, patient.did, made.escrow, wrapped.org, wrapped.index,
            intruder.encryption_private, requester.did, requester.encryption_public,
        )  # fmt: skip


def test_a_bundle_opens_only_for_its_patient_and_escrow() -> None:
    patient = _patient()
    secret, escrow_id = escrow.new_secret(), escrow.new_escrow_id()
    sealed = escrow.seal_bundle(_bundle(patient), secret, escrow_id)
    with pytest.raises(BundleError):
        escrow.open_bundle(sealed, secret, _patient().did, escrow_id)
    with pytest.raises(BundleError):
        escrow.open_bundle(sealed, secret, patient.did, escrow.new_escrow_id())
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(BundleError):
        escrow.open_bundle(altered, secret, patient.did, escrow_id)
    assert escrow.open_bundle(sealed, secret, patient.did, escrow_id).patient == patient.did


def test_a_bundle_is_checked_against_the_published_keys() -> None:
    from careledger.crypto.scopekeys import ScopePublic

    patient = _patient()
    bundle = _bundle(patient)
    published = {(s, 1): ScopePublic(s, 1, patient.scope_key(s, 1).public_bytes) for s in SCOPES}
    bundle.check_against(published)
    published[("clinical", 1)] = ScopePublic(
        "clinical", 1, _patient().scope_key("clinical", 1).public_bytes
    )
    with pytest.raises(BundleError, match="clinical key of epoch 1"):
        bundle.check_against(published)


def test_no_secret_in_a_repr() -> None:
    patient = _patient()
    secret, escrow_id = escrow.new_secret(), escrow.new_escrow_id()
    share = escrow.split_secret(secret, escrow_id, 1, 1)[0]
    bundle = _bundle(patient)
    made = escrow.make_escrow(bundle, {patient.did: patient.identity.encryption_public}, 1)
    texts = repr(share) + repr(bundle) + repr(made) + str(share)
    assert share.value.hex() not in texts and secret.hex() not in texts
    assert patient.naming_key.hex() not in texts
    assert made.sealed.hex() not in texts
    for pair in bundle.scope_keys:
        assert pair.private_bytes().hex() not in texts


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        escrow.split_secret(escrow.new_secret(), escrow.new_escrow_id(), 4, 3)
    with pytest.raises(ValueError, match="16 bytes"):
        escrow.split_secret(b"short", escrow.new_escrow_id(), 1, 1)
    with pytest.raises(ShareError, match="escrow id"):
        Share("zz", 1, bytes(16))
    with pytest.raises(ShareError, match="index"):
        Share(escrow.new_escrow_id(), 0, bytes(16))
    with pytest.raises(BundleError, match="not an emergency bundle"):
        EmergencyBundle.from_bytes(b'{"patient":"x"}', "x")


# --- vectors --------------------------------------------------------------------------------

_R = (1 << 128) | 0x87  # GF(2^128) modulus x^128 + x^7 + x^2 + x + 1


def _gf_mul(a: int, b: int) -> int:
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a >> 128:
            a ^= _R
    return product


def _gf_inverse(a: int) -> int:
    result, exponent = 1, (1 << 128) - 2  # a^(2^128 - 2)
    while exponent:
        if exponent & 1:
            result = _gf_mul(result, a)
        a = _gf_mul(a, a)
        exponent >>= 1
    return result


def _interpolate_at_zero(points: list[tuple[int, bytes]]) -> bytes:
    """Lagrange at x = 0 in GF(2^128) (subtraction is xor), written out independently."""
    secret = 0
    for i, (xi, yi) in enumerate(points):
        term = int.from_bytes(yi, "big")
        for j, (xj, _) in enumerate(points):
            if i != j:
                term = _gf_mul(term, _gf_mul(xj, _gf_inverse(xj ^ xi)))
        secret ^= term
    return secret.to_bytes(16, "big")


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_vectors_any_k_shares_give_the_secret() -> None:
    secret = bytes.fromhex(VECTORS["secret"])
    points = [(s["index"], bytes.fromhex(s["value"])) for s in VECTORS["shares"]]
    for chosen in itertools.combinations(points, VECTORS["threshold"]):
        assert _interpolate_at_zero(list(chosen)) == secret  # independent
        shares = [Share(VECTORS["escrow"], i, v) for i, v in chosen]
        assert escrow.combine_shares(shares, VECTORS["escrow"], VECTORS["threshold"]) == secret


def test_vectors_key_aad_and_sealed_bundle() -> None:
    patient, escrow_id = VECTORS["patient"], VECTORS["escrow"]
    secret, nonce = bytes.fromhex(VECTORS["secret"]), bytes.fromhex(VECTORS["nonce"])
    raw_patient = patient.encode()
    info = escrow.EMERGENCY_LABEL + len(raw_patient).to_bytes(2, "big") + raw_patient
    key = _hkdf(secret, info)
    assert key.hex() == VECTORS["emergency_key"] == escrow.emergency_key(secret, patient).hex()
    aad = len(raw_patient).to_bytes(2, "big") + raw_patient + bytes.fromhex(escrow_id)
    assert aad.hex() == VECTORS["aad"]
    bundle = VECTORS["bundle"].encode()
    sealed = nonce + AESGCM(key).encrypt(nonce, bundle, aad)
    assert sealed.hex() == VECTORS["sealed"]
    opened = escrow.open_bundle(sealed, secret, patient, escrow_id)
    assert opened.to_bytes() == bundle
    master = bytes(range(32))
    keyfile = KeyFile(Identity(master).did, "patient", Identity(master))
    remade = EmergencyBundle(
        patient, keyfile.naming_key, tuple(keyfile.scope_key(s, 1) for s in SCOPES)
    )
    assert escrow.seal_bundle(remade, secret, escrow_id, nonce).hex() == VECTORS["sealed"]


def test_vectors_info_strings() -> None:
    patient, escrow_id = VECTORS["patient"], VECTORS["escrow"]
    member, requester = "did:example:member", "did:example:requester"

    def lp(text: str) -> bytes:
        return len(text.encode()).to_bytes(2, "big") + text.encode()

    share = escrow.SHARE_LABEL + lp(patient) + bytes.fromhex(escrow_id) + lp(member)
    share += (1).to_bytes(4, "big")
    assert share.hex() == VECTORS["share_info"]
    assert escrow.share_info(patient, escrow_id, member, 1) == share
    release = escrow.RELEASE_LABEL + share[len(escrow.SHARE_LABEL) :] + lp(requester)
    assert release.hex() == VECTORS["release_info"]
    assert escrow.release_info(patient, escrow_id, member, 1, requester) == release
