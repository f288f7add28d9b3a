"""Key files: a person's or organisation's identity on disk, readable by its owner only."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from careledger.crypto.keys import Identity, KeyError_
from careledger.crypto.privatefs import make_private_dir

KEYFILE_VERSION = 1
KINDS = ("organisation", "practitioner", "patient", "node")


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, too open or malformed."""


@dataclass(frozen=True)
class KeyFile:
    """`did` stays the identity's name after key rotation; `identity` holds the current keys.

    repr() and str() name the key file (did, kind, name) and never show its secret.
    """

    did: str
    kind: str
    identity: Identity
    name: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "version": KEYFILE_VERSION,
            "did": self.did,
            "kind": self.kind,
            "name": self.name,
            "master_secret": base64.b64encode(self.identity.master).decode(),
        }

    def __repr__(self) -> str:
        return f"KeyFile(did={self.did!r}, kind={self.kind!r}, name={self.name!r})"

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
        if not isinstance(data, dict) or data.get("version") != KEYFILE_VERSION:
            raise KeyFileError(f"not a version {KEYFILE_VERSION} CareLedger key file")
        kind = data["kind"]
        if kind not in KINDS:
            raise KeyFileError(f"unknown key kind {kind!r}")
        try:
            master = base64.b64decode(data["master_secret"], validate=True)
            identity = Identity(master)
        except (ValueError, KeyError_) as exc:
            raise KeyFileError(f"bad master_secret: {exc}") from exc
        return cls(
            did=str(data["did"]), kind=kind, identity=identity, name=str(data.get("name", ""))
        )
