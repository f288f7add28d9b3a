"""The read decision's work is bounded per query, and the shortcut that bounds it gives the
same answers as the rule applied grant by grant.

Issue 8: a patient gave an organisation 1,000 grants and wrote 5,000 records; the
organisation's one `records/read_access` query of all 5,000 hashes re-read and re-parsed the
same 1,000 grants for each hash (5,000,000 grant reads, 30 s of the node's event loop). Now a
query reads each of a patient's grant lists once (`DecisionMemo`) and works the decision out
once per (patient, scope, record organisation) and once per record (`Plan`). Counted here
on the real state machine (real SQLite) by a store that counts reads, not timed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careledger.chain.app import Application
from careledger.chain.modules.consent import MODULE as CONSENT
from careledger.chain.modules.consent import ConsentKeeper, DecisionMemo
from careledger.chain.modules.consent import decision as consent_decision
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.state import KV, Overlay
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.crypto.keys import Identity
from careledger.crypto.scopekeys import SENSITIVE
from nodeutil import (
    BLOCK_TIME_NS,
    CHAIN_ID,
    grant_payload,
    make_app,
    practitioner_payload,
    register_patient_tx,
    run_block,
)

T = BLOCK_TIME_NS // 10**9


class CountingStore:
    """The committed state store, counting the grant rows and grant indexes read."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.grant_reads = 0
        self.index_scans = 0

    def get(self, key: bytes) -> bytes | None:
        self.grant_reads += key.startswith(b"consent/grant/")
        return self.store.get(key)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        self.index_scans += prefix.startswith(b"consent/pg/")
        return self.store.iterate(prefix, start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Sender:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.did = self.identity.did
        self.nonce = 0

    def tx(self, type_: str, payload: dict[str, Any]) -> bytes:
        self.nonce += 1
        return Tx(CHAIN_ID, type_, self.did, self.nonce, payload).sign(self.identity)


class Clinic:
    """Members A and B, A's doctor and colleague, B's rival; a patient with clinical,
    diagnostics and sensitive scope keys; records `anchor`ed by B (so that A's reads are
    decided by the patient's grants, not as the author organisation)."""

    def __init__(self, path: Path) -> None:
        self.a, self.b = Sender(), Sender()
        self.doctor, self.colleague, self.rival = Sender(), Sender(), Sender()
        self.patient = Sender()
        self.app: Application = make_app(path, [self.a.identity, self.b.identity])
        staff = [(self.a, self.doctor), (self.a, self.colleague), (self.b, self.rival)]
        txs = [
            org.tx(
                "identity/register_practitioner",
                practitioner_payload(CHAIN_ID, org.did, p.identity),
            )
            for org, p in staff
        ]
        self.patient.nonce += 1
        txs.append(register_patient_tx(CHAIN_ID, self.patient.identity, self.a.identity))
        for scope in ("clinical", "diagnostics", SENSITIVE):
            key = scope_key_payload(self.patient.identity, CHAIN_ID, scope, 1, "22" * 32)
            txs.append(self.patient.tx("records/publish_scope_key", key))
        self.block(txs)
        grant = grant_payload(self.patient.did, self.b.did, "write")
        self.block([self.patient.tx("consent/grant", grant)])

    def block(self, txs: list[bytes]) -> None:
        for start in range(0, len(txs), 500):
            codes = run_block(self.app, txs[start : start + 500])
            assert set(codes) == {0}, codes

    def anchors(self, count: int, scope: str = "clinical") -> list[tuple[str, str]]:
        """`count` records of the patient written by B: (record, blob hash) each."""
        made = [(secrets.token_hex(32), secrets.token_hex(32)) for _ in range(count)]
        self.block([self._anchor(rec, digest, scope) for rec, digest in made])
        return made

    def _anchor(self, rec: str, digest: str, scope: str) -> bytes:
        payload = {
            "patient": self.patient.did,
            "resource_type": "Observation",
            "record": rec,
            "version": 1,
            "blob_hash": digest,
            "commitment": "cd" * 32,
            "recipients": [f"scope/{scope}/1", self.b.did],
        }
        return self.b.tx("records/anchor", payload)

    def read_access(self, reader: Sender, hashes: list[str]) -> tuple[list[Any], CountingStore]:
        counting = CountingStore(self.app.store)
        self.app.store = counting  # type: ignore[assignment]
        query = {"reader": reader.did, "purpose": "TREAT", "at": T, "hashes": hashes}
        try:
            found = self.app.query("records/read_access", orjson.dumps(query))
        finally:
            self.app.store = counting.store
        assert found.code == 0, found.log
        return orjson.loads(found.value), counting


@pytest.fixture
def clinic(tmp_path: Path) -> Clinic:
    return Clinic(tmp_path / "state.sqlite")


@pytest.fixture(scope="module")
def quiet_clinic(tmp_path_factory: pytest.TempPathFactory) -> Clinic:
    """A clinic whose patient has granted nothing: each example adds its own grants, in a
    state view of its own over the committed state."""
    return Clinic(tmp_path_factory.mktemp("clinic") / "state.sqlite")


GRANTS = 300  # of every kind below: the work must not grow with the hashes, whatever the count
HASHES = 1500


def test_one_read_access_query_reads_each_grant_once_however_many_hashes(
    clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of issue 8, against the real query: many grants to the reader's
    organisation that all fail (research only; treatment, but naming 100 other records
    each), then one query about every record. Before, each hash re-read every grant
    (GRANTS x HASHES reads); now each grant is read and checked once per query."""
    made = clinic.anchors(HASHES)
    research = {"purposes": ["HRESCH"], "scopes": ["clinical"]}
    narrowed = {"scopes": ["clinical"]}
    grants = []
    for _ in range(GRANTS):
        others = [secrets.token_hex(32) for _ in range(100)]
        grants.append(grant_payload(clinic.patient.did, clinic.a.did, "read", **research))
        grants.append(
            grant_payload(clinic.patient.did, clinic.a.did, "read", **narrowed, records=others)
        )
    clinic.block([clinic.patient.tx("consent/grant", g) for g in grants])
    checks = _count_checks(monkeypatch)

    one, counted_one = clinic.read_access(clinic.doctor, [made[0][1]])
    checks_one = checks[0]
    answers, counted = clinic.read_access(clinic.doctor, [digest for _, digest in made])

    assert len(answers) == HASHES and {a["status"] for a in answers} == {403}
    assert answers[0] == one[0]
    # every grant of A read once (2 x GRANTS), none per hash; one index scan per did (the
    # doctor, A); every grant checked once for the whole query
    assert counted.grant_reads == counted_one.grant_reads == 2 * GRANTS
    assert counted.index_scans == counted_one.index_scans == 2
    assert checks[0] - checks_one == checks_one == 2 * GRANTS


def test_a_grant_naming_a_record_is_still_found_among_many(clinic: Clinic) -> None:
    """The shortcut keeps the rule: among many grants that fail, the one naming a record
    allows that record only, and the others keep the most specific denial."""
    made = clinic.anchors(4, scope="diagnostics")
    (named, named_hash), (_, other_hash) = made[0], made[1]
    grant = grant_payload(
        clinic.patient.did, clinic.colleague.did, "read", scopes=["diagnostics"], records=[named]
    )
    clinic.block([clinic.patient.tx("consent/grant", grant)])

    answers, _ = clinic.read_access(clinic.colleague, [other_hash, named_hash, other_hash])

    assert [a["status"] for a in answers] == [403, 200, 403]
    assert answers[1]["grant"] == grant["id"]
    assert answers[0]["reason"] == f"grant {grant['id']} does not name record {made[1][0]}"


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the grant checks the decisions make (each a grant against a request)."""
    count = [0]
    check = consent_decision.Request.check

    def counted(self: Any, grant: dict[str, Any]) -> tuple[int | None, str]:
        count[0] += 1
        return check(self, grant)

    monkeypatch.setattr(consent_decision.Request, "check", counted)
    return count


# --- the shortcut against the rule, grant by grant ------------------------------------------

POOL = [f"{i:x}" * 64 for i in range(1, 5)]  # the records grants may name
PURPOSES = ["TREAT", "HRESCH"]
SCOPES = ["clinical", "diagnostics", SENSITIVE]
TIMES = [T - 100, T, T + 100]

grant_shapes = st.fixed_dictionaries(
    {
        "grantee": st.sampled_from(["doctor", "a", "colleague", "rival"]),
        "scopes": st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True),
        "records": st.one_of(st.just([]), st.lists(st.sampled_from(POOL), min_size=1, unique=True)),
        "purposes": st.lists(st.sampled_from(PURPOSES), min_size=1, unique=True),
        "start": st.sampled_from([0, T]),
        "end": st.sampled_from([T, T + 1, 2**40]),
        "revoked": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(grant_shapes, max_size=10), st.randoms(use_true_random=False))
def test_the_decisions_of_a_query_are_the_rule_applied_grant_by_grant(
    quiet_clinic: Clinic, shapes: list[dict[str, Any]], rand: Any
) -> None:
    """Random grants (to the doctor, to A, to a colleague at A, to B's rival; narrowed to
    records or not; some revoked) on the real committed state; every read of the doctor and
    of A, in a shuffled order through one memo, equals `_by_rule`: the candidates checked one
    by one, the first that allows wins, else the furthest denial (docs/chain.md)."""
    clinic = quiet_clinic
    dids = {"doctor": clinic.doctor.did, "a": clinic.a.did, "colleague": clinic.colleague.did}
    dids["rival"] = clinic.rival.did
    kv = KV(Overlay(clinic.app.store), CONSENT)
    keeper = ConsentKeeper(kv)
    grants = [_put(keeper, clinic, dids[s["grantee"]], s, h) for h, s in enumerate(shapes)]
    asked = [
        (reader, rec, scope, purpose, at)
        for reader in (clinic.doctor.did, clinic.a.did)
        for rec in [*POOL, "f" * 64]
        for scope in SCOPES
        for purpose in PURPOSES
        for at in TIMES
    ]
    rand.shuffle(asked)
    memo = DecisionMemo()
    for reader, rec, scope, purpose, at in asked:
        expected = _by_rule(grants, reader, clinic.a.did, rec, scope, purpose, at)
        patient = clinic.patient.did
        found = keeper.read_decision(reader, patient, rec, scope, clinic.b.did, purpose, at, memo)
        alone = keeper.read_decision(reader, patient, rec, scope, clinic.b.did, purpose, at)
        assert (found.allowed, found.reason, found.grant) == expected
        assert alone == found


def _put(
    keeper: ConsentKeeper, clinic: Clinic, grantee: str, shape: dict[str, Any], height: int
) -> dict[str, Any]:
    org = grantee if grantee in (clinic.a.did, clinic.b.did) else ""
    org = org or (clinic.a.did if grantee != clinic.rival.did else clinic.b.did)
    grant = {
        "id": f"{height:032x}",
        "patient": clinic.patient.did,
        "grantee": grantee,
        "action": "read",
        "scopes": shape["scopes"],
        "records": shape["records"],
        "purposes": shape["purposes"],
        "start": shape["start"],
        "end": shape["end"],
        "org": org,
        "grantor": clinic.patient.did,
        "delegation": "",
        "height": height,
        "revoked_at": 0,
    }
    keeper.put_grant(grant)
    if shape["revoked"]:
        keeper.revoke(grant, 1000 + height)
        grant = {**grant, "revoked_at": 1000 + height}
    return grant


def _by_rule(
    grants: list[dict[str, Any]], reader: str, org: str, rec: str, scope: str, purpose: str, at: int
) -> tuple[bool, str, str]:
    """The read rule for a reader acting for `org`, written out plainly: the candidates are
    the live read grants to the reader or to `org` or to a practitioner of `org`, by id, then
    the last revoked grant found under each of (reader, org)."""
    dids = list(dict.fromkeys((reader, org)))
    live = sorted(
        (g for g in grants if not g["revoked_at"] and ({g["grantee"], g["org"]} & set(dids))),
        key=lambda g: g["id"],
    )
    revoked = [g for g in grants if g["revoked_at"]]
    last = [[g for g in revoked if did in (g["grantee"], g["org"])][-1:] for did in dids]
    best: tuple[int, str] | None = None
    for grant in live + [g for found in last for g in found]:
        step, reason = _check(grant, reader, org, rec, scope, purpose, at)
        if step is None:
            return True, f"read grant {grant['id']}", grant["id"]
        if best is None or step > best[0]:
            best = (step, reason)
    if best is None:
        return False, f"no read grant of the patient covers {reader}", ""
    return False, best[1], ""


def _check(
    grant: dict[str, Any], reader: str, org: str, rec: str, scope: str, purpose: str, at: int
) -> tuple[int | None, str]:
    name = f"grant {grant['id']}"
    if grant["grantee"] not in (reader, org):
        return 0, f"{name} names practitioner {grant['grantee']}"
    if grant["revoked_at"]:
        return 1, f"{name} was revoked at height {grant['revoked_at']}"
    if at >= grant["end"]:
        return 2, f"{name} expired at {grant['end']}"
    if at < grant["start"]:
        return 3, f"{name} starts at {grant['start']}"
    if scope not in grant["scopes"]:
        named = " (the sensitive scope must be named)" if scope == SENSITIVE else ""
        return 4, f"{name} does not cover scope {scope}{named}"
    if grant["records"] and rec not in grant["records"]:
        return 5, f"{name} does not name record {rec}"
    if purpose not in grant["purposes"]:
        return 6, f"{name} is for purposes {', '.join(grant['purposes'])}, not {purpose}"
    return None, ""
