"""The node API's perimeter: one ASGI middleware that authenticates every request and caps
every request body before any route runs.

`GET /status` is public. Every other request must be signed (`crypto/requestsig.py`) by a
registered, active identity, for this chain and this node, fresh, and never seen before.
The order is chosen so that nothing is read or stored for a request that cannot be genuine:

1. the route's perimeter (`ApiRoute`): a request with more body than the route takes (a GET
   with any body at all, a declared length over the route's limit) is refused at once, from
   its headers, and the connection is closed rather than drained;
2. the Authorization header's form, the timestamp's freshness, the replay cache (lookup only),
   then the did's registration and current key (one state query);
3. only then the body, read with the route's cap while it streams (chunked too);
4. the signature over the body's hash; then a registered caller's nonce is remembered (only
   a request that verified, of an identity a member vouched for, occupies the replay cache);
5. the caller (`Caller(did, kind, org)`) goes on the request's state for the route to
   authorise (org: the organisation a practitioner acts for, an organisation's own did).

One exception to "registered": an unregistered did may `POST /tx` exactly one transaction that
registers that same did (`SELF_REGISTRATION`), signed with the key its did:key names, so a
patient can register from their own device. The chain checks the rest (its voucher or
enrolment).

The replay cache (`node/replay_cache.py`) holds registered callers' accepted nonces while
their timestamps are fresh (a timestamp more than MAX_FUTURE_MS ahead is refused): a did over
its share gets 429, and when the cache is full signed requests get 503 until entries expire
(fail closed). An unregistered did's registration is not remembered (see `_authenticate`), so
keys made by the thousand cannot fill it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careledger.chain.codes import Code, TxFailure
from careledger.chain.modules.identity import SELF_REGISTRATIONS
from careledger.chain.tx import decode_tx
from careledger.consensus.driver import ConsensusDriver
from careledger.crypto.keys import KeyError_, ed25519_from_did
from careledger.crypto.requestsig import (
    SCHEME,
    Audience,
    BadAuthorization,
    SignedRequest,
    check_fresh,
    check_signature,
    new_node_id,
    parse_authorization,
)
from careledger.node.datadir import DataDir
from careledger.node.errors import CLOSE, ApiError, handle_api_error
from careledger.node.replay_cache import ReplayCache, ReplayCacheFull, Replayed, ReplayShareUsed

# The transactions an unregistered did may send (the chain's list: chain/modules/identity).
SELF_REGISTRATION = frozenset(SELF_REGISTRATIONS)
UNREGISTERED = "unregistered"  # the kind of a caller that is registering itself
NODE_ID_FILE = "node_id"
CHALLENGE = {"www-authenticate": SCHEME}

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


# --- what a route admits ----------------------------------------------------------------


@dataclass(frozen=True)
class Perimeter:
    """What a route admits: at most `max_body` body bytes (0: none); `public`: no signature;
    `registers`: an unregistered did may call it with its own registration."""

    max_body: int = 0
    public: bool = False
    registers: bool = False


SIGNED_NO_BODY = Perimeter()


class ApiRoute(Route):
    """A node API route with its perimeter; any other route is signed and takes no body."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] | None = None,
        perimeter: Perimeter = SIGNED_NO_BODY,
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods) if methods else None)
        self.perimeter = perimeter


def perimeter_of(routes: Sequence[BaseRoute], scope: Scope) -> Perimeter:
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            found = getattr(route, "perimeter", SIGNED_NO_BODY)
            return found if isinstance(found, Perimeter) else SIGNED_NO_BODY
    return SIGNED_NO_BODY  # unknown paths and wrong methods: signed first, 404 or 405 after


# --- who is calling -----------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    did: str
    kind: str  # patient, practitioner, organisation, node, or UNREGISTERED (registering itself)
    org: str = ""  # the member it acts for: itself, a practitioner's or node's; "" otherwise


def caller_of(request: Request) -> Caller:
    """The authenticated caller the middleware put on the request."""
    caller = request.scope.get("state", {}).get("caller")
    if not isinstance(caller, Caller):
        raise ApiError(401, "unauthenticated", "this route needs a signed request")
    return caller


@dataclass(frozen=True)
class Registered:
    kind: str
    signing_key: bytes
    active: bool  # may act now: for an organisation, a member; for a practitioner, of one
    org: str  # the organisation it acts for: its own did, a practitioner's; "" otherwise


async def registered_identity(driver: ConsensusDriver, did: str) -> Registered | None:
    found = await driver.query("identity/identity", orjson.dumps({"did": did}), inline=True)
    if found.code == Code.NOT_FOUND:
        return None
    if found.code != Code.OK:
        raise BadAuthorization(f"cannot look up {did}: {found.log}")
    ident = orjson.loads(found.value)
    key = bytes.fromhex(ident["signing_key"])
    kind = str(ident["kind"])
    return Registered(kind, key, bool(ident["active"]), _acting_for(did, kind, ident))


def _acting_for(did: str, kind: str, ident: dict[str, Any]) -> str:
    if kind == "organisation":
        return did
    return str(ident.get("org", "")) if kind in ("practitioner", "node") else ""


# --- the middleware -------------------------------------------------------------------------


class Authentication:
    """The ASGI middleware (see the module's docstring); errors render with the API's handler."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        driver: ConsensusDriver,
        audience: Audience,
        replay: ReplayCache | None = None,
        clock_ms: Clock = wall_clock_ms,
    ) -> None:
        self.app = app
        self.driver = driver
        self.audience = audience
        self.replay = replay if replay is not None else ReplayCache()
        self.clock_ms = clock_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route takes one: refuse rather than pass it by
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._admit(scope, receive)
        except ApiError as exc:
            response = await handle_api_error(Request(scope), exc)
            await response(scope, receive, send)
            return
        except ClientDisconnect:
            return
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """The request's receive (its body replayed from memory) once it is admitted."""
        perimeter = perimeter_of(scope["app"].routes, scope)
        has_body = _refuse_oversized(scope, perimeter)
        if perimeter.public:
            return receive
        try:
            return await self._authenticate(scope, receive, perimeter, has_body)
        except BadAuthorization as exc:
            headers = {**CHALLENGE, **(CLOSE if has_body else {})}
            raise ApiError(401, "unauthenticated", str(exc), headers) from None

    async def _authenticate(
        self, scope: Scope, receive: Receive, perimeter: Perimeter, has_body: bool
    ) -> Receive:
        headers = _headers(scope)
        signed = parse_authorization(headers.get("authorization"))
        check_fresh(signed, self.clock_ms())
        try:
            self.replay.check(signed)
        except Replayed as exc:
            raise ApiError(401, "replayed", str(exc), CLOSE if has_body else None) from None
        public_key, kind, org = await self._key_of(signed.did, perimeter)
        body = await _read_capped(receive, perimeter.max_body) if has_body else b""
        check_signature(
            signed,
            public_key,
            self.audience,
            scope["method"],
            _target(scope),
            hashlib.sha256(body).digest(),
        )
        if kind == UNREGISTERED:
            # Not remembered: anyone can make keys, so their nonces would be a cache anyone
            # fills. A replay of a registration only resubmits its transaction, which any
            # registered caller may submit anyway and the chain takes once (nonce, voucher).
            _require_self_registration(signed.did, body)
        else:
            self._remember(signed)
        scope.setdefault("state", {})["caller"] = Caller(signed.did, kind, org)
        return _replaying(body, receive)

    async def _key_of(self, did: str, perimeter: Perimeter) -> tuple[bytes, str, str]:
        """The did's current key, kind and organisation; BadAuthorization for anyone who may
        not call."""
        found = await registered_identity(self.driver, did)
        if found is not None and found.active:
            return found.signing_key, found.kind, found.org
        if found is None and perimeter.registers:
            try:
                return ed25519_from_did(did), UNREGISTERED, ""
            except KeyError_ as exc:
                raise BadAuthorization(str(exc)) from None
        state = "no longer active" if found is not None else "not a registered identity"
        raise BadAuthorization(f"{did} is {state}")

    def _remember(self, signed: SignedRequest) -> None:
        try:
            self.replay.remember(signed, self.clock_ms())
        except Replayed as exc:
            raise ApiError(401, "replayed", str(exc)) from None
        except ReplayShareUsed as exc:
            raise ApiError(429, "rate_limited", str(exc), {"retry-after": "5"}) from None
        except ReplayCacheFull as exc:
            raise ApiError(503, "busy", str(exc), {"retry-after": "5"}) from None


def authentication(
    driver: ConsensusDriver, data: DataDir, replay: ReplayCache | None = None
) -> Middleware:
    """The middleware for a node whose chain and node id are those of `data` (`replay`: a
    replay cache of other bounds than the default, for tests)."""
    return Middleware(Authentication, driver=driver, audience=node_audience(data), replay=replay)


def node_audience(data: DataDir) -> Audience:
    return Audience(data.load_genesis().chain_id, load_node_id(data.root))


def load_node_id(root: Path) -> str:
    """This node's id (`GET /status`, and the audience of every request to it): made once, at
    random, and kept in the data directory. Not the organisation's did: one organisation may
    run several nodes, and a request for one must not pass at another."""
    path = root / NODE_ID_FILE
    if not path.exists():
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_node_id() + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    return path.read_text().strip()


# --- bodies ---------------------------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _refuse_oversized(scope: Scope, perimeter: Perimeter) -> bool:
    """Whether the request has a body; ApiError(413) if the route takes less, from headers."""
    headers = _headers(scope)
    chunked = "transfer-encoding" in headers
    try:
        declared = int(headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(400, "malformed", "Content-Length is not a number", CLOSE) from None
    if perimeter.max_body == 0 and (chunked or declared > 0):
        raise ApiError(413, "oversized", f"{scope['method']} {scope['path']} takes no body", CLOSE)
    if declared > perimeter.max_body:
        raise ApiError(413, "oversized", _over(perimeter.max_body), CLOSE)
    return chunked or declared > 0


async def _read_capped(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "oversized", _over(limit), CLOSE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _over(limit: int) -> str:
    return f"request body over this route's limit of {limit} bytes"


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the route the body already read, then the connection's events."""
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


def _target(scope: Scope) -> str:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


def _require_self_registration(did: str, body: bytes) -> None:
    """BadAuthorization unless `body` is `{"tx": ...}` registering `did`, sent by `did`."""
    try:
        value = orjson.loads(body)
        tx = decode_tx(base64.b64decode(value["tx"], validate=True)).tx
    except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error, TxFailure):
        tx = None
    if tx is None or tx.sender != did or tx.type not in SELF_REGISTRATION:
        raise ApiError(
            401,
            "unauthenticated",
            f"{did} is not a registered identity: it may only submit its own registration "
            f"({' or '.join(sorted(SELF_REGISTRATION))})",
        )
