"""The practitioner's pages in a real browser against `careledger up --demo`: sign in with the
portal's SMART backend client key (Dr. Demo), find a patient, add an observation through the
validating form, break the glass and see its time limit; sign in with a practitioner key and
see who shared; bad files and bad forms get clear messages. The client's private key never
leaves the page."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Page, expect
from portalutil import DemoNode, OpenPortal, Secrets

from careledger.crypto.keyfile import KeyFile
from careledger.gateway.smart.backend_client import ClientKey, request_token
from careledger.wallet.break_glass import EmergencyClient

pytestmark = pytest.mark.timeout(600)

REASON = "Unconscious on arrival in A&E, allergies unknown"


def _sign_in_with_client(page: Page, demo: DemoNode) -> None:
    page.get_by_label("Backend client key").set_input_files(str(demo.file("client-dr-demo.json")))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Patients", level=1)).to_be_visible()


def _open_patient(page: Page, name: str) -> None:
    page.get_by_role("link", name=re.compile(re.escape(name))).click()
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    page.get_by_test_id("record").first.wait_for()


def _fhir(demo: DemoNode, path: str) -> Any:
    """GET /fhir/<path> as the demo hospital's own client (not the page's)."""
    key = ClientKey.load(demo.file("client-demo-hospital.json"))
    token = request_token(key)["access_token"]
    answer = httpx.get(
        f"{demo.url}/fhir/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_clinician_adds_an_observation_and_breaks_the_glass(
    demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    portal = demo_portal("desktop")
    page = portal.goto("/practitioner/sign-in")
    portal.axe()
    portal.screenshot("practitioner-sign-in")
    _sign_in_with_client(page, demo_node)
    patients = page.locator(".patient-list a")
    expect(patients).to_have_count(3)
    portal.axe()
    portal.screenshot("practitioner-patients")

    first = KeyFile.load(demo_node.file("patient-1.json"))
    _open_patient(page, first.name)
    shown = page.get_by_test_id("record").count()
    assert shown > 20  # the imported Synthea records, read through the gateway

    # The form checks before sending: nothing leaves with a missing field or a future date.
    page.get_by_role("button", name="Add observation").click()
    page.get_by_label("Date measured").fill("2999-01-01")
    page.get_by_role("button", name="Save observation").click()
    errors = page.locator(".field-error").all_inner_texts()
    assert "Enter the code." in errors and "The date cannot be in the future." in errors
    page.get_by_label("LOINC code").fill("29463-7")
    page.get_by_label("What was measured").fill("Body weight")
    page.get_by_label("Value").fill("81.5")
    page.get_by_label("Unit").fill("kg")
    page.get_by_label("Date measured").fill("2026-01-15")
    page.get_by_role("button", name="Save observation").click()
    expect(page.get_by_role("status").filter(has_text="Observation saved")).to_be_visible()
    expect(page.get_by_test_id("record").filter(has_text="81.5")).to_have_count(1)
    patient_id = page.url.split("id=", 1)[1]
    weights = _fhir(demo_node, f"Observation?patient={patient_id}&code=http://loinc.org|29463-7")
    values = [e["resource"]["valueQuantity"]["value"] for e in weights.get("entry", [])]
    assert 81.5 in values

    # Break the glass: a reason is required, then the time limit is shown.
    page.get_by_role("button", name="Break the glass").click()
    expect(page.locator("#break-glass-reason-error")).to_contain_text("State why")
    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Break the glass").click()
    until = page.get_by_test_id("break-glass-until")
    expect(until).to_contain_text("Emergency access granted until")
    alerts = EmergencyClient(demo_node.url, first).break_glasses()
    assert [a["reason"] for a in alerts] == [REASON]
    portal.axe()
    portal.screenshot("practitioner-patient")

    # Again while it runs: refused, in words, with when it ends.
    with portal.console.allowing(r"status of 409"):
        page.get_by_role("button", name="Break the glass").click()
        assert "runs until" in portal.alert()

    secrets = Secrets()
    jwk = orjson.loads(demo_node.file("client-dr-demo.json").read_bytes())["key"]
    secrets.add_bytes("the client's private key", base64.urlsafe_b64decode(jwk["d"] + "=="))
    portal.requests.assert_never_sent(secrets)
    portal.assert_clean()


def test_the_patient_page_on_a_phone(demo_portal: OpenPortal, demo_node: DemoNode) -> None:
    portal = demo_portal("phone")
    page = portal.goto("/practitioner/sign-in")
    portal.screenshot("practitioner-sign-in")
    _sign_in_with_client(page, demo_node)
    page.get_by_label("Search patients").fill("Lupe")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".patient-list a")).to_have_count(1)
    portal.screenshot("practitioner-patients")
    _open_patient(page, page.locator(".patient-list strong").first.inner_text())
    assert page.evaluate("() => document.documentElement.scrollWidth") <= portal.width
    page.get_by_role("button", name="Add condition").click()
    page.get_by_label("SNOMED CT code").fill("12")
    page.get_by_role("button", name="Save condition").click()
    assert "This is not a valid code" in page.locator(".field-error").first.inner_text()
    portal.axe()
    portal.screenshot("practitioner-patient")
    portal.assert_clean()


def test_wrong_files_are_refused_in_words(demo_portal: OpenPortal, demo_node: DemoNode) -> None:
    portal = demo_portal("desktop")
    page = portal.goto("/practitioner/sign-in")
    page.get_by_role("button", name="Sign in", exact=True).click()
    assert "Choose the client key file" in portal.alert()
    page.get_by_label("Backend client key").set_input_files(str(demo_node.file("patient-1.json")))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("alert").filter(has_text="not a client key file")).to_be_visible()
    page.get_by_label("Practitioner key file").set_input_files(
        str(demo_node.file("patient-1.json"))
    )
    page.get_by_role("button", name="Sign in with key").click()
    expect(page.get_by_role("alert").filter(has_text="not of a practitioner")).to_be_visible()
    portal.assert_clean()


def test_a_practitioner_key_lists_the_patients_who_shared(
    demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    """Dr. Northside with Northside Clinic's key file: patient 1 granted the clinic, the
    others did not, so exactly one patient is listed."""
    portal = demo_portal("desktop")
    page = portal.goto("/practitioner/sign-in")
    page.get_by_label("Practitioner key file").set_input_files(
        str(demo_node.file("practitioner-northside.json"))
    )
    page.get_by_label("Organisation key file (optional)").set_input_files(
        str(demo_node.file("northside-clinic.json"))
    )
    page.get_by_role("button", name="Sign in with key").click()
    expect(page.get_by_role("heading", name="Patients", level=1)).to_be_visible()
    listed = page.locator(".patient-list a")
    expect(listed).to_have_count(1)
    first = KeyFile.load(demo_node.file("patient-1.json"))
    assert first.did in listed.first.inner_text()
    expect(page.get_by_text("Dr. Northside")).to_be_visible()  # who is signed in
    listed.first.click()
    expect(page.get_by_text("Signed in with your practitioner key")).to_be_visible()
    portal.axe()
    secrets = Secrets()
    secrets.add_key_file("Dr. Northside", demo_node.file("practitioner-northside.json"))
    secrets.add_key_file("Northside Clinic", demo_node.file("northside-clinic.json"))
    portal.requests.assert_never_sent(secrets)
    portal.assert_clean()
