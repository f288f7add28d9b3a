"""Canonical bytes: RFC 8785 (JSON Canonicalization Scheme).

Everything that is signed or hashed is first turned into these bytes, so that two
parties holding the same JSON value always sign and hash the same bytes.
"""

from typing import Any

import orjson
import rfc8785


class NotCanonical(ValueError):
    """Bytes that parse as JSON but are not in RFC 8785 form."""


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 encoding of a JSON value (floats are refused by the chain, not here)."""
    return rfc8785.dumps(value)


def parse_canonical(data: bytes) -> Any:
    """Parse JSON and insist that the input was already canonical."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NotCanonical(f"not JSON: {exc}") from exc
    if canonical_bytes(value) != data:
        raise NotCanonical("JSON is not in RFC 8785 canonical form")
    return value
