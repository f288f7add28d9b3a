"""What the references of a batch or transaction Bundle become, as HAPI FHIR resolves them:
an entry's `fullUrl` (`urn:uuid:...`) the `Type/id` given to that entry; a conditional
reference (`Practitioner?identifier=system|value`) its one match, stored (as the caller
finds it) or created by this Bundle; none is 400, several 412; an absolute url of this server
the relative one."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from careledger.gateway.bundle_entries import matches_criteria
from careledger.gateway.outcome import FhirError
from careledger.gateway.principal import Principal
from careledger.gateway.resources import Resources

CONDITIONAL = re.compile(r"([A-Z][A-Za-z]{1,63})\?(.*)", re.S)


def condition_query(text: str) -> dict[str, str]:
    """A condition's search parameters (`identifier=system|value&...`); 400 if none."""
    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs:
        raise FhirError(400, f"the condition {text!r} names no search parameter")
    return dict(pairs)


class References:
    def __init__(
        self, resources: Resources, principal: Principal, local: Callable[[str], str]
    ) -> None:
        """`local`: a url made relative to this server."""
        self.resources = resources
        self.principal = principal
        self.local = local
        self.by_full_url: dict[str, str] = {}  # fullUrl -> Type/id
        self.created: dict[str, Mapping[str, Any]] = {}  # Type/id -> what this bundle writes
        self._conditional: dict[str, str] = {}  # conditional reference -> Type/id

    def rewritten(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {
                key: (
                    self._reference(item, f"{path}.{key}")
                    if key == "reference" and isinstance(item, str)
                    else self.rewritten(item, f"{path}.{key}")
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.rewritten(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    def _reference(self, reference: str, path: str) -> str:
        found = self.by_full_url.get(reference)
        if found is not None:
            return found
        if reference.startswith("urn:uuid:"):
            raise FhirError(
                400,
                f"{path}: {reference} is no entry's fullUrl in this Bundle",
                issues=[(path, "unresolved urn:uuid reference")],
            )
        local = self.local(reference)
        conditional = CONDITIONAL.fullmatch(local)
        if conditional is None:
            return local if local != reference else reference
        resolved = self._conditional.get(local)
        if resolved is None:
            resolved = self._conditional[local] = self._match_reference(
                conditional.group(1), conditional.group(2), path
            )
        return resolved

    def _match_reference(self, resource_type: str, query: str, path: str) -> str:
        """A conditional reference's one match: stored, or created by this Bundle."""
        criteria = condition_query(query)
        stored = set(self.resources.matching(resource_type, criteria, self.principal))
        created = {
            target.split("/", 1)[1] for target in self.created_matching(resource_type, criteria)
        }
        matches = sorted(stored | created)
        if len(matches) == 1:
            return f"{resource_type}/{matches[0]}"
        status, many = (412, f"{len(matches)} match") if matches else (400, "none matches")
        raise FhirError(
            status,
            f"{path}: conditional reference {resource_type}?{query}: {many} (exactly one must)",
            issues=[(path, f"{resource_type}?{query}: {many}")],
        )

    def created_matching(self, resource_type: str, criteria: Mapping[str, str]) -> list[str]:
        """Resources this Bundle creates that match `_id`/`identifier` criteria."""
        found = []
        for target, resource in self.created.items():
            kind, _, resource_id = target.partition("/")
            if kind == resource_type and matches_criteria(resource, resource_id, criteria):
                found.append(target)
        return found
