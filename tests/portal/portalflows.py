"""What a person does in the portal, step by step, written against SPEC-11's UI contract (the
labels, buttons and test ids the pages promise). Shared by the end-to-end tests."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page
from portalutil import UI_TIMEOUT_MS, PortalPage

PASSPHRASE = "correct horse battery staple 11"
PHRASE_WORDS = 24


def control(page: Page, name: str) -> Locator:
    """A tab, button or link with this exact name (the start page may show its choices as
    any of them)."""
    exact = re.compile(rf"^\s*{re.escape(name)}\s*$")
    return (
        page.get_by_role("tab", name=exact)
        .or_(page.get_by_role("button", name=exact))
        .or_(page.get_by_role("link", name=exact))
        .first
    )


def fill_passphrase(page: Page, passphrase: str) -> None:
    """Fill "Passphrase" and, when asked, "Repeat passphrase"."""
    page.get_by_label("Passphrase", exact=True).fill(passphrase)
    repeat = page.get_by_label("Repeat passphrase", exact=True)
    if repeat.count():
        repeat.fill(passphrase)


def wait_signed_in_as_patient(page: Page) -> None:
    """The patient navigation appears once a patient is signed in."""
    page.get_by_role("navigation").get_by_role("link", name="Timeline").wait_for(
        timeout=UI_TIMEOUT_MS
    )


def shown_phrase(page: Page) -> str:
    phrase = page.get_by_test_id("recovery-phrase")
    phrase.wait_for(timeout=UI_TIMEOUT_MS)
    words = phrase.inner_text().split()
    # The phrase may be shown numbered ("1. word"): keep the words.
    words = [w for w in words if re.fullmatch(r"[a-z]+", w)]
    assert len(words) == PHRASE_WORDS, f"the page shows {len(words)} words, not 24"
    return " ".join(words)


def answer_phrase_check(page: Page, phrase: str) -> None:
    """ "I have written it down", then the "Word N" fields, then "Confirm"."""
    words = phrase.split()
    control(page, "I have written it down").click()
    asked = page.get_by_label(re.compile(r"^Word \d+$"))
    asked.first.wait_for(timeout=UI_TIMEOUT_MS)
    for index in range(asked.count()):
        field = asked.nth(index)
        label = field.evaluate("(el) => el.labels && el.labels[0] ? el.labels[0].innerText : ''")
        number = int(re.search(r"\d+", label).group())  # type: ignore[union-attr]
        field.fill(words[number - 1])
    if page.get_by_label("Passphrase", exact=True).count():
        fill_passphrase(page, PASSPHRASE)
    control(page, "Confirm").click()


def start_page(portal: PortalPage, choice: str) -> Page:
    page = portal.goto("/patient/start")
    control(page, choice).click()
    return page


def create_identity(portal: PortalPage, name: str, passphrase: str = PASSPHRASE) -> str:
    """Create an identity in the page; its recovery phrase (read from the page)."""
    page = start_page(portal, "Create a new identity")
    page.get_by_label("Your name", exact=True).fill(name)
    fill_passphrase(page, passphrase)
    control(page, "Create identity").click()
    phrase = shown_phrase(page)
    portal.screenshot("start-recovery-phrase")
    answer_phrase_check(page, phrase)
    wait_signed_in_as_patient(page)
    return phrase


def claim_records(
    portal: PortalPage, package: Path, code: str, passphrase: str = PASSPHRASE
) -> Page:
    """Fill the claim form and send it (the caller checks what follows)."""
    page = start_page(portal, "Claim my records")
    page.get_by_label("Claim package", exact=True).set_input_files(str(package))
    page.get_by_label("Claim code", exact=True).fill(code)
    if page.get_by_label("Passphrase", exact=True).count():
        fill_passphrase(page, passphrase)
    page.get_by_role("button", name="Claim my records", exact=True).last.click()
    return page


def open_key_file(portal: PortalPage, key_file: Path, passphrase: str = PASSPHRASE) -> Page:
    """Sign in as a patient by opening its key file."""
    page = start_page(portal, "Open a key file")
    page.get_by_label("Key file", exact=True).set_input_files(str(key_file))
    if page.get_by_label("Passphrase", exact=True).count():
        fill_passphrase(page, passphrase)
    page.get_by_role("button", name="Open key file", exact=True).click()
    arrive(page, page.get_by_role("navigation").get_by_role("link", name="Timeline"))
    return page


def restore_from_phrase(portal: PortalPage, phrase: str, passphrase: str = PASSPHRASE) -> Page:
    """Fill the restore form and send it (the caller checks what follows)."""
    page = start_page(portal, "Restore from recovery phrase")
    page.get_by_label("Recovery phrase", exact=True).fill(phrase)
    if page.get_by_label("Passphrase", exact=True).count():
        fill_passphrase(page, passphrase)
    page.get_by_role("button", name="Restore", exact=True).click()
    return page


def go_nav(page: Page, label: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=label, exact=True).click()
    page.locator("main h1").first.wait_for()


def records_of(page: Page, resource_type: str) -> Locator:
    """The records of one FHIR type the page shows."""
    return page.locator(f'[data-testid="record"][data-resource-type="{resource_type}"]')


def wait_records(page: Page, resource_type: str | None = None, minimum: int = 1) -> Locator:
    """The page's records (of this type), once at least `minimum` are shown."""
    selector = '[data-testid="record"]'
    if resource_type:
        selector += f'[data-resource-type="{resource_type}"]'
    page.wait_for_function(
        "([selector, minimum]) => document.querySelectorAll(selector).length >= minimum",
        arg=[selector, minimum],
        timeout=UI_TIMEOUT_MS,
    )
    return page.locator(selector)


def wait_settled(page: Page) -> None:
    """Until nothing on the page says it is loading (role=status with a spinner)."""
    page.wait_for_function(
        "() => !document.querySelector('.loading, [aria-busy=\"true\"]')", timeout=UI_TIMEOUT_MS
    )


# --- practitioner -------------------------------------------------------------------------


def arrive(page: Page, target: Locator) -> None:
    """Wait for `target`; when the page shows an alert instead, fail with what it says."""
    alert = page.get_by_role("alert").filter(has_text=re.compile(r"\S"))
    target.or_(alert).first.wait_for(timeout=UI_TIMEOUT_MS)
    if not target.first.is_visible() and alert.count():
        raise AssertionError(f"the page says: {alert.first.inner_text()}")
    target.first.wait_for(timeout=UI_TIMEOUT_MS)


def practitioner_key_sign_in(
    portal: PortalPage, key_file: Path, organisation_key_file: Path | None = None
) -> Page:
    """Sign in with a practitioner key file, and the organisation's (whose key the patients
    wrapped their shared scope keys to: without it nothing shared opens)."""
    page = portal.goto("/practitioner/sign-in")
    page.get_by_label("Practitioner key file", exact=True).set_input_files(str(key_file))
    if organisation_key_file is not None:
        page.get_by_label("Organisation key file (optional)", exact=True).set_input_files(
            str(organisation_key_file)
        )
    page.get_by_role("button", name="Sign in with key", exact=True).click()
    arrive(page, page.get_by_label("Search patients"))
    return page


def backend_client_sign_in(portal: PortalPage, key_file: Path) -> Page:
    page = portal.goto("/practitioner/sign-in")
    page.get_by_label("Backend client key", exact=True).set_input_files(str(key_file))
    page.get_by_role("button", name="Sign in", exact=True).click()
    arrive(page, page.get_by_label("Search patients"))
    return page


def open_patient(page: Page, text: str) -> None:
    """Search the patients list for `text` and open the patient whose link shows it."""
    page.get_by_label("Search patients").fill(text)
    page.get_by_label("Search patients").press("Enter")
    link = page.locator("main").get_by_role("link").filter(has_text=text).first
    link.wait_for(timeout=UI_TIMEOUT_MS)
    link.click()
    page.wait_for_url(re.compile(r"#/practitioner/patient\?"))
    wait_settled(page)
