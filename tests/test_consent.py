"""The consent module on the real state machine (real SQLite), block by block.

Every rule of grant, revoke and share_keys and each bad input gets its code and message; write
consent is checked on anchors; the read decision (`ConsentKeeper.read_decision`, asked
through `records/read_access` as the node asks it) is checked branch by branch. Every attack
is a transaction or a query against the real application.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.app import Application, TxResult
from careledger.chain.codes import Code
from careledger.chain.modules.consent import MAX_LIVE_GRANTS, ConsentKeeper, handler
from careledger.chain.modules.consent.events import (
    ConsentGranted,
    ConsentKeysShared,
    ConsentRevoked,
)
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.state import KV
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import BROAD_SCOPES
from nodeutil import (
    BLOCK_TIME_NS,
    CHAIN_ID,
    grant_payload,
    make_app,
    practitioner_payload,
    register_patient_tx,
    run_block_results,
)

T = BLOCK_TIME_NS // 10**9  # the blocks' time in unix seconds (run_block's default)
WRAP = "6b" * 80  # a wrapped key: the chain checks its shape only


def wrap(scope: str, epoch: int = 1) -> dict[str, Any]:
    return {"scope": scope, "epoch": epoch, "wrapped": WRAP}


class Actor:
    def __init__(self, name: str) -> None:
        self.name = name
        self.identity = Identity.generate()
        self.did = self.identity.did
        self.nonce = 0

    def tx(self, type_: str, payload: dict[str, Any]) -> bytes:
        self.nonce += 1
        return Tx(CHAIN_ID, type_, self.did, self.nonce, payload).sign(self.identity)


class World:
    """Members A, B and C; A's doctor and nurse, B's rival and colleague; the patient (with
    clinical, diagnostics and sensitive scope keys at epoch 1), the guardian and a stranger
    (patients too)."""

    def __init__(self, path: Path) -> None:
        self.a, self.b, self.c = Actor("A"), Actor("B"), Actor("C")
        self.doctor, self.nurse = Actor("doctor"), Actor("nurse")
        self.rival, self.colleague = Actor("rival"), Actor("colleague")
        self.patient, self.guardian, self.stranger = (
            Actor("patient"),
            Actor("guardian"),
            Actor("stranger"),
        )
        self.app: Application = make_app(path, [self.a.identity, self.b.identity, self.c.identity])
        self.blocks: list[tuple[list[bytes], int, list[TxResult], bytes]] = []
        staff = [
            (self.a, self.doctor),
            (self.a, self.nurse),
            (self.b, self.rival),
            (self.b, self.colleague),
        ]
        txs = [
            org.tx(
                "identity/register_practitioner",
                practitioner_payload(CHAIN_ID, org.did, p.identity),
            )
            for org, p in staff
        ]
        for person in (self.patient, self.guardian, self.stranger):
            person.nonce += 1
            txs.append(
                register_patient_tx(CHAIN_ID, person.identity, self.a.identity, person.nonce)
            )
        for scope in ("clinical", "diagnostics", "sensitive"):
            key = scope_key_payload(self.patient.identity, CHAIN_ID, scope, 1, "22" * 32)
            txs.append(self.patient.tx("records/publish_scope_key", key))
        assert self.codes(*txs) == [0] * len(txs)

    # --- transactions ---------------------------------------------------------------------

    def run(self, *txs: bytes, at: int | None = None) -> list[TxResult]:
        """One block (at unix time `at`, default T); its results. Every block is recorded
        (`blocks`: transactions, time, results, app hash) to replay on another machine."""
        time_ns = BLOCK_TIME_NS + self.app.info().last_height + 1 if at is None else at * 10**9
        results = run_block_results(self.app, list(txs), time_ns)
        self.blocks.append((list(txs), time_ns, results, self.app.info().last_app_hash))
        return results

    def codes(self, *txs: bytes, at: int | None = None) -> list[int]:
        return [int(r.code) for r in self.run(*txs, at=at)]

    def refused(self, raw: bytes, code: int, message: str, at: int | None = None) -> None:
        """Refused with `code` and `message` in the log, and nothing of consent written."""
        before = self.rows("consent/")
        [result] = self.run(raw, at=at)
        assert (result.code, message in result.log) == (code, True), result.log
        assert self.rows("consent/") == before

    def grant(
        self, grantee: Actor, action: str = "read", sender: Actor | None = None, **extra: Any
    ) -> tuple[bytes, str]:
        """A grant of the patient's (sent by `sender`, default the patient) and its id."""
        payload = grant_payload(self.patient.did, grantee.did, action, **extra)
        return (sender or self.patient).tx("consent/grant", payload), str(payload["id"])

    def granted(self, grantee: Actor, action: str = "read", **extra: Any) -> str:
        raw, grant_id = self.grant(grantee, action, **extra)
        assert self.codes(raw) == [0]
        return grant_id

    def anchor(self, author: Actor, rid: str, version: int = 1, scope: str = "clinical") -> bytes:
        payload = {
            "patient": self.patient.did,
            "resource_type": "Observation",
            "record": record(rid),
            "version": version,
            "blob_hash": blob(rid, version),
            "commitment": "cd" * 32,
            "recipients": [f"scope/{scope}/1", author.did],
        }
        return author.tx("records/anchor", payload)

    # --- state and queries ----------------------------------------------------------------

    def rows(self, prefix: str) -> dict[bytes, bytes]:
        return {k: v for k, v in self.app.store.all_rows() if k.startswith(prefix.encode())}

    def query(self, path: str, **params: Any) -> Any:
        result = self.app.query(path, orjson.dumps(params))
        assert result.code == 0, result.log
        return orjson.loads(result.value)

    def access(
        self, reader: Actor, *rids: str, purpose: str = "TREAT", at: int = T, version: int = 1
    ) -> list[dict[str, Any]]:
        hashes = [blob(rid, version) for rid in rids]
        return self.query(
            "records/read_access", reader=reader.did, purpose=purpose, at=at, hashes=hashes
        )

    def decision(self, reader: Actor, rid: str, **kwargs: Any) -> tuple[int, str, str]:
        [answer] = self.access(reader, rid, **kwargs)
        return answer["status"], answer["reason"], answer["grant"]


def record(rid: str) -> str:
    return hashlib.sha256(b"record/" + rid.encode()).hexdigest()


def blob(rid: str, version: int) -> str:
    return hashlib.sha256(f"blob/{rid}/{version}".encode()).hexdigest()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "state.sqlite")


# --- grant: who, to whom, what, until when ---------------------------------------------------


def test_a_grant_by_anyone_but_the_patient_or_a_delegate_is_refused(world: World) -> None:
    for sender in (world.stranger, world.b, world.rival):
        raw, _ = world.grant(world.b, sender=sender)
        world.refused(raw, Code.UNAUTHORISED, "is neither the patient")
    assert world.query("consent/grants", patient=world.patient.did) == []


def test_the_patient_grants_and_the_grant_is_stored_with_its_keys(world: World) -> None:
    raw, grant_id = world.grant(
        world.b,
        scopes=["clinical", "sensitive"],
        purposes=["TREAT", "HRESCH"],
        start=T - 10,
        end=T + 1000,
        keys=[wrap("clinical"), wrap("sensitive")],
        naming_key=WRAP,
    )
    [result] = world.run(raw)
    assert result.code == 0
    assert ConsentGranted.all_in(result.events) == [
        ConsentGranted(world.patient.did, grant_id, world.b.did, "read")
    ]
    stored = world.query("consent/grant", id=grant_id)
    assert stored == {
        "id": grant_id,
        "patient": world.patient.did,
        "grantee": world.b.did,
        "action": "read",
        "scopes": ["clinical", "sensitive"],
        "records": [],
        "purposes": ["TREAT", "HRESCH"],
        "start": T - 10,
        "end": T + 1000,
        "org": world.b.did,
        "grantor": world.patient.did,
        "delegation": "",
        "height": world.app.info().last_height,
        "revoked_at": 0,
        "keys": [wrap("clinical"), wrap("sensitive")],
        "naming_key": WRAP,
    }
    [listed] = world.query("consent/grants", patient=world.patient.did)
    assert "keys" not in listed and listed["id"] == grant_id


def test_a_delegate_grants_within_its_delegation_but_never_delegates(world: World) -> None:
    delegation = world.granted(world.guardian, "delegate", scopes=["clinical", "diagnostics"])
    raw, by_guardian = world.grant(world.b, sender=world.guardian, scopes=["clinical"])
    assert world.codes(raw) == [0]
    assert world.query("consent/grant", id=by_guardian)["grantor"] == world.guardian.did

    again, _ = world.grant(world.stranger, "delegate", sender=world.guardian)
    world.refused(again, Code.UNAUTHORISED, "a delegate may not create")
    wider, _ = world.grant(world.b, sender=world.guardian, scopes=["clinical", "sensitive"])
    world.refused(wider, Code.UNAUTHORISED, f"delegation {delegation} does not cover")
    # The delegate revokes what it may, not the delegation of another (nor the patient's own).
    assert world.codes(world.guardian.tx("consent/revoke", {"id": by_guardian})) == [0]

    assert world.codes(world.patient.tx("consent/revoke", {"id": delegation})) == [0]
    after, _ = world.grant(world.b, sender=world.guardian, scopes=["clinical"])
    world.refused(after, Code.UNAUTHORISED, "is neither the patient")


def test_a_delegation_outside_its_period_gives_no_authority(world: World) -> None:
    world.granted(world.guardian, "delegate", scopes=["clinical"], start=T + 100, end=T + 200)
    early, _ = world.grant(world.b, sender=world.guardian, scopes=["clinical"])
    world.refused(early, Code.UNAUTHORISED, "is neither the patient")
    during, _ = world.grant(
        world.b, sender=world.guardian, scopes=["clinical"], start=T + 100, end=T + 200
    )
    assert world.codes(during, at=T + 150) == [0]
    late, _ = world.grant(world.b, sender=world.guardian, scopes=["clinical"], end=T + 1000)
    world.refused(late, Code.UNAUTHORISED, "is neither the patient", at=T + 200)


def test_a_delegates_grant_does_not_outlive_its_delegation(world: World) -> None:
    """Review of issue 8: a guardian named until T+100 granted organisation B reads from 0
    until 2^40, and B kept reading long after the guardianship ended. A delegate's grant must
    lie inside its delegation's period, start and end (UNAUTHORISED otherwise), so it ends
    with the delegation at the latest."""
    delegation = world.granted(
        world.guardian, "delegate", scopes=["clinical"], start=T - 100, end=T + 100
    )
    for start, end in ((0, 2**40), (T - 100, T + 101), (T - 101, T + 100)):
        raw, _ = world.grant(
            world.b, sender=world.guardian, scopes=["clinical"], start=start, end=end
        )
        world.refused(
            raw,
            Code.UNAUTHORISED,
            f"delegation {delegation} runs from {T - 100} to {T + 100}: a grant by its "
            f"delegate must lie within it, not run from {start} to {end}",
        )
    inside, grant_id = world.grant(
        world.b, sender=world.guardian, scopes=["clinical"], start=T - 100, end=T + 100
    )
    assert world.codes(inside) == [0]
    assert world.query("consent/grant", id=grant_id)["delegation"] == delegation
    assert world.codes(world.anchor(world.patient, "r1")) == [0]
    assert world.decision(world.rival, "r1", at=T + 99)[0] == 200
    assert world.decision(world.rival, "r1", at=T + 1000)[:2] == (
        403,
        f"grant {grant_id} expired at {T + 100}",
    )


def test_revoking_a_delegation_revokes_the_grants_its_delegate_made(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's second half: the patient revokes the guardian; the guardian's grants stop
    counting in the same transaction (B reads no more), and the live places the guardian
    filled are the patient's again (the limit lowered to 3 here: 1,000 in the chain)."""
    monkeypatch.setattr(handler, "MAX_LIVE_GRANTS", 3)
    delegation = world.granted(world.guardian, "delegate", scopes=["clinical"])
    assert world.codes(world.anchor(world.patient, "p1")) == [0]
    made = []
    for grantee in (world.b, world.c):
        raw, grant_id = world.grant(grantee, sender=world.guardian, scopes=["clinical"])
        assert world.codes(raw) == [0]
        made.append(grant_id)
    assert world.decision(world.rival, "p1")[:2] == (200, f"read grant {made[0]}")
    world.refused(world.grant(world.colleague)[0], Code.CONFLICT, "the patient has 3 active")

    [result] = world.run(world.patient.tx("consent/revoke", {"id": delegation}))
    assert result.code == 0, result.log
    height = world.app.info().last_height
    assert ConsentRevoked.all_in(result.events) == [
        *(
            ConsentRevoked(world.patient.did, g, grantee.did)
            for g, grantee in sorted(zip(made, (world.b, world.c), strict=True))
        ),
        ConsentRevoked(world.patient.did, delegation, world.guardian.did),
    ]
    for grant_id in made:
        assert world.query("consent/grant", id=grant_id)["revoked_at"] == height
    assert world.decision(world.rival, "p1")[:2] == (
        403,
        f"grant {made[0]} was revoked at height {height}",
    )
    keeper = ConsentKeeper(KV(world.app.store, "consent"))
    assert keeper.live_count(world.patient.did) == 0
    assert world.rows("consent/under/") == {}
    assert world.codes(*(world.grant(g)[0] for g in (world.colleague, world.b, world.c))) == [0] * 3
    # a revoked grant the delegate made is not revoked twice, nor is the patient's own touched
    assert world.query("consent/grants", patient=world.patient.did)[0]["revoked_at"] == 0


def test_a_delegate_renouncing_one_delegation_takes_only_its_grants_along(
    world: World,
) -> None:
    """A guardian holding two delegations acts under the one that covers the grant; renouncing
    one revokes the grants made under it and keeps those made under the other."""
    clinical = world.granted(world.guardian, "delegate", scopes=["clinical"])
    diagnostics = world.granted(world.guardian, "delegate", scopes=["diagnostics"])
    made = {}
    for scope in ("clinical", "diagnostics"):
        raw, made[scope] = world.grant(world.b, sender=world.guardian, scopes=[scope])
        assert world.codes(raw) == [0]
    assert world.query("consent/grant", id=made["clinical"])["delegation"] == clinical
    assert world.query("consent/grant", id=made["diagnostics"])["delegation"] == diagnostics
    both, _ = world.grant(world.b, sender=world.guardian, scopes=["clinical", "diagnostics"])
    world.refused(both, Code.UNAUTHORISED, "does not cover scope(s)")

    assert world.codes(world.guardian.tx("consent/revoke", {"id": clinical})) == [0]
    assert world.query("consent/grant", id=made["clinical"])["revoked_at"] > 0
    assert world.query("consent/grant", id=made["diagnostics"])["revoked_at"] == 0


def test_a_grant_to_an_unknown_grantee_is_refused(world: World) -> None:
    nobody = Actor("unregistered")
    deregister = world.a.tx("identity/deregister_practitioner", {"did": world.nurse.did})
    assert world.codes(deregister) == [0]
    cases = [
        (nobody, "read"),
        (nobody, "delegate"),
        (world.stranger, "read"),  # a patient is no organisation or practitioner
        (world.stranger, "write"),
        (world.nurse, "read"),  # deregistered
        (world.patient, "delegate"),  # the patient themselves
    ]
    for grantee, action in cases:
        raw, _ = world.grant(grantee, action)
        world.refused(raw, Code.NOT_FOUND, f"unknown grantee {grantee.did}")
    # Another patient (a parent, a partner) may be a delegate.
    world.granted(world.stranger, "delegate")


def test_a_grant_for_someone_who_is_no_patient_is_refused(world: World) -> None:
    payload = grant_payload(world.b.did, world.a.did)  # org B "grants" its own records
    world.refused(world.b.tx("consent/grant", payload), Code.NOT_FOUND, "not a registered")


def test_an_expired_or_inverted_period_is_refused(world: World) -> None:
    for start, end, message in [
        (T, T, "start 1800000000 is not before end 1800000000"),
        (T + 10, T, "is not before end"),
        (T - 100, T - 1, f"it ends at {T - 1}, not after the block time {T}"),
        (T - 100, T, f"it ends at {T}, not after the block time {T}"),
    ]:
        raw, _ = world.grant(world.b, start=start, end=end)
        world.refused(raw, Code.INVALID_PAYLOAD, "expired or inverted period: ")
        world.refused(world.grant(world.b, start=start, end=end)[0], Code.INVALID_PAYLOAD, message)
    for field, value in (("end", 2**40 + 1), ("start", -1)):
        raw, _ = world.grant(world.b, **{field: value})
        world.refused(raw, Code.INVALID_PAYLOAD, f"'{field}' must be an integer in 0..")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scopes": ["clinical", "genomes"]}, "'scopes': unknown genomes"),
        ({"scopes": ["all"]}, "'scopes': unknown all"),  # no wildcard exists
        ({"scopes": []}, "'scopes' must be a list of 1 to 6 strings"),
        ({"purposes": ["TREAT", "MARKETING"]}, "'purposes': unknown MARKETING"),
        ({"purposes": []}, "'purposes' must be a list of 1 to 9"),
        ({"action": "admin"}, "'action' must be one of read, write, delegate"),
        ({"id": "ab" * 8}, "'id' must be 16 bytes in lowercase hex"),
        ({"records": ["AB" * 32]}, "'records' must hold record names"),
        ({"records": [record(str(i)) for i in range(101)]}, "'records' must be a list of 1 to"),
        ({"keys": [wrap("clinical"), wrap("clinical")]}, "wraps one (scope, epoch) twice"),
        ({"keys": [wrap("diagnostics")], "scopes": ["clinical"]}, "which the grant does not"),
        ({"keys": [{"scope": "clinical", "epoch": 1, "wrapped": "6b" * 79}]}, "80 bytes"),
        ({"naming_key": "6b" * 32}, "'naming_key' must be"),
        ({"name": "Jane Doe"}, "unknown field(s): name"),
    ],
)
def test_a_malformed_grant_is_refused_before_a_block(
    world: World, changes: dict[str, Any], message: str
) -> None:
    raw, _ = world.grant(world.b, **changes)
    checked = world.app.check_tx(raw)
    assert checked.code == Code.INVALID_PAYLOAD and message in checked.log, checked.log


def test_a_read_grant_names_its_purposes_and_only_reads_name_records(world: World) -> None:
    payload = grant_payload(world.patient.did, world.b.did, "read")
    del payload["purposes"]
    checked = world.app.check_tx(world.patient.tx("consent/grant", payload))
    assert "a read grant names its purposes" in checked.log
    raw, _ = world.grant(world.b, "write", records=[record("x")])
    assert "'records' narrows read grants only" in world.app.check_tx(raw).log


def test_a_grant_id_serves_once(world: World) -> None:
    grant_id = world.granted(world.b)
    raw, _ = world.grant(world.c, id=grant_id)
    world.refused(raw, Code.CONFLICT, f"grant id {grant_id} is taken")


def test_a_key_for_an_unpublished_epoch_is_refused(world: World) -> None:
    for key in (wrap("clinical", 2), wrap("medications", 1)):
        raw, _ = world.grant(world.b, keys=[key])
        world.refused(raw, Code.NOT_FOUND, f"published no {key['scope']} scope key at epoch")


def test_a_patient_has_a_bounded_number_of_live_grants(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the limit a grant is CONFLICT; expired grants are pruned to make room, and a
    revoked one frees its place. (The limit is lowered to 3 here: 1,000 in the chain.)"""
    assert MAX_LIVE_GRANTS == 1000
    monkeypatch.setattr(handler, "MAX_LIVE_GRANTS", 3)
    short = world.granted(world.b, end=T + 100)
    kept = [world.granted(world.c), world.granted(world.rival)]
    world.refused(world.grant(world.colleague)[0], Code.CONFLICT, "the patient has 3 active")
    assert world.codes(world.grant(world.colleague)[0], at=T + 100) == [0]  # `short` ended
    keeper = ConsentKeeper(KV(world.app.store, "consent"))
    assert keeper.live_count(world.patient.did) == 3
    assert world.query("consent/grant", id=short)["revoked_at"] == 0  # still listed
    assert len(world.query("consent/grants", patient=world.patient.did)) == 4
    assert world.codes(world.patient.tx("consent/revoke", {"id": kept[0]})) == [0]
    assert world.codes(world.grant(world.c)[0]) == [0]


# --- revoke and share_keys -------------------------------------------------------------------


def test_revoking_an_unknown_grant_or_twice_is_refused(world: World) -> None:
    grant_id = world.granted(world.b)
    unknown = "ee" * 16
    world.refused(world.patient.tx("consent/revoke", {"id": unknown}), Code.NOT_FOUND, "no grant")
    world.refused(
        world.stranger.tx("consent/revoke", {"id": grant_id}),
        Code.UNAUTHORISED,
        "is neither the patient",
    )
    [result] = world.run(world.patient.tx("consent/revoke", {"id": grant_id}))
    assert result.code == 0
    height = world.app.info().last_height
    assert ConsentRevoked.all_in(result.events) == [
        ConsentRevoked(world.patient.did, grant_id, world.b.did)
    ]
    assert world.query("consent/grant", id=grant_id)["revoked_at"] == height
    world.refused(
        world.patient.tx("consent/revoke", {"id": grant_id}),
        Code.CONFLICT,
        f"was revoked at height {height}",
    )


def test_a_grantee_may_renounce_a_grant_and_a_delegate_may_not_revoke_a_delegation(
    world: World,
) -> None:
    read = world.granted(world.b)
    assert world.codes(world.b.tx("consent/revoke", {"id": read})) == [0]
    delegation = world.granted(world.guardian, "delegate")
    other = world.granted(world.stranger, "delegate")
    world.refused(
        world.guardian.tx("consent/revoke", {"id": other}),
        Code.UNAUTHORISED,
        "a delegate may not create, change or revoke a delegate grant",
    )
    assert world.codes(world.guardian.tx("consent/revoke", {"id": delegation})) == [0]


def test_keys_are_shared_to_an_active_grant_only(world: World) -> None:
    grant_id = world.granted(world.b, scopes=["clinical", "sensitive"], keys=[wrap("clinical")])
    key = scope_key_payload(world.patient.identity, CHAIN_ID, "clinical", 2, "33" * 32)
    assert world.codes(world.patient.tx("records/publish_scope_key", key)) == [0]

    def share(sender: Actor, **payload: Any) -> bytes:
        return sender.tx("consent/share_keys", {"id": grant_id} | payload)

    world.refused(share(world.patient, keys=[wrap("clinical", 3)]), Code.NOT_FOUND, "no clinical")
    world.refused(share(world.patient, keys=[wrap("clinical", 1)]), Code.CONFLICT, "already has")
    world.refused(
        share(world.patient, keys=[wrap("diagnostics", 1)]),
        Code.INVALID_PAYLOAD,
        "does not name",
    )
    world.refused(share(world.stranger, keys=[wrap("clinical", 2)]), Code.UNAUTHORISED, "neither")
    unknown = world.patient.tx("consent/share_keys", {"id": "ee" * 16, "naming_key": WRAP})
    world.refused(unknown, Code.NOT_FOUND, "no grant")
    assert "nothing to share" in world.app.check_tx(share(world.patient)).log

    [result] = world.run(share(world.patient, keys=[wrap("clinical", 2)], naming_key=WRAP))
    assert result.code == 0
    assert ConsentKeysShared.all_in(result.events) == [
        ConsentKeysShared(world.patient.did, grant_id)
    ]
    stored = world.query("consent/grant", id=grant_id)
    assert stored["keys"] == [wrap("clinical", 1), wrap("clinical", 2)]
    assert stored["naming_key"] == WRAP
    world.refused(share(world.patient, naming_key=WRAP), Code.CONFLICT, "already has the naming")
    sensitive = [wrap("sensitive", 1)]
    world.refused(
        share(world.patient, keys=sensitive), Code.CONFLICT, f"expired at {2**40}", at=2**40
    )
    assert world.codes(world.patient.tx("consent/revoke", {"id": grant_id})) == [0]
    world.refused(share(world.patient, keys=sensitive), Code.CONFLICT, "was revoked")


# --- write consent ---------------------------------------------------------------------------


def test_a_new_record_needs_the_patients_write_consent(world: World) -> None:
    world.refused(
        world.anchor(world.doctor, "w1"),
        Code.NO_CONSENT,
        f"no write consent of {world.patient.did} for {world.doctor.did} (acting for "
        f"{world.a.did}) in scope clinical: no write grant of the patient covers",
    )
    world.granted(world.b)  # a read grant is no write consent
    world.refused(world.anchor(world.rival, "w1"), Code.NO_CONSENT, "no write grant")
    assert world.codes(world.anchor(world.patient, "mine")) == [0]  # the patient needs none
    assert world.rows("records/rec/") != {}


def test_an_organisation_level_write_grant_covers_its_practitioners(world: World) -> None:
    world.granted(world.a, "write", scopes=["clinical"])
    assert world.codes(
        world.anchor(world.doctor, "o1"),
        world.anchor(world.nurse, "o2"),
        world.anchor(world.a, "o3"),
    ) == [0, 0, 0]
    world.refused(
        world.anchor(world.doctor, "o4", scope="sensitive"),
        Code.NO_CONSENT,
        "does not cover scope sensitive (the sensitive scope must be named)",
    )
    world.refused(world.anchor(world.rival, "o5"), Code.NO_CONSENT, "no write grant")


def test_a_practitioner_level_write_grant_covers_that_practitioner_only(world: World) -> None:
    grant_id = world.granted(world.nurse, "write")
    assert world.query("consent/grant", id=grant_id)["org"] == world.a.did
    assert world.codes(world.anchor(world.nurse, "p1")) == [0]
    for other in (world.doctor, world.a):
        world.refused(
            world.anchor(other, "p2"),
            Code.NO_CONSENT,
            f"grant {grant_id} names practitioner {world.nurse.did}",
        )


def test_write_consent_ends_with_its_revocation(world: World) -> None:
    grant_id = world.granted(world.a, "write")
    assert world.codes(world.anchor(world.doctor, "r1")) == [0]
    assert world.codes(world.patient.tx("consent/revoke", {"id": grant_id})) == [0]
    height = world.app.info().last_height
    world.refused(
        world.anchor(world.doctor, "r2"),
        Code.NO_CONSENT,
        f"grant {grant_id} was revoked at height {height}",
    )
    # A record it started stays its own: later versions need no new consent.
    assert world.codes(world.anchor(world.doctor, "r1", version=2)) == [0]


def test_write_consent_ends_with_its_period(world: World) -> None:
    grant_id = world.granted(world.a, "write", start=T - 10, end=T + 100)
    assert world.codes(world.anchor(world.doctor, "e1"), at=T + 99) == [0]
    world.refused(
        world.anchor(world.doctor, "e2"),
        Code.NO_CONSENT,
        f"grant {grant_id} expired at {T + 100}",
        at=T + 100,
    )
    later = world.granted(world.a, "write", start=T + 500, end=T + 1000)
    world.refused(
        world.anchor(world.doctor, "e3"),
        Code.NO_CONSENT,
        f"grant {later} starts at {T + 500}",  # the closest of the two: `grant_id` has ended
        at=T + 200,
    )
    assert world.codes(world.anchor(world.doctor, "e3"), at=T + 500) == [0]


def test_a_record_keeps_its_scope_and_names_exactly_one_scope_key(world: World) -> None:
    world.granted(world.a, "write")
    assert world.codes(world.anchor(world.doctor, "s1")) == [0]
    world.refused(
        world.anchor(world.doctor, "s1", version=2, scope="sensitive"),
        Code.CONFLICT,
        "is in scope clinical: a version cannot move it to sensitive",
    )
    versions = world.query("records/versions", patient=world.patient.did, record=record("s1"))
    assert versions["scope"] == "clinical" and versions["history"][0]["scope"] == "clinical"
    payload = {
        "patient": world.patient.did,
        "resource_type": "Observation",
        "record": record("s2"),
        "version": 1,
        "blob_hash": blob("s2", 1),
        "commitment": "cd" * 32,
    }
    for recipients, message in [
        ([world.doctor.did], "exactly one scope/<scope>/<epoch> recipient, not 0"),
        (["scope/clinical/1", "scope/sensitive/1"], "exactly one scope/<scope>/<epoch>"),
    ]:
        checked = world.app.check_tx(
            world.doctor.tx("records/anchor", payload | {"recipients": recipients})
        )
        assert checked.code == Code.INVALID_PAYLOAD and message in checked.log
    tombstone = {k: payload[k] for k in ("patient", "resource_type", "record", "version")}
    checked = world.app.check_tx(world.doctor.tx("records/anchor", tombstone | {"tombstone": 1}))
    assert "version 1 of a record cannot be a tombstone" in checked.log


# --- the read decision -----------------------------------------------------------------------


@pytest.fixture
def records(world: World) -> World:
    """Records of the patient: "a1" (clinical) and "s1" (sensitive) written by org A's
    doctor, "p1" by the patient."""
    world.granted(world.a, "write")
    written = world.codes(
        world.anchor(world.doctor, "a1"),
        world.anchor(world.doctor, "s1", scope="sensitive"),
        world.anchor(world.patient, "p1"),
    )
    assert written == [0, 0, 0]
    return world


def test_the_patient_and_the_author_organisation_may_read(records: World) -> None:
    w = records
    assert w.decision(w.patient, "a1", purpose="") == (200, "patient", "")
    for reader in (w.doctor, w.nurse, w.a):
        assert w.decision(reader, "a1") == (200, "author organisation", "")
    assert w.decision(w.doctor, "p1")[:2] == (
        403,
        "no read grant of the patient covers " + w.doctor.did,
    )
    assert w.decision(w.doctor, "a1", purpose="") == (403, "no purpose stated", "")
    assert w.decision(w.doctor, "a1", purpose="SELLING")[:2] == (403, "unknown purpose 'SELLING'")
    assert w.decision(w.stranger, "a1")[:2] == (403, "not acting for a member organisation")


def test_a_delegate_reads_within_its_delegation(records: World) -> None:
    w = records
    delegation = w.granted(w.guardian, "delegate", scopes=["clinical"])
    assert w.decision(w.guardian, "a1", purpose="") == (200, "delegate of the patient", delegation)
    assert w.decision(w.guardian, "s1")[:2] == (403, "not acting for a member organisation")


def test_the_author_organisation_is_not_served_a_version_the_patient_wrote(
    records: World,
) -> None:
    """Review of issue 8: A wrote version 1; the patient revoked A's write consent and wrote a
    correction (version 2, wrapped to the scope key only), and A's nurse was served it for
    research as the "author organisation". The rule now names the organisation the version's
    author wrote for: A reads its versions, not the patient's."""
    w = records
    [write] = [g["id"] for g in w.query("consent/grants", patient=w.patient.did)]
    assert w.codes(w.patient.tx("consent/revoke", {"id": write})) == [0]
    correction = {
        "patient": w.patient.did,
        "resource_type": "Observation",
        "record": record("a1"),
        "version": 2,
        "blob_hash": blob("a1", 2),
        "commitment": "cd" * 32,
        "recipients": ["scope/clinical/1"],
    }
    assert w.codes(w.patient.tx("records/anchor", correction)) == [0]
    assert w.decision(w.nurse, "a1", purpose="HRESCH", version=2)[:2] == (
        403,
        f"no read grant of the patient covers {w.nurse.did}",
    )
    assert w.decision(w.nurse, "a1", purpose="HRESCH") == (200, "author organisation", "")
    # A may still correct what it started (a later version needs no write consent): that
    # version is A's again
    assert w.codes(w.anchor(w.doctor, "a1", version=3)) == [0]
    assert w.decision(w.nurse, "a1", version=3) == (200, "author organisation", "")
    history = w.query("records/versions", patient=w.patient.did, record=record("a1"))["history"]
    assert [v["org"] for v in history] == [w.a.did, "", w.a.did]


def test_an_organisation_level_read_grant_covers_its_practitioners(records: World) -> None:
    w = records
    assert w.decision(w.rival, "a1")[:2] == (
        403,
        f"no read grant of the patient covers {w.rival.did}",
    )
    grant_id = w.granted(w.b, purposes=["TREAT"])
    for reader in (w.b, w.rival, w.colleague):
        assert w.decision(reader, "a1") == (200, f"read grant {grant_id}", grant_id)
        assert w.decision(reader, "p1")[0] == 200  # written before or after: same rule
    assert w.decision(w.rival, "a1", purpose="HRESCH") == (
        403,
        f"grant {grant_id} is for purposes TREAT, not HRESCH",
        "",
    )
    assert w.decision(w.c, "a1")[0] == 403


def test_a_practitioner_level_read_grant_covers_that_practitioner_only(records: World) -> None:
    w = records
    grant_id = w.granted(w.rival)
    assert w.decision(w.rival, "a1") == (200, f"read grant {grant_id}", grant_id)
    for other in (w.colleague, w.b):
        assert w.decision(other, "a1")[:2] == (
            403,
            f"grant {grant_id} names practitioner {w.rival.did}",
        )


def test_a_revoked_or_expired_grant_allows_nothing(records: World) -> None:
    w = records
    grant_id = w.granted(w.b, start=T - 10, end=T + 100)
    assert w.decision(w.rival, "a1", at=T + 99)[0] == 200
    assert w.decision(w.rival, "a1", at=T + 100)[:2] == (
        403,
        f"grant {grant_id} expired at {T + 100}",
    )
    assert w.decision(w.rival, "a1", at=T - 11)[:2] == (403, f"grant {grant_id} starts at {T - 10}")
    assert w.codes(w.patient.tx("consent/revoke", {"id": grant_id})) == [0]
    height = w.app.info().last_height
    assert w.decision(w.rival, "a1")[:2] == (
        403,
        f"grant {grant_id} was revoked at height {height}",
    )


def test_the_sensitive_scope_is_read_only_where_a_grant_names_it(records: World) -> None:
    w = records
    broad = w.granted(w.b, scopes=list(BROAD_SCOPES))  # what "all" means to a patient
    assert w.decision(w.rival, "a1")[0] == 200
    assert w.decision(w.rival, "s1")[:2] == (
        403,
        f"grant {broad} does not cover scope sensitive (the sensitive scope must be named)",
    )
    named = w.granted(w.b, scopes=["sensitive"])
    assert w.decision(w.rival, "s1") == (200, f"read grant {named}", named)
    readers = w.query("consent/readers", patient=w.patient.did, scope="sensitive")
    assert [g["id"] for g in readers] == [named]


def test_a_record_level_grant_covers_the_records_it_names(records: World) -> None:
    w = records
    grant_id = w.granted(w.b, records=[record("a1")])
    assert w.decision(w.rival, "a1") == (200, f"read grant {grant_id}", grant_id)
    assert w.decision(w.rival, "p1")[:2] == (
        403,
        f"grant {grant_id} does not name record {record('p1')}",
    )


def test_the_most_specific_reason_names_the_grant_that_came_closest(records: World) -> None:
    w = records
    w.granted(w.colleague)  # names another practitioner
    w.granted(w.b, scopes=["diagnostics"])  # another scope
    closest = w.granted(w.b, purposes=["HRESCH"])  # everything but the purpose
    assert w.decision(w.rival, "a1")[:2] == (
        403,
        f"grant {closest} is for purposes HRESCH, not TREAT",
    )


def test_a_removed_organisations_practitioners_read_nothing(records: World) -> None:
    w = records
    w.granted(w.b)
    assert w.decision(w.rival, "a1")[0] == 200
    votes = [
        org.tx("identity/approve_membership", {"action": "remove", "subject": w.b.did})
        for org in (w.a, w.c)
    ]
    assert w.codes(*votes) == [0, 0]
    for reader in (w.rival, w.b):
        assert w.decision(reader, "a1")[:2] == (403, "not acting for a member organisation")


def test_read_access_answers_unknown_and_erased_blobs(records: World) -> None:
    w = records
    unknown = "ff" * 32
    [answer] = w.query(
        "records/read_access", reader=w.patient.did, purpose="", at=T, hashes=[unknown]
    )
    assert answer == {
        "status": 404,
        "reason": f"blob {unknown} anchors no record",
        "patient": "",
        "record": "",
        "version": 0,
        "scope": "",
        "grant": "",
        "basis": "",
    }
    assert w.codes(w.patient.tx("records/erase", {"records": [record("a1")]})) == [0]
    erased, kept = w.access(w.patient, "a1", "p1")
    assert erased["status"] == 410 and "was erased at height" in erased["reason"]
    assert kept == {
        "status": 200,
        "reason": "patient",
        "patient": w.patient.did,
        "record": record("p1"),
        "version": 1,
        "scope": "clinical",
        "grant": "",
        "basis": "patient",
    }
    bad = w.app.query("records/read_access", orjson.dumps({"reader": w.doctor.did, "at": T}))
    assert bad.code == Code.MALFORMED and "missing field 'hashes'" in bad.log


def test_the_decision_reads_only_the_grants_indexed_under_the_reader_and_its_org(
    records: World,
) -> None:
    """Bounded work: grants to other grantees are never read for a decision."""
    w = records
    for _ in range(5):
        w.granted(w.c)
    mine = w.granted(w.b)
    keeper = ConsentKeeper(KV(w.app.store, "consent"))
    read: list[str] = []
    original = keeper.grant

    def counting(grant_id: str) -> dict[str, Any] | None:
        read.append(grant_id)
        return original(grant_id)

    keeper.grant = counting  # type: ignore[method-assign]
    decision = keeper.read_decision(
        w.rival.did, w.patient.did, record("a1"), "clinical", w.a.did, "TREAT", T
    )
    assert decision.allowed and decision.grant == mine
    assert read == [mine]


# --- queries ---------------------------------------------------------------------------------


def test_what_a_grantee_may_read_and_who_may_read(records: World) -> None:
    w = records
    org_level = w.granted(w.b, keys=[wrap("clinical")], naming_key=WRAP)
    own = w.granted(w.rival, end=T + 100)
    other = w.granted(w.colleague)
    revoked = w.granted(w.b)
    assert w.codes(w.patient.tx("consent/revoke", {"id": revoked})) == [0]

    seen = w.query("consent/granted", grantee=w.rival.did)
    assert [g["id"] for g in seen] == [own, org_level]  # not the colleague's, not revoked
    assert seen[1]["keys"] == [wrap("clinical")] and seen[1]["naming_key"] == WRAP
    later = w.query("consent/granted", grantee=w.rival.did, at=str(T + 200))
    assert [g["id"] for g in later] == [org_level]
    assert [g["id"] for g in w.query("consent/granted", grantee=w.b.did)] == [org_level]
    readers = w.query("consent/readers", patient=w.patient.did, scope="clinical")
    assert {g["id"] for g in readers} == {org_level, own, other}
    newest_first = w.query("consent/grants", patient=w.patient.did)
    assert [g["id"] for g in newest_first][:4] == [revoked, other, own, org_level]
    missing = w.app.query("consent/grant", orjson.dumps({"id": "ee" * 16}))
    assert missing.code == Code.NOT_FOUND


# --- determinism -----------------------------------------------------------------------------


def test_two_state_machines_agree_after_the_same_consent_blocks(tmp_path: Path) -> None:
    """The same blocks of grants, delegations, anchors under write consent, revocations, key
    shares and refusals on a second state machine (with a tiny read cache, so that nothing
    depends on a cache): the same results and the same app hash at every height."""
    w = World(tmp_path / "a.sqlite")
    write = w.granted(w.a, "write", end=T + 1000)
    _, read = w.grant(w.b, keys=[wrap("clinical")])
    w.run(
        w.grant(w.b, keys=[wrap("clinical")], id=read)[0],
        w.grant(w.guardian, "delegate", scopes=["clinical"])[0],
        w.anchor(w.doctor, "d1"),
        w.anchor(w.rival, "d2"),  # NO_CONSENT
        w.grant(w.rival, "write", sender=w.stranger)[0],  # UNAUTHORISED
    )
    w.run(
        w.grant(w.colleague, sender=w.guardian, scopes=["clinical"])[0],
        w.patient.tx("consent/share_keys", {"id": read, "naming_key": WRAP}),
        w.patient.tx("consent/revoke", {"id": read}),
        w.patient.tx("consent/revoke", {"id": read}),  # CONFLICT
        w.anchor(w.nurse, "d3"),
    )
    w.run(w.anchor(w.doctor, "d4"), w.patient.tx("consent/revoke", {"id": write}), at=T + 999)
    w.run(w.anchor(w.doctor, "d5"), at=T + 1000)  # NO_CONSENT: revoked and expired

    twin = make_app(tmp_path / "b.sqlite", [w.a.identity, w.b.identity, w.c.identity])
    twin.store.cache.max_bytes = 2048
    codes = []
    for txs, time_ns, results, app_hash in w.blocks:
        assert run_block_results(twin, txs, time_ns) == results
        assert twin.info().last_app_hash == app_hash
        codes.append([int(r.code) for r in results])
    assert codes[-4:] == [[0, 0, 0, 14, 8], [0, 0, 0, 10, 0], [0, 0], [14]]
    assert dict(twin.store.all_rows()) == dict(w.app.store.all_rows())
