"""The patient start page against a real `careledger up`, in Debian's chromium: create (the
phrase checked, mismatched passphrases), unlock and forget a stored wallet (a wrong
passphrase), restore from the phrase (a wrong one), open a key file (v2 with `previous`, and
files that are not a patient's key file), claim a package made by Python (a wrong code, then
the chain's rotation and new epoch), and registration with a pasted voucher when the node does
not enrol by itself. Every flow checks that no key, phrase, passphrase or code left the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import Page
from portalflows import (
    PASSPHRASE,
    answer_phrase_check,
    control,
    fill_passphrase,
    shown_phrase,
    start_page,
    wait_signed_in_as_patient,
)
from portalutil import DemoNode, OpenPortal, PortalPage, Secrets

from careledger.crypto.claim import write_claim_package
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import identity_from_phrase
from careledger.wallet.enrolment import clinic_voucher, enrol_for_claim
from careledger.wallet.node_client import NodeClient
from nodeutil import NodeProcess


def _create_until_phrase(patient: PortalPage, name: str) -> tuple[Page, str]:
    page = start_page(patient, "Create a new identity")
    page.get_by_label("Your name", exact=True).fill(name)
    fill_passphrase(page, PASSPHRASE)
    control(page, "Create identity").click()
    return page, shown_phrase(page)


def _never_sent(patient: PortalPage, phrase: str | None = None, **more: Path) -> None:
    secrets = Secrets()
    secrets.add_words("passphrase", PASSPHRASE)
    if phrase:
        secrets.add_phrase("the identity", phrase)
    for what, path in more.items():
        secrets.add_key_file(what, path)
    patient.requests.assert_never_sent(secrets)


def test_create_checks_passphrases_and_words(demo_portal: OpenPortal) -> None:
    patient = demo_portal("phone")
    page = start_page(patient, "Create a new identity")
    page.get_by_label("Your name", exact=True).fill("Ada Lovelace")
    page.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    page.get_by_label("Repeat passphrase", exact=True).fill(PASSPHRASE + "!")
    control(page, "Create identity").click()
    assert "not the same" in patient.alert()
    assert page.get_by_test_id("recovery-phrase").count() == 0  # no keys made yet

    fill_passphrase(page, PASSPHRASE)
    control(page, "Create identity").click()
    phrase = shown_phrase(page)
    assert phrase.split() == page.get_by_test_id("recovery-phrase").text_content().split(" ")
    patient.axe()
    patient.screenshot("start-phrase")
    control(page, "I have written it down").click()
    asked = page.get_by_label(re.compile(r"^Word \d+$"))
    assert asked.count() == 3
    patient.axe()
    for index in range(3):
        asked.nth(index).fill("zoo" if phrase.split()[0] != "zoo" else "abandon")
    control(page, "Confirm").click()
    assert "not right" in patient.alert() or "do not match" in patient.alert()
    assert page.get_by_role("navigation").get_by_role("link", name="Timeline").count() == 0

    for index in range(3):  # still on the check: the right words now
        field = asked.nth(index)
        number = int(re.sub(r"\D", "", field.evaluate("(el) => el.labels[0].innerText")))
        field.fill(phrase.split()[number - 1])
    control(page, "Confirm").click()
    wait_signed_in_as_patient(page)
    assert "Ada Lovelace" in page.locator("header").inner_text()
    _never_sent(patient, phrase)
    patient.assert_clean()


def test_unlock_refuses_a_wrong_passphrase_and_forgets(demo_portal: OpenPortal) -> None:
    patient = demo_portal("desktop")
    page, phrase = _create_until_phrase(patient, "Grace Hopper")
    answer_phrase_check(page, phrase)
    wait_signed_in_as_patient(page)

    page.reload()  # the keys in memory are gone; the encrypted copy in IndexedDB stays
    page = patient.goto("/patient/start")
    page.locator("main").filter(has_text="Grace Hopper").wait_for()  # the stored wallets
    page.get_by_label("Passphrase", exact=True).fill("not the passphrase")
    page.get_by_role("button", name="Unlock", exact=True).click()
    assert "Wrong passphrase" in patient.alert()
    patient.axe()
    patient.screenshot("start-unlock")
    page.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    page.get_by_role("button", name="Unlock", exact=True).click()
    wait_signed_in_as_patient(page)

    page.reload()
    page = patient.goto("/patient/start")
    page.get_by_role("button", name=re.compile("^Forget this wallet")).click()
    page.get_by_role("button", name="Forget it", exact=True).click()
    control(page, "Create a new identity").wait_for()
    assert page.get_by_role("button", name="Unlock", exact=True).count() == 0
    _never_sent(patient, phrase)
    patient.assert_clean()


def test_restore_from_phrase_and_a_wrong_phrase(demo_portal: OpenPortal) -> None:
    creator = demo_portal("desktop")
    page, phrase = _create_until_phrase(creator, "Ada Restored")
    answer_phrase_check(page, phrase)
    wait_signed_in_as_patient(page)

    patient = demo_portal("phone")  # another device: nothing stored there
    words = phrase.split()
    page = start_page(patient, "Restore from recovery phrase")
    page.get_by_label("Recovery phrase", exact=True).fill(" ".join(words[:23]))
    fill_passphrase(page, PASSPHRASE)
    page.get_by_role("button", name="Restore", exact=True).click()
    assert "24 words" in patient.alert()
    swapped = [words[1], words[0], *words[2:]] if words[0] != words[1] else [*words[:-1], "zoo"]
    page.get_by_label("Recovery phrase", exact=True).fill(" ".join(swapped))
    with patient.console.allowing("401"):  # a swapped phrase may pass its checksum: no such did
        page.get_by_role("button", name="Restore", exact=True).click()
        assert re.search(r"not right|no identity", patient.alert(), re.I)

    # upper case and line breaks are fine
    typed = " ".join(w.upper() for w in words[:12]) + "\n" + " ".join(words[12:])
    page.get_by_label("Recovery phrase", exact=True).fill(typed)
    page.get_by_role("button", name="Restore", exact=True).click()
    wait_signed_in_as_patient(page)
    _never_sent(patient, phrase)
    patient.assert_clean()
    creator.assert_clean()


def test_open_key_file_v2_and_files_that_are_not(
    demo_portal: OpenPortal, demo_node: DemoNode, tmp_path: Path
) -> None:
    key_file = demo_node.file("patient-1.json")
    assert KeyFile.load(key_file).previous, "the demo's patients claimed: a v2 key file"
    patient = demo_portal("phone")
    page = start_page(patient, "Open a key file")
    fill_passphrase(page, PASSPHRASE)
    not_json = tmp_path / "notes.json"
    not_json.write_text("my notes")
    page.get_by_label("Key file", exact=True).set_input_files(str(not_json))
    page.get_by_role("button", name="Open key file", exact=True).click()
    assert "not a CareLedger key file" in patient.alert()
    page.get_by_label("Key file", exact=True).set_input_files(
        str(demo_node.file("practitioner-northside.json"))
    )
    page.get_by_role("button", name="Open key file", exact=True).click()
    assert "not a patient's" in patient.alert()

    page.get_by_label("Key file", exact=True).set_input_files(str(key_file))
    page.get_by_role("button", name="Open key file", exact=True).click()
    wait_signed_in_as_patient(page)
    _never_sent(patient, patient_key=key_file)
    patient.assert_clean()


def test_claim_a_package_rotates_the_keys(
    demo_portal: OpenPortal, demo_node: DemoNode, tmp_path: Path
) -> None:
    org = demo_node.process.organisation()
    node = NodeClient(demo_node.url, org)
    enrolment = enrol_for_claim(node, org.identity, org.did, name="Claire Claimant")
    package = tmp_path / "claim.json"
    write_claim_package(package, enrolment.package)

    patient = demo_portal("phone")
    page = start_page(patient, "Claim my records")
    page.get_by_label("Claim package", exact=True).set_input_files(str(package))
    fill_passphrase(page, PASSPHRASE)
    page.get_by_label("Claim code", exact=True).fill("abandon ability able about above absent")
    page.get_by_role("button", name="Claim my records", exact=True).click()
    assert "claim code is wrong" in patient.alert()
    assert len(node.query("identity/identity", did=enrolment.did)["keys"]) == 1

    page.get_by_label("Claim code", exact=True).fill(enrolment.code.upper().replace(" ", "-"))
    page.get_by_role("button", name="Claim my records", exact=True).click()
    new_phrase = shown_phrase(page)
    assert page.get_by_role("button", name="Download my key file").count() == 1
    # the new phrase exists nowhere else: the other tabs cannot take the page away from it
    assert page.get_by_role("tab", name="Create a new identity").is_disabled()
    patient.axe()
    answer_phrase_check(page, new_phrase)
    wait_signed_in_as_patient(page)

    identity = node.query("identity/identity", did=enrolment.did)
    fresh = identity_from_phrase(new_phrase)
    assert identity["signing_key"] == fresh.signing_public.hex()
    published = node.query("records/scope_keys", patient=enrolment.did)
    assert {k["epoch"] for k in published} == {1, 2}

    secrets = Secrets()
    secrets.add_words("claim code", enrolment.code)
    secrets.add_phrase("the new identity", new_phrase)
    secrets.add_words("passphrase", PASSPHRASE)
    patient.requests.assert_never_sent(secrets)
    patient.assert_clean()


def test_closed_enrolment_takes_a_pasted_voucher(
    portal: OpenPortal, plain_node: NodeProcess
) -> None:
    patient = portal("phone")
    page, phrase = _create_until_phrase(patient, "Voucher Patient")
    with patient.console.allowing("403"):  # POST /portal/voucher: enrolment_closed
        answer_phrase_check(page, phrase)
        did = page.get_by_test_id("new-did").inner_text().strip()
    assert did == identity_from_phrase(phrase).did
    page.get_by_label("Enrolment voucher", exact=True).fill('{"org": "someone"}')
    page.get_by_role("button", name="Register", exact=True).click()
    assert "not an enrolment voucher" in patient.alert()

    org = plain_node.organisation()
    node = NodeClient(plain_node.url, org)
    voucher = clinic_voucher(org.identity, org.did, did, node.status())
    page.get_by_label("Enrolment voucher", exact=True).fill(json.dumps({"voucher": voucher}))
    page.get_by_role("button", name="Register", exact=True).click()
    wait_signed_in_as_patient(page)
    assert node.query("identity/identity", did=did)["kind"] == "patient"
    _never_sent(patient, phrase)
    patient.assert_clean()
