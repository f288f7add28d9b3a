"""The audit module on the real state machine (real SQLite), block by block.

Nodes record batches of access entries (`audit/record_batch`); each rule is an attack sent as a
transaction and refused with its own code and message, nothing of the audit state written:
a replayed or skipped batch, a batch naming another node, a batch from anyone but a node, from
a node of an expelled organisation, out of its time window, malformed. The patient's log
(`audit/log`) lists newest first, alerts on top, in bounded pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.chain.app import DEFAULT_MODULES, Application, TxResult
from careledger.chain.codes import Code
from careledger.chain.genesis import Genesis
from careledger.chain.modules.audit import (
    MAX_BATCH_ENTRIES,
    AccessBatchRecorded,
    AccessEntry,
    AuditKeeper,
    BreakGlassAlert,
    decode_batch,
    encode_batch,
)
from careledger.chain.modules.audit.handler import MAX_BATCH_AGE, MAX_CLOCK_AHEAD
from careledger.chain.modules.base import Message, Module, Payload, TxContext
from careledger.chain.modules.records import scope_key_payload
from careledger.chain.state import KV, Overlay
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx, decode_tx, tx_hash
from careledger.crypto.keys import Identity
from careledger.crypto.merkle import merkle_root
from nodeutil import (
    BLOCK_TIME_NS,
    CHAIN_ID,
    GENESIS_TIME,
    practitioner_payload,
    register_patient_tx,
    run_block_results,
)

T = BLOCK_TIME_NS // 10**9  # the blocks' time in unix seconds (run_block's default)


class Actor:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.did = self.identity.did
        self.nonce = 0

    def tx(self, type_: str, payload: dict[str, Any]) -> bytes:
        self.nonce += 1
        return Tx(CHAIN_ID, type_, self.did, self.nonce, payload).sign(self.identity)


def _alert(ctx: TxContext, msg: dict[str, Any]) -> None:
    """A stand-in for the consent module's break_glass: records an alert the way it does."""
    AuditKeeper.of(ctx).record_alert(msg["patient"], msg)
    ctx.emit(BreakGlassAlert(msg["patient"], msg["id"], ctx.sender, "", ("clinical",), "0"))


def _parse_alert(p: Payload) -> dict[str, Any]:
    alert = {"patient": p.did("patient"), "id": p.text("id", max_len=32)}
    p.done()
    return alert


# A test module (the real Application runs it like any other) that raises alerts.
ALERTING = Module(
    "alerting", {"raise": Message(_parse_alert, _alert)}, {}, lambda ctx, genesis: None
)


class World:
    """Members A, B and C with nodes registered at genesis; A's doctor; patients P and Q."""

    def __init__(self, path: Path) -> None:
        self.a, self.b, self.c = Actor(), Actor(), Actor()
        self.node_a, self.node_b, self.node_c = Actor(), Actor(), Actor()
        self.doctor, self.patient, self.other = Actor(), Actor(), Actor()
        self.app = Application(StateStore(path), (*DEFAULT_MODULES, ALERTING))
        orgs = [("Org A", self.a.identity), ("Org B", self.b.identity), ("Org C", self.c.identity)]
        nodes: list[Identity | None] = [self.node_a.identity, self.node_b.identity]
        nodes.append(self.node_c.identity)
        genesis = Genesis.for_organisations(CHAIN_ID, orgs, nodes=nodes)
        self.app.init_chain(Genesis(CHAIN_ID, GENESIS_TIME, genesis.organisations))
        self.seq = {n.did: 0 for n in (self.node_a, self.node_b, self.node_c)}
        registrations = [
            self.a.tx(
                "identity/register_practitioner",
                practitioner_payload(CHAIN_ID, self.a.did, self.doctor.identity),
            )
        ]
        for person in (self.patient, self.other):
            person.nonce += 1
            registrations.append(
                register_patient_tx(CHAIN_ID, person.identity, self.a.identity, person.nonce)
            )
        assert [r.code for r in self.run(*registrations)] == [0, 0, 0]
        # The records the entries name: the patient's "ab..." (12 versions), the other's
        # "cd..." (2): a batch names only records of its entries' patients.
        self.records = {self.patient.did: ("ab" * 32, 12), self.other.did: ("cd" * 32, 2)}
        anchors = [
            tx
            for person in (self.patient, self.other)
            for tx in self.own_record(person, *self.records[person.did])
        ]
        assert {r.code for r in self.run(*anchors)} == {0}

    def own_record(self, person: Actor, record: str, versions: int) -> list[bytes]:
        """The transactions by which `person` publishes a scope key and writes `record`."""
        key = scope_key_payload(person.identity, CHAIN_ID, "diagnostics", 1, "22" * 32)
        txs = [person.tx("records/publish_scope_key", key)]
        for version in range(1, versions + 1):
            anchor = {
                "patient": person.did,
                "resource_type": "Observation",
                "record": record,
                "version": version,
                "blob_hash": f"{version:02x}{record[2:4]}" * 16,
                "commitment": "ab" * 32,
                "recipients": ["scope/diagnostics/1"],
            }
            txs.append(person.tx("records/anchor", anchor))
        return txs

    def run(self, *txs: bytes, at: int | None = None) -> list[TxResult]:
        time_ns = None if at is None else at * 10**9
        return run_block_results(self.app, list(txs), time_ns)

    def now(self) -> int:
        """The time of the next block run without `at`."""
        return (BLOCK_TIME_NS + self.app.info().last_height + 1) // 10**9

    def entry(self, **changes: Any) -> AccessEntry:
        fields: dict[str, Any] = {
            "patient": self.patient.did,
            "record": "ab" * 32,
            "version": 1,
            "reader": self.doctor.did,
            "org": self.a.did,
            "purpose": "TREAT",
            "outcome": "grant",
            "at": self.now(),
        }
        return AccessEntry(**(fields | changes))

    def batch(
        self,
        node: Actor,
        entries: list[AccessEntry],
        seq: int | None = None,
        signer: Actor | None = None,
    ) -> bytes:
        """`audit/record_batch` of `node` (next seq unless given), sent by `signer` (the
        node itself by default)."""
        if seq is None:
            seq = self.seq[node.did] = self.seq[node.did] + 1
        return (signer or node).tx("audit/record_batch", encode_batch(node.did, seq, entries))

    def query(self, path: str, **params: Any) -> Any:
        found = self.app.query(path, orjson.dumps(params))
        assert found.code == Code.OK, found.log
        return orjson.loads(found.value)

    def query_code(self, path: str, **params: Any) -> tuple[int, str]:
        found = self.app.query(path, orjson.dumps(params))
        return found.code, found.log

    def audit_rows(self) -> list[tuple[bytes, bytes]]:
        return list(self.app.store.iterate(b"audit/"))

    def refused(self, raw: bytes, code: int, message: str, at: int | None = None) -> None:
        """Refused in a block with `code` and `message`, nothing of the audit state written."""
        before = self.audit_rows()
        [result] = self.run(raw, at=at)
        assert (result.code, message in result.log) == (code, True), result.log
        assert self.audit_rows() == before


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "state.sqlite")


# --- a batch recorded -----------------------------------------------------------------------


def test_a_batch_is_recorded_with_its_root_and_each_entry_in_its_patients_log(
    world: World,
) -> None:
    entries = [
        world.entry(),
        world.entry(patient=world.other.did, record="cd" * 32, outcome="denied", version=2),
        world.entry(patient="", record="", version=0, outcome="not_found", purpose=""),
        world.entry(reader=world.patient.did, org="", purpose="", outcome="patient"),
    ]
    raw = world.batch(world.node_a, entries)
    [result] = world.run(raw)
    assert result.code == Code.OK, result.log
    height, tx = world.app.info().last_height, tx_hash(raw).hex()
    root = merkle_root([e.leaf() for e in entries]).hex()
    assert AccessBatchRecorded.all_in(result.events) == [
        AccessBatchRecorded(world.node_a.did, world.a.did, "1", "4", root)
    ]
    assert world.query("audit/batch", node=world.node_a.did, seq=1) == {
        "node": world.node_a.did,
        "org": world.a.did,
        "seq": 1,
        "height": height,
        "tx": tx,
        "count": 4,
        "root": root,
    }
    assert world.query("audit/last_seq", node=world.node_a.did) == {"seq": 1}
    assert world.query("audit/last_seq", node=world.node_b.did) == {"seq": 0}
    log = world.query("audit/log", patient=world.patient.did)
    # the patient's own read (index 3) is newer than the doctor's (index 0) in one batch
    assert [row["index"] for row in log["entries"]] == [3, 0]
    assert log["entries"][1] == {
        "entry": entries[0].compact().to_json(),
        "height": height,
        "tx": tx,
        "node": world.node_a.did,
        "seq": 1,
        "index": 0,
    }
    assert (log["alerts"], log["next"]) == ([], "")
    # what the wallet checks: the entry at `index` of the batch in transaction `tx`
    payload = decode_tx(raw).tx.payload
    for row in log["entries"]:
        assert decode_batch(payload)[row["index"]].to_json() == row["entry"]
    [other] = world.query("audit/log", patient=world.other.did)["entries"]
    assert other["entry"]["outcome"] == "denied" and other["index"] == 1


def test_batches_of_several_nodes_in_one_block_keep_their_order(world: World) -> None:
    first = world.batch(world.node_a, [world.entry()])
    second = world.batch(world.node_b, [world.entry(outcome="denied", org=world.b.did)])
    assert [r.code for r in world.run(first, second)] == [0, 0]
    log = world.query("audit/log", patient=world.patient.did)["entries"]
    assert [row["tx"] for row in log] == [tx_hash(second).hex(), tx_hash(first).hex()]
    assert world.query("audit/batch", node=world.node_b.did, seq=1)["org"] == world.b.did


# --- refused batches ------------------------------------------------------------------------


def test_a_replayed_batch_is_refused(world: World) -> None:
    entries = [world.entry()]
    assert [r.code for r in world.run(world.batch(world.node_a, entries))] == [0]
    world.refused(
        world.batch(world.node_a, entries, seq=1),
        Code.BATCH_REPLAYED,
        f"batch 1 of node {world.node_a.did} already recorded",
    )
    # the very same transaction again is a nonce replay
    raw = world.batch(world.node_a, entries)
    assert [r.code for r in world.run(raw)] == [0]
    world.refused(raw, Code.REPLAY, "already used")


def test_a_skipped_batch_is_refused(world: World) -> None:
    world.refused(
        world.batch(world.node_a, [world.entry()], seq=2),
        Code.BATCH_GAP,
        f"expected batch 1 of node {world.node_a.did}, not 2",
    )
    assert [r.code for r in world.run(world.batch(world.node_a, [world.entry()], seq=1))] == [0]
    world.refused(
        world.batch(world.node_a, [world.entry()], seq=3), Code.BATCH_GAP, "expected batch 2"
    )


def test_a_batch_naming_another_node_is_refused(world: World) -> None:
    """Node B (another organisation's) and A's own organisation claim entries as node A."""
    world.refused(
        world.batch(world.node_a, [world.entry()], seq=1, signer=world.a),
        Code.UNAUTHORISED,
        "only a node sends audit batches",
    )
    world.refused(
        world.batch(world.node_a, [world.entry()], seq=1, signer=world.node_b),
        Code.UNAUTHORISED,
        f"batch names node {world.node_a.did} but is signed by {world.node_b.did}",
    )
    assert world.query("audit/last_seq", node=world.node_a.did) == {"seq": 0}


@pytest.mark.parametrize(
    ("who", "kind"),
    [("a", "an organisation"), ("doctor", "a practitioner"), ("patient", "a patient")],
)
def test_only_a_node_sends_a_batch(world: World, who: str, kind: str) -> None:
    sender: Actor = getattr(world, who)
    raw = sender.tx("audit/record_batch", encode_batch(sender.did, 1, [world.entry()]))
    world.refused(
        raw, Code.UNAUTHORISED, f"only a node sends audit batches: {sender.did} is {kind}"
    )


def test_a_batch_from_an_unknown_sender_is_refused(world: World) -> None:
    stranger = Actor()
    raw = stranger.tx("audit/record_batch", encode_batch(stranger.did, 1, [world.entry()]))
    world.refused(raw, Code.UNKNOWN_SENDER, "not a registered identity")
    assert world.app.check_tx(raw).code == Code.UNKNOWN_SENDER


def test_a_node_of_an_expelled_organisation_records_nothing(world: World) -> None:
    assert [r.code for r in world.run(world.batch(world.node_a, [world.entry()]))] == [0]
    votes = [
        voter.tx("identity/approve_membership", {"action": "remove", "subject": world.a.did})
        for voter in (world.b, world.c)
    ]
    assert [r.code for r in world.run(*votes)] == [0, 0]
    raw = world.batch(world.node_a, [world.entry()])
    assert world.app.check_tx(raw).code == Code.UNKNOWN_SENDER
    world.refused(raw, Code.UNKNOWN_SENDER, "may no longer act")


@pytest.mark.parametrize(
    "record, version",
    [("cd" * 32, 1), ("ef" * 32, 1), ("ab" * 32, 13)],
    ids=["another patient's record", "no such record", "no such version"],
)
def test_a_batch_naming_a_record_its_patient_does_not_have_is_refused(
    world: World, record: str, version: int
) -> None:
    """A node fills the patient's log with reads of the other patient's record, of a record
    that does not exist, or of a version the record does not have: BAD_BATCH, nothing of the
    batch written (the honest entry beside it included)."""
    poisoned = world.entry(record=record, version=version, outcome="denied")
    raw = world.batch(world.node_a, [world.entry(), poisoned], seq=1)
    world.refused(raw, Code.BAD_BATCH, f"entry 1: patient {world.patient.did} has no record")
    assert world.query("audit/log", patient=world.patient.did)["entries"] == []


def test_a_batch_out_of_its_time_window_is_refused(world: World) -> None:
    block = world.now()
    too_old = world.batch(world.node_a, [world.entry(at=block - MAX_BATCH_AGE - 1)], seq=1)
    world.refused(too_old, Code.BAD_BATCH, f"more than {MAX_BATCH_AGE} s before", at=block)
    ahead = world.batch(world.node_a, [world.entry(at=block + MAX_CLOCK_AHEAD + 1)], seq=1)
    world.refused(ahead, Code.BAD_BATCH, f"more than {MAX_CLOCK_AHEAD} s after", at=block)
    # an old base time with a late entry: the base time is what must be recent
    spread = [
        world.entry(at=block - MAX_BATCH_AGE - 10),
        world.entry(at=block - MAX_BATCH_AGE + 10),
    ]
    world.refused(world.batch(world.node_a, spread, seq=1), Code.BAD_BATCH, "before", at=block)
    edges = [world.entry(at=block - MAX_BATCH_AGE)], [world.entry(at=block + MAX_CLOCK_AHEAD)]
    for n, entries in enumerate(edges, start=1):
        [ok] = world.run(world.batch(world.node_a, entries, seq=n), at=block)
        assert ok.code == Code.OK, ok.log


def _mangled(world: World, change: str) -> dict[str, Any]:
    entries = [world.entry(), world.entry(reader=world.patient.did, org="", outcome="patient")]
    payload = encode_batch(world.node_a.did, 1, entries)
    if change == "bad patient index":
        payload["entries"][0][0] = 7
    elif change == "bad record index":
        payload["entries"][0][3] = 1
    elif change == "bad outcome index":
        payload["entries"][0][7] = 10
    elif change == "bad purpose index":
        payload["entries"][0][6] = -1
    elif change == "unused party":
        payload["parties"].append(world.other.did)
    elif change == "unused record":
        payload["records"].append("00" * 16)
    elif change == "oversized parties":
        payload["parties"] = [world.other.did] * 4001
    elif change == "oversized records":
        payload["records"] = ["00" * 16] * 2001
    elif change == "too many entries":
        payload["entries"] = payload["entries"][:1] * (MAX_BATCH_ENTRIES + 1)
    elif change == "allowed without record":
        payload["entries"][0][0] = payload["entries"][0][3] = -1
        payload["entries"][0][4] = 0
    elif change == "unknown field":
        payload["signature"] = "00"
    return payload


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("bad patient index", "entry 0: patient index 7"),
        ("bad record index", "entry 0: record index 1"),
        ("bad outcome index", "entry 0: outcome index 10"),
        ("bad purpose index", "entry 0: purpose index -1"),
        ("unused party", "'parties' has 1 item(s) no entry uses"),
        ("unused record", "'records' has 1 item(s) no entry uses"),
        ("too many entries", "'entries' must be a list of 1 to 2000"),
        ("allowed without record", "entry 0: an allowed read (grant) names its patient"),
        ("unknown field", "unknown field(s) signature"),
    ],
)
def test_a_malformed_batch_is_refused_at_the_mempool_and_in_a_block(
    world: World, change: str, message: str
) -> None:
    raw = world.node_a.tx("audit/record_batch", _mangled(world, change))
    checked = world.app.check_tx(raw)
    assert (checked.code, message in checked.log) == (Code.BAD_BATCH, True), checked.log
    world.refused(raw, Code.BAD_BATCH, "audit batch: " + message)


@pytest.mark.parametrize("change", ["oversized parties", "oversized records"])
def test_an_oversized_table_is_refused_before_it_is_parsed(world: World, change: str) -> None:
    """More than MAX_BATCH_PARTIES dids or MAX_BATCH_RECORDS prefixes exceed the transaction
    bound (64 KiB) already: refused at the envelope, before any JSON is decoded. The codec's
    own bound is checked in test_audit_entries."""
    raw = world.node_a.tx("audit/record_batch", _mangled(world, change))
    assert world.app.check_tx(raw).code == Code.OVERSIZED
    world.refused(raw, Code.OVERSIZED, "limit 65536")


# --- the patient's log ----------------------------------------------------------------------


def alert_tx(world: World, alert_id: str) -> bytes:
    return world.c.tx("alerting/raise", {"patient": world.patient.did, "id": alert_id})


def test_the_log_is_newest_first_with_alerts_on_top_in_bounded_pages(world: World) -> None:
    expected: list[tuple[int, int]] = []  # (seq, index), oldest first
    for block in range(4):
        entries = [world.entry(version=block * 3 + i + 1) for i in range(3)]
        txs = [world.batch(world.node_a, entries)]
        if block in (1, 2):
            txs.append(alert_tx(world, f"alert-{block}"))
        assert [r.code for r in world.run(*txs)] == [0] * len(txs)
        expected += [(block + 1, i) for i in range(3)]
    newest_first = expected[::-1]
    first = world.query("audit/log", patient=world.patient.did, limit=5)
    assert [a["alert"]["id"] for a in first["alerts"]] == ["alert-2", "alert-1"]
    pages, cursor = [first["entries"]], first["next"]
    while cursor:
        page = world.query("audit/log", patient=world.patient.did, limit=5, before=cursor)
        assert page["alerts"] == []  # alerts come once, on top
        pages.append(page["entries"])
        cursor = page["next"]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [(r["seq"], r["index"]) for p in pages for r in p] == newest_first
    everything = world.query("audit/log", patient=world.patient.did)
    assert len(everything["entries"]) == 12 and everything["next"] == ""
    assert world.query("audit/log", patient=world.other.did) == {
        "alerts": [],
        "entries": [],
        "next": "",
    }


def test_a_page_boundary_at_the_end_of_the_log_has_no_next(world: World) -> None:
    assert [r.code for r in world.run(world.batch(world.node_a, [world.entry()] * 4))] == [0]
    page = world.query("audit/log", patient=world.patient.did, limit=4)
    assert (len(page["entries"]), page["next"]) == (4, "")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 501}, "'limit' must be an integer in 1..500"),
        ({"limit": 0}, "'limit' must be an integer in 1..500"),
        ({"before": "0/0/0"}, "not a cursor"),
        ({"before": "x" * 65}, "'before' must be a string"),
        ({"after": "1"}, "unknown field"),
    ],
)
def test_log_queries_are_bounded_and_checked(
    world: World, params: dict[str, Any], message: str
) -> None:
    code, log = world.query_code("audit/log", patient=world.patient.did, **params)
    assert (code, message in log) == (Code.MALFORMED, True), log


def test_batch_queries_answer_not_found_and_check_their_parameters(world: World) -> None:
    assert world.query_code("audit/batch", node=world.node_a.did, seq=1)[0] == Code.NOT_FOUND
    assert world.query_code("audit/batch", node=world.node_a.did, seq=0)[0] == Code.MALFORMED
    assert world.query_code("audit/last_seq", node="node-a")[0] == Code.MALFORMED
    # a query parameter from a URL is a decimal string
    assert (
        world.app.query(
            "audit/log", orjson.dumps({"patient": world.patient.did, "limit": "3"})
        ).code
        == Code.OK
    )


def test_the_alert_is_written_only_inside_a_block(world: World) -> None:
    keeper = AuditKeeper(KV(world.app.store, "audit"))
    with pytest.raises(RuntimeError, match="only while a block executes"):
        keeper.record_alert(world.patient.did, {"id": "x"})


def test_a_cursor_seeks_the_same_in_the_store_and_in_a_blocks_overlay(tmp_path: Path) -> None:
    """KV.items(prefix, after): the keys after the cursor, in order, whether they are
    committed, written in the block being executed, or shadowed (deleted) there."""
    store = StateStore(tmp_path / "state.sqlite")
    base = Overlay(store)
    for key in ("a", "c", "e", "g"):
        KV(base, "m").set(f"log/{key}", key)
    store.commit(1, b"\x01" * 32, b"\x02" * 32, base.changes)
    block = Overlay(store)
    KV(block, "m").set("log/d", "d")
    KV(block, "m").set("log/f", "f")
    KV(block, "m").delete("log/e")
    view = KV(block, "m")
    assert [k for k, _ in view.items("log/", after="c")] == ["log/d", "log/f", "log/g"]
    assert [k for k, _ in view.items("log/", after="b")] == ["log/c", "log/d", "log/f", "log/g"]
    assert [k for k, _ in KV(store, "m").items("log/", after="c")] == ["log/e", "log/g"]
    assert [k for k, _ in view.items("log/", after="g")] == []
    store.close()
