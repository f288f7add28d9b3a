"""`POST /fhir/Patient/{id}/$break-glass` against a real `careledger up`: the gateway breaks
the glass with the bound practitioner's key, the chain records the patient's alert, and that
practitioner's reads of that patient then open what no grant covers (purpose ETREAT, the
emergency keys, held in memory only). Every refusal is an OperationOutcome."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accessutil import Consortium
from careledger.crypto.escrow import EmergencyBundle
from careledger.crypto.keyfile import KeyFile
from careledger.gateway.emergencies import Emergencies
from careledger.wallet.break_glass import EmergencyClient, EmergencyKeys
from careledger.wallet.custody import claim
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient
from gatewayutil import GatewayClient, GatewayProcess
from nodeutil import free_port

pytestmark = pytest.mark.timeout(300)

OPERATION = "Patient/{}/$break-glass"
REASON = "unconscious in A&E, allergies unknown"


@dataclass
class World:
    gateway: GatewayProcess
    doctor: KeyFile
    doctor_client: GatewayClient
    patient: KeyFile  # claimed, emergency access opened
    patient_id: str
    observation_id: str  # written by the organisation, then updated by the patient
    unescrowed_id: str  # enrolled, never claimed: no escrow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("break-glass")
    gateway = GatewayProcess(root / "data", free_port())
    gateway.start("--block-interval", "0.05")
    try:
        yield _build(gateway, root)
    finally:
        gateway.stop()


def _build(gateway: GatewayProcess, root: Path) -> World:
    consortium = Consortium(gateway.url, gateway.organisation())
    doctor = _practitioner(gateway, consortium, "Dr. Glass")
    patient_id, code, package = _enrol(gateway)
    node = NodeClient(gateway.url)
    claimed = claim(node, package, code, save_to=root / "patient.json")
    EmergencyClient(node, claimed.keyfile).open()
    written = gateway.http.post("Observation", json=_observation(patient_id))
    assert written.status_code == 201, written.text
    observation = written.json()
    # The patient writes the next version itself: the organisation no longer authored the
    # latest version, and no grant covers it, so only a break-glass opens it.
    mine = copy.deepcopy(observation)
    mine["valueQuantity"]["value"] = 99.5
    with RecordsClient(node, claimed.keyfile) as own:
        own.write(claimed.keyfile.did, mine)
    unescrowed_id, _, _ = _enrol(gateway)
    return World(
        gateway,
        doctor,
        gateway.add_client(did=doctor.did, scopes="system/*.cruds"),
        claimed.keyfile,
        patient_id,
        observation["id"],
        unescrowed_id,
    )


def _practitioner(gateway: GatewayProcess, consortium: Consortium, name: str) -> KeyFile:
    doctor = consortium.practitioner(gateway.organisation(), name)
    doctor.save(gateway.data_dir / "keys" / f"practitioner-{doctor.did[-8:]}.json")
    return doctor


def _enrol(gateway: GatewayProcess) -> tuple[str, str, Path]:
    """A new Patient through the gateway: its id, claim code and claim package."""
    claims = gateway.gateway_dir / "claims"
    before = set(claims.glob("claim-*.json"))
    patient = {"resourceType": "Patient", "name": [{"family": "Glass", "given": ["Pat"]}]}
    answer = gateway.http.post("Patient", json=patient)
    assert answer.status_code == 201, answer.text
    (package,) = set(claims.glob("claim-*.json")) - before
    return str(answer.json()["id"]), answer.headers["careledger-claim-code"], package


def _observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-01-02T03:04:05Z",
        "valueQuantity": {"value": 80.0, "unit": "kg"},
    }


def _parameters(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, kind: value} for name, kind, value in pairs],
    }


def _issue(answer: Any) -> str:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["diagnostics"])


def test_break_glass_records_the_alert_and_opens_what_no_grant_covers(world: World) -> None:
    with world.doctor_client.http() as fhir:
        before = fhir.get(f"Observation/{world.observation_id}")
        assert before.status_code == 403, before.text  # no grant, not the author's version
        written = fhir.post("Observation", json=_observation(world.patient_id))
        assert written.status_code == 201, written.text  # the practitioner's signer counts

        answer = fhir.post(
            OPERATION.format(world.patient_id), json=_parameters(("reason", "valueString", REASON))
        )
        assert answer.status_code == 200, answer.text
        out = {p["name"]: p for p in answer.json()["parameter"]}
        glass_id = out["id"]["valueString"]
        scopes = {p["valueCode"] for p in answer.json()["parameter"] if p["name"] == "scope"}
        assert scopes == {"clinical", "medications", "diagnostics"}  # opened, not sensitive
        assert out["until"]["valueInstant"].endswith("Z")

        after = fhir.get(f"Observation/{world.observation_id}")
        assert after.status_code == 200, after.text
        assert after.json()["valueQuantity"]["value"] == 99.5
        everything = fhir.get(f"Patient/{world.patient_id}/$everything").json()
        values = [
            e["resource"].get("valueQuantity", {}).get("value")
            for e in everything["entry"]
            if e["resource"]["resourceType"] == "Observation"
        ]
        assert 99.5 in values
        # The break-glass was signed with the practitioner's one nonce counter: its next
        # write is not refused as a replay.
        written = fhir.post("Observation", json=_observation(world.patient_id))
        assert written.status_code == 201, written.text

        again = fhir.post(
            OPERATION.format(world.patient_id), json=_parameters(("reason", "valueString", REASON))
        )
        assert again.status_code == 409 and "runs until" in _issue(again)

    # The chain recorded it, with its reason, for the patient to see first.
    glasses = EmergencyClient(world.gateway.url, world.patient).break_glasses()
    mine = [g for g in glasses if g["id"] == glass_id]
    assert mine and mine[0]["reason"] == REASON and mine[0]["requester"] == world.doctor.did


def test_the_emergency_keys_are_never_written_to_disk(world: World) -> None:
    """The gateway's disk copied after a break-glass holds none of the escrowed keys."""
    with world.doctor_client.http() as fhir:
        fhir.post(
            OPERATION.format(world.patient_id), json=_parameters(("reason", "valueString", REASON))
        )  # 200, or 409 when the test above ran first: either way the keys are held
        assert fhir.get(f"Observation/{world.observation_id}").status_code == 200
    secrets = [world.patient.naming_key]
    secrets += [
        world.patient.scope_key(scope, epoch).private_bytes()
        for scope in ("clinical", "medications", "diagnostics")
        for epoch in (1, 2)
    ]
    needles = [s for secret in secrets for s in (secret, secret.hex().encode())]
    for path in (world.gateway.data_dir / "gateway").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(needle in content for needle in needles), path


def test_a_client_bound_to_the_organisation_cannot_break_the_glass(world: World) -> None:
    answer = world.gateway.http.post(
        OPERATION.format(world.patient_id), json=_parameters(("reason", "valueString", REASON))
    )
    assert answer.status_code == 403
    assert "practitioner" in _issue(answer)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (_parameters(), "reason"),
        (_parameters(("reason", "valueString", "   ")), "reason"),
        (_parameters(("reason", "valueString", "x" * 501)), "at most 500"),
        (
            _parameters(("reason", "valueString", REASON), ("scope", "valueCode", "everything")),
            "unknown scope",
        ),
        (_parameters(("reason", "valueString", REASON), ("seconds", "valueInteger", 0)), "1 to"),
        (_parameters(("reason", "valueString", REASON), ("why", "valueString", "x")), "not 'why'"),
        (_parameters(("reason", "valueInteger", 3)), "valueString"),
        ({"resourceType": "Patient"}, "Parameters"),
    ],
)
def test_malformed_input_is_400(world: World, body: dict[str, Any], said: str) -> None:
    with world.doctor_client.http() as fhir:
        answer = fhir.post(OPERATION.format(world.patient_id), json=body)
    assert answer.status_code == 400, answer.text
    assert said in _issue(answer)


def test_an_unknown_patient_is_404(world: World) -> None:
    with world.doctor_client.http() as fhir:
        answer = fhir.post(
            OPERATION.format("no-such-patient"), json=_parameters(("reason", "valueString", REASON))
        )
    assert answer.status_code == 404 and "not known" in _issue(answer)


def test_a_patient_without_emergency_access_is_403_and_nothing_is_recorded(world: World) -> None:
    with world.doctor_client.http() as fhir:
        answer = fhir.post(
            OPERATION.format(world.unescrowed_id),
            json=_parameters(("reason", "valueString", REASON)),
        )
    assert answer.status_code == 403 and "emergency access" in _issue(answer)


def test_a_scope_the_patient_did_not_open_is_refused_by_the_chain(world: World) -> None:
    consortium = Consortium(world.gateway.url, world.gateway.organisation())
    nurse = _practitioner(world.gateway, consortium, "Nurse Glass")
    client = world.gateway.add_client(did=nurse.did, scopes="system/*.rs")
    body = _parameters(("reason", "valueString", REASON), ("scope", "valueCode", "sensitive"))
    with client.http() as fhir:
        answer = fhir.post(OPERATION.format(world.patient_id), json=body)
        assert answer.status_code == 403 and "sensitive" in _issue(answer)
        # and without a break-glass the nurse still reads nothing of it
        assert fhir.get(f"Observation/{world.observation_id}").status_code == 403


def test_a_token_that_may_not_read_patients_cannot_break_the_glass(world: World) -> None:
    with world.doctor_client.http(scope="system/Observation.rs") as fhir:
        answer = fhir.post(
            OPERATION.format(world.patient_id), json=_parameters(("reason", "valueString", REASON))
        )
    assert answer.status_code == 403 and "Patient" in _issue(answer)


# --- the in-memory store, on its own ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _keys(patient: str, until: int) -> EmergencyKeys:
    bundle = EmergencyBundle(patient, bytes(32), ())
    return EmergencyKeys(patient, "glass-" + patient, ("clinical",), until, bundle)


def test_held_keys_are_forgotten_at_until() -> None:
    clock = Clock()
    store = Emergencies(clock)
    store.keep("did:doctor", _keys("did:p1", until=1060))
    assert store.active("did:doctor", "did:p1") is not None
    assert store.active("did:other", "did:p1") is None  # another practitioner holds nothing
    clock.now = 1060.0
    assert store.active("did:doctor", "did:p1") is None
    assert store.held() == 0


def test_the_timer_forgets_keys_nobody_asks_for() -> None:
    clock = Clock()
    store = Emergencies(clock)
    store.keep("did:doctor", _keys("did:p2", until=1000))  # ends now: the timer fires at once
    deadline = time.monotonic() + 30
    while store.held() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.held() == 0
