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
from typing import TYPE_CHECKING

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
from careledger.crypto.privatefs import make_private_dir, write_private_file
from careledger.node.builder import Node

if TYPE_CHECKING:
    from careledger.gateway.context import Gateway
    from careledger.wallet.node_client import NodeClient, Signer

SECOND_ORGANISATION = "Northside Clinic"


def seed_demo(node: Node[SoloProducer], organisation: KeyFile) -> list[KeyFile]:
    """On a fresh chain, a demo consortium: the founder's practitioner (Dr. Demo), and a
    second organisation (Northside Clinic) that applies for membership, with its practitioner
    (Dr. Northside) to be registered once it is admitted. The founder's practitioner key goes
    to keys/ beside the organisation's (the gateway acts with both); the second
    organisation's keys go to demo/ (it would run its own gateway: `careledger gateway`).

    Northside is admitted only after the first demo patient opened its emergency access
    (`admit_second_organisation`): an escrow is split k = ceil(2n/3) of n among the members
    and each member's node releases its own share, so with two members a break-glass would
    need Northside's node, which the demo does not run. Made while the founder is the only
    member, the escrow is 1 of 1 and a break-glass works on this one node (docs/crypto.md
    11.3: a member admitted later holds no share until the patient re-escrows).

    No patient keys are made here: patients hold their own, and the demo's Synthea patients
    are enrolled for a claim through the gateway and claimed (`populate_demo_when_up`)."""
    if node.app.info().last_height > 0:
        return []
    chain_id = node.app.chain_id
    northside = _new_key("organisation", SECOND_ORGANISATION)
    doctor = _new_key("practitioner", "Dr. Demo")
    nurse = _new_key("practitioner", "Dr. Northside")
    block = [
        Tx(
            chain_id,
            "identity/register_practitioner",
            organisation.did,
            1,
            _practitioner_payload(chain_id, organisation, doctor, ENROLMENT_VOUCHER_BLOCKS),
        ).sign(organisation.identity),
        Tx(
            chain_id,
            "identity/apply_membership",
            northside.did,
            1,
            _application_payload(chain_id, organisation, northside),
        ).sign(northside.identity),
    ]
    asyncio.run(_submit_all(node, block))
    doctor.save(node.data.keys / f"practitioner-{doctor.did[-8:]}.json")
    demo = node.data.root / "demo"
    make_private_dir(demo)
    northside.save(demo / "northside-clinic.json")
    nurse.save(demo / "practitioner-northside.json")
    return [doctor, northside, nurse]


def admit_second_organisation(node: NodeClient, demo: Path, founder: Signer) -> None:
    """The founder admits Northside Clinic (its vote is the two thirds of one member), which
    then registers its practitioner. `founder`: the signer the gateway's records client of
    the organisation numbers its transactions with (one nonce counter per did)."""
    from careledger.wallet.node_client import Signer

    northside = KeyFile.load(demo / "northside-clinic.json")
    nurse = KeyFile.load(demo / "practitioner-northside.json")
    founder.send("identity/approve_membership", {"action": "admit", "subject": northside.did})
    status = node.status()
    expires_at = int(status["height"]) + ENROLMENT_VOUCHER_BLOCKS
    payload = _practitioner_payload(str(status["chain_id"]), northside, nurse, expires_at)
    clinic = Signer(node.signed_as(northside), northside.did, northside.identity)
    clinic.send("identity/register_practitioner", payload)


def _new_key(kind: str, name: str) -> KeyFile:
    identity = Identity.generate()
    return KeyFile(identity.did, kind, identity, name)


def _practitioner_payload(
    chain_id: str, organisation: KeyFile, practitioner: KeyFile, expires_at: int
) -> dict[str, object]:
    """`expires_at`: the height the practitioner's consent expires at."""
    key = practitioner.identity.encryption_public.hex()
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


DEMO_CLIENT = "client-demo-hospital.json"  # the organisation's EHR-style client
PORTAL_CLIENT = "client-dr-demo.json"  # bound to Dr. Demo: the portal's practitioner sign-in
UNCLAIMED_PATIENT = 3  # left for the portal's "Claim my records"
READY = "ready"  # written in DATA_DIR/demo/ once every demo record is in (the e2e tests wait)


def register_demo_clients(data: Path, url: str, doctor: KeyFile) -> tuple[Path, Path]:
    """Two SMART backend clients of the founding organisation (system/*.cruds, TREAT), their
    key files (private JWK, client id, token URL) in DATA_DIR/demo/: one acting as the
    organisation (for `careledger token` and `careledger import`), one bound to its
    practitioner `doctor` (Dr. Demo), for the portal's practitioner sign-in: a break-glass
    names a person, so only that one can break the glass."""
    from careledger.gateway.clients_cli import Binding, KeySource, add_client

    token_url = f"{url}/auth/token"
    hospital = data / "demo" / DEMO_CLIENT
    add_client(
        data, KeySource(new_key=hospital), Binding(name="Demo EHR"), data / "keys", token_url
    )
    portal = data / "demo" / PORTAL_CLIENT
    binding = Binding(practitioner=doctor.did, name=f"Portal ({doctor.name})")
    add_client(data, KeySource(new_key=portal), binding, data / "keys", token_url)
    return hospital, portal


def populate_demo_when_up(
    url: str, data: Path, gateway: Gateway, say: Callable[[str], None]
) -> threading.Thread | None:
    """Once the server answers (a thread): the demo bundles imported through the FHIR gateway
    with the demo client's token (each patient enrolled for a claim), the patients claimed
    (their new key files in DATA_DIR/demo/) but the third, left for the portal (its claim
    package and code in DATA_DIR/demo/), the first one's emergency access opened (so that a
    break-glass works), Northside Clinic admitted (see `seed_demo`) and the first patient's
    grant to it (read, clinical and diagnostics, for treatment). Then how to sign in is
    printed and DATA_DIR/demo/ready written. `gateway`: the organisation's gateway in this
    process (where it wrote each claim package; the organisation's signer)."""
    bundles = demo_bundles()
    if not bundles:
        say("No demo bundles found (set CARELEDGER_SHARED_DATA): starting without records.")
        return None

    def run() -> None:
        _wait_for(url)
        try:
            imported = _import_and_claim(url, data, bundles, gateway)
        except Exception as exc:  # the demo must not take the node down
            say(f"Demo records not imported: {exc}")
            return
        say(
            f"Demo: {imported} Synthea resources imported through the gateway; the patients "
            f"claimed their identities (key files in {data / 'demo'}/) but patient "
            f"{UNCLAIMED_PATIENT}, and one shares its clinical and diagnostic records with "
            f"{SECOND_ORGANISATION}. Try:"
        )
        key = data / "demo" / DEMO_CLIENT
        say(
            f'  curl -H "Authorization: Bearer $(careledger token --key {key})" '
            f'"{url}/fhir/Observation?code=http://loinc.org|8302-2&_count=5"'
        )
        for line in portal_sign_in(url, data / "demo"):
            say(line)
        (data / "demo" / READY).write_text(f"{url}/\n")

    thread = threading.Thread(target=run, name="demo-records", daemon=True)
    thread.start()
    return thread


def portal_sign_in(url: str, demo: Path) -> list[str]:
    """How to sign in to the portal with the demo's files."""
    lines = [
        f"Portal: {url}/",
        f'  as the demo patient: "I am a patient", "Open a key file": {demo / "patient-1.json"}',
    ]
    package = demo / f"claim-patient-{UNCLAIMED_PATIENT}.json"
    if package.exists():
        code = demo / f"claim-patient-{UNCLAIMED_PATIENT}.code"
        lines.append(
            f'  or claim a patient: "Claim my records" with the package {package} and the code '
            f"in {code}"
        )
    lines += [
        f'  as a practitioner: "I am a clinician", "Backend client key": {demo / PORTAL_CLIENT} '
        "(Dr. Demo, Demo Hospital)",
        f'  or "Practitioner key file": {demo / "practitioner-northside.json"} '
        f'(Dr. Northside) with "Organisation key file": {demo / "northside-clinic.json"} '
        f"({SECOND_ORGANISATION}: what patients share is wrapped to its key)",
    ]
    return lines


def _import_and_claim(url: str, data: Path, bundles: list[Path], gateway: Gateway) -> int:
    from careledger.crypto.scopekeys import CLINICAL, DIAGNOSTICS
    from careledger.gateway.importer import ImportState, import_files
    from careledger.gateway.smart.backend_client import BackendServicesAuth, ClientKey
    from careledger.wallet.break_glass import open_emergency
    from careledger.wallet.consent import ConsentClient
    from careledger.wallet.custody import claim
    from careledger.wallet.node_client import NodeClient

    demo = data / "demo"
    auth = BackendServicesAuth(ClientKey.load(demo / DEMO_CLIENT))
    with httpx.Client(base_url=f"{url}/fhir", auth=auth, timeout=600) as http:
        report = import_files(http, bundles, ImportState(demo / "import-state.json"))
    node = NodeClient(url)
    for number, pending in enumerate(report.claims, start=1):
        package = gateway.claim_package(pending.patient.split("/", 1)[1])
        if package is None:
            raise RuntimeError(f"the gateway does not know {pending.patient}")
        if number == UNCLAIMED_PATIENT:
            _leave_unclaimed(demo, number, package, pending.code)
            continue
        claimed = claim(node, package, pending.code, save_to=demo / f"patient-{number}.json")
        if number == 1:
            open_emergency(node, claimed.keyfile)  # while the founder is the only member
            admit_second_organisation(node, demo, _organisation_signer(gateway))
            northside = KeyFile.load(demo / "northside-clinic.json").did
            ConsentClient(node, claimed.keyfile).grant(
                northside, scopes=[CLINICAL, DIAGNOSTICS], purposes=["TREAT"]
            )
    return report.resources


def _organisation_signer(gateway: Gateway) -> Signer:
    """The signer of the gateway's records client for the organisation (the one the import
    and the index follower use): a transaction signed with a second counter would reuse a
    nonce the gateway's next write takes."""
    from careledger.gateway.index.follower import AUTHOR_PURPOSE
    from careledger.gateway.principal import Principal
    from careledger.gateway.smart.scopes import parse_scopes

    org = gateway.organisation.did
    principal = Principal("demo", org, parse_scopes("system/*.rs"), AUTHOR_PURPOSE)
    return gateway.records_for(principal).signer


def _leave_unclaimed(demo: Path, number: int, package: Path, code: str) -> None:
    """Copy the claim package and its code beside the demo's key files (owner-only), for
    the portal's "Claim my records": the claim happens in the page."""
    write_private_file(demo / f"claim-patient-{number}.json", package.read_bytes())
    write_private_file(demo / f"claim-patient-{number}.code", code.encode() + b"\n")


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/status", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
