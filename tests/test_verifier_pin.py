"""The consensus signature verifier is pinned, and strict.

Every validator must accept exactly the same signatures: a verifier that accepts one more
(a non-canonical S, a small-order key) on some nodes splits the chain. So the verifier
(PyNaCl, bundling libsodium) is pinned to a tested range in pyproject.toml, and these tests
fail if the installed one is outside it or accepts what libsodium refuses. The forged
signatures below are *valid* under the bare Ed25519 equation (a permissive verifier, like the
RFC 8032 reference code without its range check, accepts them): only strictness refuses them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from careledger.crypto.keys import Identity, verify_signature

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# --- a permissive Ed25519 verifier (RFC 8032 section 6 arithmetic, no strictness) ----------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the group order
D = -121665 * pow(121666, P - 2, P) % P
Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _add(a: Point, b: Point) -> Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    a_ = (y1 - x1) * (y2 - x2) % P
    b_ = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b_ - a_, d - c, d + c, b_ + a_
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(scalar: int, point: Point) -> Point:
    result: Point = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point, scalar = _add(point, point), scalar >> 1
    return result


def _equal(a: Point, b: Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _decompress(raw: bytes) -> Point:
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    assert (x * x - x2) % P == 0, "not a curve point"
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _compress(point: Point) -> bytes:
    zinv = pow(point[2], P - 2, P)
    x, y = point[0] * zinv % P, point[1] * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


BASE = _decompress(bytes.fromhex("58" + "66" * 31))


def permissive_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """[S]B == R + [k]A, with S taken as any 256-bit integer and A any curve point."""
    a, r = _decompress(public), _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little")
    return _equal(_mul(s, BASE), _add(r, _mul(k % L, a)))


# --- the pin ---------------------------------------------------------------------------------


def _pinned() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found = [Requirement(d) for d in dependencies if Requirement(d).name.lower() == "pynacl"]
    assert len(found) == 1, "pynacl must be a direct dependency: it is the consensus verifier"
    return found[0]


def test_pynacl_is_pinned_to_a_bounded_range() -> None:
    specifier = _pinned().specifier
    assert any(s.operator in ("<", "<=", "==", "~=") for s in specifier), "no upper bound"
    assert any(s.operator in (">", ">=", "==", "~=") for s in specifier), "no lower bound"


def test_installed_pynacl_is_in_the_pinned_range() -> None:
    installed = importlib.metadata.version("pynacl")
    assert _pinned().specifier.contains(installed), (
        f"PyNaCl {installed} is outside the pinned {_pinned().specifier}: a verifier change "
        "is a consensus change"
    )


# --- strictness ------------------------------------------------------------------------------


def test_the_permissive_reference_agrees_on_honest_signatures() -> None:
    ident = Identity.generate()
    signature = ident.sign(b"honest")
    assert permissive_verify(ident.signing_public, signature, b"honest")
    assert not permissive_verify(ident.signing_public, signature, b"other")
    assert verify_signature(ident.signing_public, signature, b"honest")


def test_a_non_canonical_s_is_refused() -> None:
    ident = Identity.generate()
    signature = ident.sign(b"pay 10")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")  # the same S modulo L
    assert s + L < 2**256 and malleated != signature
    assert permissive_verify(ident.signing_public, malleated, b"pay 10")
    assert not verify_signature(ident.signing_public, malleated, b"pay 10")


def _forge_for_small_order_key(public: bytes, message: bytes) -> bytes:
    """R = [r]B, S = r: valid whenever [k]A is the identity, i.e. k is a multiple of A's order
    (which divides 8); retry random r until the hash gives such a k."""
    for _ in range(1000):
        r = int.from_bytes(os.urandom(32), "little") % L
        big_r = _compress(_mul(r, BASE))
        k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % L
        if k % 8 == 0:
            return big_r + r.to_bytes(32, "little")
    raise AssertionError("no forgery found")


@pytest.mark.parametrize(
    "public",
    [
        bytes.fromhex("01" + "00" * 31),  # the neutral element (order 1)
        bytes.fromhex("ec" + "ff" * 30 + "7f"),  # (0, -1), order 2
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # 8
    ],
)
def test_a_small_order_public_key_is_refused(public: bytes) -> None:
    # Such a key "signs" any message without a private key: one forgery fits many messages.
    assert _equal(_mul(8, _decompress(public)), (0, 1, 1, 0))  # it is of small order
    signature = _forge_for_small_order_key(public, b"anything at all")
    assert permissive_verify(public, signature, b"anything at all")
    assert not verify_signature(public, signature, b"anything at all")
