"""Custody: patient keys made on the patient's side (`keys new`, `keys restore`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.crypto.keys import KeyError_
from careledger.wallet.custody import new_patient_keys, restore_patient_keys
from nodeutil import careledger_command

PHRASE_LINE = "Recovery phrase (write it down; it is shown only now):"


def test_new_patient_keys_and_their_phrase() -> None:
    keyfile, phrase = new_patient_keys("Jo")
    assert len(phrase.split()) == 24
    assert keyfile.kind == "patient" and keyfile.name == "Jo" and keyfile.previous == ()
    assert keyfile.did == keyfile.identity.did
    assert keyfile.naming_key == naming_key_of(keyfile.identity)
    restored = restore_patient_keys(phrase)
    assert restored.identity == keyfile.identity and restored.naming_key == keyfile.naming_key
    assert phrase not in repr(keyfile)


def test_a_bad_phrase_is_refused() -> None:
    _, phrase = new_patient_keys()
    words = phrase.split()
    with pytest.raises(KeyError_, match="24 words"):
        restore_patient_keys(" ".join(words[:23]))
    words[0], words[1] = words[1], words[0]
    with pytest.raises(KeyError_, match="checksum"):
        restore_patient_keys(" ".join(words))


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*careledger_command(), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_keys_new_prints_the_phrase_once_and_writes_a_private_v2_file(tmp_path: Path) -> None:
    made = run("keys", "new", "--out", str(tmp_path / "me.json"), "--name", "Jo")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    phrase = lines[lines.index(PHRASE_LINE) + 1]
    assert made.stdout.count(phrase) == 1
    path = tmp_path / "me.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert phrase not in text and phrase.split()[0] + " " + phrase.split()[1] not in text
    data = json.loads(text)
    assert data["version"] == 2 and data["kind"] == "patient" and data["previous"] == []
    # Restore reads the phrase from standard input (never an argument `ps` would show).
    restored = run("keys", "restore", "--out", str(tmp_path / "again.json"), stdin=phrase + "\n")
    assert restored.returncode == 0, restored.stderr
    assert phrase not in restored.stdout
    again, first = KeyFile.load(tmp_path / "again.json"), KeyFile.load(path)
    assert (again.did, again.identity, again.naming_key) == (
        first.did,
        first.identity,
        first.naming_key,
    )
    # A key file is never overwritten.
    refused = run("keys", "restore", "--out", str(path), stdin=phrase + "\n")
    assert refused.returncode == 1 and "refusing to overwrite" in refused.stderr


def test_keys_restore_refuses_a_bad_phrase_clearly(tmp_path: Path) -> None:
    result = run("keys", "restore", "--out", str(tmp_path / "x.json"), stdin="not a phrase\n")
    assert result.returncode == 1
    assert "24 words" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.json").exists()
