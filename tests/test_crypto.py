from __future__ import annotations

import pytest

from careledger.crypto.canonical import NotCanonical, canonical_bytes, parse_canonical
from careledger.crypto.keys import (
    Identity,
    KeyError_,
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


def test_recovery_phrase_restores_the_same_did() -> None:
    phrase = new_recovery_phrase()
    assert len(phrase.split()) == 24
    first, again = identity_from_phrase(phrase), identity_from_phrase("  " + phrase.upper() + " ")
    assert first.did == again.did
    assert first.encryption_public == again.encryption_public
    assert identity_from_phrase(new_recovery_phrase()).did != first.did


def test_recovery_phrase_with_a_wrong_word_is_refused() -> None:
    words = new_recovery_phrase().split()
    words[3] = "zebra" if words[3] != "zebra" else "apple"
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
