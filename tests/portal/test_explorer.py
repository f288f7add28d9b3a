"""The explorer pages in headless Chromium against a real `careledger up` node, built portal,
strict CSP: what a visitor who is not signed in sees (the chain's id and height from the
public /status, and how to sign in, since every other route answers only signed requests),
and the clear message a broken link gets. The signed-in pages (blocks, transactions, record
proofs) are driven by the end-to-end suite once a sign-in exists (tests/portal, e2e stream).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from nodeutil import NodeProcess

BUILT = Path(__file__).resolve().parents[2] / "src" / "careledger" / "web" / "static" / "index.html"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(not BUILT.exists(), reason="the portal is not built (make portal)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium (make test installs)"),
]


@pytest.fixture
def browser_page() -> Iterator[tuple[Page, list[str]]]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            yield page, problems
        finally:
            browser.close()


def test_a_visitor_sees_the_chain_and_how_to_sign_in(
    node: NodeProcess, browser_page: tuple[Page, list[str]]
) -> None:
    page, problems = browser_page
    status = httpx.get(f"{node.url}/status").json()
    page.goto(f"{node.url}/#/explorer")
    page.get_by_role("heading", name="Ledger explorer").wait_for()
    page.get_by_text(status["chain_id"]).wait_for()
    height = int(page.get_by_test_id("chain-height").inner_text())
    assert height >= status["height"]
    patient = page.get_by_role("link", name="Sign in as a patient")
    assert patient.get_attribute("href") == "#/patient/start"
    clinician = page.get_by_role("link", name="as a clinician")
    assert clinician.get_attribute("href") == "#/practitioner/sign-in"
    assert page.get_by_test_id("latest-blocks").count() == 0
    assert problems == []


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("record?patient=not-a-did&name=zz", "names no record"),
        ("block?height=-1", "names no block"),
        ("tx?hash=12", "names no transaction"),
    ],
)
def test_a_broken_explorer_link_gets_a_clear_message(
    node: NodeProcess, browser_page: tuple[Page, list[str]], route: str, message: str
) -> None:
    page, problems = browser_page
    page.goto(f"{node.url}/#/explorer/{route}")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert message in alert.inner_text()
    assert problems == []
