"""Sharing and the access log in a real browser against `careledger up --demo`.

The demo's second patient signs in with its key file, grants Dr. Northside (a practitioner of
Northside Clinic) its lab results and measurements for treatment through the Sharing page,
after the form has refused bad input without signing anything. Dr. Northside's reads (the
Python wallet, signed as the practitioner) are then allowed by its node; the patient revokes
in the page, and the same read is denied. The patient's access log shows both reads, allowed
and denied, each with its proof checked in the page. Screenshots at phone and desktop widths.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from careledger.crypto.keyfile import KeyFile
from careledger.wallet.node_client import NodeClient

# The e2e stream's fixtures (tests/portal/conftest.py, portalutil.py): skipped without them.
pytest.importorskip("portalutil")
expect = pytest.importorskip("playwright.sync_api").expect

PASSPHRASE = "correct horse battery staple 11"
PROOF_TIMEOUT_MS = 60_000


def sign_in_with_key_file(portal: Any, key_file: Path) -> Any:
    """The Start page's "Open a key file" flow (SPEC-11 UI contract), keeping the key under a
    passphrase if the page asks for one."""
    page = portal.goto("/patient/start")
    page.get_by_role("button", name="Open a key file").or_(
        page.get_by_role("tab", name="Open a key file")
    ).first.click()
    page.get_by_label("Key file", exact=True).set_input_files(str(key_file))
    for label in ("Passphrase", "Repeat passphrase"):
        field = page.get_by_label(label, exact=True)
        if field.count():
            field.fill(PASSPHRASE)
    page.get_by_role("button", name="Open key file").click()
    page.get_by_role("link", name="Sharing").wait_for()
    return page


def diagnostics_blobs(node: NodeClient, patient: str) -> list[str]:
    """The blob hashes of the patient's current lab results and measurements."""
    rows: list[dict[str, Any]] = node.query("records/records", patient=patient)
    return [
        r["latest"]["blob_hash"]
        for r in rows
        if r["latest"] and r["latest"]["scope"] == "diagnostics" and not r["erased_at"]
    ][:2]


def read_statuses(node: NodeClient, blobs: list[str]) -> set[int]:
    """What the node answers a signed fetch of `blobs` for treatment: one status per blob."""
    assert node.auth is not None
    response = node.http.post("/blobs/fetch?purpose=TREAT", json={"hashes": blobs}, auth=node.auth)
    response.raise_for_status()
    body, statuses = response.content, set()
    while body:
        status, length = int.from_bytes(body[:2], "big"), int.from_bytes(body[2:6], "big")
        statuses.add(status)
        body = body[6 + length :]
    return statuses


@pytest.mark.parametrize("size", ["phone"])
def test_the_form_refuses_bad_input_and_signs_nothing(
    demo_portal: Any, demo_node: Any, size: str
) -> None:
    portal = demo_portal(size)
    page = sign_in_with_key_file(portal, demo_node.file("patient-2.json"))
    portal.goto("/patient/sharing")
    before = len(portal.requests.collect())
    page.get_by_label("Until").fill("2020-01-01")
    page.get_by_role("button", name="Review").click()
    assert page.get_by_text("Choose who to share with.").is_visible()
    assert page.get_by_text("Choose at least one kind of record.").is_visible()
    assert page.get_by_text("That day has passed").is_visible()
    page.get_by_label("Share with").select_option(label="Northside Clinic")
    page.get_by_label("Access").select_option("write")
    page.get_by_label(re.compile("^Sensitive records")).check()
    page.get_by_label("Until").fill("2030-01-01")
    page.get_by_role("button", name="Review").click()
    assert page.get_by_text("for reading only").is_visible()
    assert page.get_by_test_id("grant-summary").count() == 0
    sent = [r for r in portal.requests.collect()[before:] if r.method == "POST"]
    assert sent == [], [r.describe() for r in sent]  # nothing signed, nothing submitted
    portal.screenshot("sharing-form-errors")
    portal.axe()
    portal.assert_clean()


def test_grant_read_revoke_denied_and_both_reads_proven_in_the_log(
    demo_portal: Any, demo_node: Any
) -> None:
    patient = KeyFile.load(demo_node.file("patient-2.json"))
    doctor = KeyFile.load(demo_node.file("practitioner-northside.json"))
    as_doctor = NodeClient(demo_node.url, doctor)
    portal = demo_portal("desktop")
    page = sign_in_with_key_file(portal, demo_node.file("patient-2.json"))

    portal.goto("/patient/sharing")
    page.get_by_label("Share with").select_option(label="Dr. Northside (Northside Clinic)")
    page.get_by_label("Access").select_option("read")
    page.get_by_label("Lab results and measurements").check()
    page.get_by_label("Purpose").select_option(label="Treatment")
    page.get_by_label("Until").fill("2027-03-31")
    page.get_by_role("button", name="Review").click()
    expect(page.get_by_test_id("grant-summary")).to_have_text(
        "Dr. Northside (Northside Clinic) will be able to read your lab results for treatment "
        "until 31 March 2027."
    )
    portal.screenshot("sharing-review")
    page.get_by_role("button", name="Sign and share").click()
    granted = page.get_by_test_id("grant").filter(has_text="Dr. Northside")
    expect(granted).to_have_count(1)

    blobs = diagnostics_blobs(as_doctor, patient.did)
    assert blobs, "the demo patient has no lab results"
    assert read_statuses(as_doctor, blobs) == {200}

    granted.get_by_role("button", name="Revoke").click()
    granted.get_by_role("button", name="Yes, revoke").click()
    expect(page.get_by_role("status").filter(has_text="stopped sharing")).to_be_visible()
    assert read_statuses(as_doctor, blobs) == {403}

    time.sleep(1)  # the node's audit batches commit every 0.25 s
    portal.goto("/patient/log")
    # The log groups reads by reader, day, purpose and outcome; each group opens to its entries.
    groups = page.get_by_test_id("access-group").filter(has_text="Dr. Northside")
    expect(groups).to_have_count(2)  # allowed, then denied
    for index in range(groups.count()):
        groups.nth(index).locator("summary").first.click()
    doctors = groups.get_by_test_id("access-entry")
    expect(doctors.and_(page.locator("[data-outcome=allowed]"))).to_have_count(len(blobs))
    expect(doctors.and_(page.locator("[data-outcome=denied]"))).to_have_count(len(blobs))
    for index in range(doctors.count()):
        expect(doctors.nth(index).get_by_test_id("proof")).to_have_text(
            "Proof valid", timeout=PROOF_TIMEOUT_MS
        )
    for size in ("phone", "desktop"):
        view = portal if size == "desktop" else demo_portal(size)
        if view is not portal:
            sign_in_with_key_file(view, demo_node.file("patient-2.json"))
            view.goto("/patient/log")
            view.page.get_by_test_id("access-group").first.wait_for()
        view.screenshot("access-log")
        view.axe()
    portal.assert_clean()
