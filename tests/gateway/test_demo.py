"""`careledger up --demo` (what `make run` starts): a consortium of two members, a registered
backend client, three Synthea patients imported through the gateway and claimed, and the curl
line it prints works as printed."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import httpx

from careledger.crypto.keyfile import KeyFile
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
        patients = [KeyFile.load(demo / f"patient-{n}.json") for n in (1, 2, 3)]
        assert {p.kind for p in patients} == {"patient"}
        assert KeyFile.load(demo / "northside-clinic.json").kind == "organisation"
        patient_search = httpx.get(
            url.split("/fhir/")[0] + "/fhir/Patient?_summary=count",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert patient_search.json()["total"] == 3
    finally:
        node.stop()


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
