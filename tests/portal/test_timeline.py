"""The patient's Timeline and My data pages in a real browser, against `careledger up --demo`:
without a signed-in patient they say so and link to the start page; signed in with a demo
patient's key file they read the patient's records from the node (the page signs, fetches
and decrypts), stay free of console errors and axe-clean at phone and desktop widths, and
never show a blank page. Screenshots go to test-output/portal/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page
from portalutil import DemoNode, OpenPortal, PortalPage

PASSPHRASE = "a long enough demo passphrase"
READ_TIMEOUT_MS = 120_000  # a demo patient's records: one fetch, a few hundred decryptions


def open_key_file(portal: PortalPage, key_file: Path) -> Page:
    """Sign in on the start page with a key file (kept in this browser under PASSPHRASE)."""
    page = portal.goto("/patient/start")
    page.get_by_role("tab", name="Open a key file").click()
    page.get_by_label("Key file", exact=True).set_input_files(str(key_file))
    page.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    page.get_by_label("Repeat passphrase").fill(PASSPHRASE)
    page.get_by_role("button", name="Open key file").click()
    page.wait_for_url(re.compile(r"#/patient/timeline"), timeout=READ_TIMEOUT_MS)
    return page


def wait_until_read(page: Page) -> None:
    """Until the Timeline has read the records (a list, an empty state or a message)."""
    page.locator("[data-testid=record], .empty, [role=alert]").first.wait_for(
        timeout=READ_TIMEOUT_MS
    )


@pytest.mark.parametrize("size", ["phone", "desktop"])
@pytest.mark.parametrize(
    ("route", "title"), [("/patient/timeline", "Timeline"), ("/patient/data", "My data")]
)
def test_without_a_patient_the_pages_say_to_sign_in(
    demo_portal: OpenPortal, size: str, route: str, title: str
) -> None:
    visit = demo_portal(size)
    page = visit.goto(route)
    assert visit.heading() == title
    link = page.get_by_role("link", name="Sign in or create an identity")
    assert link.get_attribute("href") == "#/patient/start"
    visit.axe()
    visit.screenshot(f"{title.lower().replace(' ', '-')}-signed-out")
    visit.assert_clean()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_demo_patient_opens_the_timeline_and_my_data(
    demo_portal: OpenPortal, demo_node: DemoNode, size: str
) -> None:
    visit = demo_portal(size)
    page = open_key_file(visit, demo_node.file("patient-2.json"))
    wait_until_read(page)
    assert visit.heading() == "Timeline"
    assert (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Timeline")
        .is_visible()
    )
    # a patient signed in with only its keys opens its records by name (no id known)
    assert page.locator("[data-testid=record]").count() > 0
    assert page.locator("[data-testid=integrity-warning]").count() == 0
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= visit.width, "the page scrolls sideways"
    visit.axe()
    visit.screenshot("timeline")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My data").click()
    page.get_by_role("heading", name="Download all my data").wait_for()
    visit.axe()
    visit.screenshot("my-data")
    visit.assert_clean()


def test_the_demo_patient_sees_its_imported_records_and_a_chart(
    demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    visit = demo_portal("desktop")
    page = open_key_file(visit, demo_node.file("patient-1.json"))
    wait_until_read(page)
    assert page.locator("[data-testid=record]").count() > 0, "no record shown"
    observation = page.locator("[data-testid=record][data-resource-type=Observation]").first
    assert re.fullmatch(r"[0-9a-f]{64}", observation.get_attribute("data-record-name") or "")
    figure = page.locator("figure[data-testid=chart]")
    assert figure.locator("svg[role=img]").count() == 1
    page.get_by_label("Measurement").select_option(index=0)
    page.get_by_label("Category").select_option("Immunisations")
    types = page.locator("[data-testid=record]").evaluate_all(
        "(items) => [...new Set(items.map((i) => i.dataset.resourceType))]"
    )
    assert types == ["Immunization"]
    visit.assert_clean()
