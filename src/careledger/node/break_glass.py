"""`POST /break-glass/share {"id"}`: this node's organisation releases its share of a
patient's emergency escrow to the practitioner who broke the glass (docs/crypto.md 11).

The node releases only what the committed state allows, read at the time of the request:
- the break-glass `id` is committed (404 `not_found` otherwise: not yet in a block this node
  has, or never), so its alert is committed with it before any share leaves a node;
- the caller is its requester (403 `forbidden`): the share is wrapped to the requester's
  current encryption key anyway, so nobody else could open it, but nobody else needs to know
  which organisation holds which share either;
- its window is running on this node's clock (410 `expired` after `until`);
- this node's organisation is a member now (403 `not_member`: a removed member's node keeps
  its key file and its copy of the escrow, and releases nothing);
- the break-glass names the patient's current escrow (410 `superseded`: the patient
  re-escrowed since; break the glass again) and this organisation holds one of its shares
  (403 `no_share`: admitted after the escrow was made).

The answer is `{"id", "escrow", "org", "index", "wrapped"}`: the share, unwrapped with the
organisation's key (any of its keys since a rotation) and HPKE-wrapped to the requester
(`crypto/escrow.rewrap_share`). A share that does not unwrap with this organisation's keys is
500 `share_unusable` (a share this organisation could never open: the patient's escrow was
made with a key it no longer holds).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from careledger.chain.codes import Code
from careledger.consensus.driver import ConsensusDriver
from careledger.crypto.escrow import ShareError, rewrap_share
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.auth import ApiRoute, Perimeter, caller_of
from careledger.node.errors import ApiError

SHARE_ROUTE = "/break-glass/share"
SHARE_BODY = 256  # {"id": "<32 hex>"}
_ID = re.compile(r"[0-9a-f]{32}")

Clock = Callable[[], int]


def wall_clock_s() -> int:
    return time.time_ns() // 1_000_000_000


Ask = Callable[[str, dict[str, str]], Awaitable[Any]]  # a chain query: its answer, or None


class ShareRelease:
    """The route of a node whose organisation's key file is `organisation` (None: a node
    without one answers 503 `no_organisation_key`)."""

    def __init__(
        self,
        driver: ConsensusDriver,
        organisation: KeyFile | None,
        clock: Clock = wall_clock_s,
    ) -> None:
        self.driver = driver
        self.organisation = organisation
        self.clock = clock

    def routes(self) -> list[BaseRoute]:
        return [
            ApiRoute(SHARE_ROUTE, self.release, methods=["POST"], perimeter=Perimeter(SHARE_BODY))
        ]

    async def release(self, request: Request) -> Response:
        caller = caller_of(request)
        glass_id = await _glass_id(request)
        if self.organisation is None:
            raise ApiError(503, "no_organisation_key", "this node holds no organisation key")
        answer = await release_share(
            self._query, self.organisation, caller.did, glass_id, self.clock()
        )
        return JSONResponse(answer)

    async def _query(self, path: str, params: dict[str, str]) -> Any:
        found = await self.driver.query(path, orjson.dumps(params))
        if found.code == Code.NOT_FOUND:
            return None
        if found.code != Code.OK:
            raise ApiError(503, "unavailable", f"cannot ask the chain ({path}): {found.log}")
        return orjson.loads(found.value)


async def release_share(
    ask: Ask, organisation: KeyFile, caller: str, glass_id: str, now: int
) -> dict[str, Any]:
    """What this route answers `caller` for break-glass `glass_id` at unix time `now`, as
    member `organisation` (see the module's docstring), asking the committed state with
    `ask`; ApiError for each refusal."""
    glass = await ask("consent/break_glass", {"id": glass_id})
    if glass is None:
        raise ApiError(404, "not_found", f"no committed break-glass {glass_id} on this node")
    if caller != glass["requester"]:
        raise ApiError(
            403,
            "forbidden",
            f"only the practitioner who broke glass {glass_id} receives its shares",
        )
    if now >= glass["until"]:
        raise ApiError(410, "expired", f"break-glass {glass_id} ended at {glass['until']}")
    await _require_member(ask, organisation.did)
    share = await _share_of(ask, organisation.did, glass)
    requester = await ask("identity/identity", {"did": caller})
    if requester is None:  # the middleware found it a moment ago
        raise ApiError(404, "not_found", f"no identity {caller}")
    wrapped = _rewrap(organisation, glass, share, bytes.fromhex(requester["encryption_key"]))
    return {**share, "id": glass_id, "escrow": glass["escrow"], "wrapped": wrapped.hex()}


async def _require_member(ask: Ask, org: str) -> None:
    found = await ask("identity/identity", {"did": org})
    if found is None or found["kind"] != "organisation" or not found["active"]:
        raise ApiError(
            403,
            "not_member",
            f"this node's organisation {org} is not a member: it releases no share",
        )


async def _share_of(ask: Ask, org: str, glass: dict[str, Any]) -> dict[str, Any]:
    """This organisation's share of the escrow the break-glass names."""
    escrow = await ask("consent/emergency", {"patient": glass["patient"]})
    if escrow is None or escrow["escrow"] != glass["escrow"]:
        raise ApiError(
            410,
            "superseded",
            f"escrow {glass['escrow']} is no longer the patient's: the patient re-escrowed "
            "since (break the glass again)",
        )
    for share in escrow["shares"]:
        if share["org"] == org:
            return {"org": org, "index": int(share["index"]), "wrapped": share["wrapped"]}
    raise ApiError(
        403, "no_share", f"this node's organisation holds no share of escrow {glass['escrow']}"
    )


def _rewrap(
    organisation: KeyFile, glass: dict[str, Any], share: dict[str, Any], requester_key: bytes
) -> bytes:
    for private in _encryption_keys(organisation):
        try:
            return rewrap_share(
                bytes.fromhex(share["wrapped"]),
                glass["patient"],
                glass["escrow"],
                share["org"],
                share["index"],
                private,
                glass["requester"],
                requester_key,
            )
        except ShareError:
            continue  # wrapped to an earlier key of the organisation: try the next
    raise ApiError(
        500,
        "share_unusable",
        f"this organisation's share of escrow {glass['escrow']} does not open with its keys",
    )


async def _glass_id(request: Request) -> str:
    try:
        body = orjson.loads(await request.body())
        glass_id = body["id"] if isinstance(body, dict) and len(body) == 1 else None
    except (orjson.JSONDecodeError, KeyError):
        glass_id = None
    if not isinstance(glass_id, str) or not _ID.fullmatch(glass_id):
        raise ApiError(400, "malformed", 'body must be {"id": "<break-glass id, 32 hex>"}')
    return glass_id


def _encryption_keys(keyfile: KeyFile) -> Sequence[X25519PrivateKey]:
    """The organisation's encryption keys, newest first (as wallet/keyring.encryption_keys)."""
    masters = [keyfile.identity.master, *(p.master_secret for p in reversed(keyfile.previous))]
    return [Identity(master).encryption_private for master in masters]
