"""Key files v2: the naming key and previous masters; v1 files still load; no secret shown."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from careledger.crypto.keyfile import (
    KeyFile,
    KeyFileError,
    PreviousMaster,
    naming_key_of,
    scope_key_of,
)
from careledger.crypto.keys import Identity, KeyError_
from careledger.crypto.scopekeys import SCOPES, derive_scope_key


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def test_a_v1_file_still_loads_with_the_naming_key_of_its_master(tmp_path: Path) -> None:
    identity = Identity.generate()
    v1 = {
        "version": 1,
        "did": identity.did,
        "kind": "patient",
        "name": "Jo",
        "master_secret": b64(identity.master),
    }
    keyfile = KeyFile.load(write(tmp_path / "v1.json", v1))
    assert keyfile.identity == identity and keyfile.previous == ()
    assert keyfile.naming_key == identity.secret("naming-key") == naming_key_of(identity)
    # Its scope keys are those the v1 code derived (docs/crypto.md section 5).
    expected = derive_scope_key(identity.secret("scope-keys"), "clinical", 1)
    assert keyfile.scope_key("clinical", 1).public_bytes == expected.public_bytes


def test_a_v2_file_round_trips(tmp_path: Path) -> None:
    first, second, third = Identity.generate(), Identity.generate(), Identity.generate()
    keyfile = KeyFile(first.did, "patient", first, "Jo").rotated(second, 2).rotated(third, 5)
    path = tmp_path / "v2.json"
    keyfile.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 2
    assert data["naming_key"] == b64(naming_key_of(first))
    assert data["previous"] == [
        {"master_secret": b64(first.master), "below_epoch": 2},
        {"master_secret": b64(second.master), "below_epoch": 5},
    ]
    loaded = KeyFile.load(path)
    assert loaded == keyfile and loaded.did == first.did and loaded.identity == third


def test_scope_keys_come_from_the_master_of_their_epoch() -> None:
    first, second, third = Identity.generate(), Identity.generate(), Identity.generate()
    keyfile = KeyFile(first.did, "patient", first).rotated(second, 2).rotated(third, 5)
    owner = {0: first, 1: first, 2: second, 3: second, 4: second, 5: third, 9: third}
    for epoch, identity in owner.items():
        for scope in SCOPES:
            assert (
                keyfile.scope_key(scope, epoch).public_bytes
                == scope_key_of(identity, scope, epoch).public_bytes
            )
    # The naming key stays the first master's through both rotations.
    assert keyfile.naming_key == naming_key_of(first)


def test_a_rotation_must_move_forward() -> None:
    first, second = Identity.generate(), Identity.generate()
    keyfile = KeyFile(first.did, "patient", first).rotated(second, 3)
    with pytest.raises(KeyError_, match="above"):
        keyfile.rotated(Identity.generate(), 3)
    with pytest.raises(KeyError_, match="increasing"):
        KeyFile(
            first.did,
            "patient",
            first,
            previous=(PreviousMaster(first.master, 4), PreviousMaster(second.master, 2)),
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=3), "version 1 or 2"),
        (lambda d: d.update(naming_key=b64(b"short")), "naming_key: not 32 bytes"),
        (lambda d: d.pop("naming_key"), "naming_key"),
        (lambda d: d.update(previous={}), "previous is a list"),
        (lambda d: d.update(previous=[1]), "is an object"),
        (lambda d: d["previous"][0].update(below_epoch="2"), "below_epoch"),
        (lambda d: d["previous"][0].update(below_epoch=0), "below_epoch"),
        (lambda d: d["previous"][0].update(master_secret="!!"), "not base64"),
        (lambda d: d.update(master_secret=12), "master_secret: not base64"),
    ],
)
def test_malformed_v2_files_are_refused_with_the_field_named(
    tmp_path: Path, change: object, message: str
) -> None:
    first, second = Identity.generate(), Identity.generate()
    data = KeyFile(first.did, "patient", first).rotated(second, 2).to_json()
    assert callable(change)
    change(data)
    with pytest.raises(KeyFileError, match=message) as caught:
        KeyFile.load(write(tmp_path / "bad.json", data))
    for secret in (first.master, second.master):
        assert b64(secret) not in str(caught.value)


def test_no_secret_in_repr_or_str_of_a_v2_key_file() -> None:
    first, second = Identity.generate(), Identity.generate()
    keyfile = KeyFile(first.did, "patient", first, "Jo").rotated(second, 2)
    secrets = [first.master, second.master, keyfile.naming_key]
    secrets += [keyfile.scope_key("clinical", e).private_bytes() for e in (1, 2)]
    shown = [repr(keyfile), str(keyfile), f"{keyfile}", repr(keyfile.previous), repr([keyfile])]
    for text in shown:
        for secret in secrets:
            for encoded in (secret.hex(), b64(secret), repr(secret), secret.hex().upper()):
                assert encoded not in text
    assert first.did in repr(keyfile) and "previous_masters=1" in repr(keyfile)


def test_a_naming_key_of_the_wrong_size_is_refused() -> None:
    identity = Identity.generate()
    with pytest.raises(KeyError_, match="32 bytes"):
        KeyFile(identity.did, "patient", identity, naming_key=os.urandom(16))
