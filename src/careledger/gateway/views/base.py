"""What the three views share: the view protocol, search parameter checks, patients as FHIR
references, and small FHIR value helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from careledger.gateway.context import Gateway
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.wallet.audit import DID_SYSTEM
from careledger.wallet.node_client import NodeError

MAX_COUNT = 1000  # resources one search answers at most (and the largest `_count`)


class View(Protocol):
    """One read-only resource type: searched and read, never written."""

    kind: str

    def search(self, principal: Principal, params: Mapping[str, str]) -> list[dict[str, Any]]: ...

    def read(self, principal: Principal, resource_id: str) -> dict[str, Any]: ...


def only(params: Mapping[str, str], allowed: Iterable[str], kind: str) -> None:
    """400 for a search parameter the view does not support (never silently ignored)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise FhirError(
            400,
            f"{kind} search supports {', '.join(sorted(allowed))}, not {', '.join(unknown)}",
        )


class Patients:
    """Patients as the views show them: `Patient/<id>` where the index knows their Patient
    resource, beside their did."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def did(self, value: str) -> str:
        """The did of `patient=Patient/x` (or `x`, or a did itself); 404-free: an unknown
        patient matches nothing."""
        text = value.removeprefix(self.gateway.base_url or "").lstrip("/")
        if text.startswith("did:"):
            return text
        patient_id = text.removeprefix("Patient/")
        return self.gateway.index.patient_did(patient_id) or f"unknown:{patient_id}"

    def reference(self, did: str) -> dict[str, Any]:
        reference: dict[str, Any] = {
            "type": "Patient",
            "identifier": {"system": DID_SYSTEM, "value": did},
        }
        patient_id = self.gateway.index.patient_id(did)
        if patient_id is not None:
            reference["reference"] = f"Patient/{patient_id}"
        return reference


def node_answer(method: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A node call's answer, or 502 when the node does not give one."""
    try:
        return method(*args)
    except NodeError as exc:
        raise FhirError(502, f"the node did not answer: {exc.message}") from None


def fhir_instant(block_time: str) -> str:
    """A block time (RFC 3339, nanoseconds) as a FHIR instant in milliseconds."""
    head, _, fraction = block_time.rstrip("Z").partition(".")
    return f"{head}.{(fraction + '000')[:3]}Z"


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}
