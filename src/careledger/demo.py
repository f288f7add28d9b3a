"""Demo data for `careledger up --demo`: a practitioner, a few pseudonymous patients, records.

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

from careledger.chain.modules.identity.vouchers import (
    ENROLMENT_VOUCHER_BLOCKS,
    sign_consent,
    sign_voucher,
)
from careledger.chain.tx import Tx
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.builder import Node

DEMO_PATIENTS = 3


def seed_demo(node: Node[SoloProducer], organisation: KeyFile) -> list[KeyFile]:
    """Register a demo practitioner and patients on a fresh chain; their key files go to keys/."""
    if node.app.info().last_height > 0:
        return []
    chain_id = node.app.chain_id
    doctor = Identity.generate()
    practitioner = KeyFile(doctor.did, "practitioner", doctor, "Dr. Demo")
    patients = [
        KeyFile(ident.did, "patient", ident, f"demo patient {i + 1}")
        for i, ident in enumerate(Identity.generate() for _ in range(DEMO_PATIENTS))
    ]
    org, expires_at = organisation.identity, ENROLMENT_VOUCHER_BLOCKS  # a fresh chain
    doctor_key = practitioner.identity.encryption_public.hex()
    txs = [
        Tx(
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
        ).sign(org)
    ]
    txs += [
        Tx(
            chain_id,
            "identity/register_patient",
            p.did,
            1,
            {
                "encryption_key": p.identity.encryption_public.hex(),
                "voucher": sign_voucher(
                    org, chain_id, "register_patient", p.did, expires_at, organisation.did
                ),
            },
        ).sign(p.identity)
        for p in patients
    ]
    asyncio.run(_submit_all(node, txs))
    for keyfile in [practitioner, *patients]:
        keyfile.save(node.data.keys / f"{keyfile.kind}-{keyfile.did[-8:]}.json")
    return [practitioner, *patients]


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
    url: str, organisation: KeyFile, keys_dir: Path, say: Callable[[str], None]
) -> threading.Thread | None:
    """Once the node answers, import the demo bundle through the records SDK (a thread)."""
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
                import_bundle(client, orjson.loads(bundle.read_bytes()), keys_dir, summary)
        except Exception as exc:  # the demo must not take the node down
            say(f"Demo records not imported: {exc}")
            return
        say(
            f"Demo records: {summary.written} resources of {summary.patients} Synthea patient "
            f"imported; the patient's key file is in {keys_dir}/ "
            f"(try: careledger records list --as {summary.patient_keys[0]} --node {url})."
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
