"""Claim codes and claim packages (crypto/claim.py): sealing, opening, counting, refusing."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mnemonic import Mnemonic

from careledger.crypto import claim
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.claim import (
    CODE_BITS,
    DEFAULT_KDF,
    BadClaimCode,
    ClaimContents,
    ClaimError,
    ClaimLocked,
    ClaimTampered,
    KdfParams,
    NotAClaimPackage,
    WrongClaimCode,
    claim_package_info,
    new_claim_code,
    normalise_code,
    open_claim_package,
    seal_claim_package,
    write_claim_package,
)
from careledger.crypto.keys import Identity

# The cheapest parameters a package may carry (64 MiB, one pass): these tests try many codes.
CHEAP = KdfParams(memory_kib=64 * 1024, iterations=1, lanes=1)
WORDS = Mnemonic("english").wordlist
PACKAGE_FIELDS = {
    "kind", "version", "did", "chain_id", "kdf", "nonce", "ciphertext", "attempts",
    "max_attempts",
}  # fmt: skip


def contents(name: str = "Jo Patient") -> ClaimContents:
    identity = Identity.generate()
    return ClaimContents(identity.did, "test-chain", identity.master, name)


def make_package(
    tmp_path: Path, code: str, *, kdf: KdfParams = CHEAP, max_attempts: int = 5
) -> tuple[Path, ClaimContents]:
    made = contents()
    path = tmp_path / "claim.json"
    write_claim_package(path, seal_claim_package(made, code, kdf=kdf, max_attempts=max_attempts))
    return path, made


def other_code(code: str) -> str:
    words = code.split()
    words[-1] = WORDS[(WORDS.index(words[-1]) + 1) % len(WORDS)]
    return " ".join(words)


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    package = json.loads(path.read_text())
    change(package)
    path.write_text(json.dumps(package))


def attempts(path: Path) -> int:
    return int(json.loads(path.read_text())["attempts"])


# --- codes --------------------------------------------------------------------------------


def test_a_claim_code_is_six_list_words_and_66_bits() -> None:
    codes = {new_claim_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        words = code.split()
        assert len(words) == 6 and all(w in WORDS for w in words)
    assert len(WORDS) == 2048 and CODE_BITS == 66


def test_case_and_spacing_do_not_matter() -> None:
    code = "abandon ability able about above absent"
    for typed in (
        "Abandon ABILITY able about above absent",
        "  abandon\tability\nable  about above absent ",
        "abandon-ability-able-about-above-absent",
        "abandon, ability, able, about, above, absent.",
    ):
        assert normalise_code(typed) == code


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("abandon ability able about above", "6 words; this one has 5"),
        ("abandon ability able about above absent absorb", "has 7"),
        ("abandon ability able aboot above absent", "word 4 "),
        ("", "has 0"),
    ],
)
def test_a_mistyped_code_is_refused_without_counting(
    tmp_path: Path, typed: str, message: str
) -> None:
    path, _ = make_package(tmp_path, new_claim_code())
    with pytest.raises(BadClaimCode, match=message) as caught:
        open_claim_package(path, typed)
    assert "aboot" not in str(caught.value)  # the typed words stay out of messages (logs)
    assert attempts(path) == 0


# --- sealing and opening ------------------------------------------------------------------


def test_a_package_opens_with_its_code_and_has_exactly_the_spec_fields(tmp_path: Path) -> None:
    code = new_claim_code()
    path, made = make_package(tmp_path, code)
    assert path.stat().st_mode & 0o777 == 0o600
    package = json.loads(path.read_text())
    assert set(package) == PACKAGE_FIELDS
    assert package["kind"] == "careledger-claim" and package["version"] == 1
    assert package["did"] == made.did and package["chain_id"] == "test-chain"
    assert package["attempts"] == 0 and package["max_attempts"] == 5
    assert package["kdf"]["name"] == "argon2id" and package["kdf"]["memory_kib"] == 65536
    opened = open_claim_package(path, code.upper())
    assert opened == made and opened.identity.did == made.did
    assert attempts(path) == 0


def test_the_format_is_as_documented(tmp_path: Path) -> None:
    # An independent opening from docs/crypto.md section 9: Argon2id -> key || check, the
    # check first in the ciphertext, AES-256-GCM with the canonical header as AAD.
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    code = new_claim_code()
    path, made = make_package(tmp_path, code)
    package = json.loads(path.read_text())
    kdf = package["kdf"]
    out = Argon2id(
        salt=base64.b64decode(kdf["salt"]),
        length=48,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(code.encode())
    sealed = base64.b64decode(package["ciphertext"])
    assert sealed[:16] == out[32:]
    header = {k: v for k, v in package.items() if k not in ("ciphertext", "attempts")}
    plaintext = AESGCM(out[:32]).decrypt(
        base64.b64decode(package["nonce"]), sealed[16:], canonical_bytes(header)
    )
    assert json.loads(plaintext) == {
        "master_secret": base64.b64encode(made.master_secret).decode(),
        "name": made.name,
    }


def test_the_default_parameters_are_memory_hard_and_open(tmp_path: Path) -> None:
    assert DEFAULT_KDF.memory_kib >= 64 * 1024
    code = new_claim_code()
    path, made = make_package(tmp_path, code, kdf=DEFAULT_KDF)
    assert json.loads(path.read_text())["kdf"]["memory_kib"] == DEFAULT_KDF.memory_kib
    assert open_claim_package(path, code) == made


def test_every_package_has_its_own_salt_and_nonce(tmp_path: Path) -> None:
    code = new_claim_code()
    made = contents()
    one = json.loads(seal_claim_package(made, code, kdf=CHEAP))
    two = json.loads(seal_claim_package(made, code, kdf=CHEAP))
    assert one["kdf"]["salt"] != two["kdf"]["salt"] and one["nonce"] != two["nonce"]


def test_a_package_is_never_overwritten(tmp_path: Path) -> None:
    path, _ = make_package(tmp_path, new_claim_code())
    with pytest.raises(FileExistsError):
        write_claim_package(path, seal_claim_package(contents(), new_claim_code(), kdf=CHEAP))


def test_sealing_refuses_a_master_that_is_not_the_dids() -> None:
    made = contents()
    with pytest.raises(ValueError, match="not the did's"):
        seal_claim_package(
            ClaimContents(Identity.generate().did, "c", made.master_secret), new_claim_code()
        )


# --- wrong codes: counted, then locked ------------------------------------------------------


def test_wrong_codes_are_counted_in_the_file_then_the_package_locks(tmp_path: Path) -> None:
    code = new_claim_code()
    path, _ = make_package(tmp_path, code, max_attempts=3)
    for left in (2, 1):
        with pytest.raises(WrongClaimCode, match=f"{left} attempt") as caught:
            open_claim_package(path, other_code(code))
        assert caught.value.attempts_left == left
        assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(WrongClaimCode, match="now locked") as last:
        open_claim_package(path, other_code(code))
    assert last.value.attempts_left == 0 and attempts(path) == 3
    # Locked: even the right code is refused, and the file is not changed any more.
    before = path.read_bytes()
    with pytest.raises(ClaimLocked, match="ask the clinic for a new package"):
        open_claim_package(path, code)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claim.json"]  # no temporary left


def test_the_count_survives_across_processes_and_the_header_still_opens(tmp_path: Path) -> None:
    # The counter is outside the authenticated header: counting must not break the package.
    code = new_claim_code()
    path, made = make_package(tmp_path, code)
    with pytest.raises(WrongClaimCode):
        open_claim_package(path, other_code(code))
    assert claim_package_info(path)["attempts"] == 1
    assert open_claim_package(path, code) == made


def test_concurrent_guesses_are_each_counted(tmp_path: Path) -> None:
    # The attack: several processes guess at once, each reading attempts=0 and writing 1.
    code = new_claim_code()
    path, _ = make_package(tmp_path, code, max_attempts=10)
    errors: list[ClaimError] = []

    def guess() -> None:
        try:
            open_claim_package(path, other_code(code))
        except ClaimError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guess) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 4 and attempts(path) == 4
    assert sorted(e.attempts_left for e in errors if isinstance(e, WrongClaimCode)) == [6, 7, 8, 9]


def test_a_crash_while_counting_leaves_the_package_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = new_claim_code()
    path, made = make_package(tmp_path, code)
    before = path.read_bytes()

    def crash(*_: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(claim.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        open_claim_package(path, other_code(code))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claim.json"]
    assert open_claim_package(path, code) == made


# --- altered packages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.update(did=Identity.generate().did),
        lambda p: p.update(chain_id="another-chain"),
        lambda p: p.update(max_attempts=100),  # raising the limit to guess more
        lambda p: p.update(nonce=base64.b64encode(os.urandom(12)).decode()),
        lambda p: p.update(ciphertext=_flip(p["ciphertext"], 20)),
        lambda p: p.update(ciphertext=_flip(p["ciphertext"], -1)),
    ],
    ids=["did", "chain_id", "max_attempts", "nonce", "ciphertext", "tag"],
)
def test_an_altered_package_is_refused_and_nothing_is_counted(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    code = new_claim_code()
    path, _ = make_package(tmp_path, code)
    edit(path, change)
    with pytest.raises(ClaimTampered, match="altered"):
        open_claim_package(path, code)
    assert attempts(path) == 0


def test_an_altered_salt_looks_like_a_wrong_code(tmp_path: Path) -> None:
    # Documented limit: the KDF's inputs decide the check itself, so changing them cannot be
    # told from a wrong code; it is counted like one.
    code = new_claim_code()
    path, _ = make_package(tmp_path, code)
    edit(path, lambda p: p["kdf"].update(salt=base64.b64encode(os.urandom(16)).decode()))
    with pytest.raises(WrongClaimCode):
        open_claim_package(path, code)


def _flip(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(kind="something-else"), '"kind"'),
        (lambda p: p.update(version=2), "version 2"),
        (lambda p: p.update(extra=1), "missing or unknown"),
        (lambda p: p.pop("nonce"), "missing or unknown"),
        (lambda p: p.update(attempts=-1), '"attempts"'),
        (lambda p: p.update(attempts=True), '"attempts"'),
        (lambda p: p.update(max_attempts=0), '"max_attempts"'),
        (lambda p: p.update(nonce="not base64!"), "base64"),
        (lambda p: p["kdf"].update(name="scrypt"), "argon2id"),
        (lambda p: p["kdf"].update(memory_kib=8), "memory"),  # too cheap to guess against
        (lambda p: p["kdf"].update(memory_kib=2**31), "memory"),  # a hostile package's OOM
        (lambda p: p["kdf"].update(iterations=10**9), "iterations"),
        (lambda p: p["kdf"].update(salt=""), "salt"),
    ],
)
def test_what_is_not_a_claim_package_is_refused_before_any_kdf(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    code = new_claim_code()
    path, _ = make_package(tmp_path, code)
    edit(path, change)
    with pytest.raises(NotAClaimPackage, match=message):
        open_claim_package(path, code)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"{}", b"x" * 70_000])
def test_files_that_are_not_packages(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "claim.json"
    path.write_bytes(data)
    with pytest.raises(NotAClaimPackage, match=r"not a claim package|too large"):
        open_claim_package(path, new_claim_code())


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotAClaimPackage, match="cannot read"):
        open_claim_package(tmp_path / "nothing.json", new_claim_code())


def test_no_secret_in_repr_or_in_errors(tmp_path: Path) -> None:
    code = new_claim_code()
    path, made = make_package(tmp_path, code)
    opened = open_claim_package(path, code)
    shown = repr(opened) + str(opened) + repr(CHEAP) + repr(DEFAULT_KDF)
    for secret in (
        made.master_secret.hex(),
        base64.b64encode(made.master_secret).decode(),
        repr(made.master_secret),
        made.name,
    ):
        assert secret not in shown
    assert made.did in shown
    with pytest.raises(WrongClaimCode) as caught:
        open_claim_package(path, other_code(code))
    assert not any(word in str(caught.value).split() for word in code.split())
