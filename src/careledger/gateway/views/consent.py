"""Consent: the grants the organisation and its practitioners hold (`consent/granted`, asked
as the organisation), each as `wallet/fhir_consent/to_fhir.py` writes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careledger.gateway.context import Gateway
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.views.base import Patients, only
from careledger.wallet.fhir_consent.to_fhir import consent_from_grant
from careledger.wallet.node_client import NodeError


class ConsentView:
    kind = "Consent"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.patients = Patients(gateway)
        self._as_organisation = gateway.node.signed_as(gateway.organisation)

    def search(self, principal: Principal, params: Mapping[str, str]) -> list[dict[str, Any]]:
        only(params, {"patient", "_id", "status"}, self.kind)
        grants = self._grants()
        if "patient" in params:
            did = self.patients.did(params["patient"])
            grants = [g for g in grants if g["patient"] == did]
        if "_id" in params:
            grants = [g for g in grants if g["id"] in params["_id"].split(",")]
        consents = [self._consent(g) for g in grants]
        if "status" in params:
            consents = [c for c in consents if c["status"] == params["status"]]
        return consents

    def read(self, principal: Principal, resource_id: str) -> dict[str, Any]:
        for grant in self._grants():
            if grant["id"] == resource_id:
                return self._consent(grant)
        raise FhirError(404, f"no Consent/{resource_id} among the organisation's grants")

    def _grants(self) -> list[dict[str, Any]]:
        """Every live grant to the organisation or one of its practitioners, newest first."""
        found: dict[str, dict[str, Any]] = {}
        for grantee in [
            self.gateway.organisation.did,
            *(k.did for k in self.gateway.practitioner_keys()),
        ]:
            try:
                rows = self._as_organisation.query("consent/granted", grantee=grantee)
            except NodeError as exc:
                raise FhirError(502, f"the node did not list the grants: {exc.message}") from None
            for grant in rows:
                found.setdefault(str(grant["id"]), grant)
        return sorted(found.values(), key=lambda g: (-int(g["height"]), str(g["id"])))

    def _consent(self, grant: Mapping[str, Any]) -> dict[str, Any]:
        consent = consent_from_grant(grant)
        consent["patient"] = self.patients.reference(str(grant["patient"]))
        return consent
