"""The portal's crypto (portal/src/crypto, TypeScript) against Python's, both ways, and against
a real node: a record Python seals opens in the page's code and one the page seals opens in
Python's; a Python claim package opens in the page's code; requests and transactions the
page's code signs are accepted by a real `careledger up` (and a request signed for another
node is refused). The TypeScript side runs under Node.js (`portal/tools/interop.ts`, through
Vite's module runner, offline); the two sides exchange JSON files in tmp_path.
Test keys only, made at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from portalutil import CHROMIUM_ARGS, PORTAL, chromium_path

from careledger.crypto.claim import ClaimContents, new_claim_code, seal_claim_package
from careledger.crypto.envelope import (
    BlobOwner,
    RecordBinding,
    open_record,
    pack_record_blob,
    record_blob_owner,
    seal_record,
    unpack_record_blob,
)
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.naming import record_name
from careledger.crypto.scopekeys import (
    ScopePublic,
    unwrap_data_key,
    unwrap_naming_key,
    unwrap_scope_key,
    wrap_data_key,
    wrap_naming_key,
    wrap_scope_key,
)
from careledger.wallet.custody import new_patient_keys
from nodeutil import NodeProcess, free_port

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="Node.js (`node`) is not installed: the portal's crypto cannot run"
)

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "interop-1",
    "meta": {"versionId": "1"},
    "status": "final",
    "code": {"text": "Körpertemperatur ✓ 体温"},
    "valueQuantity": {"value": 37.25, "unit": "Cel"},
    "component": [{"valueQuantity": {"value": 120, "unit": "mm[Hg]"}}],
    "effectiveDateTime": "2026-01-02T03:04:05Z",
}
# Over one 128 KiB zstd block once canonical: the page writes it as several raw blocks.
LARGE = {**OBSERVATION, "id": "interop-large", "note": [{"text": "ß" * 150_000}]}


@pytest.fixture(scope="module")
def portal_modules() -> Path:
    """The portal's node_modules (`npm ci` from the local cache if `make` has not yet)."""
    if not (PORTAL / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PORTAL, check=True)
    return PORTAL / "node_modules"


def page(tmp_path: Path, command: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one command of portal/tools/interop.ts on `payload`; its JSON answer."""
    source, answer = tmp_path / f"{command}-in.json", tmp_path / f"{command}-out.json"
    source.write_text(json.dumps(payload))
    assert NODE is not None
    done = subprocess.run(
        [NODE, "tools/run.mjs", "tools/interop.ts", command, str(source), str(answer)],
        cwd=PORTAL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"interop.ts {command} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(answer.read_text())
    return result


def _patient() -> KeyFile:
    keyfile, _ = new_patient_keys("Interop Patient")
    return keyfile


# Each case is (payload for an interop command, check of its answer): the same cases run under
# Node.js and in Chromium.
Check = Callable[[dict[str, Any]], None]


def python_sealed_record() -> tuple[dict[str, Any], Check]:
    """A record Python seals, for the page to open as the patient and as a grantee."""
    patient, grantee = _patient(), Identity.generate()
    binding = RecordBinding(patient.did, "Observation", "interop-1", 1)
    sealed = seal_record(OBSERVATION, binding)
    scope = patient.scope_key("diagnostics", 1)
    name = record_name(patient.naming_key, "Observation", "interop-1")
    wrapped = wrap_data_key(sealed.data_key, binding, name, scope.recipient, scope.public_bytes)
    blob = pack_record_blob(BlobOwner(patient.did, name), [wrapped], sealed.ciphertext)
    payload = {
        "keyfile": patient.to_json(),
        "blob": blob.hex(),
        "type": "Observation",
        "id": "interop-1",
        "version": 1,
        "label": scope.recipient,
        "scope": "diagnostics",
        "epoch": 1,
        "blob_hash": hashlib.sha256(blob).hexdigest(),
        "commitment": sealed.commitment.hex(),
        "record": name,
        "grantee_master": grantee.master.hex(),
        "scope_grant": wrap_scope_key(
            scope, patient.did, grantee.did, grantee.encryption_public
        ).hex(),
        "naming_grant": wrap_naming_key(
            patient.naming_key, patient.did, grantee.did, grantee.encryption_public
        ).hex(),
    }

    def check(out: dict[str, Any]) -> None:
        assert out["by_patient"] == OBSERVATION
        assert out["by_grantee"] == OBSERVATION
        assert out["record_name"] == name  # the granted naming key names records as Python
        # Opened by name alone (wrap v2): type and id learnt from the wrap, as Python sealed.
        assert out["by_name"] == {"type": "Observation", "id": "interop-1", "resource": OBSERVATION}
        assert out["flipped"] == "DecryptionError"
        assert out["moved"] == "IntegrityError"  # the wrap names version 1
        assert out["other_anchor"] == "IntegrityError"

    return payload, check


def page_sealed_record(resource: dict[str, Any]) -> tuple[dict[str, Any], Check]:
    """A record the page seals (with grants of its keys), for Python to open."""
    patient, grantee = _patient(), Identity.generate()
    payload = {
        "keyfile": patient.to_json(),
        "resource": resource,
        "version": 1,
        "scope": "diagnostics",
        "epoch": 1,
        "grantee": grantee.did,
        "grantee_public": grantee.encryption_public.hex(),
    }

    def check(out: dict[str, Any]) -> None:
        blob = bytes.fromhex(out["blob"])
        name = record_name(patient.naming_key, "Observation", resource["id"])
        assert out["record"] == name
        assert out["blob_hash"] == hashlib.sha256(blob).hexdigest()
        assert record_blob_owner(blob) == BlobOwner(patient.did, name)
        binding = RecordBinding(patient.did, "Observation", resource["id"], 1)
        unpacked = unpack_record_blob(blob)
        labels = [k.recipient for k in unpacked.wrapped_keys]
        assert labels == ["scope/diagnostics/1"] == out["labels"]
        scope = patient.scope_key("diagnostics", 1)
        # Knowing only the owner: the page's wrap (v2) names the record's type, id and version.
        unwrapped = unwrap_data_key(unpacked.wrapped_keys[0], unpacked.owner, scope)
        assert unwrapped.binding == binding
        opened = open_record(unpacked.ciphertext, unwrapped.data_key, binding)  # Python's zstd
        assert opened.resource() == resource
        assert opened.commitment.hex() == out["commitment"]
        # The grants the page wrapped open with the grantee's key in Python.
        public = ScopePublic("diagnostics", 1, scope.public_bytes)
        wrapped_scope = bytes.fromhex(out["scope_grant"])
        granted = unwrap_scope_key(
            wrapped_scope, patient.did, public, grantee.did, grantee.encryption_private
        )
        assert granted.private_bytes() == scope.private_bytes()
        wrapped_naming = bytes.fromhex(out["naming_grant"])
        naming = unwrap_naming_key(
            wrapped_naming, patient.did, grantee.did, grantee.encryption_private
        )
        assert naming == patient.naming_key

    return payload, check


def python_claim_package() -> tuple[dict[str, Any], Check]:
    """A claim package Python seals (64 MiB Argon2id), opened with its code, a wrong code
    and after tampering."""
    patient = Identity.generate()
    code = new_claim_code()
    contents = ClaimContents(patient.did, "interop-chain", patient.master, "Zoë Interop")
    package = seal_claim_package(contents, code).decode()
    wrong = " ".join(reversed(code.split()))
    payload = {"package": package, "code": code.upper().replace(" ", "-"), "wrong_code": wrong}

    def check(out: dict[str, Any]) -> None:
        assert out["did"] == patient.did
        assert out["master"] == patient.master.hex()
        assert out["name"] == "Zoë Interop"
        assert out["chain_id"] == "interop-chain"
        assert out["wrong"] == "WrongClaimCode"
        assert out["tampered"] == "ClaimTampered"

    return payload, check


def python_phrase() -> tuple[dict[str, Any], Check]:
    keyfile, phrase = new_patient_keys()

    def check(out: dict[str, Any]) -> None:
        assert out["did"] == keyfile.did

    return {"phrase": phrase}, check


def test_a_record_sealed_by_python_opens_in_the_page(tmp_path: Path, portal_modules: Path) -> None:
    payload, check = python_sealed_record()
    check(page(tmp_path, "open", payload))


@pytest.mark.parametrize("resource", [OBSERVATION, LARGE], ids=["small", "over-one-block"])
def test_a_record_sealed_by_the_page_opens_in_python(
    tmp_path: Path, portal_modules: Path, resource: dict[str, Any]
) -> None:
    payload, check = page_sealed_record(resource)
    check(page(tmp_path, "seal", payload))


def test_a_python_claim_package_opens_in_the_page(tmp_path: Path, portal_modules: Path) -> None:
    payload, check = python_claim_package()
    check(page(tmp_path, "claim", payload))


def test_a_recovery_phrase_restores_the_same_identity(tmp_path: Path, portal_modules: Path) -> None:
    payload, check = python_phrase()
    check(page(tmp_path, "phrase", payload))


def _send(url: str, prepared: dict[str, str]) -> httpx.Response:
    return httpx.request(
        prepared["method"],
        url + prepared["target"],
        content=prepared["body"].encode(),
        headers={"authorization": prepared["authorization"], "content-type": "application/json"},
        timeout=30,
    )


def test_requests_and_transactions_signed_by_the_page_are_accepted_by_a_node(
    tmp_path: Path, portal_modules: Path
) -> None:
    node = NodeProcess(tmp_path / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        status = httpx.get(node.url + "/status").json()
        master = os.urandom(32)
        did = Identity(master).did
        out = page(
            tmp_path,
            "node",
            {
                "org_keyfile": node.organisation().to_json(),
                "chain_id": status["chain_id"],
                "node_id": status["node_id"],
                "patient_master": master.hex(),
                "voucher": node.voucher(did),
            },
        )
        assert out["patient"] == did
        members = _send(node.url, out["members"])
        assert members.status_code == 200, members.text
        assert node.organisation().did in json.dumps(members.json())
        elsewhere = _send(node.url, out["elsewhere"])  # signed for another node's id
        assert elsewhere.status_code == 401, elsewhere.text
        assert elsewhere.json()["error"]["code"] == "unauthenticated"
        replayed = _send(node.url, out["members"])
        assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "replayed"
        registered = _send(node.url, out["register"])
        assert registered.status_code == 200, registered.text
        assert registered.json()["code"] == 0, registered.json()
        published = _send(node.url, out["scope_keys"])
        assert published.status_code == 200, published.text
        assert [r["code"] for r in published.json()["results"]] == [0] * 6, published.json()
        keyfile = KeyFile(did, "patient", Identity(master))
        rows = node.client().query("records/scope_keys", patient=did)
        assert {(r["scope"], r["public_key"]) for r in rows} == {
            (r["scope"], keyfile.scope_key(r["scope"], 1).public_bytes.hex()) for r in rows
        }
        assert len(rows) == 6
    finally:
        node.stop()


# --- the same in Chromium, under the portal's Content-Security-Policy ----------------------

CHROMIUM = Path(chromium_path())


def _note_failed(status: int, url: str, missing: list[str]) -> None:
    if status >= 400:
        missing.append(url)


def _build_browser_check(out: Path) -> None:
    """Build tools/browser-check (the interop commands as a page) with Vite into `out`."""
    assert NODE is not None
    vite = PORTAL / "node_modules" / "vite" / "bin" / "vite.js"
    command = [NODE, str(vite), "build", "tools/browser-check", "--outDir", str(out)]
    command += ["--emptyOutDir", "--assetsInlineLimit", "0", "--logLevel", "error"]
    done = subprocess.run(command, cwd=PORTAL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"vite build failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (`make test` installs it)"
)
def test_the_crypto_runs_in_chromium_under_the_portal_csp(
    tmp_path: Path, portal_modules: Path
) -> None:
    """HPKE (@hpke/core on WebCrypto X25519), AES-GCM, zstd and Argon2id at 64 MiB
    (hash-wasm's WebAssembly, allowed by 'wasm-unsafe-eval' and nothing more) in Chromium,
    served by web/app.py's portal_app with its security headers."""
    from playwright.sync_api import sync_playwright

    from careledger.crypto.keyfile import KeyFile
    from careledger.web.app import portal_app
    from careledger.web.enrolment import OpenEnrolment
    from nodeutil import serve_over_http

    built = tmp_path / "built"
    _build_browser_check(built)
    cases = {
        "open": python_sealed_record(),
        "seal": page_sealed_record(LARGE),
        "claim": python_claim_package(),
        "phrase": python_phrase(),
    }
    (built / "assets" / "input.json").write_text(
        json.dumps({name: payload for name, (payload, _) in cases.items()})
    )
    console: list[str] = []
    missing: list[str] = []
    nobody = Identity.generate()  # enrolment closed: this page only runs the crypto
    closed = OpenEnrolment("", KeyFile(nobody.did, "organisation", nobody), open=False)
    with serve_over_http(portal_app(closed, built)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            tab.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            tab.on("response", lambda r: _note_failed(r.status, r.url, missing))
            tab.goto(url + "/")
            tab.wait_for_selector("#result[data-done]", state="attached", timeout=120_000)
            results = json.loads(tab.text_content("#result") or "{}")
            print({name: out.get("ms") for name, out in results.items()})
        finally:
            browser.close()
    # Chromium asks for /favicon.ico on its own; nothing else may fail to load.
    assert [u for u in missing if not u.endswith("/favicon.ico")] == []
    errors = [c for c in console if c.startswith("pageerror") or "status of 404" not in c]
    assert not [c for c in errors if c.startswith(("error", "pageerror"))], console
    for name, (_, check) in cases.items():
        assert "error" not in results[name], results[name]
        check(results[name])
