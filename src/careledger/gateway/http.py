"""FHIR over HTTP: JSON responses, request bodies, versions in ETags, format negotiation.

JSON only (`application/fhir+json`, also `application/json`); `_format` and `Accept` that
ask for XML or anything else get 406. A body is read once, bounded (413), and must be a JSON
object naming its resourceType (400).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from careledger.gateway.outcome import FHIR_JSON, FhirError

MAX_RESOURCE_BYTES = 2 * 1024 * 1024  # one resource
MAX_BUNDLE_BYTES = 32 * 1024 * 1024  # a batch or transaction Bundle (Synthea's reach ~4 MiB)
_JSON_FORMATS = {"json", FHIR_JSON, "application/json", "application/json+fhir"}
_WEAK_ETAG = re.compile(r'W/"([0-9]{1,18})"')


class FhirResponse(Response):
    media_type = FHIR_JSON

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(orjson.dumps(content), status_code, headers)


def check_format(request: Request) -> None:
    """406 unless the client accepts FHIR JSON (`_format` wins over `Accept`)."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        if wanted not in _JSON_FORMATS:
            raise FhirError(406, f"_format {wanted!r} is not served: only JSON")
        return
    accept = request.headers.get("accept", "")
    if not accept:
        return
    kinds = {part.split(";")[0].strip() for part in accept.split(",")}
    if kinds & (_JSON_FORMATS | {"*/*", "application/*"}):
        return
    raise FhirError(406, f"Accept {accept!r} is not served: only application/fhir+json")


async def json_body(request: Request, max_bytes: int = MAX_RESOURCE_BYTES) -> dict[str, Any]:
    """The request body as a JSON object: 413 over `max_bytes` (read in chunks, so a chunked
    body is cut off as early as a declared one), 415 for a non-JSON media type, 400 malformed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FhirError(413, f"body over {max_bytes} bytes", headers={"connection": "close"})
    kind = request.headers.get("content-type", FHIR_JSON).split(";")[0].strip()
    if kind not in _JSON_FORMATS:
        raise FhirError(415, f"content type {kind!r} is not served: send application/fhir+json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise FhirError(413, f"body over {max_bytes} bytes", headers={"connection": "close"})
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirError(400, f"body is not JSON: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise FhirError(400, "body must be a JSON object with a resourceType")
    return value


def etag(version: int) -> str:
    return f'W/"{version}"'


def version_of_etag(value: str) -> int:
    """The version an If-Match names (`W/"3"`, also `"3"`, and a bare `3` as HAPI takes it:
    fhirpy sends meta.versionId as it is): 400 if it names none."""
    text = value.strip()
    match = (
        _WEAK_ETAG.fullmatch(text)
        or re.fullmatch(r'"([0-9]{1,18})"', text)
        or re.fullmatch(r"([0-9]{1,18})", text)
    )
    if match is None:
        raise FhirError(400, f'If-Match {value!r} is not a version ETag like W/"3"')
    return int(match.group(1))


def http_date(iso_instant: str) -> str:
    """An RFC 7231 date for Last-Modified from a FHIR instant."""
    return format_datetime(datetime.fromisoformat(iso_instant.replace("Z", "+00:00")), usegmt=True)
