"""Serving the built portal at `/` beside the node API and the gateway.

The pages are built by Vite from `portal/` into `web/static/` (`make run`, `make test`; not
committed). Every answer carries the same security headers: a Content-Security-Policy that
allows this origin only (no inline script or style, no third-party origin, no framing), and
`'wasm-unsafe-eval'` only so that the page can compile the Argon2id WebAssembly that opens a
claim package (it does not allow `eval` of JavaScript).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from careledger.web.enrolment import OpenEnrolment

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

# Paths the portal owns; every other path belongs to the node API or the gateway.
_FILES = ("/", "/index.html", "/favicon.svg")
_ASSETS = "/assets/"
_VOUCHER = "/portal/voucher"


def is_portal_path(path: str) -> bool:
    return path in _FILES or path == _VOUCHER or path.startswith(_ASSETS)


def portal_app(enrolment: OpenEnrolment, static: Path = STATIC) -> ASGIApp:
    """The built pages: index.html at `/`, the hashed bundles under `/assets/` (cached for a
    year: their names change with their content), 404 for anything else under the prefix;
    and `POST /portal/voucher` (web/enrolment.py)."""
    root = static.resolve()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == _VOUCHER:
            response: Response = await enrolment.handle(Request(scope, receive))
        else:
            response = _answer(root, scope)
        response.headers.update(SECURITY_HEADERS)
        await response(scope, receive, send)

    return app


def _answer(root: Path, scope: Scope) -> Response:
    if scope["method"] not in ("GET", "HEAD"):
        return PlainTextResponse("method not allowed", status_code=405, headers={"Allow": "GET"})
    if not (root / "index.html").is_file():
        return PlainTextResponse(
            "The portal is not built. Run `make run` (or `npm ci && npm run build` in portal/).",
            status_code=503,
        )
    path: str = scope["path"]
    if path in ("/", "/index.html"):
        return FileResponse(root / "index.html", headers={"Cache-Control": "no-cache"})
    target = (root / path.lstrip("/")).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return PlainTextResponse("not found", status_code=404)
    cache = "public, max-age=31536000, immutable" if path.startswith(_ASSETS) else "no-cache"
    return FileResponse(target, headers={"Cache-Control": cache})
