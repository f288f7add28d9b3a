"""`POST /fhir/Patient/{id}/$break-glass`: a practitioner's emergency access through the gateway.

    POST /fhir/Patient/123/$break-glass
    {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "unconscious in A&E, allergies unknown"},
        {"name": "scope", "valueCode": "medications"}]}          # optional, repeats
    -> 200 {"resourceType": "Parameters", "parameter": [
        {"name": "id", "valueString": "<break-glass id>"},
        {"name": "until", "valueInstant": "2026-11-24T18:40:00Z"},
        {"name": "scope", "valueCode": "medications"}, ...]}

The gateway acts with the key of the practitioner the client is bound to (design change 25)
through the wallet SDK (wallet/break_glass.py): it submits `consent/break_glass` (the chain
records the patient's alert in the same block), collects the node's share of the patient's
escrow, opens it, and keeps the emergency keys in memory until `until`
(gateway/emergencies.py). Meanwhile that practitioner's reads of that patient (read, vread,
history, `$everything`) state purpose ETREAT and open the broken scopes with those keys. A
search never finds by a break-glass (index/search.py `Access`): the patient's page is
`$everything`. A break-glass names a person: a client bound to the organisation is refused.

`scope` defaults to the scopes the patient opened but sensitive; `seconds` (optional, 1 to
MAX_BREAK_GLASS_SECONDS, the default) shortens the window. Refusals are OperationOutcomes:
400 a malformed body, no reason, a reason over MAX_REASON characters, an unknown scope;
403 a client not bound to a practitioner, a token that may not read Patient, a patient who
opened no scope to emergency access, a scope the patient did not open, too few shares
released; 404 an unknown patient; 409 a break-glass of this practitioner for this patient
still runs (the chain allows one at a time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from careledger.chain.modules.consent import MAX_BREAK_GLASS_SECONDS
from careledger.chain.modules.consent.messages import MAX_REASON
from careledger.crypto.scopekeys import SCOPES
from careledger.gateway.context import Gateway
from careledger.gateway.http import FhirResponse, check_format, json_body
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal, principal_of
from careledger.gateway.stored import check_id
from careledger.wallet.break_glass import EmergencyKeys, break_glass
from careledger.wallet.node_client import NodeClient, NodeError

MAX_PARAMETERS_BYTES = 16 * 1024
_VALUE_KEYS = {
    "reason": ("valueString",),
    "scope": ("valueCode", "valueString"),
    "seconds": ("valueInteger", "valuePositiveInt", "valueUnsignedInt"),
}


@dataclass(frozen=True)
class BreakGlassRequest:
    reason: str
    scopes: tuple[str, ...]
    seconds: int


def break_glass_routes(gateway: Gateway) -> list[BaseRoute]:
    async def endpoint(request: Request) -> Response:
        check_format(request)
        principal = principal_of(request)
        _require_practitioner(gateway, principal)
        check_id(request.path_params["id"])
        asked = parse_parameters(await json_body(request, MAX_PARAMETERS_BYTES))
        keys = await run_in_threadpool(
            perform, gateway, principal, request.path_params["id"], asked
        )
        return FhirResponse(result_parameters(keys))

    return [Route("/Patient/{id}/$break-glass", endpoint, methods=["POST"])]


def _require_practitioner(gateway: Gateway, principal: Principal) -> None:
    if principal.did == gateway.organisation.did:
        raise FhirError(
            403,
            "this client acts as the organisation, and a break-glass names the person who "
            "breaks it: use a client bound to a practitioner (careledger clients add "
            "--practitioner DID)",
        )
    principal.require("Patient", "r")


def parse_parameters(body: Mapping[str, Any]) -> BreakGlassRequest:
    """The operation's input Parameters: 400 for anything else."""
    if body.get("resourceType") != "Parameters":
        raise FhirError(
            400, f"$break-glass takes a Parameters resource, not {body.get('resourceType')}"
        )
    given = body.get("parameter", [])
    if not isinstance(given, list):
        raise FhirError(400, "Parameters.parameter must be a list")
    values: dict[str, list[Any]] = {}
    for index, parameter in enumerate(given):
        name, value = _parameter(parameter, index)
        values.setdefault(name, []).append(value)
    reason = _one(values, "reason")
    if not isinstance(reason, str) or not reason.strip():
        raise FhirError(
            400, "a break-glass states its reason (parameter 'reason', 1 to 500 characters)"
        )
    if len(reason) > MAX_REASON:
        raise FhirError(400, f"the reason is {len(reason)} characters: at most {MAX_REASON}")
    scopes = tuple(str(s) for s in values.get("scope", []))
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise FhirError(400, f"unknown scope(s) {', '.join(unknown)}: one of {', '.join(SCOPES)}")
    seconds = _one(values, "seconds", MAX_BREAK_GLASS_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise FhirError(400, "parameter 'seconds' is an integer")
    if not 0 < seconds <= MAX_BREAK_GLASS_SECONDS:
        raise FhirError(400, f"a break-glass lasts 1 to {MAX_BREAK_GLASS_SECONDS} seconds")
    return BreakGlassRequest(reason, tuple(dict.fromkeys(scopes)), seconds)


def _parameter(parameter: Any, index: int) -> tuple[str, Any]:
    where = f"Parameters.parameter[{index}]"
    if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
        raise FhirError(400, f"{where} is not a parameter with a name")
    name = parameter["name"]
    if name not in _VALUE_KEYS:
        raise FhirError(400, f"{where}: $break-glass takes reason, scope and seconds, not {name!r}")
    present = [key for key in _VALUE_KEYS[name] if key in parameter]
    if len(present) != 1:
        raise FhirError(400, f"{where} ({name}) needs one of {', '.join(_VALUE_KEYS[name])}")
    return name, parameter[present[0]]


def _one(values: Mapping[str, list[Any]], name: str, default: Any = None) -> Any:
    found = values.get(name, [])
    if len(found) > 1:
        raise FhirError(400, f"parameter {name!r} is given {len(found)} times")
    return found[0] if found else default


def perform(
    gateway: Gateway, principal: Principal, patient_id: str, asked: BreakGlassRequest
) -> EmergencyKeys:
    """Break the glass as the principal's practitioner; keep the keys until `until`."""
    patient = gateway.index.patient_did(patient_id)
    if patient is None:
        raise FhirError(404, f"Patient/{patient_id} is not known here")
    practitioner = gateway.key_of(principal.did)
    _require_escrow(gateway.node.signed_as(practitioner), patient)
    running = gateway.emergencies.active(principal.did, patient)
    if running is not None:
        raise FhirError(
            409,
            f"your break-glass {running.keys.glass} of this patient runs until "
            f"{instant(running.keys.until)}: read the records now",
        )
    keys = break_glass(
        gateway.node,
        practitioner,
        patient,
        asked.reason,
        scopes=asked.scopes,
        seconds=asked.seconds,
        # the signer of the practitioner's records client: one nonce counter per did
        signer=gateway.records_for(principal).signer,
    )
    gateway.emergencies.keep(principal.did, keys)
    return keys


def _require_escrow(node: NodeClient, patient: str) -> None:
    """403 when the patient opened no scope to emergency access: nothing could be released,
    so the chain is not asked to record a break-glass that would open nothing."""
    try:
        node.query("consent/emergency", patient=patient)
    except NodeError as exc:
        if exc.status == 404:
            raise FhirError(
                403,
                "this patient has not opened their records to emergency access: there is "
                "nothing a break-glass could open",
            ) from None
        raise FhirError(
            502, f"the node did not answer about emergency access: {exc.message}"
        ) from None


def result_parameters(keys: EmergencyKeys) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "id", "valueString": keys.glass},
        {"name": "until", "valueInstant": instant(keys.until)},
    ]
    parameters += [{"name": "scope", "valueCode": scope} for scope in keys.scopes]
    return {"resourceType": "Parameters", "parameter": parameters}


def instant(unix_seconds: int) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
