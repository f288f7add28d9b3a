"""Key files: a person's or organisation's identity on disk, readable by its owner only.

Version 2 (docs/crypto.md, section 10) adds what a patient must keep across a key rotation:
the naming key (crypto/naming.py: derived from the patient's first master secret and kept when
the master changes) and the previous master secrets with the epoch each stops at, so that the
scope keys of old epochs still open old records. Version 1 files still load: their naming key
is derived from their master secret, and they have no previous masters.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from careledger.crypto.keys import Identity, KeyError_
from careledger.crypto.naming import NAMING_KEY_SIZE
from careledger.crypto.privatefs import make_private_dir
from careledger.crypto.scopekeys import ScopeKeyPair, derive_scope_key

KEYFILE_VERSION = 2
READABLE_VERSIONS = (1, 2)
KINDS = ("organisation", "practitioner", "patient", "node")
NAMING_KEY_LABEL = "naming-key"  # Identity.secret() label of the naming key
SCOPE_ROOT_LABEL = "scope-keys"  # Identity.secret() label of the scope root (docs/crypto.md 5)
MAX_EPOCH = 0xFFFFFFFF


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, too open or malformed."""


def naming_key_of(identity: Identity) -> bytes:
    """The naming key of a patient whose first master secret is `identity`'s."""
    return identity.secret(NAMING_KEY_LABEL)


def scope_key_of(identity: Identity, scope: str, epoch: int) -> ScopeKeyPair:
    """The scope key (scope, epoch) that one master secret derives."""
    return derive_scope_key(identity.secret(SCOPE_ROOT_LABEL), scope, epoch)


@dataclass(frozen=True)
class PreviousMaster:
    """A master secret the identity rotated away from: the epochs below `below_epoch` (and
    not below an earlier previous master's) derive from it. repr() shows no secret."""

    master_secret: bytes = field(repr=False)
    below_epoch: int

    def __post_init__(self) -> None:
        Identity(self.master_secret)  # 32 bytes, or KeyError_
        if isinstance(self.below_epoch, bool) or not 1 <= self.below_epoch <= MAX_EPOCH:
            raise KeyError_(f"below_epoch is an integer from 1 to {MAX_EPOCH}")

    @property
    def identity(self) -> Identity:
        return Identity(self.master_secret)


@dataclass(frozen=True)
class KeyFile:
    """`did` stays the identity's name after key rotation; `identity` holds the current keys.

    `naming_key` (by default derived from `identity`: a patient who never rotated) names the
    patient's records; `previous` holds earlier master secrets, oldest first, for the scope
    keys of earlier epochs (`scope_key`). repr() and str() name the key file (did, kind, name)
    and never show a secret.
    """

    did: str
    kind: str
    identity: Identity
    name: str = ""
    naming_key: bytes = field(default=b"", repr=False)
    previous: tuple[PreviousMaster, ...] = ()

    def __post_init__(self) -> None:
        if not self.naming_key:
            object.__setattr__(self, "naming_key", naming_key_of(self.identity))
        if len(self.naming_key) != NAMING_KEY_SIZE:
            raise KeyError_(f"a naming key is {NAMING_KEY_SIZE} bytes")
        object.__setattr__(self, "previous", tuple(self.previous))
        bounds = [p.below_epoch for p in self.previous]
        if bounds != sorted(set(bounds)):
            raise KeyError_("previous masters must come with increasing below_epoch")

    def master_for_epoch(self, epoch: int) -> Identity:
        """The master secret whose scope keys are those of `epoch`."""
        for previous in self.previous:
            if epoch < previous.below_epoch:
                return previous.identity
        return self.identity

    def scope_key(self, scope: str, epoch: int) -> ScopeKeyPair:
        """The scope key (scope, epoch), from whichever master secret that epoch belongs to."""
        return scope_key_of(self.master_for_epoch(epoch), scope, epoch)

    def rotated(self, identity: Identity, first_epoch: int) -> KeyFile:
        """This key file after a rotation to `identity`, whose scope keys start at
        `first_epoch`: the current master joins `previous` (below_epoch = first_epoch), the
        did and the naming key stay."""
        if self.previous and first_epoch <= self.previous[-1].below_epoch:
            raise KeyError_("a rotation's first epoch must be above the previous rotation's")
        kept = PreviousMaster(self.identity.master, first_epoch)
        return KeyFile(
            self.did, self.kind, identity, self.name, self.naming_key, (*self.previous, kept)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "version": KEYFILE_VERSION,
            "did": self.did,
            "kind": self.kind,
            "name": self.name,
            "master_secret": _b64(self.identity.master),
            "naming_key": _b64(self.naming_key),
            "previous": [
                {"master_secret": _b64(p.master_secret), "below_epoch": p.below_epoch}
                for p in self.previous
            ],
        }

    def __repr__(self) -> str:
        return (
            f"KeyFile(did={self.did!r}, kind={self.kind!r}, name={self.name!r}, "
            f"previous_masters={len(self.previous)})"
        )

    __str__ = __repr__

    def save(self, path: Path) -> None:
        """Write with mode 0600, refusing to overwrite an existing key."""
        make_private_dir(path.parent)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeyFileError(f"{path} exists: refusing to overwrite a key file") from exc
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> KeyFile:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError as exc:
            raise KeyFileError(f"key file {path} not found") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {path} is readable by others (mode {oct(mode & 0o777)}): "
                f"run `chmod 600 {path}`"
            )
        try:
            data = json.loads(path.read_text())
            return cls.from_json(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"key file {path} is not JSON: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"key file {path} is malformed: {exc}") from exc

    @classmethod
    def from_json(cls, data: object) -> KeyFile:
        versions = " or ".join(map(str, READABLE_VERSIONS))
        if not isinstance(data, dict) or data.get("version") not in READABLE_VERSIONS:
            raise KeyFileError(f"not a CareLedger key file of version {versions}")
        kind = data["kind"]
        if kind not in KINDS:
            raise KeyFileError(f"unknown key kind {kind!r}")
        identity = Identity(_secret(data["master_secret"], "master_secret"))
        naming_key = b""
        previous: tuple[PreviousMaster, ...] = ()
        if data["version"] >= 2:
            naming_key = _secret(data["naming_key"], "naming_key")
            if not isinstance(data["previous"], list):
                raise KeyFileError("previous is a list")
            previous = tuple(_previous(entry) for entry in data["previous"])
        try:
            return cls(
                str(data["did"]), kind, identity, str(data.get("name", "")), naming_key, previous
            )
        except KeyError_ as exc:
            raise KeyFileError(str(exc)) from exc


def _previous(entry: object) -> PreviousMaster:
    if not isinstance(entry, dict):
        raise KeyFileError("a previous master is an object")
    below = entry["below_epoch"]
    if not isinstance(below, int):
        raise KeyFileError("below_epoch is an integer")
    try:
        return PreviousMaster(_secret(entry["master_secret"], "previous master_secret"), below)
    except KeyError_ as exc:
        raise KeyFileError(f"bad previous master: {exc}") from exc


def _secret(text: object, what: str) -> bytes:
    """32 bytes from base64; an error names the field, never its value."""
    if not isinstance(text, str):
        raise KeyFileError(f"bad {what}: not base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"bad {what}: not base64") from exc
    if len(raw) != 32:
        raise KeyFileError(f"bad {what}: not 32 bytes")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
