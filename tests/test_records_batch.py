"""records/anchor_batch on a real state machine (real SQLite): many anchors of one author in
one transaction, each checked exactly as a records/anchor is, all or nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.app import Application
from careledger.chain.codes import Code
from careledger.chain.modules.records.events import RecordAnchored
from careledger.chain.modules.records.messages import MAX_BATCH_ANCHORS
from nodeutil import make_app, record_name, run_block, run_block_results
from test_records_chain import Actor, anchor

BATCH = "records/anchor_batch"


@dataclass
class World:
    app: Application
    org: Actor  # a founding member: writes for both consenting patients
    rival: Actor  # another founding member, with the first patient's write consent too
    first: Actor  # consented to org and rival
    second: Actor  # consented to org
    unconsented: Actor  # registered, consented to nobody

    def records(self, patient: Actor) -> list[dict[str, Any]]:
        result = self.app.query("records/records", orjson.dumps({"patient": patient.did}))
        assert result.code == 0, result.log
        found: list[dict[str, Any]] = orjson.loads(result.value)
        return found

    def batch(self, author: Actor, *anchors: dict[str, Any]) -> bytes:
        return author.tx(BATCH, {"anchors": list(anchors)})


@pytest.fixture
def world(tmp_path: Path) -> World:
    org, rival = Actor(), Actor()
    first, second, unconsented = Actor(), Actor(), Actor()
    app = make_app(tmp_path / "state.sqlite", [org.identity, rival.identity])
    txs = []
    for patient in (first, second, unconsented):
        txs += [patient.register_patient(org), patient.publish("diagnostics", 1)]
    txs += [
        first.consent_to_write(org),
        first.consent_to_write(rival),
        second.consent_to_write(org),
    ]
    assert run_block(app, txs) == [0] * len(txs)
    return World(app, org, rival, first, second, unconsented)


def test_a_batch_of_several_patients_commits_every_anchor_with_its_event(world: World) -> None:
    w = world
    raw = w.batch(
        w.org,
        anchor(w.first.did, "a", 1, "1"),
        anchor(w.second.did, "b", 1, "2"),
        anchor(w.first.did, "c", 1, "3"),
    )
    [result] = run_block_results(w.app, [raw])
    assert result.code == 0, result.log
    events = RecordAnchored.all_in(result.events)
    assert [(e.patient, e.blob_hash[0], e.author) for e in events] == [
        (w.first.did, "1", w.org.did),
        (w.second.did, "2", w.org.did),
        (w.first.did, "3", w.org.did),
    ]
    assert sorted(r["latest"]["blob_hash"][0] for r in w.records(w.first)) == ["1", "3"]
    assert [r["latest"]["author"] for r in w.records(w.second)] == [w.org.did]
    # Later versions by batch too, each exactly the last plus one.
    more = w.batch(w.org, anchor(w.first.did, "a", 2, "4"), anchor(w.second.did, "b", 2, "5"))
    assert run_block(w.app, [more]) == [0]


def refusal_cases(w: World) -> list[tuple[str, dict[str, Any], Code]]:
    """(what, an anchor `records/anchor` refuses, its code), each set up beforehand."""
    p = w.first.did
    setup = [
        w.org.tx("records/anchor", anchor(p, "taken-blob", 1, "9")),
        w.rival.tx("records/anchor", anchor(p, "rivals", 1, "8")),
        w.org.tx("records/anchor", anchor(p, "to-erase", 1, "7")),
    ]
    assert run_block(w.app, setup) == [0, 0, 0]
    erase = {"records": [record_name(p, "Observation", "to-erase")]}
    assert run_block(w.app, [w.first.tx("records/erase", erase)]) == [0]
    stale = anchor(p, "stale", 1, "6", recipients=["scope/diagnostics/2"])
    return [
        ("a patient without consent", anchor(w.unconsented.did, "x", 1, "a"), Code.NO_CONSENT),
        ("an unregistered patient", anchor(Actor().did, "x", 1, "a"), Code.NOT_FOUND),
        ("a version gap", anchor(p, "new", 2, "a"), Code.CONFLICT),
        ("a blob already anchored", anchor(p, "other", 1, "9"), Code.CONFLICT),
        ("another member's record", anchor(p, "rivals", 2, "a"), Code.UNAUTHORISED),
        ("an erased record", anchor(p, "to-erase", 2, "a"), Code.ERASED),
        ("a scope key not published", stale, Code.CONFLICT),
    ]


def test_one_refused_anchor_refuses_the_whole_batch_and_writes_nothing(world: World) -> None:
    w = world
    for number, (what, bad, code) in enumerate(refusal_cases(w)):
        good = anchor(w.second.did, f"good-{number}", 1, f"{number:02x}" * 32)
        alone = w.org.tx("records/anchor", bad)
        batch = w.batch(w.org, good, bad)
        results = run_block_results(w.app, [alone, batch])
        assert [r.code for r in results] == [code, code], what
        assert results[1].log.startswith("anchor 1 of 2: "), what
        assert results[1].log.removeprefix("anchor 1 of 2: ") == results[0].log, what
        assert results[1].events == (), what
        names = {r["record"] for r in w.records(w.second)}
        assert record_name(w.second.did, "Observation", f"good-{number}") not in names, what
        # Nothing of it was written: the good anchor alone still commits as version 1.
        assert run_block(w.app, [w.batch(w.org, good)]) == [0], what


def test_a_batch_by_someone_who_may_not_write_is_refused(world: World) -> None:
    w = world
    by_patient = w.batch(w.second, anchor(w.first.did, "x", 1, "1"))  # another patient
    stranger = Actor()  # unregistered
    by_stranger = w.batch(stranger, anchor(w.first.did, "y", 1, "2"))
    results = run_block_results(w.app, [by_patient, by_stranger])
    assert [r.code for r in results] == [Code.UNAUTHORISED, Code.UNKNOWN_SENDER]
    assert w.records(w.first) == []


def test_a_patient_batches_their_own_records(world: World) -> None:
    w = world
    own = w.batch(w.unconsented, anchor(w.unconsented.did, "mine", 1, "1"))
    assert run_block(w.app, [own]) == [0]


@pytest.mark.parametrize(
    ("anchors", "error"),
    [
        ([], "'anchors' must be a list of 1 to 100 objects"),
        (["not an object"], "'anchors' must hold objects"),
        ([{"patient": "x"}], "anchor 0: "),
        ("twice-record", "each record once"),
        ("twice-blob", "each blob once"),
        ("too-many", "'anchors' must be a list of 1 to 100 objects"),
    ],
)
def test_a_malformed_batch_is_refused_before_the_mempool(
    world: World, anchors: Any, error: str
) -> None:
    w = world
    p = w.first.did
    if anchors == "twice-record":
        anchors = [anchor(p, "same", 1, "1"), anchor(p, "same", 2, "2")]
    elif anchors == "twice-blob":
        anchors = [anchor(p, "one", 1, "1"), anchor(p, "two", 1, "1")]
    elif anchors == "too-many":
        anchors = [anchor(p, f"r{i}", 1, f"{i:064x}") for i in range(MAX_BATCH_ANCHORS + 1)]
    checked = w.app.check_tx(w.org.tx(BATCH, {"anchors": anchors}))
    assert checked.code == Code.INVALID_PAYLOAD and error in checked.log


def test_unknown_fields_beside_the_anchors_are_refused(world: World) -> None:
    w = world
    raw = w.org.tx(BATCH, {"anchors": [anchor(w.first.did, "a", 1, "1")], "extra": 1})
    assert w.app.check_tx(raw).code == Code.INVALID_PAYLOAD


def test_a_full_batch_fits_in_one_transaction(world: World) -> None:
    """MAX_BATCH_ANCHORS anchors with the longest usual fields stay under the 64 KiB bound."""
    w = world
    p = w.first.did
    anchors = [
        anchor(p, f"full-{i}", 1, f"{i:064x}", recipients=["scope/diagnostics/1", w.org.did])
        for i in range(MAX_BATCH_ANCHORS)
    ]
    raw = w.batch(w.org, *anchors)
    assert len(raw) < 64 * 1024
    [result] = run_block_results(w.app, [raw])
    assert result.code == 0, result.log
    assert len(RecordAnchored.all_in(result.events)) == MAX_BATCH_ANCHORS
