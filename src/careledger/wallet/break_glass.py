"""Break-glass as the wallet does it: the patient's escrow, the practitioner's emergency access.

    # the patient (careledger consent emergency)
    escrow_id = EmergencyClient(node, patient_keyfile).open(scopes=DEFAULT_EMERGENCY_SCOPES)

    # a practitioner, in an emergency (careledger break-glass)
    keys = break_glass(node, practitioner_keyfile, patient_did, reason="...", nodes=[urls])
    with RecordsClient(node, practitioner_keyfile, purpose="ETREAT", keyring=keys) as reader:
        reader.read(reader.ref(patient_did, "AllergyIntolerance", "a1"))

    # the patient, at the next sign-in after a break-glass ended (careledger audit)
    client = EmergencyClient(node, patient_keyfile)
    for glass in client.ended_unrotated():
        ...                                   # tell the patient, then:
    client.rotate_after(client.ended_unrotated())

The escrow (docs/crypto.md 11): the opened scopes' keys (every epoch) and the naming key,
sealed under a fresh secret split k-of-n among the current members. The practitioner's
`break_glass` submits `consent/break_glass` and waits for its block (its alert is in that
block), then asks each member node in `nodes` for its share (`POST /break-glass/share`; a
node releases only against the committed break-glass), combines k of them and opens the
bundle. With fewer than k released it raises `NotEnoughShares` and holds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from careledger.chain.modules.consent import (
    DEFAULT_EMERGENCY_SCOPES,
    MAX_BREAK_GLASS_SECONDS,
    MAX_SEALED_BYTES,
    emergency_threshold,
)
from careledger.chain.tx import tx_hash
from careledger.crypto.escrow import (
    EmergencyBundle,
    EscrowError,
    Share,
    ShareError,
    make_escrow,
    open_escrow,
    unwrap_released_share,
)
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.scopekeys import SENSITIVE, ScopeKeyPair, ScopePublic
from careledger.wallet.consent import ConsentClient
from careledger.wallet.keyring import encryption_keys
from careledger.wallet.node_client import NodeClient, NodeError, Signer
from careledger.wallet.refs import RecordsError, raise_for

SHARE_ROUTE = "/break-glass/share"
# A node that has not yet committed the break-glass's block answers 404: ask it again a few
# times (a network commits a block on every node within a second or two).
NOT_YET_COMMITTED_TRIES = 20
NOT_YET_COMMITTED_PAUSE = 0.25


class NotEnoughShares(RecordsError):
    """Fewer than k member nodes released their share: the emergency keys cannot be had.
    `refusals` says what each node that did not release answered."""

    def __init__(self, released: int, needed: int, refusals: Mapping[str, str]) -> None:
        said = "; ".join(f"{url}: {why}" for url, why in refusals.items()) or "no node asked"
        super().__init__(
            f"{released} of the {needed} shares needed were released ({said})", status=403
        )
        self.released = released
        self.needed = needed
        self.refusals = dict(refusals)


# --- the practitioner's side -----------------------------------------------------------------


@dataclass(frozen=True)
class EmergencyKeys:
    """What a break-glass gives its requester: a keyring (wallet/keyring.Keyring) holding the
    naming key and the keys of exactly the scopes broken into, until `until` (the node
    refuses reads after it anyway). repr() shows no key."""

    patient: str
    glass: str  # the break-glass id
    scopes: tuple[str, ...]
    until: int
    bundle: EmergencyBundle = field(repr=False)

    def naming_key(self, patient: str) -> bytes:
        if patient != self.patient:
            raise RecordsError(
                f"break-glass {self.glass} is for {self.patient}, not {patient}", 403
            )
        return self.bundle.naming_key

    def scope_pair(self, patient: str, scope: str, epoch: int) -> ScopeKeyPair | None:
        if patient != self.patient or scope not in self.scopes:
            return None
        return self.bundle.scope_pair(scope, epoch)


def break_glass(
    node: NodeClient | str,
    practitioner: KeyFile,
    patient: str,
    reason: str,
    *,
    scopes: Sequence[str] = (),
    seconds: int = MAX_BREAK_GLASS_SECONDS,
    nodes: Sequence[str] = (),
    signer: Signer | None = None,
) -> EmergencyKeys:
    """Break the glass for `patient` (see the module's docstring). `scopes`: the opened
    scopes but sensitive by default (sensitive must be named); `nodes`: the member nodes'
    API URLs to ask for shares (default: `node` alone); `signer`: the practitioner's signer
    when the caller holds one already (one nonce counter per did: a second would reuse its
    nonces). RecordsError with the chain's reason when it refuses; NotEnoughShares when fewer
    than k nodes release."""
    client = (NodeClient(node) if isinstance(node, str) else node).signed_as(practitioner)
    glass = submit_break_glass(client, practitioner, patient, reason, scopes, seconds, signer)
    answers, refusals = collect_shares(client, practitioner, glass["id"], [*nodes] or [client.url])
    return emergency_keys(client, practitioner, glass, answers, refusals)


def submit_break_glass(
    client: NodeClient,
    practitioner: KeyFile,
    patient: str,
    reason: str,
    scopes: Sequence[str] = (),
    seconds: int = MAX_BREAK_GLASS_SECONDS,
    signer: Signer | None = None,
) -> dict[str, Any]:
    """Submit `consent/break_glass` and wait for its block: the committed break-glass (its
    id is the transaction hash's first 16 bytes). RecordsError with the chain's reason."""
    escrow = _escrow_of(client, patient)
    chosen = list(scopes) or [s for s in escrow["scopes"] if s != SENSITIVE]
    payload = {"patient": patient, "reason": reason, "scopes": chosen, "seconds": seconds}
    signer = signer or Signer(client, practitioner.did, practitioner.identity)
    raw = signer.sign("consent/break_glass", payload)
    try:
        raise_for(client.submit(raw, wait=True), "break-glass")
    except NodeError as exc:  # refused before a block (the payload's shape)
        raise RecordsError(f"break-glass: {exc.message}", exc.status) from None
    glass: dict[str, Any] = client.query("consent/break_glass", id=tx_hash(raw).hex()[:32])
    return glass


def collect_shares(
    client: NodeClient, practitioner: KeyFile, glass_id: str, urls: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each member node's answer to `POST /break-glass/share` (at `urls`), and why each other
    node released nothing."""
    answers: list[dict[str, Any]] = []
    refusals: dict[str, str] = {}
    for url in urls:
        member = client if url.rstrip("/") == client.url else NodeClient(url, practitioner)
        try:
            answers.append(request_share(member, glass_id))
        except (NodeError, RecordsError) as exc:
            refusals[url] = str(exc)
        except httpx.HTTPError as exc:
            refusals[url] = f"cannot reach the node: {exc}"
        finally:
            if member is not client:
                member.close()
    return answers, refusals


def emergency_keys(
    client: NodeClient,
    practitioner: KeyFile,
    glass: Mapping[str, Any],
    answers: Sequence[Mapping[str, Any]],
    refusals: Mapping[str, str] | None = None,
) -> EmergencyKeys:
    """The emergency keys from the released shares (`answers`): NotEnoughShares with fewer
    than k that unwrap; RecordsError 502 when k shares do not open the escrow or the keys
    are not the patient's published ones."""
    patient = str(glass["patient"])
    escrow = _escrow_of(client, patient)
    if escrow["escrow"] != glass["escrow"]:
        raise RecordsError(
            f"the patient re-escrowed since break-glass {glass['id']}: break the glass again", 409
        )
    refused = dict(refusals or {})
    shares: list[Share] = []
    for answer in answers:
        try:
            shares.append(_unwrap(practitioner, glass, answer))
        except (ShareError, KeyError, ValueError) as exc:
            refused[str(answer.get("org", "?"))] = f"unusable share: {exc}"
    threshold = int(escrow["threshold"])
    distinct = len({s.index for s in shares})
    if distinct < threshold:
        raise NotEnoughShares(distinct, threshold, refused)
    try:
        bundle = open_escrow(
            bytes.fromhex(escrow["sealed"]), shares, patient, str(glass["escrow"]), threshold
        )
        bundle.check_against(_published(client, patient))
    except EscrowError as exc:
        raise RecordsError(f"break-glass {glass['id']}: {exc}", 502) from None
    return EmergencyKeys(patient, glass["id"], tuple(glass["scopes"]), glass["until"], bundle)


def _escrow_of(client: NodeClient, patient: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = client.query("consent/emergency", patient=patient)
    except NodeError as exc:
        if exc.status == 404:
            raise RecordsError(f"{patient} opened no scope to emergency access", 404) from None
        raise
    return found


def request_share(member: NodeClient, glass_id: str) -> dict[str, Any]:
    """One member node's released share (`POST /break-glass/share`), asked again while the
    node has not committed the break-glass yet (404); NodeError for any other refusal."""
    if member.auth is None:
        raise RecordsError("a share is released only to a signed request", 400)
    for attempt in range(NOT_YET_COMMITTED_TRIES):
        response = member.http.post(SHARE_ROUTE, json={"id": glass_id}, auth=member.auth)
        if response.status_code == 200:
            answer: dict[str, Any] = response.json()
            return answer
        if response.status_code != 404 or attempt == NOT_YET_COMMITTED_TRIES - 1:
            _raise_node_error(response.status_code, response.text, response.json)
        time.sleep(NOT_YET_COMMITTED_PAUSE)
    raise AssertionError("unreachable")


def _raise_node_error(status: int, text: str, as_json: Any) -> None:
    try:
        error = as_json()["error"]
        raise NodeError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        raise NodeError(status, "http_error", text) from None


def _unwrap(practitioner: KeyFile, glass: Mapping[str, Any], answer: Mapping[str, Any]) -> Share:
    if answer["id"] != glass["id"] or answer["escrow"] != glass["escrow"]:
        raise ShareError("the node released a share of another break-glass or escrow")
    wrapped = bytes.fromhex(answer["wrapped"])
    last: ShareError | None = None
    for private in encryption_keys(practitioner):
        try:
            return unwrap_released_share(
                wrapped,
                str(glass["patient"]),
                str(glass["escrow"]),
                str(answer["org"]),
                int(answer["index"]),
                practitioner.did,
                private,
            )
        except ShareError as exc:
            last = exc
    raise last or ShareError("no key to unwrap a released share")


def _published(client: NodeClient, patient: str) -> dict[tuple[str, int], ScopePublic]:
    rows = client.query("records/scope_keys", patient=patient)
    published = [
        ScopePublic(r["scope"], int(r["epoch"]), bytes.fromhex(r["public_key"])) for r in rows
    ]
    return {(p.scope, p.epoch): p for p in published}


# --- the patient's side ----------------------------------------------------------------------


class EmergencyClient:
    """The patient's emergency access: its escrow, and what a break-glass leaves to do."""

    def __init__(self, node: NodeClient | str, keyfile: KeyFile) -> None:
        self.consent = ConsentClient(node, keyfile)
        self.node = self.consent.node
        self.keyfile = keyfile
        self.patient = keyfile.did

    def escrow(self) -> dict[str, Any] | None:
        """The patient's current escrow (`consent/emergency`), or None."""
        try:
            found: dict[str, Any] = self.node.query("consent/emergency", patient=self.patient)
        except NodeError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def open(
        self,
        scopes: Sequence[str] = DEFAULT_EMERGENCY_SCOPES,
        *,
        sensitive: bool = False,
        threshold: int = 0,
    ) -> str:
        """Escrow the keys of `scopes` (every published epoch) and the naming key among the
        current members, k = `threshold` or the policy's ceil(2n/3); replaces any previous
        escrow. Returns the escrow id once committed."""
        if SENSITIVE in scopes and not sensitive:
            raise RecordsError("the sensitive scope is opened only with sensitive=True", 400)
        epochs = self.consent.published_epochs()
        missing = [s for s in scopes if s not in epochs]
        if missing:
            raise RecordsError(f"no published key of scope(s) {', '.join(missing)}", 409)
        keys = tuple(self.keyfile.scope_key(s, e) for s in scopes for e in epochs[s])
        bundle = EmergencyBundle(self.patient, self.keyfile.naming_key, keys)
        members = self._member_keys()
        made = make_escrow(bundle, members, threshold or emergency_threshold(len(members)))
        if len(made.sealed) > MAX_SEALED_BYTES:
            raise RecordsError(
                f"{len(keys)} scope keys are more than an escrow holds ({MAX_SEALED_BYTES} "
                "bytes sealed): open fewer scopes",
                413,
            )
        payload = {
            "scopes": list(scopes),
            "sensitive": sensitive,
            "threshold": made.threshold,
            "members": list(made.members),
            "shares": [s.to_json() for s in made.shares],
            "sealed": made.sealed.hex(),
            "epochs": {s: max(epochs[s]) for s in scopes},
            "escrow": made.escrow,
        }
        raw = self.consent.signer.sign("consent/open_emergency", payload)
        raise_for(self.node.submit(raw, wait=True), "emergency access")
        return made.escrow

    def _member_keys(self) -> dict[str, bytes]:
        keys = {}
        for member in self.node.query("identity/members"):
            ident = self.node.query("identity/identity", did=member["did"])
            keys[str(member["did"])] = bytes.fromhex(ident["encryption_key"])
        return keys

    def needs_reescrow(self) -> str:
        """Why the escrow must be made again ("" when it need not): the members changed (a
        removed member keeps a share, an admitted one has none), or a scope moved to a new
        epoch since (the bundle lacks its key)."""
        escrow = self.escrow()
        if escrow is None:
            return ""
        if escrow["members"] != escrow["current_members"]:
            return "the members of the consortium changed since the escrow was made"
        current = {s: max(e) for s, e in self.consent.published_epochs().items()}
        stale = [s for s, e in escrow["epochs"].items() if current.get(s, e) != e]
        return f"new key epochs of {', '.join(stale)}" if stale else ""

    def reescrow(self) -> str:
        """A fresh escrow of the same scopes, to the current members and epochs."""
        escrow = self.escrow()
        if escrow is None:
            raise RecordsError("no escrow to renew", 404)
        return self.open(escrow["scopes"], sensitive=bool(escrow["sensitive"]))

    def break_glasses(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.node.query("consent/break_glasses", patient=self.patient)
        return found

    def ended_unrotated(self, now: int | None = None) -> list[dict[str, Any]]:
        """The patient's break-glasses that ended (at `now`, default the clock) and whose
        escrowed scopes were not all rotated since: the patient's next sign-in offers to
        rotate them (`rotate_after`)."""
        current = {s: max(e) for s, e in self.consent.published_epochs().items()}
        when = int(time.time()) if now is None else now
        return ended_unrotated(self.break_glasses(), current, when)

    def rotate_after(self, glasses: Sequence[Mapping[str, Any]]) -> list[str]:
        """New epochs of every scope those break-glasses' requesters got keys of (their
        grantees get the new keys, as after a revocation), then a fresh escrow holding them.
        Returns the scopes rotated."""
        scopes = sorted({s for g in glasses for s in g["epochs"]})
        if not scopes:
            return []
        self.consent.rotate(scopes)
        if self.escrow() is not None:
            self.reescrow()
        return scopes


def open_emergency(
    node: NodeClient | str,
    patient: KeyFile,
    scopes: Sequence[str] = DEFAULT_EMERGENCY_SCOPES,
    *,
    sensitive: bool = False,
    threshold: int = 0,
) -> str:
    """The patient opens `scopes` to emergency access (`EmergencyClient.open`): the escrow
    id once committed."""
    return EmergencyClient(node, patient).open(scopes, sensitive=sensitive, threshold=threshold)


def ended_unrotated(
    glasses: Sequence[Mapping[str, Any]], current_epochs: Mapping[str, int], now: int
) -> list[dict[str, Any]]:
    """Of `glasses` (`consent/break_glasses` rows), those that ended by `now` while some
    scope they exposed (`epochs`: every escrowed scope's epoch at the time) is still at that
    epoch: its requester still holds keys that open what is written now."""
    return [
        dict(g)
        for g in glasses
        if g["until"] <= now and any(current_epochs.get(s, e) <= e for s, e in g["epochs"].items())
    ]
