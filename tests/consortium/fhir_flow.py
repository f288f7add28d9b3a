"""A record written at one organisation's FHIR gateway and read, with the patient's consent,
at another organisation's gateway on another host.

Each gateway registers a SMART backend client with `careledger clients add` (run on its own
host, against its node home); the writer's gateway creates the Patient (enrolling them for a
claim) and an Observation; the patient claims their keys and grants the reader's organisation
read access for treatment; the reader's gateway then serves the Observation, decrypted, once
its follower has indexed what the grant covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orgs import CLI, Org, wait_until

from careledger.gateway.smart.backend_client import ClientKey
from careledger.wallet.consent import ConsentClient
from careledger.wallet.custody import claim
from careledger.wallet.node_client import NodeClient
from gatewayutil import GatewayClient


def backend_client(org: Org, tmp: Path) -> GatewayClient:
    key_file = tmp / f"client-{org.member.node_id[:8]}.json"
    command = [
        *CLI, "clients", "add", "--data-dir", str(org.home / "app"), "--new-key", str(key_file),
        "--scope", "system/*.cruds", "--purpose", "TREAT", "--name", f"{org.name} EHR",
        "--token-url", f"{org.api_url}/auth/token",
    ]  # fmt: skip
    done = org.host.run(command, timeout=120)
    assert done.returncode == 0, done.stderr
    saved = ClientKey.load(key_file)
    return GatewayClient(saved.client_id, saved.key, saved.token_url, f"{org.api_url}/fhir")


def observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-24T10:00:00Z",
        "valueQuantity": {"value": 72.5, "unit": "kg"},
    }


def write_at_one_gateway_read_at_another(writer: Org, reader: Org, tmp: Path) -> None:
    with backend_client(writer, tmp).http() as at_writer:
        before = set((writer.home / "app" / "gateway" / "claims").glob("claim-*.json"))
        made = at_writer.post("Patient", json={"resourceType": "Patient", "gender": "female"})
        assert made.status_code == 201, made.text
        patient_id = str(made.json()["id"])
        (package,) = set((writer.home / "app" / "gateway" / "claims").glob("claim-*.json")) - before
        code = made.headers["careledger-claim-code"]
        written = at_writer.post("Observation", json=observation(patient_id))
        assert written.status_code == 201, written.text
        observation_id = str(written.json()["id"])

    with backend_client(reader, tmp).http() as at_reader:
        refused = at_reader.get(f"Observation/{observation_id}")
        assert refused.status_code in (403, 404), refused.text  # no consent yet

        node = NodeClient(writer.api_url, timeout=60)
        patient = claim(node, package, code, save_to=tmp / "patient.json").keyfile
        ConsentClient(node, patient).grant(reader.member.did, purposes=["TREAT"])

        def served() -> bool:
            answer = at_reader.get(f"Observation/{observation_id}")
            return answer.status_code == 200

        wait_until(served, 90, f"{reader.name}'s gateway to serve the Observation")
        read = at_reader.get(f"Observation/{observation_id}").json()
        assert read["valueQuantity"] == {"value": 72.5, "unit": "kg"}
        assert read["subject"]["reference"].endswith(patient_id)
