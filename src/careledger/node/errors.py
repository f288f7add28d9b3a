"""The node API's errors: JSON with a machine code and a message, and the right HTTP status.

Every error the node answers goes through `exception_handlers()` in `node/api.py`, whose
handlers are below; the authentication middleware (`node/auth.py`), which runs before the
router, renders its refusals with the same `handle_api_error`.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from careledger.protocol.errors import error_name, http_status

# A refusal sent before the request body was read closes the connection: the unread body is
# not drained (a client streaming hundreds of MiB would otherwise keep the server reading).
CLOSE = {"connection": "close"}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def from_chain_code(code: int, log: str) -> ApiError:
    return ApiError(http_status(code), error_name(code), log)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, "http_error", str(exc.detail), exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal", "internal error; the node keeps serving")
