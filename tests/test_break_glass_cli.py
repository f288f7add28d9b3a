"""`careledger consent emergency` and `careledger break-glass`, as separate processes against a
real `careledger up` node of one member (k = 1: its node alone releases the one share).

The patient writes its own records, so the practitioner's organisation is not their author
and reads them only by breaking the glass.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from careledger.wallet.break_glass import EmergencyClient
from careledger.wallet.records import RecordsClient
from nodeutil import NodeProcess, careledger_command, enrol, free_port
from test_break_glass import RECORDS, practitioner

REASON = "found unconscious, no relative reachable"


def careledger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*careledger_command(), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("glass-cli") / "data", free_port())
    process.start("--block-interval", "0.05")
    try:
        yield process
    finally:
        process.stop()


def test_the_patient_opens_emergency_access_and_a_practitioner_breaks_the_glass(
    node: NodeProcess, tmp_path: Path
) -> None:
    clinic = RecordsClient(node.url, node.organisation())
    patient = enrol(clinic, "cli patient")
    mine = RecordsClient(node.url, patient)
    for name in ("condition", "encounter"):
        mine.write(patient.did, {**RECORDS[name], "id": f"{name}-1"})
    patient_file, doctor_file = tmp_path / "patient.json", tmp_path / "doctor.json"
    patient.save(patient_file)
    doctor = practitioner(node.url, node.organisation(), "Dr. Who")
    doctor.save(doctor_file)

    opened = careledger("consent", "emergency", "--as", str(patient_file), "--node", node.url)
    assert opened.returncode == 0, opened.stderr
    assert "Emergency access opened to clinical, medications, diagnostics" in opened.stdout
    assert "1 of 1 member organisations" in opened.stdout

    refused = careledger(
        "break-glass", "--as", str(doctor_file), "--patient", patient.did,
        "--reason", " ", "--node", node.url,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "a break-glass states its reason" in refused.stderr

    broke = careledger(
        "break-glass", "--as", str(doctor_file), "--patient", patient.did,
        "--reason", REASON, "--seconds", "600", "--node", node.url,
        "--read", "Condition/condition-1",
    )  # fmt: skip
    assert broke.returncode == 0, broke.stderr
    assert "The patient has been alerted." in broke.stdout
    assert "1 record(s) in those scopes." in broke.stdout  # the encounter is administrative
    assert '"asthma"' in broke.stdout

    unopened = careledger(
        "break-glass", "--as", str(doctor_file), "--patient", patient.did,
        "--reason", REASON, "--scopes", "administrative", "--node", node.url,
    )  # fmt: skip
    assert unopened.returncode == 1
    assert "scope(s) administrative not opened to emergency access" in unopened.stderr

    [glass] = EmergencyClient(node.url, patient).break_glasses()
    assert (glass["requester"], glass["reason"]) == (doctor.did, REASON)
