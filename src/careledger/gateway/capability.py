"""What the gateway says it does: GET /fhir/metadata (the R4 CapabilityStatement) and
GET /fhir/.well-known/smart-configuration (SMART App Launch 2.x discovery), both public.

The resources, interactions and search parameters listed come from the tables below, and
only from them: when a route or a search parameter is added or dropped, its row changes here
(tests/gateway/test_capability.py reads them back). The token endpoint is named both in the
SMART `oauth-uris` security extension (where fhirclient looks) and in smart-configuration
(where smart-fetch and SMART v2 clients look).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from careledger import __version__
from careledger.gateway.context import Gateway
from careledger.gateway.http import FhirResponse, check_format
from careledger.gateway.resource_types import (
    DIRECTORY_TYPES,
    NOT_STORED,
    RESOURCE_TYPES,
    VIEW_TYPES,
)
from careledger.gateway.smart.clients import ALGORITHMS
from careledger.gateway.smart.tokens import token_url

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"

# --- the table: what each kind of resource supports --------------------------------------

# A patient's record (every stored type that is neither directory nor view) and a directory
# entry: the full REST set. A view of the chain (AuditEvent, Consent, Provenance): read only.
WRITABLE = (
    "create",
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "search-type",
)
READ_ONLY = ("read", "search-type")
SYSTEM_INTERACTIONS = ("transaction", "batch")

# The type of each search parameter (http://hl7.org/fhir/search-param-type).
PARAMETER_TYPES = {
    "_id": "token",
    "_lastUpdated": "date",
    "patient": "reference",
    "subject": "reference",
    "identifier": "token",
    "code": "token",
    "date": "date",
    "status": "token",
    "category": "token",
    "name": "string",
    "family": "string",
    "given": "string",
    "birthdate": "date",
    "gender": "token",
}
EVERY_TYPE = ("_id", "_lastUpdated")  # searchable on every type
PATIENT_RECORD = ("patient",)  # every patient's record but Patient itself
# Beyond those: the parameters of the issue, on the types FHIR R4 defines them for.
SEARCH_PARAMETERS: dict[str, tuple[str, ...]] = {
    "Patient": ("identifier", "name", "family", "given", "birthdate", "gender"),
    "Observation": ("subject", "identifier", "code", "date", "status", "category"),
    "Condition": ("subject", "identifier", "code", "category"),
    "Encounter": ("subject", "identifier", "date", "status"),
    "Procedure": ("subject", "identifier", "code", "date", "status"),
    "DiagnosticReport": ("subject", "identifier", "code", "date", "status", "category"),
    "Immunization": ("identifier", "date", "status"),
    "MedicationRequest": ("subject", "identifier", "code", "status", "category"),
    "AllergyIntolerance": ("identifier", "code", "date", "category"),
    "CarePlan": ("subject", "identifier", "date", "status", "category"),
    "CareTeam": ("subject", "identifier", "date", "status", "category"),
    "Goal": ("subject", "identifier", "category"),
    "Claim": ("identifier", "status"),
    "ExplanationOfBenefit": ("identifier", "status"),
    "ImagingStudy": ("subject", "identifier", "status"),
    "DocumentReference": ("subject", "identifier", "date", "status", "category"),
    "Organization": ("identifier", "name"),
    "Practitioner": ("identifier", "name", "family", "given", "gender"),
    "PractitionerRole": ("identifier",),
    "Location": ("identifier", "name", "status"),
    "AuditEvent": ("date",),
    "Consent": ("date", "status", "category"),
    "Provenance": (),
}
# Operations: Patient/{id}/$everything.
OPERATIONS = {
    "Patient": (("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),),
}


def served_types() -> list[str]:
    return sorted(RESOURCE_TYPES - NOT_STORED)


def interactions_of(resource_type: str) -> tuple[str, ...]:
    return READ_ONLY if resource_type in VIEW_TYPES else WRITABLE


def search_parameters_of(resource_type: str) -> tuple[str, ...]:
    """Every search parameter of the type, in the order listed."""
    patients = (
        () if resource_type == "Patient" or resource_type in DIRECTORY_TYPES else PATIENT_RECORD
    )
    return EVERY_TYPE + patients + SEARCH_PARAMETERS.get(resource_type, ())


# --- the documents ------------------------------------------------------------------------


def capability_statement(fhir_base: str, token_endpoint: str, date: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "CareLedger",
        "kind": "instance",
        "software": {"name": "CareLedger FHIR gateway", "version": __version__},
        "implementation": {"description": "CareLedger FHIR R4 gateway", "url": fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(token_endpoint),
                "resource": [_resource(name) for name in served_types()],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }


def _security(token_endpoint: str) -> dict[str, Any]:
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [{"url": "token", "valueUri": token_endpoint}],
            }
        ],
        "service": [
            {
                "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}],
                "text": "SMART Backend Services: client_credentials with private_key_jwt",
            }
        ],
        "description": "Every request but this statement, smart-configuration and the token "
        "endpoint needs a bearer token (docs/gateway.md, Authentication).",
    }


def _resource(resource_type: str) -> dict[str, Any]:
    interactions = interactions_of(resource_type)
    entry: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update" if "update" in interactions else "no-version",
        "readHistory": "vread" in interactions,
        "updateCreate": "update" in interactions,
        "conditionalCreate": "create" in interactions,
        "searchParam": [
            {"name": name, "type": PARAMETER_TYPES[name]}
            for name in search_parameters_of(resource_type)
        ],
    }
    operations = OPERATIONS.get(resource_type, ())
    if operations:
        entry["operation"] = [{"name": name, "definition": url} for name, url in operations]
    return entry


def smart_configuration(token_endpoint: str) -> dict[str, Any]:
    return {
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


def capability_routes(gateway: Gateway) -> list[BaseRoute]:
    """GET /fhir/metadata and GET /fhir/.well-known/smart-configuration (mounted at /fhir)."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    async def metadata(request: Request) -> FhirResponse:
        check_format(request)
        base = gateway.fhir_base(request)
        return FhirResponse(capability_statement(base, token_url(gateway, request), started))

    async def configuration(request: Request) -> JSONResponse:
        return JSONResponse(smart_configuration(token_url(gateway, request)))

    return [
        Route("/metadata", metadata, methods=["GET"]),
        Route("/.well-known/smart-configuration", configuration, methods=["GET"]),
    ]
