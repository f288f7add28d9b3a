"""The explorer in headless Chromium against a real `careledger up` (the e2e fixtures:
tests/portal/conftest.py): signed out it shows the chain from the public /status and how to
sign in; signed in (the demo's practitioner key) it lists blocks, a block's transactions,
a transaction, the members, and a record's anchors whose proof the page checks itself. A
node answer tampered with in flight makes the page's proof check fail, naming the check.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Route
from portalutil import DemoNode, OpenPortal, PortalPage

from careledger.crypto.keyfile import KeyFile
from careledger.wallet.node_client import NodeClient
from nodeutil import NodeProcess


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_visitor_sees_the_chain_and_how_to_sign_in(
    portal: OpenPortal, plain_node: NodeProcess, size: str
) -> None:
    visitor = portal(size)
    status = httpx.get(f"{plain_node.url}/status").json()
    page = visitor.goto("/explorer")
    assert visitor.heading() == "Ledger explorer"
    page.get_by_text(status["chain_id"]).wait_for()
    assert int(page.get_by_test_id("chain-height").inner_text()) >= status["height"]
    patient = page.get_by_role("link", name="Sign in as a patient")
    assert patient.get_attribute("href") == "#/patient/start"
    clinician = page.get_by_role("link", name="as a clinician")
    assert clinician.get_attribute("href") == "#/practitioner/sign-in"
    assert page.get_by_test_id("latest-blocks").count() == 0
    visitor.axe()
    visitor.screenshot("explorer-signed-out")
    visitor.assert_clean()


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("record?patient=not-a-did&name=zz", "names no record"),
        ("block?height=-1", "names no block"),  # froze the tab once (a NaN effect dependency)
        ("tx?hash=12", "names no transaction"),
    ],
)
def test_a_broken_explorer_link_gets_a_clear_message(
    portal: OpenPortal, route: str, message: str
) -> None:
    lost = portal("phone")
    lost.goto(f"/explorer/{route}")
    assert message in lost.alert()
    lost.assert_clean()


# --- signed in ------------------------------------------------------------------------------


def sign_in_as_practitioner(portal: PortalPage, demo_node: DemoNode) -> Page:
    page = portal.goto("/practitioner/sign-in")
    key = demo_node.file("practitioner-northside.json")
    page.get_by_label("Practitioner key file").set_input_files(str(key))
    page.get_by_role("button", name="Sign in with key").click()
    page.wait_for_function("() => location.hash.startsWith('#/practitioner/patients')")
    return page


def open_route(page: Page, route: str) -> None:
    """Follow a hash route inside the page (the session lives in the page's memory)."""
    page.evaluate("(route) => { location.hash = route; }", route)
    page.locator("main h1").first.wait_for()


def shared_record(demo_node: DemoNode) -> tuple[str, str]:
    """A patient who granted the practitioner's organisation, and one of its records."""
    practitioner = KeyFile.load(demo_node.file("practitioner-northside.json"))
    node = NodeClient(demo_node.url, practitioner)
    grants = node.query("consent/granted", grantee=practitioner.did)
    patient = str(grants[0]["patient"])
    records = node.query("records/records", patient=patient)
    return patient, str(records[0]["record"])


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_signed_in_practitioner_explores_blocks_transactions_and_members(
    demo_portal: OpenPortal, demo_node: DemoNode, size: str
) -> None:
    explorer = demo_portal(size)
    page = sign_in_as_practitioner(explorer, demo_node)
    open_route(page, "#/explorer")
    rows = page.get_by_test_id("block-row")
    rows.first.wait_for()
    assert 1 <= rows.count() <= 10
    explorer.axe()
    explorer.screenshot("explorer")

    # Block 1: the demo's first writes (later blocks hold what timing put there, access-log
    # batches among them, which the node shows only to members and the patients named).
    open_route(page, "#/explorer/block?height=1")
    page.get_by_test_id("tx-row").first.wait_for()
    types = page.get_by_test_id("block-txs").locator("td .tx-type .mono").all_inner_texts()
    assert types and all(re.fullmatch(r"[a-z]+/[a-z_]+", t) for t in types), types
    explorer.axe()
    explorer.screenshot("explorer-block")

    page.get_by_test_id("tx-row").first.get_by_role("link").click()
    page.get_by_test_id("tx-payload").wait_for()
    page.get_by_role("button", name="Check proof").click()
    assert page.get_by_test_id("proof").inner_text() == "Proof valid"
    explorer.axe()
    explorer.screenshot("explorer-transaction")

    open_route(page, "#/explorer/validators")
    members = page.get_by_test_id("member")
    members.first.wait_for()
    names = " ".join(members.all_inner_texts())
    assert "Demo Hospital" in names and "Northside Clinic" in names
    explorer.axe()
    explorer.screenshot("explorer-validators")
    explorer.assert_clean()


@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_a_records_proof_is_checked_in_the_page(
    demo_portal: OpenPortal, demo_node: DemoNode, size: str
) -> None:
    explorer = demo_portal(size)
    page = sign_in_as_practitioner(explorer, demo_node)
    patient, record = shared_record(demo_node)
    open_route(page, f"#/explorer/record?patient={patient}&name={record}")
    page.get_by_test_id("version").first.wait_for()
    page.get_by_role("button", name="Check proof of version 1").click()
    assert page.get_by_test_id("proof").inner_text() == "Proof valid"
    checks = page.get_by_test_id("proof-check")
    ids = [c.get_attribute("data-check") for c in checks.all()]
    assert {"anchor-inclusion", "anchor-result-committed", "anchor-success", "signature"} <= set(
        ids
    )
    assert ids[-1] == "anchor-block-hash"
    assert all(c.get_attribute("data-ok") == "true" for c in checks.all())
    explorer.axe()
    explorer.screenshot("explorer-record-proof")
    explorer.assert_clean()


def test_evidence_tampered_in_flight_fails_the_pages_check(
    demo_portal: OpenPortal, demo_node: DemoNode
) -> None:
    """A node (or anything between it and the page) alters one byte of the block header's
    transactions root in the anchor's evidence: the page says the proof is invalid and which
    check failed (the anchor no longer leads to it), though every other answer is honest."""
    explorer = demo_portal("desktop")
    page = sign_in_as_practitioner(explorer, demo_node)
    patient, record = shared_record(demo_node)

    tampered: list[str] = []

    def tamper(route: Route) -> None:
        answer = route.fetch()
        body: dict[str, Any] = answer.json()
        evidence = body.get("evidence")
        if evidence:
            header = evidence["block"]["header"]
            root = header["data_hash"]
            header["data_hash"] = f"{int(root[:2], 16) ^ 1:02x}" + root[2:]
            tampered.append(body["hash"])
        route.fulfill(response=answer, body=json.dumps(body))

    page.route(re.compile(r"/txs/[0-9a-f]{64}$"), tamper)
    open_route(page, f"#/explorer/record?patient={patient}&name={record}")
    page.get_by_test_id("version").first.wait_for()
    page.get_by_role("button", name="Check proof of version 1").click()
    assert page.get_by_test_id("proof").inner_text() == "Proof invalid"
    failed = page.locator("[data-testid=proof-check][data-ok=false]")
    assert failed.count() == 1
    assert failed.get_attribute("data-check") == "anchor-inclusion"
    assert "does not lead to block" in page.get_by_test_id("proof-result").inner_text()
    assert tampered  # the page asked for the evidence, and got the altered one
    explorer.assert_clean()
