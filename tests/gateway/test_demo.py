"""`careledger up --demo` (what `make run` starts): a consortium of two members, two registered
backend clients (the organisation's, and the portal's bound to Dr. Demo), three Synthea
patients imported through the gateway, two claimed (the first with emergency access open) and
the third left for the portal's claim; the curl line it prints works as printed, and so do
the portal's sign-in files it names."""

from __future__ import annotations

import re
import shlex
import stat
import subprocess
import time
from pathlib import Path

import httpx

from careledger.crypto.keyfile import KeyFile
from careledger.gateway.smart.backend_client import ClientKey, request_token
from careledger.wallet.break_glass import EmergencyClient
from careledger.wallet.custody import claim
from careledger.wallet.node_client import NodeClient
from nodeutil import NodeProcess, careledger_command, free_port

CURL = re.compile(r'curl -H "Authorization: Bearer \$\((careledger token [^)]*)\)" "([^"]+)"')


def test_the_demo_imports_claims_and_prints_a_curl_line_that_works(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", free_port())
    node.start("--demo")
    try:
        line = _wait_for_line(tmp_path / f"node-{node.port}.log", CURL)
        token_command, url = line.group(1), line.group(2)
        args = shlex.split(token_command)[1:]  # "careledger" itself: the installed command
        token = subprocess.run(
            [*careledger_command(), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert bundle["total"] > 0 and bundle["entry"][0]["resource"]["resourceType"] == (
            "Observation"
        )
        demo = tmp_path / "data" / "demo"
        patients = [KeyFile.load(demo / f"patient-{n}.json") for n in (1, 2)]
        assert {p.kind for p in patients} == {"patient"}
        assert not (demo / "patient-3.json").exists()
        assert KeyFile.load(demo / "northside-clinic.json").kind == "organisation"
        patient_search = httpx.get(
            url.split("/fhir/")[0] + "/fhir/Patient?_summary=count",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert patient_search.json()["total"] == 3
        _wait_for_file(demo / "ready")
        log = (tmp_path / f"node-{node.port}.log").read_text()
        for named in ("patient-1.json", "claim-patient-3.json", "client-dr-demo.json"):
            assert str(demo / named) in log
        _the_portal_client_breaks_the_glass_for_patient_1(node.url, demo, patients[0])
        _patient_3_claims_with_the_files_left_for_the_portal(node.url, demo)
    finally:
        node.stop()


def _the_portal_client_breaks_the_glass_for_patient_1(url: str, demo: Path, first: KeyFile) -> None:
    """Dr. Demo's client (the portal's): of the three patients only the first opened its
    emergency access, so exactly one break-glass succeeds, and that patient sees it."""
    key = ClientKey.load(demo / "client-dr-demo.json")
    headers = {"Authorization": f"Bearer {request_token(key)['access_token']}"}
    with httpx.Client(base_url=url + "/fhir/", headers=headers, timeout=60) as fhir:
        ids = [e["resource"]["id"] for e in fhir.get("Patient").json()["entry"]]
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueString": "demo: unconscious on arrival"}],
        }
        statuses = [fhir.post(f"Patient/{pid}/$break-glass", json=body).status_code for pid in ids]
    assert sorted(statuses) == [200, 403, 403], statuses
    alerts = EmergencyClient(url, first).break_glasses()
    assert [a["reason"] for a in alerts] == ["demo: unconscious on arrival"]


def _patient_3_claims_with_the_files_left_for_the_portal(url: str, demo: Path) -> None:
    package, code = demo / "claim-patient-3.json", demo / "claim-patient-3.code"
    assert stat.S_IMODE(package.stat().st_mode) == 0o600
    assert stat.S_IMODE(code.stat().st_mode) == 0o600
    claimed = claim(NodeClient(url), package, code.read_text().strip())
    assert claimed.keyfile.kind == "patient"


def _wait_for_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.5)


def _wait_for_line(log: Path, pattern: re.Pattern[str], timeout: float = 240) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = pattern.search(text)
        if found:
            return found
        assert "not imported" not in text, text
        time.sleep(0.5)
    raise TimeoutError(f"no line matching {pattern.pattern} in {log}")
