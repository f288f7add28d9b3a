"""The records commands against a real `careledger up` process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from careledger.wallet.node_client import NodeClient
from nodeutil import SHARED_DATA, NodeProcess, careledger_command

BUNDLE = SHARED_DATA / "synthea-r4" / "Jesus_Alvarez_c0580b5a-6fc2-4b72-b691-57a71afb5597.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*careledger_command(), *args], capture_output=True, text=True, timeout=300
    )


def test_import_list_get_prove_erase_and_verify(node: NodeProcess, tmp_path: Path) -> None:
    org_key = str(node.data_dir / "keys" / "organisation.json")
    keys = tmp_path / "patient-keys"
    imported = cli(
        "records",
        "import",
        str(BUNDLE),
        "--as",
        org_key,
        "--node",
        node.url,
        "--patient-keys",
        str(keys),
    )
    assert imported.returncode == 0, imported.stderr
    assert "Imported 100 resources for 1 patients" in imported.stdout
    assert "Skipped 1 Organization, 1 Practitioner" in imported.stdout
    (patient_key,) = keys.glob("patient-*.json")
    assert (keys / (patient_key.stem + ".phrase.txt")).read_text().count(" ") == 23

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
