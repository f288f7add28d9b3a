"""GET /fhir/metadata and /fhir/.well-known/smart-configuration: public, correct R4, and
enough for real SMART clients (fhirclient, smart-fetch) to find the token endpoint."""

from __future__ import annotations

import httpx
from fhirclient import client as fhirclient
from fhirclient.models.capabilitystatement import CapabilityStatement

from careledger.gateway.capability import (
    OAUTH_URIS,
    interactions_of,
    search_parameters_of,
    served_types,
)
from careledger.gateway.smart.backend_client import sign_assertion
from gatewayutil import GatewayProcess


def test_metadata_is_public_and_a_valid_r4_capability_statement(gateway: GatewayProcess) -> None:
    reply = httpx.get(gateway.fhir_url + "/metadata")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/fhir+json")
    document = reply.json()
    statement = CapabilityStatement(document, strict=True)  # fhirclient's R4 model
    assert statement.fhirVersion == "4.0.1"
    assert "json" in statement.format
    rest = document["rest"][0]
    assert rest["mode"] == "server"
    coding = rest["security"]["service"][0]["coding"][0]
    assert coding["code"] == "SMART-on-FHIR"
    (oauth,) = [e for e in rest["security"]["extension"] if e["url"] == OAUTH_URIS]
    assert oauth["extension"] == [{"url": "token", "valueUri": gateway.token_url}]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}


def test_metadata_lists_what_the_table_says(gateway: GatewayProcess) -> None:
    document = httpx.get(gateway.fhir_url + "/metadata").json()
    resources = {entry["type"]: entry for entry in document["rest"][0]["resource"]}
    assert sorted(resources) == served_types()
    assert "Bundle" not in resources and "OperationOutcome" not in resources
    for name, entry in resources.items():
        assert tuple(i["code"] for i in entry["interaction"]) == interactions_of(name)
        assert tuple(p["name"] for p in entry["searchParam"]) == search_parameters_of(name)
    patient = resources["Patient"]
    names = {p["name"] for p in patient["searchParam"]}
    assert {"_id", "identifier", "family", "given", "birthdate", "gender"} <= names
    assert patient["operation"][0]["name"] == "everything"
    observation = {p["name"]: p["type"] for p in resources["Observation"]["searchParam"]}
    assert observation["code"] == "token" and observation["date"] == "date"
    assert observation["patient"] == "reference"
    assert {i["code"] for i in resources["AuditEvent"]["interaction"]} == {"read", "search-type"}
    assert "create" in {i["code"] for i in resources["Observation"]["interaction"]}


def test_metadata_answers_406_for_xml(gateway: GatewayProcess) -> None:
    reply = httpx.get(gateway.fhir_url + "/metadata", params={"_format": "xml"})
    assert reply.status_code == 406
    assert reply.json()["resourceType"] == "OperationOutcome"


def test_smart_configuration_is_public(gateway: GatewayProcess) -> None:
    reply = httpx.get(gateway.fhir_url + "/.well-known/smart-configuration")
    assert reply.status_code == 200
    config = reply.json()
    assert config["token_endpoint"] == gateway.token_url
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {
        "RS384",
        "ES384",
        "EdDSA",
    }
    assert config["grant_types_supported"] == ["client_credentials"]
    assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(
        config["capabilities"]
    )
    assert "system/*.rs" in config["scopes_supported"]


def test_fhirclient_finds_the_token_endpoint_in_the_capability_statement(
    gateway: GatewayProcess,
) -> None:
    """fhirclient 4.4 reads /metadata, takes the token URL from the oauth-uris extension
    (it looks nowhere else), posts our signed assertion there and gets a token."""
    client = gateway.client
    settings = {
        "app_id": client.client_id,
        "api_base": gateway.fhir_url + "/",
        "scope": "system/Patient.rs",
        "jwt_token": sign_assertion(client.key, client.client_id, gateway.token_url),
    }
    smart = fhirclient.FHIRClient(settings=settings, save_func=lambda state: None)
    smart.wants_patient = False  # a backend service asks for no launch context
    assert smart.prepare() is False  # capability read; no token yet
    assert smart.server.auth._token_uri == gateway.token_url
    smart.server.authorize()
    assert smart.ready
    token = smart.server.auth.access_token
    reply = httpx.get(gateway.fhir_url + "/Patient", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code != 401
