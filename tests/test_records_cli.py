"""The records commands against a real `careledger up` process."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import orjson
from rich.console import Console

from accessutil import Consortium
from careledger.crypto.claim import open_claim_package
from careledger.crypto.keyfile import KeyFile, naming_key_of
from careledger.wallet.consent_cli import grants_table
from careledger.wallet.node_client import NodeClient
from nodeutil import SHARED_DATA, NodeProcess, careledger_command

BUNDLE = SHARED_DATA / "synthea-r4" / "Jesus_Alvarez_c0580b5a-6fc2-4b72-b691-57a71afb5597.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli_with_input("", *args)


def cli_with_input(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    wide = {**os.environ, "COLUMNS": "250"}  # one table row per line
    return subprocess.run(
        [*careledger_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=wide,
    )


def import_bundle(node: NodeProcess, claims: Path) -> subprocess.CompletedProcess[str]:
    """`records import` of the demo bundle as the node's organisation, packages to `claims`."""
    org_key = str(node.data_dir / "keys" / "organisation.json")
    imported = cli("records", "import", str(BUNDLE), "--as", org_key, "--node", node.url,
                   "--claims", str(claims))  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    return imported


def claim(
    node: NodeProcess, package: Path, code: str, out: Path
) -> subprocess.CompletedProcess[str]:
    """`careledger claim` with the code on standard input; the new key file at `out`."""
    claimed = cli_with_input(code + "\n", "claim", str(package), "--out", str(out),
                             "--node", node.url)  # fmt: skip
    assert claimed.returncode == 0, claimed.stderr
    return claimed


def claim_code_in(output: str, package: Path) -> str:
    """The claim code printed beside the package's path (six words)."""
    for line in output.splitlines():
        if package.name in line:
            words = re.findall(r"\b[a-z]+\b", line.split(package.name, 1)[1])
            assert len(words) == 6, line
            return " ".join(words)
    raise AssertionError(f"no claim code printed for {package}:\n{output}")


def assert_nowhere_in(roots: list[Path], secrets: list[bytes], texts: list[str]) -> None:
    """No file under `roots` holds any secret (raw, hex, base64) or any of `texts`."""
    needles = [t.encode() for t in texts if len(t) >= 3]
    for secret in secrets:
        needles += [secret, secret.hex().encode(), base64.b64encode(secret)]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found = [n for n in needles if n in data]
                assert not found, f"{path} holds {found[0][:20]!r}"


def test_import_list_get_prove_erase_and_verify(node: NodeProcess, tmp_path: Path) -> None:
    claims = tmp_path / "claim-packages"
    imported = import_bundle(node, claims)
    assert "Imported 100 resources for 1 patients" in imported.stdout
    assert "Skipped 1 Organization, 1 Practitioner" in imported.stdout
    (package,) = claims.glob("claim-*.json")
    code = claim_code_in(imported.stdout, package)

    # The clinic's side keeps nothing of the patient in clear: no key, no name, no code.
    contents = open_claim_package(package, code)
    identity = contents.identity
    secrets = [contents.master_secret, identity.secret("scope-keys"), naming_key_of(identity)]
    assert_nowhere_in(
        [node.data_dir, claims], secrets, [contents.name, *contents.name.split(), code]
    )

    patient_key = tmp_path / "patient.json"
    claimed = claim(node, package, code, patient_key)
    assert "Recovery phrase" in claimed.stdout

    listed = cli("records", "list", "--as", str(patient_key), "--node", node.url)
    assert listed.returncode == 0 and "100 record(s)" in listed.stdout

    bundle = orjson.loads(BUNDLE.read_bytes())
    (patient_id,) = [
        e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    proof = tmp_path / "proof.json"
    got = cli(
        "records",
        "get",
        f"Patient/{patient_id}",
        "--as",
        str(patient_key),
        "--node",
        node.url,
        "--proof",
        str(proof),
    )
    assert got.returncode == 0, got.stderr
    assert '"birthDate"' in got.stdout
    unanchored = cli("verify-record", str(proof))  # nothing to trust: consistent, no more
    assert unanchored.returncode == 2 and "UNVERIFIED: " in unanchored.stdout
    checked = cli("verify-record", str(proof), "--node", node.url, "--as", str(patient_key))
    assert checked.returncode == 0 and "OK: Patient/" in checked.stdout
    proof.write_text(proof.read_text().replace('"birthDate": "', '"birthDate": "1'))
    altered = cli("verify-record", str(proof))
    assert altered.returncode == 1 and "commitment" in altered.stderr

    erased = cli(
        "records", "erase", f"Patient/{patient_id}", "--as", str(patient_key), "--node", node.url
    )
    assert erased.returncode == 0 and "Erased 1 record(s)" in erased.stdout
    again = cli(
        "records", "get", f"Patient/{patient_id}", "--as", str(patient_key), "--node", node.url
    )
    assert again.returncode == 1 and "erased" in again.stderr and "410" in again.stderr

    node.stop()
    verified = cli("verify", "--data-dir", str(node.data_dir))
    assert verified.returncode == 0, verified.stderr
    assert "99 record blobs verified (1 erased" in verified.stdout


def test_import_names_a_file_that_is_not_a_bundle_and_writes_nothing(
    node: NodeProcess, tmp_path: Path
) -> None:
    org_key = str(node.data_dir / "keys" / "organisation.json")
    not_json, not_bundle = tmp_path / "a.json", tmp_path / "b.json"
    not_json.write_text("not json")
    not_bundle.write_text('{"resourceType": "Patient", "id": "x"}')
    before = NodeClient(node.url).status()["height"]
    for path, message in [(not_json, "is not JSON"), (not_bundle, "is not a FHIR Bundle")]:
        result = cli("records", "import", str(path), "--as", org_key, "--node", node.url)
        assert result.returncode == 1
        assert f"{path} {message}" in result.stderr
        assert "Traceback" not in result.stderr
    assert NodeClient(node.url).status()["height"] == before


def test_consent_grant_list_revoke_through_the_cli(node: NodeProcess, tmp_path: Path) -> None:
    """A claimed patient grants an organisation, lists, and revokes, all as commands; the
    organisation reads for the granted purpose and is refused for another."""
    claims = tmp_path / "claims"
    imported = import_bundle(node, claims)
    (package,) = claims.glob("claim-*.json")
    patient_key = tmp_path / "patient.json"
    claim(node, package, claim_code_in(imported.stdout, package), patient_key)
    patient = KeyFile.load(patient_key)
    reader_org = Consortium(node.url, node.organisation())
    second = reader_org.admit_member("Second Clinic")
    second_key = tmp_path / "second.json"
    second.save(second_key)

    granted = cli(
        "consent", "grant", second.did, "--as", str(patient_key), "--node", node.url,
        "--scopes", "all", "--purpose", "TREAT", "--until", "2099-12-31",
    )  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    grant_id = granted.stdout.split("Granted: ")[1].split()[0]
    listed = cli("consent", "list", "--as", str(patient_key), "--node", node.url)
    assert grant_id in listed.stdout and "2099-12-31" in listed.stdout and "active" in listed.stdout

    bundle = orjson.loads(BUNDLE.read_bytes())
    (patient_id,) = [
        e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    get = ("records", "get", f"Patient/{patient_id}", "--as", str(second_key), "--patient",
           patient.did, "--node", node.url)  # fmt: skip
    assert '"birthDate"' in cli(*get, "--purpose", "TREAT").stdout
    research = cli(*get, "--purpose", "HRESCH")
    assert research.returncode == 1 and "403" in research.stderr and "HRESCH" in research.stderr

    revoked = cli("consent", "revoke", grant_id, "--as", str(patient_key), "--node", node.url)
    assert revoked.returncode == 0 and "New key epochs" in revoked.stdout, revoked.stderr
    after = cli(*get, "--purpose", "TREAT")  # refused: it holds nothing of the patient now
    assert after.returncode == 1 and "HTTP 403" in after.stderr
    bad = cli("consent", "grant", second.did, "--as", str(patient_key), "--node", node.url,
              "--until", "31/12/2099")  # fmt: skip
    assert bad.returncode == 1 and "YYYY-MM-DD" in bad.stderr


def test_consent_list_shows_ended_grants_and_who_made_each() -> None:
    """`consent list`: a grant past its end is "ended", not "active"; a revoked one says so;
    the "by" column names the patient or the delegate that made the grant."""
    patient, guardian = "did:careledger:patient0001", "did:careledger:guardian0042"

    def grant(grant_id: str, end: int, grantor: str, revoked_at: int = 0) -> dict[str, object]:
        return {"id": grant_id, "grantee": "did:careledger:clinic", "action": "read",
                "scopes": ["clinical"], "purposes": ["TREAT"], "start": 0, "end": end,
                "grantor": grantor, "revoked_at": revoked_at}  # fmt: skip

    now = 1_800_000_000
    grants = [
        grant("a" * 32, now + 1, patient),
        grant("b" * 32, now, guardian),
        grant("c" * 32, now + 1, patient, revoked_at=7),
    ]
    console = Console(record=True, width=250)
    console.print(grants_table(grants, patient, now))
    rows = {line.split("│")[-2].strip(): line for line in console.export_text().splitlines()
            if line.count("│") > 2 and "id (for" not in line}  # fmt: skip
    assert "active" in rows["a" * 32] and "patient" in rows["a" * 32]
    assert "ended" in rows["b" * 32] and "active" not in rows["b" * 32]
    assert "…guardian0042" in rows["b" * 32]
    assert "revoked at height 7" in rows["c" * 32]
