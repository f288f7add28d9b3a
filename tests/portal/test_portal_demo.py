"""The issue's flows in a real browser against one `careledger up --demo` (issue 11, "What must
be shown"): create, claim, timeline and chart, sharing with a practitioner and revoking,
the access log with its proofs, a break-glass alert, a practitioner's new Observation in the
patient's timeline, no secret in any request, axe-core and screenshots of every main page at
phone and desktop widths, and bad input answered with a role="alert" message.

One demo node serves the whole module (it loads three Synthea patients); steps that share
state (a claimed patient who then shares and revokes) run in order inside one test.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from mnemonic import Mnemonic
from playwright.sync_api import Browser, Locator, Page
from portalflows import (
    PASSPHRASE,
    answer_phrase_check,
    backend_client_sign_in,
    claim_records,
    control,
    create_identity,
    fill_passphrase,
    go_nav,
    open_key_file,
    open_patient,
    practitioner_key_sign_in,
    records_of,
    restore_from_phrase,
    shown_phrase,
    wait_records,
    wait_settled,
    wait_signed_in_as_patient,
)
from portalutil import (
    SIZES,
    UI_TIMEOUT_MS,
    DemoNode,
    OpenPortal,
    PortalPage,
    Secrets,
    claim_package_secrets,
    open_portal,
    save_screenshot,
)

from careledger.crypto.claim import new_claim_code
from careledger.crypto.keyfile import KeyFile


def _patient_name(demo_node: DemoNode, number: int) -> str:
    return KeyFile.load(demo_node.file(f"patient-{number}.json")).name


def _family_name(name: str) -> str:
    """Synthea's names carry digits ("Jesús557 Alvarez719"); the family name, without them."""
    return re.sub(r"\d+", "", name.split()[-1])


def _client_key_secret(path: Path) -> bytes:
    jwk = json.loads(path.read_text())["key"]
    return base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4))


def _base_secrets(demo_node: DemoNode) -> Secrets:
    """The demo's secrets every test checks the page's requests against."""
    secrets = Secrets()
    secrets.add_words("passphrase", PASSPHRASE)
    secrets.add_key_file("patient 1", demo_node.file("patient-1.json"))
    secrets.add_key_file("Dr. Northside", demo_node.file("practitioner-northside.json"))
    secrets.add_key_file("Northside Clinic", demo_node.file("northside-clinic.json"))
    secrets.add_bytes(
        "Dr. Demo's client key", _client_key_secret(demo_node.file("client-dr-demo.json"))
    )
    return secrets


# --- a patient creates an identity ------------------------------------------------------------


def test_patient_creates_identity_then_unlocks_it(demo_portal: OpenPortal) -> None:
    """Create (the phrase shown once and checked), the empty timeline; then after a reload
    the stored identity opens with its passphrase and refuses a wrong one."""
    patient = demo_portal("phone")
    phrase = create_identity(patient, "Ada Lovelace")
    page = patient.page
    assert "Ada Lovelace" in page.locator("header").inner_text()
    go_nav(page, "Timeline")
    wait_settled(page)
    assert page.get_by_test_id("record").count() == 0
    # a reload forgets the keys in memory; the encrypted copy in IndexedDB is listed
    page.reload()
    page = patient.goto("/patient/start")
    # a hash change re-renders on the next frame: the old page's h1 may still be there
    page.locator("main h1", has_text="Unlock your wallet").wait_for()
    assert "Ada Lovelace" in page.locator("main").inner_text()
    fill_passphrase(page, "not the passphrase")
    page.get_by_role("button", name="Unlock", exact=True).click()
    page.get_by_role("alert").filter(has_text="Wrong passphrase").wait_for()
    fill_passphrase(page, PASSPHRASE)
    page.get_by_role("button", name="Unlock", exact=True).click()
    wait_signed_in_as_patient(page)

    secrets = Secrets()
    secrets.add_phrase("the created identity", phrase)
    secrets.add_words("passphrase", PASSPHRASE)
    patient.requests.assert_never_sent(secrets)
    patient.assert_clean()


def test_wrong_recovery_phrase_gets_an_alert(demo_portal: OpenPortal) -> None:
    patient = demo_portal("phone")
    words = Mnemonic("english").generate(256).split()
    restore_from_phrase(patient, " ".join(words[:12]))
    assert "24 words" in patient.alert()
    # 24 words from the list, but the checksum does not match
    wrong = [*words[:-1], next(w for w in ("abandon", "ability", "able") if w != words[-1])]
    page = restore_from_phrase(patient, " ".join(wrong))
    assert re.search(r"word|checksum|phrase", patient.alert(), re.I)
    assert page.locator("main h1").is_visible()
    patient.assert_clean()


# --- a patient claims the identity a clinic enrolled, then shares and revokes -----------------


def _claim_patient_3(patient: PortalPage, demo_node: DemoNode) -> str:
    """Claim with a wrong code first (an alert, nothing else), then the right one; the new
    recovery phrase the page shows."""
    package = demo_node.file("claim-patient-3.json")
    page = claim_records(patient, package, new_claim_code())
    assert re.search(r"code", patient.alert(), re.I)
    page = claim_records(patient, package, "not a claim code")
    assert patient.alert()
    claim_records(patient, package, demo_node.claim_code())
    new_phrase = shown_phrase(page)
    answer_phrase_check(page, new_phrase)
    wait_signed_in_as_patient(page)
    return new_phrase


def _grant_diagnostics_to(page: Page, grantee: str) -> None:
    go_nav(page, "Sharing")
    wait_settled(page)
    share_with = page.get_by_label("Share with", exact=True)
    labels: list[str] = share_with.evaluate("(s) => [...s.options].map((o) => o.label)")
    chosen = next((label for label in labels if label.startswith(grantee)), None)
    assert chosen, f"{grantee!r} is not offered: {labels}"
    share_with.select_option(label=chosen)
    page.get_by_label("Access", exact=True).select_option(label="Read")
    page.get_by_label("Lab results and measurements", exact=True).check()
    page.get_by_role("button", name="Review", exact=True).click()
    summary = page.get_by_test_id("grant-summary").inner_text()
    assert grantee in summary and "lab results" in summary.lower(), summary
    page.get_by_role("button", name="Sign and share", exact=True).click()
    page.get_by_test_id("grant").filter(has_text=grantee).first.wait_for(timeout=UI_TIMEOUT_MS)


def _revoke(page: Page, grantee: str) -> None:
    go_nav(page, "Sharing")
    grant = page.get_by_test_id("grant").filter(has_text=grantee).first
    grant.get_by_role("button", name="Revoke", exact=True).click()
    grant.get_by_role("button", name=re.compile("revoke", re.I)).last.click()
    page.get_by_role("status").filter(has_text="stopped sharing").wait_for(timeout=UI_TIMEOUT_MS)


def _reopen_hash(page: Page, route: str) -> None:
    """Leave the page and come back (a same-document navigation: a reload would sign out)."""
    page.evaluate("() => { location.hash = '#/practitioner/patients'; }")
    page.locator("main h1", has_text="Patients").wait_for()
    page.evaluate(f"() => {{ location.hash = {json.dumps(route)}; }}")
    wait_settled(page)


def _check_at_both_widths(portal: PortalPage, name: str) -> None:
    """axe-core and a screenshot at the phone's width and the desktop's, on the same page."""
    for size in ("phone", "desktop"):
        viewport = SIZES[size]["viewport"]
        portal.page.set_viewport_size(viewport)
        wait_settled(portal.page)
        portal.axe()
        save_screenshot(portal.page, name, viewport["width"])


def _outcomes_when_both_show(page: Page, groups: Locator) -> set[str | None]:
    """The outcomes of the entries of `groups` (the log groups reads by reader, day, purpose
    and outcome; each group opens to its entries) once both an allowed and a denied one show
    with their proofs checked, refreshing the log meanwhile (or what shows when the time is
    up)."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:
        groups.first.wait_for(timeout=UI_TIMEOUT_MS)
        for i in range(groups.count()):
            if groups.nth(i).locator("details").first.get_attribute("open") is None:
                groups.nth(i).locator("summary").first.click()
        entries = groups.get_by_test_id("access-entry")
        page.wait_for_function(
            "() => ![...document.querySelectorAll('[data-testid=proof]')]"
            ".some((b) => b.dataset.status === 'checking')",
            timeout=UI_TIMEOUT_MS,
        )
        outcomes = {entries.nth(i).get_attribute("data-outcome") for i in range(entries.count())}
        if {"allowed", "denied"} <= outcomes or time.monotonic() > deadline:
            return outcomes
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Refresh", exact=True).click()
        wait_settled(page)


@dataclass
class ClaimedPatient:
    """Demo patient 3, claimed in the browser by the first test that needs it; its page stays
    open (signed in) for the tests after it in this module."""

    portal: PortalPage
    did: str
    secrets: Secrets


@pytest.fixture(scope="module")
def claimed(
    browser: Browser, demo_node: DemoNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClaimedPatient]:
    patient = open_portal(browser, demo_node.url, "desktop")
    package = demo_node.file("claim-patient-3.json")
    code = demo_node.claim_code()
    secrets = _base_secrets(demo_node)
    claim_package_secrets(secrets, package, code, tmp_path_factory.mktemp("claim"))
    try:
        new_phrase = _claim_patient_3(patient, demo_node)
        secrets.add_phrase("patient 3 after the claim", new_phrase)
        yield ClaimedPatient(patient, json.loads(package.read_text())["did"], secrets)
    finally:
        patient.context.close()
    patient.assert_clean()


def test_patient_claims_the_identity_a_clinic_enrolled(claimed: ClaimedPatient) -> None:
    """Wrong codes get an alert; the right one rotates the keys and shows a new phrase that
    the patient confirms; signed in as the enrolled did, with nothing secret sent."""
    page = claimed.portal.page
    wait_signed_in_as_patient(page)
    go_nav(page, "Sharing")
    wait_settled(page)
    # the clinic that enrolled the patient keeps its write consent through the claim
    assert page.get_by_test_id("grant").filter(has_text="Demo Hospital").count() >= 1
    # a grant form with nothing chosen is refused in the page, and nothing is signed
    grants = page.get_by_test_id("grant").count()
    page.get_by_role("button", name="Review", exact=True).click()
    page.get_by_role("alert").filter(has_text="Nothing was signed").wait_for()
    assert page.get_by_label("Share with", exact=True).get_attribute("aria-invalid") == "true"
    assert page.get_by_test_id("grant-summary").count() == 0
    assert page.get_by_test_id("grant").count() == grants
    claimed.portal.requests.assert_never_sent(claimed.secrets)
    claimed.portal.assert_clean()


def test_claimed_patient_sees_the_imported_records_and_a_chart(claimed: ClaimedPatient) -> None:
    page = claimed.portal.page
    go_nav(page, "Timeline")
    wait_records(page, "Condition")
    wait_records(page, "Observation")
    chart = page.get_by_test_id("chart")
    chart.wait_for()
    measurement = page.get_by_label("Measurement", exact=True)
    assert measurement.locator("option").count() >= 1
    assert chart.locator('svg[role="img"]').first.is_visible()
    assert (
        chart.locator('svg[role="img"]').first.get_attribute("aria-label")
        or chart.locator("figcaption").inner_text()
    )
    claimed.portal.screenshot("timeline-claimed")
    claimed.portal.requests.assert_never_sent(claimed.secrets)
    claimed.portal.assert_clean()


def test_share_with_practitioner_revoke_and_see_both_reads_in_the_log(
    claimed: ClaimedPatient, demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    page = claimed.portal.page
    _grant_diagnostics_to(page, "Dr. Northside")

    # Dr. Northside, in a browser of their own, sees the lab results and nothing else
    doctor = demo_portal("desktop")
    doctor_page = practitioner_key_sign_in(
        doctor,
        demo_node.file("practitioner-northside.json"),
        demo_node.file("northside-clinic.json"),
    )
    doctor_page.get_by_role("link").filter(has_text=claimed.did).first.click()
    wait_settled(doctor_page)
    route = doctor_page.evaluate("() => location.hash")
    wait_records(doctor_page, "Observation")
    assert records_of(doctor_page, "Condition").count() == 0
    assert records_of(doctor_page, "Encounter").count() == 0
    _check_at_both_widths(doctor, "patient-key")

    _revoke(page, "Dr. Northside")

    # a refused read is answered by the node with 403: the browser reports each refusal
    with doctor.console.allowing(r"status of 403"):
        _reopen_hash(doctor_page, route)
        assert records_of(doctor_page, "Observation").count() == 0
        # the page asked for what it was shown; the node refused each (and logged it)
        doctor_page.get_by_role("status").filter(has_text="no longer shares").wait_for()
        _check_at_both_widths(doctor, "patient-key-revoked")

    # both reads in the patient's log, each with its proof checked; the node writes its log
    # to the chain in batches: the refused read shows once its batch is committed (Refresh)
    go_nav(page, "Access log")
    groups = page.get_by_test_id("access-group").filter(has_text="Northside")
    outcomes = _outcomes_when_both_show(page, groups)
    assert "allowed" in outcomes and "denied" in outcomes, outcomes
    entries = groups.get_by_test_id("access-entry")
    for i in range(entries.count()):
        assert entries.nth(i).get_by_test_id("proof").inner_text().strip() == "Proof valid"

    claimed.portal.requests.assert_never_sent(claimed.secrets)
    doctor.requests.assert_never_sent(claimed.secrets)
    claimed.portal.assert_clean()
    doctor.assert_clean()


# --- a break-glass, and a practitioner's new Observation ---------------------------------------


def test_break_glass_shows_at_the_top_of_the_patients_log(
    demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    family = _family_name(_patient_name(demo_node, 1))
    doctor = demo_portal("desktop")
    page = backend_client_sign_in(doctor, demo_node.file("client-dr-demo.json"))
    open_patient(page, family)
    # no reason: refused in the page
    page.get_by_role("button", name="Break the glass", exact=True).click()
    assert page.get_by_role("alert").first.is_visible()
    reason = "Unconscious in the emergency room, allergies unknown"
    page.get_by_label("Reason", exact=True).fill(reason)
    page.get_by_role("button", name="Break the glass", exact=True).click()
    assert "until" in page.get_by_test_id("break-glass-until").inner_text().lower()

    patient = demo_portal("desktop")
    log = open_key_file(patient, demo_node.file("patient-1.json"))
    go_nav(log, "Access log")
    # names are looked up after the alert shows: wait for them, not just for the alert
    alert = log.get_by_test_id("break-glass-alert").filter(has_text="Dr. Demo").first
    alert.wait_for(timeout=UI_TIMEOUT_MS)
    assert reason in alert.inner_text()
    assert "Demo Hospital" in alert.inner_text()
    # at the top: before every entry of the log
    first = log.locator(
        '[data-testid="break-glass-alert"], [data-testid="access-group"], '
        '[data-testid="access-entry"]'
    ).first
    assert first.get_attribute("data-testid") == "break-glass-alert"

    secrets = _base_secrets(demo_node)
    doctor.requests.assert_never_sent(secrets)
    patient.requests.assert_never_sent(secrets)
    doctor.assert_clean()
    patient.assert_clean()


def test_practitioners_observation_appears_in_the_patients_timeline(
    demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    family = _family_name(_patient_name(demo_node, 1))
    doctor = demo_portal("phone")
    page = backend_client_sign_in(doctor, demo_node.file("client-dr-demo.json"))
    open_patient(page, family)
    page.get_by_role("button", name="Add observation", exact=True).click()
    form = page.locator("form").filter(has=page.get_by_label("LOINC code"))
    # the form checks before it sends: empty, it says what is missing
    form.get_by_role("button", name="Save observation").click()
    assert form.get_by_role("alert").first.is_visible()
    form.get_by_label("LOINC code").fill("29463-7")
    form.get_by_label("What was measured").fill("Body weight")
    form.get_by_label("Value", exact=True).fill("81.3")
    form.get_by_label("Unit").fill("kg")
    form.get_by_label("Date measured").fill(date.today().isoformat())
    form.get_by_role("button", name="Save observation").click()
    page.get_by_role("status").filter(has_text="Observation saved").wait_for(timeout=UI_TIMEOUT_MS)

    patient = demo_portal("phone")
    timeline = open_key_file(patient, demo_node.file("patient-1.json"))
    go_nav(timeline, "Timeline")
    wait_records(timeline, "Observation")
    added = records_of(timeline, "Observation").filter(has_text="81.3")
    added.first.wait_for(timeout=UI_TIMEOUT_MS)
    assert "kg" in added.first.inner_text()

    secrets = _base_secrets(demo_node)
    doctor.requests.assert_never_sent(secrets)
    patient.requests.assert_never_sent(secrets)
    doctor.assert_clean()
    patient.assert_clean()


# --- every main page: axe-core and a screenshot, at both widths ------------------------------


def _check_page(portal: PortalPage, name: str) -> None:
    wait_settled(portal.page)
    portal.axe()
    portal.screenshot(name)


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_public_and_practitioner_pages_pass_axe(
    demo_portal: OpenPortal, demo_node: DemoNode, size: str
) -> None:
    visitor = demo_portal(size)
    visitor.goto("/")
    _check_page(visitor, "home")
    visitor.goto("/practitioner/sign-in")
    _check_page(visitor, "practitioner-sign-in")
    visitor.goto("/explorer")
    _check_page(visitor, "explorer-signed-out")

    doctor = demo_portal(size)
    page = backend_client_sign_in(doctor, demo_node.file("client-dr-demo.json"))
    _check_page(doctor, "patients")
    open_patient(page, _family_name(_patient_name(demo_node, 1)))
    wait_records(page)
    _check_page(doctor, "patient")
    go_nav(page, "Explorer")
    _check_page(doctor, "explorer")

    for portal in (visitor, doctor):
        portal.requests.assert_never_sent(_base_secrets(demo_node))
        portal.assert_clean()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_patient_pages_pass_axe(demo_portal: OpenPortal, demo_node: DemoNode, size: str) -> None:
    visitor = demo_portal(size)
    visitor.goto("/patient/start")
    _check_page(visitor, "start")

    patient = demo_portal(size)
    page = open_key_file(patient, demo_node.file("patient-1.json"))
    for label, name in [
        ("Timeline", "timeline"),
        ("Sharing", "sharing"),
        ("Access log", "access-log"),
        ("My data", "my-data"),
        ("Explorer", "explorer-patient"),
    ]:
        go_nav(page, label)
        _check_page(patient, name)
    patient.requests.assert_never_sent(_base_secrets(demo_node))
    visitor.assert_clean()
    patient.assert_clean()


def test_start_page_offers_the_four_ways_in(demo_portal: OpenPortal) -> None:
    visitor = demo_portal("phone")
    page = visitor.goto("/patient/start")
    for name in (
        "Create a new identity",
        "Restore from recovery phrase",
        "Claim my records",
        "Open a key file",
    ):
        control(page, name).wait_for()  # shown once the page has looked for stored wallets
    visitor.assert_clean()
