"""The page's record reader (portal/src/wallet/records.ts) against a real `careledger up`:
records a clinic wrote with the Python SDK are listed, fetched and opened by the page's code
(its request signing, frames and crypto, under Node.js through `portal/tools/read-records.ts`),
and each record it cannot show comes back as a failure of its own kind while the others open:
a blob altered on the node's disk (integrity), an erased record, a deleted one (tombstone),
and one whose FHIR id the reader does not know (unnamed). Test keys only, made at run time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from careledger.wallet.records import RecordsClient, stamp
from nodeutil import NodeProcess, enrol

PORTAL = Path(__file__).resolve().parents[2] / "portal"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="Node.js (`node`) is not installed: the portal's code cannot run"
)

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "visit-1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "period": {"start": "2024-03-01T09:00:00Z"},
}


def observation(id_: str, systolic: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "55284-4"}], "text": "BP"},
        "encounter": {"reference": "Encounter/visit-1"},
        "effectiveDateTime": "2024-03-01T09:10:00Z",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": systolic, "unit": "mm[Hg]"},
            }
        ],
    }


IMMUNIZATION: dict[str, Any] = {
    "resourceType": "Immunization",
    "id": "shot-1",
    "status": "completed",
    "vaccineCode": {"text": "Influenza, seasonal"},
    "patient": {"reference": "Patient/p-1"},
    "occurrenceDateTime": "2024-03-01",
}


@pytest.fixture(scope="module")
def portal_modules() -> Path:
    """The portal's node_modules (`npm ci` from the local cache if `make` has not yet)."""
    if not (PORTAL / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PORTAL, check=True)
    return PORTAL / "node_modules"


def read_in_page(
    tmp_path: Path, url: str, keyfile: Path, known: list[tuple[str, str]]
) -> dict[str, Any]:
    ids, out = tmp_path / "known.json", tmp_path / "read.json"
    ids.write_text(json.dumps([{"resourceType": t, "id": i} for t, i in known]))
    assert NODE is not None
    done = subprocess.run(
        [NODE, "tools/run.mjs", "tools/read-records.ts", url, str(keyfile), str(ids), str(out)],
        cwd=PORTAL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"read-records.ts failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_the_page_opens_what_python_wrote_and_reports_each_bad_record(
    node: NodeProcess, tmp_path: Path, portal_modules: Path
) -> None:
    clinic = RecordsClient(node.url, node.organisation())
    patient = enrol(clinic, "Reader Test")
    originals = {
        f"{r['resourceType']}/{r['id']}": r
        for r in [
            ENCOUNTER,
            observation("bp-1", 121.5),
            IMMUNIZATION,
            observation("bp-altered", 130),
            observation("bp-erased", 140),
            observation("bp-deleted", 150),
            observation("bp-unknown", 160),
        ]
    }
    written = {reference: clinic.write(patient.did, r) for reference, r in originals.items()}
    # The node's copy of one blob altered on disk: the node refuses to serve it as it is.
    altered = written["Observation/bp-altered"].blob_hash
    stored = next((node.data_dir / "blobs").rglob(altered))
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    RecordsClient(node.url, patient).erase([written["Observation/bp-erased"].ref])
    clinic.delete(written["Observation/bp-deleted"].ref)
    keyfile = tmp_path / "patient.json"
    patient.save(keyfile)

    # The Encounter's id is not given: the page finds it through the Observation's reference.
    known = [("Observation", i) for i in ("bp-1", "bp-altered", "bp-erased", "bp-deleted")]
    result = read_in_page(tmp_path, node.url, keyfile, [*known, ("Immunization", "shot-1")])

    opened = {f"{r['resourceType']}/{r['id']}": r for r in result["records"]}
    assert set(opened) == {"Encounter/visit-1", "Observation/bp-1", "Immunization/shot-1"}
    for reference, record in opened.items():
        assert record["resource"] == stamp(originals[reference], 1)
        assert record["name"] == written[reference].ref.name
        assert record["blobHash"] == written[reference].blob_hash
        assert record["author"] == clinic.did
    kinds = {failure["name"]: failure["kind"] for failure in result["failures"]}
    assert kinds == {
        written["Observation/bp-altered"].ref.name: "integrity",
        written["Observation/bp-erased"].ref.name: "erased",
        written["Observation/bp-deleted"].ref.name: "deleted",
        written["Observation/bp-unknown"].ref.name: "unnamed",
    }
