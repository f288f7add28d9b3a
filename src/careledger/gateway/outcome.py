"""FHIR errors: every refusal of the gateway is an OperationOutcome with the right status.

Raise `FhirError` anywhere below a route; the gateway's one exception-handler table
(`HANDLERS`, installed by app.py) renders it, and renders what the wallet SDK raises
(`RecordsError`, `InvalidResource`) the same way, so a route never builds an error response
itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from careledger.wallet.fhir import InvalidResource
from careledger.wallet.refs import RecordsError

FHIR_JSON = "application/fhir+json"

# The OperationOutcome issue type (http://hl7.org/fhir/issue-type) of each status.
ISSUE_TYPE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    500: "exception",
    502: "exception",
    503: "transient",
}


class FhirError(Exception):
    """A refusal: HTTP `status`, a `diagnostics` text for people, the issue `code` (default:
    the status's), `expressions`: FHIRPath-like locations of each problem (422)."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        *,
        code: str | None = None,
        issues: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code or ISSUE_TYPE.get(status, "processing")
        self.issues = tuple(issues)  # (location, message) of each problem, if many
        self.headers = dict(headers or {})
        self.entry: int | None = None  # the write of a batch it is about (bundle entries)

    def outcome(self) -> dict[str, Any]:
        if not self.issues:
            return operation_outcome(self.code, self.diagnostics)
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": self.code,
                    "diagnostics": message,
                    "expression": [location],
                }
                for location, message in self.issues
            ],
        }


def mark_entry(exc: Exception, index: int) -> None:
    """Note on a refusal (a FhirError, or the SDK's InvalidResource or RecordsError, kept as
    raised) which write of a batch it is about, so that a Bundle's answer names the entry."""
    exc.__dict__["entry"] = index


def entry_of(exc: Exception) -> int | None:
    found = exc.__dict__.get("entry")
    return found if isinstance(found, int) else None


def operation_outcome(
    code: str, diagnostics: str, severity: str = "error", expression: Sequence[str] = ()
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def from_records_error(exc: RecordsError) -> FhirError:
    """The wallet SDK's refusal (its status follows HTTP: the node's 403 no consent, 404,
    409, 410 erased or deleted, 413, 502 integrity) as a FHIR error."""
    status = exc.status if exc.status in ISSUE_TYPE else 500
    return FhirError(status, str(exc))


def from_invalid_resource(exc: InvalidResource) -> FhirError:
    issues = [(error.path, error.message) for error in exc.errors]
    return FhirError(422, str(exc), issues=issues)


def outcome_response(error: FhirError) -> Response:
    return Response(
        orjson.dumps(error.outcome()),
        status_code=error.status,
        media_type=FHIR_JSON,
        headers=error.headers,
    )


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return outcome_response(exc)


async def _records_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecordsError)
    return outcome_response(from_records_error(exc))


async def _invalid_resource(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidResource)
    return outcome_response(from_invalid_resource(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return outcome_response(FhirError(exc.status_code, str(exc.detail), headers=exc.headers))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return outcome_response(FhirError(500, "internal error; the gateway keeps serving"))


HANDLERS: dict[Any, Any] = {
    FhirError: _fhir_error,
    RecordsError: _records_error,
    InvalidResource: _invalid_resource,
    HTTPException: _http_error,
    Exception: _unexpected,
}
