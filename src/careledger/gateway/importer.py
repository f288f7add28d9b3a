"""`careledger import`: FHIR bundles posted to a gateway, one transaction each, resumable.

A client of the gateway's FHIR API (HTTP only, with a SMART bearer token), not part of the
server. Directory bundles (Synthea's `hospitalInformation*` and `practitionerInformation*`)
go first, since patient bundles reference what they hold.

Resuming without duplicating anything:
- a bundle the gateway committed is noted in the state file (its SHA-256), written atomically
  after each bundle, and skipped on the next run;
- an entry that creates a resource with a client-chosen identity (`POST` whose fullUrl is
  `urn:uuid:<id>`) is sent as `PUT Type/<id>`: an update that creates when absent and changes
  nothing when the same content is already there (as HAPI does), so a bundle cut off half way
  can be sent again whole. Conditional creates (`ifNoneExist`) are idempotent as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from careledger.crypto.privatefs import write_private_file
from careledger.gateway.bundle_answers import CLAIM_CODE_PREFIX

DIRECTORY_FIRST = ("hospitalInformation", "practitionerInformation")
_UUID_URL = re.compile(r"urn:uuid:([A-Za-z0-9\-\.]{1,64})")


class ImportError_(Exception):
    """A bundle the gateway refused: its file and the gateway's OperationOutcome text."""


@dataclass(frozen=True)
class Claim:
    """An enrolled patient's claim code, to give them once, out of band. repr() hides it."""

    patient: str  # Patient/<id>
    code: str = field(repr=False)


@dataclass
class ImportReport:
    bundles: int = 0
    skipped_bundles: int = 0  # already imported (state file)
    resources: int = 0
    by_status: dict[str, int] = field(default_factory=dict)  # "201", "200"...
    claims: list[Claim] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds if self.seconds else 0.0


def ordered_files(paths: Iterable[Path]) -> list[Path]:
    """Every .json file named or inside a named folder, directory bundles first, each group
    in name order."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    return sorted(files, key=lambda f: (not f.name.startswith(DIRECTORY_FIRST), f.name))


def as_idempotent(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle with each plain create of a `urn:uuid:` entry sent as a PUT to that id."""
    entries = []
    for entry in bundle.get("entry") or []:
        request = entry.get("request") or {}
        resource = entry.get("resource") or {}
        match = _UUID_URL.fullmatch(str(entry.get("fullUrl", "")))
        if request.get("method") == "POST" and "ifNoneExist" not in request and match:
            kind = resource.get("resourceType", request.get("url", ""))
            id_ = match.group(1)
            entry = {
                **entry,
                "resource": {**resource, "id": id_},
                "request": {"method": "PUT", "url": f"{kind}/{id_}"},
            }
        entries.append(entry)
    return {**bundle, "entry": entries}


class ImportState:
    """The SHA-256 of every bundle already committed, in a small owner-only JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        if path.exists():
            self.done = set(orjson.loads(path.read_bytes()).get("imported", []))

    def mark(self, digest: str) -> None:
        self.done.add(digest)
        temporary = self.path.with_name(self.path.name + ".tmp")
        write_private_file(temporary, orjson.dumps({"imported": sorted(self.done)}))
        os.replace(temporary, self.path)


def import_files(
    http: httpx.Client,
    files: Iterable[Path],
    state: ImportState,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Post each bundle file as one transaction (see the module docstring)."""
    report = ImportReport()
    started = time.perf_counter()
    for path in files:
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        bundle = orjson.loads(raw)
        count = len(bundle.get("entry") or [])
        if digest in state.done:
            report.skipped_bundles += 1
        else:
            _post_bundle(http, path, as_idempotent(bundle), report)
            state.mark(digest)
            report.bundles += 1
            report.resources += count
        if progress:
            progress(count)
    report.seconds = time.perf_counter() - started
    return report


def _post_bundle(
    http: httpx.Client, path: Path, bundle: Mapping[str, Any], report: ImportReport
) -> None:
    response = http.post(
        "", content=orjson.dumps(bundle), headers={"content-type": "application/fhir+json"}
    )
    if response.status_code >= 400:
        raise ImportError_(f"{path.name}: HTTP {response.status_code}: {_diagnostics(response)}")
    for entry in response.json().get("entry") or []:
        answer = entry.get("response") or {}
        status = str(answer.get("status", "")).split(" ")[0]
        report.by_status[status] = report.by_status.get(status, 0) + 1
        code = _claim_code(answer.get("outcome"))
        if code:
            location = str(answer.get("location", ""))
            report.claims.append(Claim("/".join(location.split("/")[:2]), code))


def _claim_code(outcome: object) -> str | None:
    if not isinstance(outcome, dict):
        return None
    for issue in outcome.get("issue") or []:
        text = str(issue.get("diagnostics", ""))
        if text.startswith(CLAIM_CODE_PREFIX):
            return text[len(CLAIM_CODE_PREFIX) :].split(" (")[0]
    return None


def _diagnostics(response: httpx.Response) -> str:
    try:
        issues = response.json().get("issue") or []
        return "; ".join(str(issue.get("diagnostics", "")) for issue in issues) or response.text
    except ValueError:
        return response.text[:500]
