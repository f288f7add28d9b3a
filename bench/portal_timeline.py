"""The portal in Debian's chromium: how long a patient waits to see its records.

Starts `careledger up --demo` on a fresh data directory, waits for the demo data, then in a
fresh browser context for each sample: opens demo patient 1's key file (the keystore's
PBKDF2 is part of signing in) and goes to the timeline; the clock runs from the click on
"Open key file" until every record the chain lists for the patient is on the page
(fetched as ciphertext, hashed, unwrapped, decrypted, decompressed, checked and rendered
in the page). Then one claim of the demo's unclaimed patient (Argon2id of 64 MiB in the
page, the key rotation and the scope keys of the new epoch, signed in the page).

    python -m bench.portal_timeline [--samples 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from bench.common import machine

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSPHRASE = "correct horse battery staple 2026"


def start_demo(data: Path, port: int) -> subprocess.Popen[bytes]:
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "careledger.cli",
            "up",
            "--demo",
            "--data-dir",
            str(data),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not (data / "demo" / "ready").exists():
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the demo did not come up")
        time.sleep(0.5)
    return node


def sign_in_and_read(page: Page, url: str, key_file: Path) -> tuple[float, int]:
    """(seconds until the last record appeared, records shown): done once the count has not
    changed for 3 s (the page renders records as they open)."""
    page.goto(f"{url}/#/patient/start")
    page.get_by_role("tab", name="Open a key file").click()
    page.get_by_label("Key file", exact=True).set_input_files(str(key_file))
    page.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    page.get_by_label("Repeat passphrase", exact=True).fill(PASSPHRASE)
    started = time.perf_counter()
    page.get_by_role("button", name="Open key file", exact=True).click()
    page.get_by_role("navigation").get_by_role("link", name="Timeline").click()
    shown, last_change = 0, time.perf_counter()
    while shown == 0 or time.perf_counter() - last_change < 3:
        count = page.locator("[data-testid=record]").count()
        if count != shown:
            shown, last_change = count, time.perf_counter()
        if time.perf_counter() - started > 600:
            raise TimeoutError(f"{shown} records after 10 minutes")
        time.sleep(0.05)
    return last_change - started, shown


def claim(page: Page, url: str, demo: Path) -> float:
    page.goto(f"{url}/#/patient/start")
    page.get_by_role("tab", name="Claim my records").click()
    page.get_by_label("Claim package", exact=True).set_input_files(
        str(demo / "claim-patient-3.json")
    )
    page.get_by_label("Claim code", exact=True).fill((demo / "claim-patient-3.code").read_text())
    page.get_by_label("Passphrase", exact=True).fill(PASSPHRASE)
    page.get_by_label("Repeat passphrase", exact=True).fill(PASSPHRASE)
    started = time.perf_counter()
    page.get_by_role("button", name="Claim my records", exact=True).click()
    page.get_by_test_id("recovery-phrase").wait_for(timeout=600_000)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--port", type=int, default=8791)
    options = parser.parse_args()
    url = f"http://127.0.0.1:{options.port}"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        node = start_demo(data, options.port)
        try:
            key_file = data / "demo" / "patient-1.json"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                times = []
                for _ in range(options.samples):
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    times.append(sign_in_and_read(context.new_page(), url, key_file))
                    context.close()
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                claimed = claim(context.new_page(), url, data / "demo")
                browser.close()
        finally:
            node.terminate()
            node.wait(30)
    print(f"machine: {machine()}")
    for index, (seconds, shown) in enumerate(times, 1):
        print(
            f"  sample {index}: demo patient 1's {shown} records on the timeline {seconds:.2f} s "
            f"after 'Open key file' ({shown / seconds:.0f} records/s, sign-in included)"
        )
    print(f"claim in the page (Argon2id 64 MiB, rotation, new epoch): {claimed:.2f} s")


if __name__ == "__main__":
    main()
