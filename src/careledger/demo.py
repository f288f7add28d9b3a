"""Demo data for `careledger up --demo`: a practitioner, and a Synthea patient's records.

It sits above both the node and the wallet: identities are registered through the embedded
node's own producer before it serves, records are imported through the wallet SDK over HTTP
once it does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from careledger.chain.modules.identity.vouchers import ENROLMENT_VOUCHER_BLOCKS, sign_consent
from careledger.chain.tx import Tx
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.builder import Node


def seed_demo(node: Node[SoloProducer], organisation: KeyFile) -> list[KeyFile]:
    """Register a demo practitioner of the organisation on a fresh chain; its key file goes
    to keys/ beside the organisation's (both are the organisation's own staff keys).

    No patient keys are made here: patients hold their own (`careledger keys new`), and the
    demo's Synthea patient is enrolled for a claim (`import_demo_records_when_up`)."""
    if node.app.info().last_height > 0:
        return []
    chain_id = node.app.chain_id
    doctor = Identity.generate()
    practitioner = KeyFile(doctor.did, "practitioner", doctor, "Dr. Demo")
    expires_at = ENROLMENT_VOUCHER_BLOCKS  # a fresh chain
    doctor_key = practitioner.identity.encryption_public.hex()
    tx = Tx(
        chain_id,
        "identity/register_practitioner",
        organisation.did,
        1,
        {
            "did": practitioner.did,
            "encryption_key": doctor_key,
            "name": practitioner.name,
            "consent": sign_consent(doctor, chain_id, organisation.did, doctor_key, expires_at),
        },
    ).sign(organisation.identity)
    asyncio.run(_submit_all(node, [tx]))
    practitioner.save(node.data.keys / f"practitioner-{practitioner.did[-8:]}.json")
    return [practitioner]


async def _submit_all(node: Node[SoloProducer], txs: list[bytes]) -> None:
    for raw in txs:
        await node.consensus.submit(raw, wait=False)
    node.consensus.produce_block()


# --- demo records -------------------------------------------------------------------------

DEMO_BUNDLE = "Jesus_Alvarez_c0580b5a-6fc2-4b72-b691-57a71afb5597.json"  # 100 resources


def shared_data() -> Path | None:
    """The project's shared FHIR test data (`shared/data`: Synthea bundles, the R4 examples).

    In order: $CARELEDGER_SHARED_DATA; `shared/data` beside the checkout (how the project is
    laid out); beside the checkout this one was cloned from, when that is a local path (a
    throwaway clone elsewhere, e.g. in /tmp). None when none of them exists.
    """
    configured = os.environ.get("CARELEDGER_SHARED_DATA")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[2]
    for root in (checkout, _local_origin(checkout)):
        if root is not None and (root.parent / "shared" / "data").is_dir():
            return root.parent / "shared" / "data"
    return None


def _local_origin(checkout: Path) -> Path | None:
    try:
        found = subprocess.run(
            ["git", "-C", str(checkout), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    origin = found.stdout.strip()
    return Path(origin) if origin.startswith("/") and Path(origin).is_dir() else None


def demo_bundle() -> Path | None:
    """The small Synthea bundle of the demo: $CARELEDGER_DEMO_BUNDLE or the shared test data."""
    configured = os.environ.get("CARELEDGER_DEMO_BUNDLE")
    if configured:
        return Path(configured)
    data = shared_data()
    bundle = data / "synthea-r4" / DEMO_BUNDLE if data is not None else None
    return bundle if bundle is not None and bundle.exists() else None


def import_demo_records_when_up(
    url: str, organisation: KeyFile, claims_dir: Path, say: Callable[[str], None]
) -> threading.Thread | None:
    """Once the node answers, import the demo bundle through the records SDK (a thread):
    its patient is enrolled for a claim, the package written to `claims_dir`, the code
    shown once."""
    bundle = demo_bundle()
    if bundle is None:
        say("No demo bundle found (set CARELEDGER_DEMO_BUNDLE): starting without records.")
        return None

    def run() -> None:
        from careledger.wallet.records import ImportSummary, RecordsClient, import_bundle

        _wait_for(url)
        summary = ImportSummary()
        try:
            with RecordsClient(url, organisation) as client:
                import_bundle(client, orjson.loads(bundle.read_bytes()), claims_dir, summary)
        except Exception as exc:  # the demo must not take the node down
            say(f"Demo records not imported: {exc}")
            return
        say(
            f"Demo records: {summary.written} resources of {summary.patients} Synthea patient "
            "imported, enrolled for a claim. Claim the patient's identity (the code is shown "
            "only now):"
        )
        for pending in summary.claims:
            say(
                f"  careledger claim {pending.package} --out patient.json --node {url}"
                f"   (claim code: {pending.code})"
            )

    thread = threading.Thread(target=run, name="demo-records", daemon=True)
    thread.start()
    return thread


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/status", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
