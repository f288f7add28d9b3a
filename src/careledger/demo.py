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

from careledger.chain.modules.identity.vouchers import (
    ENROLMENT_VOUCHER_BLOCKS,
    sign_consent,
    sign_voucher,
)
from careledger.chain.tx import Tx
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.crypto.privatefs import make_private_dir
from careledger.node.builder import Node

SECOND_ORGANISATION = "Northside Clinic"


def seed_demo(node: Node[SoloProducer], organisation: KeyFile) -> list[KeyFile]:
    """On a fresh chain, a demo consortium: a second member organisation (Northside Clinic,
    admitted by the founder's vote) and a practitioner of each. The founder's practitioner
    key goes to keys/ beside the organisation's (the gateway acts with both); the second
    organisation's keys go to demo/ (it would run its own gateway: `careledger gateway`).

    No patient keys are made here: patients hold their own, and the demo's Synthea patients
    are enrolled for a claim through the gateway and claimed (`import_demo_records_when_up`)."""
    if node.app.info().last_height > 0:
        return []
    chain_id = node.app.chain_id
    northside = _new_key("organisation", SECOND_ORGANISATION)
    doctor = _new_key("practitioner", "Dr. Demo")
    nurse = _new_key("practitioner", "Dr. Northside")
    # One block per round: each round's transactions need the state the previous made.
    rounds = [
        [
            Tx(
                chain_id,
                "identity/register_practitioner",
                organisation.did,
                1,
                _practitioner_payload(chain_id, organisation, doctor),
            ).sign(organisation.identity),
            Tx(
                chain_id,
                "identity/apply_membership",
                northside.did,
                1,
                _application_payload(chain_id, organisation, northside),
            ).sign(northside.identity),
        ],
        [
            Tx(
                chain_id,
                "identity/approve_membership",
                organisation.did,
                2,
                {"action": "admit", "subject": northside.did},
            ).sign(organisation.identity),
        ],
        [
            Tx(
                chain_id,
                "identity/register_practitioner",
                northside.did,
                2,
                _practitioner_payload(chain_id, northside, nurse),
            ).sign(northside.identity),
        ],
    ]
    for txs in rounds:
        asyncio.run(_submit_all(node, txs))
    doctor.save(node.data.keys / f"practitioner-{doctor.did[-8:]}.json")
    demo = node.data.root / "demo"
    make_private_dir(demo)
    northside.save(demo / "northside-clinic.json")
    nurse.save(demo / "practitioner-northside.json")
    return [doctor, northside, nurse]


def _new_key(kind: str, name: str) -> KeyFile:
    identity = Identity.generate()
    return KeyFile(identity.did, kind, identity, name)


def _practitioner_payload(
    chain_id: str, organisation: KeyFile, practitioner: KeyFile
) -> dict[str, object]:
    key = practitioner.identity.encryption_public.hex()
    expires_at = ENROLMENT_VOUCHER_BLOCKS  # a fresh chain
    consent = sign_consent(practitioner.identity, chain_id, organisation.did, key, expires_at)
    return {
        "did": practitioner.did,
        "encryption_key": key,
        "name": practitioner.name,
        "consent": consent,
    }


def _application_payload(chain_id: str, sponsor: KeyFile, applicant: KeyFile) -> dict[str, object]:
    expires_at = ENROLMENT_VOUCHER_BLOCKS
    voucher = sign_voucher(
        sponsor.identity, chain_id, "apply_membership", applicant.did, expires_at
    )
    return {
        "name": applicant.name,
        "encryption_key": applicant.identity.encryption_public.hex(),
        "voucher": voucher,
    }


async def _submit_all(node: Node[SoloProducer], txs: list[bytes]) -> None:
    for raw in txs:
        await node.consensus.submit(raw, wait=False)
    node.consensus.produce_block()


# --- demo records -------------------------------------------------------------------------

# Three small Synthea patients (100 to 120 resources each).
DEMO_BUNDLES = (
    "Jesus_Alvarez_c0580b5a-6fc2-4b72-b691-57a71afb5597.json",
    "Lupe_Little_f8a42e66-8c03-4ee6-85e3-3817c2942de1.json",
    "Delbert_Williamson_61d8af4e-34ee-4e65-a055-db3806a0bcc2.json",
)


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


def demo_bundles() -> list[Path]:
    """The demo's Synthea bundles: $CARELEDGER_DEMO_BUNDLE (one file) or the shared data."""
    configured = os.environ.get("CARELEDGER_DEMO_BUNDLE")
    if configured:
        return [Path(configured)]
    data = shared_data()
    if data is None:
        return []
    return [
        data / "synthea-r4" / name for name in DEMO_BUNDLES if (data / "synthea-r4" / name).exists()
    ]


def register_demo_client(data: Path, url: str) -> Path:
    """A SMART backend client of the founding organisation (system/*.cruds, TREAT); its key
    file (private JWK, client id, token URL) in DATA_DIR/demo/, for `careledger token`."""
    from careledger.gateway.clients_cli import Binding, KeySource, add_client

    key_file = data / "demo" / "client-demo-hospital.json"
    add_client(
        data,
        KeySource(new_key=key_file),
        Binding(name="Demo EHR"),
        data / "keys",
        f"{url}/auth/token",
    )
    return key_file


def populate_demo_when_up(
    url: str, data: Path, claim_package: Callable[[str], Path | None], say: Callable[[str], None]
) -> threading.Thread | None:
    """Once the server answers (a thread): the demo bundles imported through the FHIR gateway
    with the demo client's token (each patient enrolled for a claim), every patient claimed
    (their new key files in DATA_DIR/demo/), and the first one's grant to Northside Clinic
    (read, clinical and diagnostics, for treatment). `claim_package`: where the gateway wrote the
    claim package of the patient with this FHIR Patient id."""
    bundles = demo_bundles()
    if not bundles:
        say("No demo bundles found (set CARELEDGER_SHARED_DATA): starting without records.")
        return None

    def run() -> None:
        _wait_for(url)
        try:
            imported = _import_and_claim(url, data, bundles, claim_package)
        except Exception as exc:  # the demo must not take the node down
            say(f"Demo records not imported: {exc}")
            return
        say(
            f"Demo: {imported} Synthea resources imported through the gateway; the patients "
            f"claimed their identities (key files in {data / 'demo'}/), and one shares its "
            f"clinical and diagnostic records with {SECOND_ORGANISATION}. Try:"
        )
        key = data / "demo" / "client-demo-hospital.json"
        say(
            f'  curl -H "Authorization: Bearer $(careledger token --key {key})" '
            f'"{url}/fhir/Observation?code=http://loinc.org|8302-2&_count=5"'
        )

    thread = threading.Thread(target=run, name="demo-records", daemon=True)
    thread.start()
    return thread


def _import_and_claim(
    url: str, data: Path, bundles: list[Path], claim_package: Callable[[str], Path | None]
) -> int:
    from careledger.crypto.scopekeys import CLINICAL, DIAGNOSTICS
    from careledger.gateway.importer import ImportState, import_files
    from careledger.gateway.smart.backend_client import BackendServicesAuth, ClientKey
    from careledger.wallet.consent import ConsentClient
    from careledger.wallet.custody import claim
    from careledger.wallet.node_client import NodeClient

    demo = data / "demo"
    auth = BackendServicesAuth(ClientKey.load(demo / "client-demo-hospital.json"))
    with httpx.Client(base_url=f"{url}/fhir", auth=auth, timeout=600) as http:
        report = import_files(http, bundles, ImportState(demo / "import-state.json"))
    northside = KeyFile.load(demo / "northside-clinic.json").did
    node = NodeClient(url)
    for number, pending in enumerate(report.claims, start=1):
        package = claim_package(pending.patient.split("/", 1)[1])
        if package is None:
            raise RuntimeError(f"the gateway does not know {pending.patient}")
        claimed = claim(node, package, pending.code, save_to=demo / f"patient-{number}.json")
        if number == 1:
            ConsentClient(node, claimed.keyfile).grant(
                northside, scopes=[CLINICAL, DIAGNOSTICS], purposes=["TREAT"]
            )
    return report.resources


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/status", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
