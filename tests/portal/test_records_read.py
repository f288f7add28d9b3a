"""The page's record reader (portal/src/wallet/records.ts) against a real `careledger up`:
records a clinic wrote with the Python SDK are listed, fetched and opened by the page's code
(its request signing, frames and crypto, under Node.js through `portal/tools/read-records.ts`),
knowing no FHIR id (design change 28: the wrap names type, id and version), by the patient
and by a grantee; each record it cannot show comes back as a failure of its own kind while
the others open: a blob altered on the node's disk (integrity), an erased record, a deleted
one (tombstone), and for the grantee those not shared with it (no key, never fetched). Test
keys only, made at run time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from portalutil import PORTAL

from accessutil import Consortium
from blobutil import flip_byte
from careledger.crypto.keyfile import KeyFile
from careledger.storage.blobstore import BlobStore
from careledger.wallet.audit import AuditClient
from careledger.wallet.consent import ConsentClient
from careledger.wallet.records import RecordsClient, stamp
from nodeutil import NodeProcess, enrol

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
    tmp_path: Path, url: str, keyfile: Path, grantee: Path | None = None
) -> dict[str, Any]:
    """The page's reader, as the key file's patient, or (`grantee`) as that grantee."""
    out = tmp_path / "read.json"
    assert NODE is not None
    extra = [str(grantee)] if grantee else []
    done = subprocess.run(
        [NODE, "tools/run.mjs", "tools/read-records.ts", url, str(keyfile), str(out), *extra],
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
        ]
    }
    written = {reference: clinic.write(patient.did, r) for reference, r in originals.items()}
    # The node's copy of one blob altered on disk: the node refuses to serve it as it is.
    altered = written["Observation/bp-altered"].blob_hash
    flip_byte(BlobStore(node.data_dir / "blobs"), altered, at=-1)
    RecordsClient(node.url, patient).erase([written["Observation/bp-erased"].ref])
    clinic.delete(written["Observation/bp-deleted"].ref)
    keyfile = tmp_path / "patient.json"
    patient.save(keyfile)

    # No id is given: the page learns each from the record's wrapped data key.
    result = read_in_page(tmp_path, node.url, keyfile)

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
    }


def test_a_grantee_reads_by_name_what_was_shared_and_fetches_nothing_else(
    node: NodeProcess, tmp_path: Path, portal_modules: Path
) -> None:
    """Granted diagnostics, another organisation opens the Observations (no id known) and
    reports the Encounter and the Immunization as not openable, without asking the node for
    them: the patient's access log shows reads of the Observations only."""
    founder = node.organisation()
    grantee = Consortium(node.url, founder).admit_member("Granted Clinic")
    clinic = RecordsClient(node.url, founder)
    patient = enrol(clinic, "Shared Reader Test")
    resources = [ENCOUNTER, observation("bp-1", 121.5), observation("bp-2", 118), IMMUNIZATION]
    written = {f"{r['resourceType']}/{r['id']}": clinic.write(patient.did, r) for r in resources}
    ConsentClient(node.url, patient).grant(
        grantee.did, scopes=("diagnostics",), purposes=("TREAT",)
    )
    patient_file, grantee_file = tmp_path / "patient.json", tmp_path / "grantee.json"
    patient.save(patient_file)
    grantee.save(grantee_file)

    result = read_in_page(tmp_path, node.url, patient_file, grantee=grantee_file)

    opened = {f"{r['resourceType']}/{r['id']}": r["resource"] for r in result["records"]}
    assert opened == {
        ref: stamp(r, 1)
        for ref, r in zip(written, resources, strict=True)
        if ref.startswith("Observation/")
    }
    kinds = {failure["name"]: failure["kind"] for failure in result["failures"]}
    assert kinds == {
        written["Encounter/visit-1"].ref.name: "no-key",
        written["Immunization/shot-1"].ref.name: "no-key",
    }
    # the log names a record by the first 32 hex digits of its name
    shared = {written[ref].ref.name[:32] for ref in ("Observation/bp-1", "Observation/bp-2")}
    assert _records_read_by(node, patient, grantee.did, len(shared)) == shared


def _records_read_by(node: NodeProcess, patient: KeyFile, reader: str, count: int) -> set[str]:
    """The records the patient's access log says `reader` read, once `count` entries of it
    are committed (the node writes its log to the chain in batches)."""
    deadline = time.monotonic() + 60
    with AuditClient(node.url, patient) as audit:
        while True:
            entries = [a.entry for a in audit.log(verify=False) if a.entry.reader == reader]
            if len(entries) >= count or time.monotonic() > deadline:
                return {entry.record for entry in entries}
            time.sleep(0.2)
