"""The service layer of the FHIR interactions (`gateway.resources.Resources`), called directly
on a `Gateway` pointed at a real `careledger up` node: every write a real signed transaction,
every read a real audited fetch. HTTP behaviour is tested in test_gateway_interactions.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.gateway.context import Gateway
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.resources import Resources, Write
from careledger.gateway.smart.scopes import parse_scopes
from careledger.wallet.fhir import BundleIndex, InvalidResource
from nodeutil import SHARED_DATA, NodeProcess, free_port

pytestmark = pytest.mark.timeout(300)

SYNTHEA = SHARED_DATA / "synthea-r4"
EXAMPLES = SHARED_DATA / "fhir-r4-examples"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("resources") / "data", free_port())
    proc.start("--block-interval", "0.05")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gateway(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gateway")
    gw = Gateway(node.url, node.organisation(), data, keys_dir=node.data_dir / "keys")
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture(scope="module")
def resources(gateway: Gateway) -> Resources:
    return Resources(gateway)


def principal_of(gateway: Gateway, scopes: str = "system/*.cruds") -> Principal:
    return Principal("test-client", gateway.organisation.did, parse_scopes(scopes), "TREAT")


def synthea_patient(name: str = "Abdul_Koepp") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Synthea patient and its records, bundle references rewritten to Type/id."""
    path = next(SYNTHEA.glob(f"{name}_*.json"))
    index = BundleIndex.of(orjson.loads(path.read_bytes()))
    groups, _ = index.split_by_patient()
    group = groups[0]
    patient = index.local_references(group.patient.resource)
    return patient, [index.local_references(e.resource) for e in group.entries]


def example(name: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((EXAMPLES / name).read_bytes())
    return value


def new_patient(resources: Resources, who: Principal) -> str:
    patient, _ = synthea_patient("Alexis_Toy")
    return resources.create(who, patient).resource["id"]


def test_create_patient_enrols_with_claim_code_and_reads_back(
    resources: Resources, gateway: Gateway
) -> None:
    who = principal_of(gateway)
    patient, _ = synthea_patient()
    stored = resources.create(who, patient)
    assert stored.created and stored.version == 1
    assert stored.claim_code and len(stored.claim_code) > 10
    assert stored.resource["id"] != patient["id"]  # the server assigns ids on create
    assert stored.resource["meta"]["lastUpdated"].endswith("Z")
    did = gateway.index.patient_did(stored.resource["id"])
    assert did is not None and did.startswith("did:")
    assert list(gateway.claims_dir.glob("claim-*.json"))
    read = resources.read(who, "Patient", stored.resource["id"])
    assert read.resource == stored.resource
    assert read.version == 1 and read.last_updated == stored.last_updated
    assert stored.claim_code not in repr(stored)
