from __future__ import annotations

import base64
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from careledger.crypto.canonical import NotCanonical, canonical_bytes, parse_canonical
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import (
    Identity,
    KeyError_,
    check_ed25519_did,
    derive_secret,
    did_from_ed25519,
    ed25519_from_did,
    identity_from_phrase,
    new_recovery_phrase,
    verify_signature,
)
from careledger.crypto.merkle import (
    EMPTY_ROOT,
    InclusionProof,
    inclusion_proof,
    merkle_root,
    verify_inclusion,
)
from careledger.crypto.scopekeys import derive_scope_key
from careledger.wallet.records import ClaimEnrolment, PendingClaim


def test_recovery_phrase_restores_the_same_did() -> None:
    phrase = new_recovery_phrase()
    assert len(phrase.split()) == 24
    first, again = identity_from_phrase(phrase), identity_from_phrase("  " + phrase.upper() + " ")
    assert first.did == again.did
    assert first.encryption_public == again.encryption_public
    assert identity_from_phrase(new_recovery_phrase()).did != first.did


def test_recovery_phrase_with_a_wrong_word_is_refused() -> None:
    # The BIP-39 test phrase of all-zero entropy (a test vector): valid as it is, and with
    # its last word changed the 8-bit checksum fails. (A random phrase with one word swapped
    # passes its checksum once in 256: not a test that can be relied on.)
    valid = ["abandon"] * 23 + ["art"]
    identity_from_phrase(" ".join(valid))
    with pytest.raises(KeyError_):
        identity_from_phrase(" ".join([*valid[:23], "zoo"]))
    words = new_recovery_phrase().split()
    words[3] = "notaword"
    with pytest.raises(KeyError_):
        identity_from_phrase(" ".join(words))
    with pytest.raises(KeyError_, match="24 words"):
        identity_from_phrase("abandon ability")


def test_did_key_round_trip_and_known_prefix() -> None:
    ident = Identity.generate()
    assert ident.did.startswith("did:key:z6Mk")  # the Ed25519 multicodec prefix in base58btc
    assert ed25519_from_did(ident.did) == ident.signing_public
    assert did_from_ed25519(ident.signing_public) == ident.did
    for bad in ["did:web:example.com", "did:key:z0OIl", "did:key:zabc", ""]:
        with pytest.raises(KeyError_):
            ed25519_from_did(bad)


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def did_of_number(number: int) -> str:
    """The did:key spelling `number` in base58 (34 bytes: a multicodec prefix and a key)."""
    digits = ""
    while number:
        number, digit = divmod(number, 58)
        digits = B58[digit] + digits
    return "did:key:z" + digits


def accepts(check: Callable[[str], object], did: str) -> bool:
    try:
        check(did)
    except KeyError_:
        return False
    return True


def test_the_quick_did_check_decides_exactly_as_decoding_does() -> None:
    """A consensus rule (Payload.did): check_ed25519_did must accept exactly the strings
    ed25519_from_did accepts. At the edges of the Ed25519 range and just outside it, another
    multicodec, and each of 20 keys with one character changed at many places, a character
    more or less, a leading "1" (a zero byte), non-ASCII digits."""
    first, last = 0xED01 << 256, (0xED02 << 256) - 1
    edges = [first, first + 1, first + 57, first + 58, last - 58, last - 1, last]
    outside = [first - 1, last + 1, 0xEC01 << 256]  # 0xec01: an X25519 did:key
    candidates = [did_of_number(n) for n in edges + outside]
    for did in candidates[: len(edges)] + [Identity.generate().did for _ in range(20)]:
        body = did[len("did:key:z") :]
        candidates += [did[:-1], did + "1", did + "z", "did:key:z1" + body, did.upper()]
        for place in (0, 1, 2, 3, 20, 45, 46):
            for c in (*B58[::4], "0", "O", "l", "I", "\u0661", "\U0001d7ce", "/"):
                candidates.append(did[: 9 + place] + c + did[10 + place :])
    assert sum(accepts(ed25519_from_did, c) for c in candidates) > 1000  # both kinds, many
    for candidate in candidates:
        assert accepts(check_ed25519_did, candidate) == accepts(ed25519_from_did, candidate)


def test_signatures_verify_only_for_the_signed_bytes_and_key() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    sig = alice.sign(b"hello")
    assert verify_signature(alice.signing_public, sig, b"hello")
    assert not verify_signature(alice.signing_public, sig, b"hellp")
    assert not verify_signature(bob.signing_public, sig, b"hello")
    assert not verify_signature(alice.signing_public, sig[:-1], b"hello")


def test_derived_secrets_are_independent_per_label() -> None:
    ident = Identity.generate()
    assert ident.secret("scope/a") != ident.secret("scope/b")
    assert ident.secret("scope/a") == Identity(ident.master).secret("scope/a")


def test_canonical_json_is_rfc8785() -> None:
    assert (
        canonical_bytes({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )
    assert parse_canonical(b'{"a":1,"b":2}') == {"a": 1, "b": 2}
    with pytest.raises(NotCanonical):
        parse_canonical(b'{"b":2,"a":1}')
    with pytest.raises(NotCanonical):
        parse_canonical(b"{not json")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13])
def test_every_leaf_has_a_verifying_inclusion_proof(n: int) -> None:
    leaves = [f"tx{i}".encode() for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        assert verify_inclusion(proof, root)
        assert verify_inclusion(InclusionProof.from_json(proof.to_json()), root)
        forged = InclusionProof(proof.index, proof.total, b"other", proof.aunts)
        assert not verify_inclusion(forged, root)
        if n > 1:
            moved = InclusionProof((i + 1) % n, n, proof.leaf, proof.aunts)
            assert not verify_inclusion(moved, root)


def test_merkle_root_matches_rfc6962_shape() -> None:
    import hashlib

    def h(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    a, b, c = b"a", b"b", b"c"
    la, lb, lc = h(b"\x00" + a), h(b"\x00" + b), h(b"\x00" + c)
    assert merkle_root([a, b, c]) == h(b"\x01" + h(b"\x01" + la + lb) + lc)
    assert merkle_root([]) == EMPTY_ROOT


# --- key hygiene: label namespaces, repr, caches ------------------------------------------


def _private_seeds(ident: Identity) -> tuple[bytes, bytes]:
    """The raw Ed25519 seed and X25519 private key the identity signs and decrypts with."""
    signing = Ed25519PrivateKey.from_private_bytes(ident._signing.private_bytes_raw())
    assert signing.sign(b"m") == ident.sign(b"m")  # it is the key the identity signs with
    return ident._signing.private_bytes_raw(), ident.encryption_private.private_bytes_raw()


def test_secret_never_returns_the_signing_or_encryption_seed() -> None:
    # The attack: secret("ed25519") derived under "careledger/v1/" + label, the very label of
    # the signing seed, so anything handed a secret() (say, a scope-key export) could sign.
    ident = Identity.generate()
    signing_seed, encryption_key = _private_seeds(ident)
    for label in ("ed25519", "x25519", "master-from-phrase", "scope-keys"):
        assert ident.secret(label) not in (signing_seed, encryption_key)
    assert ident.secret("ed25519") != derive_secret(ident.master, "careledger/v1/ed25519")
    assert ident.secret("scope-keys") == derive_secret(
        ident.master, "careledger/v1/secret/scope-keys"
    )


@pytest.mark.parametrize(
    "label", ["", "Ed25519", "../ed25519", "/ed25519", "a b", "é", "a" * 65, "x\x00"]
)
def test_secret_labels_are_validated(label: str) -> None:
    with pytest.raises(KeyError_):
        Identity.generate().secret(label)


def _encodings(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        repr(secret),
    ]


def test_no_secret_in_repr_or_str_of_identity_keyfile_or_enrolment(tmp_path: Path) -> None:
    phrase = new_recovery_phrase()
    ident = identity_from_phrase(phrase)
    ident.sign(b"warm the key cache")
    keyfile = KeyFile(ident.did, "patient", ident, "Jo")
    code = "abandon " * 5 + "about"
    enrolment = ClaimEnrolment(ident.did, ident.master, code, {}, ident.master)
    pending = PendingClaim(ident.did, tmp_path / "claim.json", code)
    secrets = [ident.master, *_private_seeds(ident)]
    for shown in (
        repr(ident),
        str(ident),
        f"{ident}",
        f"{ident!r}",
        repr(keyfile),
        str(keyfile),
        f"{keyfile}",
        repr(enrolment),
        str(enrolment),
        repr(pending),
        repr([ident, keyfile]),
    ):
        for secret in secrets:
            for encoded in _encodings(secret):
                assert encoded not in shown
        assert phrase not in shown and phrase.split()[0] + " " + phrase.split()[1] not in shown
        assert code not in shown
    assert ident.did in repr(ident) and ident.did in repr(keyfile)


def test_derived_keys_live_on_the_identity_not_in_a_global_cache() -> None:
    # The attack: a module-level lru_cache keyed by the master secret kept every identity's
    # secret and private keys alive for the life of the process, after its owner dropped it.
    # Whatever keeps a secret also holds a reference to it: count them.
    master = os.urandom(32)
    references = sys.getrefcount(master)
    ident = Identity(master)
    assert ident.sign(b"m") and ident.encryption_public and ident.did
    scope_root = ident.secret("scope-keys")
    root_references = sys.getrefcount(scope_root)
    assert derive_scope_key(scope_root, "clinical", 0).public_bytes
    assert sys.getrefcount(scope_root) == root_references
    del ident
    gc.collect()
    assert sys.getrefcount(master) == references


def test_identity_equality_ignores_its_key_cache() -> None:
    master = os.urandom(32)
    used, fresh = Identity(master), Identity(master)
    used.sign(b"m")
    assert used == fresh and hash(used) == hash(fresh) and {used, fresh} == {used}
    assert Identity(os.urandom(32)) != used
