"""The one table between chain result codes and the node API's HTTP errors.

The node answers a refused transaction or query with the HTTP status and the lowercase code
name below (`{"error": {"code": "erased", "message": ...}}`); a client maps either form back
to the chain code with `chain_code_of`. Both sides use this table, so they cannot drift.
"""

from __future__ import annotations

from careledger.chain.codes import Code

HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.MALFORMED: 400,
    Code.OVERSIZED: 413,
    Code.WRONG_CHAIN: 400,
    Code.UNKNOWN_TYPE: 400,
    Code.BAD_SIGNATURE: 400,
    Code.REPLAY: 400,
    Code.INVALID_PAYLOAD: 400,
    Code.UNAUTHORISED: 403,
    Code.NOT_FOUND: 404,
    Code.CONFLICT: 409,
    Code.NONCE_TOO_FAR: 400,
    Code.ERASED: 410,
    Code.UNKNOWN_SENDER: 403,
    Code.NO_CONSENT: 403,
    Code.INTERNAL: 500,
}


def chain_code(code: int) -> Code:
    """The Code for a number; INTERNAL for one this version does not know."""
    return Code(code) if code in Code._value2member_map_ else Code.INTERNAL


def http_status(code: int) -> int:
    return HTTP_STATUS[chain_code(code)]


def error_name(code: int) -> str:
    """The machine code of the node API's error body: the Code's name in lowercase."""
    return chain_code(code).name.lower()


def chain_code_of(name: str) -> Code | None:
    """The chain Code an API error name stands for; None for an HTTP-only error."""
    return Code.__members__.get(name.upper())
