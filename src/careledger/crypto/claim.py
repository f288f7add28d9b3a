"""Claim codes and claim packages: a clinic hands a new patient their keys without keeping them.

A clinic enrolling a patient who has no identity yet seals the new master secret in a claim
package under a one-time claim code (6 BIP-39 words, 66 bits) that the patient receives out of
band. The clinic keeps the package for the patient and never the code; the patient opens it
(`careledger claim`) and at once rotates to keys of their own (wallet/custody.py).

    key || check = Argon2id(code, salt, memory_kib, iterations, lanes), 48 bytes
    header       = every field of the package but `ciphertext` and `attempts`
    ciphertext   = check (16) || AES-256-GCM(key, nonce, plaintext, aad = RFC 8785(header))

`check` tells a wrong code (check differs: one attempt counted in the file) from an altered
package (check right, GCM tag wrong: nothing counted). It costs a guesser what the GCM tag
already costs: one Argon2id per guess. Exact format and the cost of guessing: docs/crypto.md,
section 9.

The attempts counter is rewritten atomically (temporary file, fsync, rename, fsync of the
directory), under a lock on the directory, so that two processes guessing at once each
count. It bounds guesses made through this code; someone who copies the file guesses offline,
and against that the defence is the code's 66 bits times Argon2id's cost per guess.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hmac
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from mnemonic import Mnemonic

from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.keys import Identity

CLAIM_KIND = "careledger-claim"
CLAIM_VERSION = 1
CODE_WORDS = 6
CODE_BITS = CODE_WORDS * 11  # 2048 words: 11 bits each
DEFAULT_MAX_ATTEMPTS = 5
MAX_PACKAGE_BYTES = 64 * 1024
CHECK_SIZE = 16
KEY_SIZE = 32
NONCE_SIZE = 12
SALT_SIZE = 16

# Bounds a package's KDF parameters must keep: below, a guess is too cheap; above, opening a
# package (perhaps a hostile one) could exhaust the opener's memory or time.
MIN_MEMORY_KIB = 64 * 1024
MAX_MEMORY_KIB = 1024 * 1024
MAX_ITERATIONS = 16
MAX_LANES = 16
MAX_ATTEMPTS_LIMIT = 100

_WORDLIST: tuple[str, ...] = tuple(Mnemonic("english").wordlist)
_WORDS = frozenset(_WORDLIST)
_SEPARATORS = re.compile(r"[\s,.;:_\-]+")
_HEADER_FIELDS = ("kind", "version", "did", "chain_id", "kdf", "nonce", "max_attempts")
_ALL_FIELDS = frozenset((*_HEADER_FIELDS, "ciphertext", "attempts"))
_KDF_FIELDS = frozenset(("name", "memory_kib", "iterations", "lanes", "salt"))


class ClaimError(Exception):
    """A claim package that cannot be opened: the message says why and what to do."""


class NotAClaimPackage(ClaimError):
    """The file is not a claim package this version reads (or cannot be read at all)."""


class WrongClaimCode(ClaimError):
    """The code does not open the package; `attempts_left` more tries before it locks."""

    def __init__(self, message: str, attempts_left: int) -> None:
        super().__init__(message)
        self.attempts_left = attempts_left


class ClaimLocked(ClaimError):
    """The package used up its attempts: only a new package from the clinic helps."""


class ClaimTampered(ClaimError):
    """The code is right but the header or the ciphertext was altered."""


class BadClaimCode(ClaimError):
    """Not a claim code at all (a word missing or not in the list): no attempt is counted."""


# --- claim codes ---------------------------------------------------------------------------


def new_claim_code() -> str:
    """6 words of the BIP-39 English list, chosen uniformly: 66 bits."""
    return " ".join(secrets.choice(_WORDLIST) for _ in range(CODE_WORDS))


def normalise_code(code: str) -> str:
    """The code as the KDF sees it: lower case, words separated by one space.

    Case, spaces, line breaks, commas and hyphens between words do not matter. A word not in
    the list or a wrong number of words is a BadClaimCode (a typo, not a guess: not counted).
    """
    words = [w for w in _SEPARATORS.split(code.strip().lower()) if w]
    if len(words) != CODE_WORDS:
        raise BadClaimCode(f"a claim code is {CODE_WORDS} words; this one has {len(words)}")
    unknown = [i for i, w in enumerate(words, 1) if w not in _WORDS]
    if unknown:
        # The position, not the word: an error message may end up in a log.
        raise BadClaimCode(
            f"word {unknown[0]} of the claim code is not in the claim code list "
            "(BIP-39 English): check its spelling"
        )
    return " ".join(words)


# --- the package ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters (RFC 9106): memory in KiB, passes, lanes, and the salt."""

    memory_kib: int
    iterations: int
    lanes: int
    salt: bytes = field(default=b"", repr=False)

    def with_fresh_salt(self) -> KdfParams:
        return KdfParams(self.memory_kib, self.iterations, self.lanes, os.urandom(SALT_SIZE))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "argon2id",
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
            "salt": _b64(self.salt),
        }

    def derive(self, normalised_code: str) -> tuple[bytes, bytes]:
        """(AES key, check) from the normalised code."""
        out = Argon2id(
            salt=self.salt,
            length=KEY_SIZE + CHECK_SIZE,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        ).derive(normalised_code.encode())
        return out[:KEY_SIZE], out[KEY_SIZE:]


# 256 MiB, 2 passes, 4 lanes: about 0.4 s per try on the 2-core machine the figures of
# docs/crypto.md (section 9) were measured on.
# 64 MiB, 3 passes: 0.15 s a try here (docs/crypto.md 9.4). An import pays one per patient
# (256 MiB, 2 passes cost 0.54 s and halved the records an import wrote per second); against
# a 66-bit code the guessing cost stays out of reach (about 10^8 GPU-years).
DEFAULT_KDF = KdfParams(memory_kib=64 * 1024, iterations=3, lanes=4)


@dataclass(frozen=True)
class ClaimContents:
    """What a claim package holds: the patient's first master secret and a label."""

    did: str
    chain_id: str
    master_secret: bytes = field(repr=False)
    name: str = field(default="", repr=False)  # the patient's name: personal data

    @property
    def identity(self) -> Identity:
        return Identity(self.master_secret)


def seal_claim_package(
    contents: ClaimContents,
    code: str,
    *,
    kdf: KdfParams = DEFAULT_KDF,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> bytes:
    """The package's JSON bytes (write them with write_claim_package)."""
    if Identity(contents.master_secret).did != contents.did:
        raise ValueError("the master secret is not the did's")
    if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"max_attempts is 1 to {MAX_ATTEMPTS_LIMIT}")
    params = kdf.with_fresh_salt()
    _check_kdf(params)
    nonce = os.urandom(NONCE_SIZE)
    header: dict[str, Any] = {
        "kind": CLAIM_KIND,
        "version": CLAIM_VERSION,
        "did": contents.did,
        "chain_id": contents.chain_id,
        "kdf": params.to_json(),
        "nonce": _b64(nonce),
        "max_attempts": max_attempts,
    }
    key, check = params.derive(normalise_code(code))
    plaintext = canonical_bytes(
        {"master_secret": _b64(contents.master_secret), "name": contents.name}
    )
    sealed = AESGCM(key).encrypt(nonce, plaintext, canonical_bytes(header))
    package = {**header, "ciphertext": _b64(check + sealed), "attempts": 0}
    return orjson.dumps(package, option=orjson.OPT_INDENT_2) + b"\n"


def write_claim_package(path: Path, package: bytes) -> None:
    """Write a package with mode 0600, refusing to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(package)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def open_claim_package(path: Path, code: str) -> ClaimContents:
    """Open a package with its code, counting a wrong code in the file.

    Raises BadClaimCode (not a code: nothing counted), NotAClaimPackage, ClaimLocked (no
    attempts left, nothing tried), WrongClaimCode (counted; says how many are left) or
    ClaimTampered (the right code, but the package was altered).
    """
    normalised = normalise_code(code)
    with _directory_lock(path.parent):
        raw, package = _read_package(path)
        attempts, max_attempts = package["attempts"], package["max_attempts"]
        if attempts >= max_attempts:
            raise ClaimLocked(
                f"locked: {attempts} wrong codes were tried; ask the clinic for a new package"
            )
        kdf = _parse_kdf(package["kdf"])
        sealed = _unb64(package["ciphertext"], "ciphertext")
        key, check = kdf.derive(normalised)
        if not hmac.compare_digest(check, sealed[:CHECK_SIZE]):
            _rewrite_attempts(path, raw, attempts + 1)
            raise _wrong_code(max_attempts - attempts - 1)
    return _decrypt(package, key, sealed[CHECK_SIZE:])


def claim_package_info(path: Path) -> dict[str, Any]:
    """The package's header and counter (no code needed): did, chain_id, attempts..."""
    _, package = _read_package(path)
    return {k: v for k, v in package.items() if k != "ciphertext"}


def _wrong_code(left: int) -> WrongClaimCode:
    if left <= 0:
        return WrongClaimCode(
            "wrong claim code, and that was the last attempt: the package is now locked; "
            "ask the clinic for a new package",
            0,
        )
    return WrongClaimCode(f"wrong claim code: {left} attempt(s) left", left)


def _decrypt(package: Mapping[str, Any], key: bytes, sealed: bytes) -> ClaimContents:
    header = {name: package[name] for name in _HEADER_FIELDS}
    nonce = _unb64(package["nonce"], "nonce")
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, canonical_bytes(header))
    except InvalidTag:
        raise ClaimTampered(
            "the claim code is right but the package was altered (its header or its "
            "ciphertext): ask the clinic for a new package"
        ) from None
    try:
        inner = orjson.loads(plaintext)
        contents = ClaimContents(
            str(package["did"]),
            str(package["chain_id"]),
            base64.b64decode(inner["master_secret"], validate=True),
            str(inner.get("name", "")),
        )
        did = contents.identity.did
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise NotAClaimPackage("the package opened but does not hold a master secret") from exc
    if did != contents.did:
        raise ClaimTampered("the package's keys are not those of the identity it names")
    return contents


# --- reading and rewriting the file --------------------------------------------------------


def _read_package(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PACKAGE_BYTES + 1)
    except OSError as exc:
        raise NotAClaimPackage(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > MAX_PACKAGE_BYTES:
        raise NotAClaimPackage(f"{path} is too large for a claim package")
    try:
        package = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotAClaimPackage(f"{path} is not a claim package (not JSON)") from exc
    _check_package(package, path)
    return raw, package


def _check_package(package: object, path: Path) -> None:
    def fail(why: str) -> NotAClaimPackage:
        return NotAClaimPackage(f"{path} is not a claim package: {why}")

    if not isinstance(package, dict) or package.get("kind") != CLAIM_KIND:
        raise fail(f'"kind" is not "{CLAIM_KIND}"')
    if package.get("version") != CLAIM_VERSION:
        raise fail(f"version {package.get('version')!r}; this program reads {CLAIM_VERSION}")
    if set(package) != _ALL_FIELDS:
        raise fail(f"fields {sorted(set(package) ^ _ALL_FIELDS)} missing or unknown")
    for name in ("did", "chain_id", "nonce", "ciphertext"):
        if not isinstance(package[name], str) or not package[name]:
            raise fail(f'"{name}" is not a non-empty string')
    max_attempts = package["max_attempts"]
    if not _is_int(max_attempts, 1, MAX_ATTEMPTS_LIMIT):
        raise fail(f'"max_attempts" is not an integer from 1 to {MAX_ATTEMPTS_LIMIT}')
    if not _is_int(package["attempts"], 0, max_attempts):
        raise fail('"attempts" is not an integer from 0 to "max_attempts"')
    if len(_unb64(package["nonce"], "nonce")) != NONCE_SIZE:
        raise fail(f'"nonce" is not {NONCE_SIZE} bytes')
    if len(_unb64(package["ciphertext"], "ciphertext")) < CHECK_SIZE + 16:
        raise fail('"ciphertext" is too short')
    _parse_kdf(package["kdf"])


def _parse_kdf(kdf: object) -> KdfParams:
    if not isinstance(kdf, dict) or set(kdf) != _KDF_FIELDS or kdf["name"] != "argon2id":
        raise NotAClaimPackage('not a claim package: "kdf" is not an argon2id parameter set')
    salt = _unb64(kdf["salt"], "kdf.salt")
    params = KdfParams(kdf["memory_kib"], kdf["iterations"], kdf["lanes"], salt)
    _check_kdf(params)
    return params


def _check_kdf(params: KdfParams) -> None:
    if not _is_int(params.memory_kib, MIN_MEMORY_KIB, MAX_MEMORY_KIB):
        raise NotAClaimPackage(
            f"not a claim package: Argon2id memory must be {MIN_MEMORY_KIB} to {MAX_MEMORY_KIB} KiB"
        )
    if not _is_int(params.iterations, 1, MAX_ITERATIONS) or not _is_int(params.lanes, 1, MAX_LANES):
        raise NotAClaimPackage(
            f"not a claim package: Argon2id iterations and lanes must be 1 to "
            f"{MAX_ITERATIONS} and 1 to {MAX_LANES}"
        )
    if not 16 <= len(params.salt) <= 64:
        raise NotAClaimPackage("not a claim package: the salt must be 16 to 64 bytes")


def _rewrite_attempts(path: Path, raw: bytes, attempts: int) -> None:
    """Replace the file by the same package with `attempts` counted, atomically and durably:
    a crash leaves the old file or the new one, never a torn one or none."""
    package = orjson.loads(raw)
    package["attempts"] = attempts
    data = orjson.dumps(package, option=orjson.OPT_INDENT_2) + b"\n"
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock held while a code is tried and counted: concurrent tries on one
    package are counted one by one. The directory, not the file, is locked: the file is
    replaced (a new inode) by each count."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise NotAClaimPackage(f'not a claim package: "{what}" is not base64')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotAClaimPackage(f'not a claim package: "{what}" is not base64') from exc
