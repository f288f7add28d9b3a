"""Who a request acts as: set by the bearer-token middleware (smart/middleware.py), read by
every route through `principal_of`.

A client is bound to a practitioner (the gateway acts with the practitioner's key, which the
organisation holds, so every access names them) or to the organisation itself. Its SMART
scopes narrow what consent allows; they never widen it: the node decides consent, the
gateway only refuses early what the token does not cover.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from careledger.gateway.outcome import FhirError
from careledger.gateway.smart.scopes import ScopeSet

PRINCIPAL = "careledger.principal"  # the ASGI scope key the middleware sets


@dataclass(frozen=True)
class Principal:
    client_id: str
    did: str  # the identity the gateway acts as: a practitioner, or the organisation
    scopes: ScopeSet
    purpose: str  # the PurposeOfUse code its reads state (registered with the client)

    def require(self, resource_type: str, interaction: str) -> None:
        """403 unless the token's scopes allow `interaction` (c r u d s) on the type."""
        if not self.scopes.allows(resource_type, interaction):
            raise FhirError(
                403,
                f"the token's scopes ({self.scopes.text}) do not allow "
                f"{_VERB[interaction]} {resource_type}",
            )


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def principal_of(request: Request) -> Principal:
    found = request.scope.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise FhirError(401, "a bearer token is needed", headers={"www-authenticate": "Bearer"})
    return found
