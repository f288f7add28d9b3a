"""Enrol for a claim, write, claim, write again: against a real `careledger up` process.

What must hold (issue 8): the clinic keeps no key, phrase or name in clear; after the claim,
nothing in the claim package (its master secret: every scope key of every epoch, the
encryption key) opens a record written afterwards, while the patient's new key file still
opens the records written before.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mnemonic import Mnemonic

from accessutil import Consortium
from careledger.crypto.claim import KdfParams, open_claim_package, write_claim_package
from careledger.crypto.envelope import unpack_record_blob
from careledger.crypto.keyfile import KeyFile, naming_key_of, scope_key_of
from careledger.crypto.keys import Identity, ed25519_from_did, verify_signature
from careledger.crypto.scopekeys import (
    SCOPES,
    UnwrapError,
    unwrap_data_key,
    wrap_scope_key,
)
from careledger.crypto.statements import scope_key_statement
from careledger.wallet.custody import finish_claim
from careledger.wallet.enrolment import ClaimEnrolment, enrol_for_claim
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from careledger.wallet.records import RecordsClient, Written
from nodeutil import NodeProcess, careledger_command, grant_payload

CHEAP = KdfParams(memory_kib=64 * 1024, iterations=1, lanes=1)
WORDS = Mnemonic("english").wordlist
PHRASE_LINE = "Recovery phrase (write it down; it is shown only now):"


def observation(resource_id: str, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"text": "heart rate"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def claim_cli(
    node: NodeProcess, package: Path, out: Path, code: str
) -> subprocess.CompletedProcess[str]:
    """`careledger claim`, the code on standard input (never in argv, which `ps` shows)."""
    return subprocess.run(
        [*careledger_command(), "claim", str(package), "--node", node.url, "--out", str(out)],
        input=code + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )


def other_code(code: str) -> str:
    words = code.split()
    words[0] = WORDS[(WORDS.index(words[0]) + 1) % len(WORDS)]
    return " ".join(words)


def enrol(node: NodeProcess, tmp_path: Path) -> tuple[RecordsClient, ClaimEnrolment, Path]:
    org = node.organisation()
    clinic = RecordsClient(node.url, org, purpose="TREAT")
    enrolled = enrol_for_claim(clinic.node, org.identity, org.did, "Jo Claimant", kdf=CHEAP)
    package = tmp_path / "packages" / "claim.json"
    package.parent.mkdir()
    write_claim_package(package, enrolled.package)
    return clinic, enrolled, package


def everything_in_the_package(package: Path, code: str, epochs: int) -> list[Any]:
    """Every private key derivable from the package: the master's encryption key and its
    scope keys of every scope and of every epoch up to `epochs`."""
    old = open_claim_package(package, code).identity
    keys: list[Any] = [old.encryption_private]
    keys += [scope_key_of(old, scope, epoch) for scope in SCOPES for epoch in range(1, epochs + 1)]
    return keys


def test_after_a_claim_nothing_in_the_package_opens_new_records(
    node: NodeProcess, tmp_path: Path
) -> None:
    clinic, enrolled, package = enrol(node, tmp_path)
    did = enrolled.did
    before = clinic.write_many(
        did,
        [observation("before-1", 70), observation("before-2", 71)],
        scope_keys=enrolled.scope_keys,
        new_patient=True,
    )
    # The clinic's side holds the package and nothing else about the patient in clear.
    assert sorted(p.name for p in package.parent.iterdir()) == ["claim.json"]
    assert "Jo Claimant" not in package.read_text() and enrolled.code not in package.read_text()
    assert "Jo Claimant" not in repr(enrolled) and enrolled.code not in repr(enrolled)

    # A wrong code first: refused and counted, then the right one (both through the CLI).
    out = tmp_path / "me.json"
    wrong = claim_cli(node, package, out, other_code(enrolled.code))
    assert wrong.returncode == 1 and "4 attempt(s) left" in wrong.stderr
    assert not out.exists() and json.loads(package.read_text())["attempts"] == 1
    claimed = claim_cli(node, package, out, enrolled.code.upper())
    assert claimed.returncode == 0, claimed.stderr
    lines = claimed.stdout.splitlines()
    phrase = lines[lines.index(PHRASE_LINE) + 1]
    keyfile = KeyFile.load(out)
    assert out.stat().st_mode & 0o777 == 0o600 and phrase not in out.read_text()

    # The new key file: the did kept, the package's master kept for epoch 1, new keys after.
    old = open_claim_package(package, enrolled.code).identity
    assert keyfile.did == did and keyfile.name == "Jo Claimant"
    assert keyfile.identity != old and keyfile.identity.did != did
    assert [(p.identity, p.below_epoch) for p in keyfile.previous] == [(old, 2)]
    assert keyfile.naming_key == naming_key_of(old)
    _check_chain_state(node, keyfile)

    # Written after the claim: wrapped to the new epoch and to the writer only.
    after = clinic.write(did, observation("after-1", 99))
    blob = unpack_record_blob(clinic.fetch([after.blob_hash])[0][1])
    assert {w.recipient for w in blob.wrapped_keys} == {"scope/diagnostics/2", clinic.did}
    for wrapped in blob.wrapped_keys:
        for key in everything_in_the_package(package, enrolled.code, epochs=5):
            with pytest.raises(UnwrapError):
                unwrap_data_key(wrapped, blob.owner, key)

    # The patient's new key file opens both the records written before and after the claim.
    patient = RecordsClient(node.url, keyfile)
    assert patient.read(before[0].ref)["valueQuantity"]["value"] == 70
    assert patient.read(after.ref)["valueQuantity"]["value"] == 99
    # And the package's own keys still open only what was written before.
    _opens_with_old_keys(clinic, before[1], old)


def _check_chain_state(node: NodeProcess, keyfile: KeyFile) -> None:
    client = node.client()
    ident = client.query("identity/identity", did=keyfile.did)
    assert ident["signing_key"] == keyfile.identity.signing_public.hex()
    assert ident["encryption_key"] == keyfile.identity.encryption_public.hex()
    chain_id = client.status()["chain_id"]
    published = client.query("records/scope_keys", patient=keyfile.did)
    new = {k["scope"]: k for k in published if k["epoch"] == 2}
    assert set(new) == set(SCOPES)
    for scope, key in new.items():
        assert key["public_key"] == keyfile.scope_key(scope, 2).public_bytes.hex()
        statement = scope_key_statement(chain_id, keyfile.did, scope, 2, key["public_key"])
        assert verify_signature(
            keyfile.identity.signing_public, bytes.fromhex(key["signature"]), statement
        )


def _opens_with_old_keys(clinic: RecordsClient, written: Written, old: Identity) -> None:
    blob = unpack_record_blob(clinic.fetch([written.blob_hash])[0][1])
    wrapped = next(w for w in blob.wrapped_keys if w.recipient == "scope/diagnostics/1")
    unwrapped = unwrap_data_key(wrapped, blob.owner, scope_key_of(old, "diagnostics", 1))
    assert unwrapped.binding.resource_id == written.ref.resource_id
    assert len(unwrapped.data_key) == 32


def test_a_read_grant_the_clinic_made_with_the_package_key_gets_nothing_from_the_claim(
    node: NodeProcess, tmp_path: Path
) -> None:
    """Before the claim only the clinic (which made the keys and printed the code) can sign
    as the patient. It grants its own organisation a research read grant; the claim must
    not hand the new epochs' keys to it (nor leave it standing): "nothing the clinic ever
    held opens what is written afterwards"."""
    _, enrolled, package = enrol(node, tmp_path)
    old = open_claim_package(package, enrolled.code).identity
    org = node.organisation()
    key = scope_key_of(old, "diagnostics", 1)
    wrapped = wrap_scope_key(key, enrolled.did, org.did, org.identity.encryption_public)
    grant = grant_payload(
        enrolled.did,
        org.did,
        "read",
        scopes=["diagnostics"],
        purposes=["HRESCH"],
        keys=[{"scope": "diagnostics", "epoch": 1, "wrapped": wrapped.hex()}],
    )
    Signer(NodeClient(node.url, old), enrolled.did, old).send("consent/grant", grant)

    out = tmp_path / "me.json"
    claimed = claim_cli(node, package, out, enrolled.code)
    assert claimed.returncode == 0 and "Revoked 1 grant" in claimed.stdout
    after = node.client().query("consent/grant", id=grant["id"])
    assert {k["epoch"] for k in after["keys"]} == {1}, "the claim shared the new epoch"
    assert after["revoked_at"], "a grant made with the clinic's copy of the key survives"
    # The enrolling clinic's write consent (made at registration) stands.
    grants = node.client(KeyFile.load(out)).query("consent/grants", patient=enrolled.did)
    assert [g["action"] for g in grants if not g["revoked_at"]] == ["write"]
    # Finishing again changes nothing: every step is done (an interrupted claim resumes so).
    assert finish_claim(NodeClient(node.url), KeyFile.load(out)) == ()


def test_a_delegation_the_clinic_made_with_the_package_key_does_not_survive_the_claim(
    node: NodeProcess, tmp_path: Path
) -> None:
    """The clinic names itself the patient's delegate (every scope, until 2^40) before
    handing the package over; after the claim it must not grant as the patient."""
    _, enrolled, package = enrol(node, tmp_path)
    old = open_claim_package(package, enrolled.code).identity
    org = node.organisation()
    delegation = grant_payload(enrolled.did, org.did, "delegate")
    Signer(NodeClient(node.url, old), enrolled.did, old).send("consent/grant", delegation)

    assert claim_cli(node, package, tmp_path / "me.json", enrolled.code).returncode == 0
    consortium = Consortium(node.url, org)
    self_grant = grant_payload(
        enrolled.did, org.did, "read", scopes=["sensitive"], purposes=["HRESCH"]
    )
    with pytest.raises(NodeError):
        consortium.send(org, "consent/grant", self_grant)


def test_a_package_claims_once_and_refuses_tampering(node: NodeProcess, tmp_path: Path) -> None:
    _, enrolled, package = enrol(node, tmp_path)
    # Altered: the right code, but the header names another identity.
    altered = tmp_path / "altered.json"
    data = json.loads(package.read_text())
    altered.write_text(json.dumps({**data, "did": Identity.generate().did}))
    refused = claim_cli(node, altered, tmp_path / "a.json", enrolled.code)
    assert refused.returncode == 1 and "altered" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "a.json").exists()

    first = claim_cli(node, package, tmp_path / "me.json", enrolled.code)
    assert first.returncode == 0, first.stderr
    # The package's keys no longer act for the patient: a second claim is refused, and no
    # key file is left behind.
    second = claim_cli(node, package, tmp_path / "again.json", enrolled.code)
    assert second.returncode == 1 and "already claimed" in second.stderr
    assert not (tmp_path / "again.json").exists()
    # Nor can the package's key sign for the patient any more.
    old = open_claim_package(package, enrolled.code).identity
    grant = grant_payload(enrolled.did, node.organisation().did, "read")
    as_old_key = NodeClient(node.url, old, did=enrolled.did)
    with pytest.raises(NodeError) as refused_old:
        Signer(as_old_key, enrolled.did, old).send("consent/grant", grant)
    assert refused_old.value.status == 401


def test_a_mistyped_code_and_a_lock_through_the_cli(node: NodeProcess, tmp_path: Path) -> None:
    _, enrolled, package = enrol(node, tmp_path)
    out = tmp_path / "me.json"
    typo = claim_cli(node, package, out, "not six words")
    assert typo.returncode == 1 and "6 words" in typo.stderr
    assert json.loads(package.read_text())["attempts"] == 0
    for left in (4, 3, 2, 1):
        wrong = claim_cli(node, package, out, other_code(enrolled.code))
        assert f"{left} attempt(s) left" in wrong.stderr
    last = claim_cli(node, package, out, other_code(enrolled.code))
    assert "now locked" in last.stderr
    locked = claim_cli(node, package, out, enrolled.code)
    assert locked.returncode == 1 and "ask the clinic for a new package" in locked.stderr
    assert not out.exists()
    # The identity still has the package's key: nothing reached the chain.
    ident = node.client().query("identity/identity", did=enrolled.did)
    assert ident["signing_key"] == ed25519_from_did(enrolled.did).hex()
    assert len(ident["keys"]) == 1
