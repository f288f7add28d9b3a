"""Issue 8's access matrix again, now audited: every cell's read is an access entry with the
outcome the consent decision had, proven on chain through its receipt, and found in the
patient's log (exactly these entries, each with a valid proof).

The world is the access matrix's own (`tests/test_access_matrix.py::build_world`) on a real
`careledger up` process: A writes, B holds an organisation grant (practitioners b1, b2), C a
grant naming c1 only, D's grant is revoked, E's has expired, F has none, X was voted out.
Then break-glass: f1 of F reads inside and outside the scopes the patient opened to
emergencies, for another purpose, and after the time limit; each read is an entry under the
break-glass's alert, on top of the log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from accessutil import Consortium, Reader
from careledger.chain.modules.audit.entries import AccessEntry
from careledger.crypto.keyfile import KeyFile
from careledger.wallet.audit import AuditClient, check_receipt, receipt_of
from careledger.wallet.break_glass import open_emergency, submit_break_glass
from careledger.wallet.node_client import NodeClient
from nodeutil import NodeProcess, free_port
from test_access_matrix import World, build_world

pytestmark = pytest.mark.timeout(300)

# (who, record, purpose, HTTP status, the entry's outcome)
CELLS = [
    ("patient", "observation", "", 200, "patient"),
    ("patient", "sensitive", "", 200, "patient"),
    ("A", "condition", "TREAT", 200, "author"),
    ("a1", "observation", "TREAT", 200, "author"),
    ("B", "observation", "TREAT", 200, "grant"),
    ("b1", "condition", "TREAT", 200, "grant"),
    ("b2", "observation", "TREAT", 200, "grant"),
    ("B", "sensitive", "TREAT", 403, "denied"),  # a broad grant never covers it
    ("B", "observation", "HRESCH", 403, "denied"),  # not the granted purpose
    ("b1", "observation", "", 403, "denied"),  # no purpose stated
    ("c1", "observation", "TREAT", 200, "grant"),
    ("c2", "observation", "TREAT", 403, "denied"),  # the grant names c1 only
    ("D", "observation", "TREAT", 403, "denied"),  # revoked
    ("E", "observation", "TREAT", 403, "denied"),  # expired
    ("F", "observation", "TREAT", 403, "denied"),  # no grant
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = NodeProcess(tmp_path_factory.mktemp("audit-matrix") / "data", free_port())
    node.start("--block-interval", "0.05", "--audit-interval", "0.05")
    try:
        yield build_world(node)
    finally:
        node.stop()


def _cell(entry: AccessEntry) -> tuple[str, str, str, str]:
    return (entry.reader, entry.outcome, entry.record, entry.purpose)


def _keyfile(world: World, who: str) -> KeyFile:
    if who == "patient":
        return world.patient
    return world.members.get(who) or world.staff[who]


def test_every_cell_of_the_matrix_is_in_the_patients_log_with_its_proof(world: World) -> None:
    url = world.node.url
    log = AuditClient(url, world.patient)
    before = len(log.log(verify=False))
    expected: Counter[tuple[str, str, str, str]] = Counter()
    for who, record, purpose, status, outcome in CELLS:
        keyfile = _keyfile(world, who)
        written = world.records[record]
        response = Reader(url, keyfile).get(written.blob_hash, purpose)
        assert response.status_code == status, (who, record, response.text)
        (proven,) = check_receipt(receipt_of(response), NodeClient(url, keyfile))
        cell = (keyfile.did, outcome, written.ref.name[:32], purpose)
        assert _cell(proven.entry) == cell
        expected[cell] += 1

    entries = log.log(verify=True)  # every entry's proof checked
    assert len(entries) == before + len(CELLS)
    found = Counter(_cell(a.entry) for a in entries[: len(CELLS)])
    assert found == expected
    assert all(a.block is not None for a in entries)


# Break-glass readers: a practitioner of F (no grant) breaks the glass for the patient, who
# opened clinical, diagnostics and medications to emergencies. (who, record, purpose, HTTP
# status, the entry's outcome), read while the break-glass runs, then once it has ended.
WINDOW = 5  # seconds the break-glass runs
EMERGENCY_CELLS = [
    ("f1", "observation", "ETREAT", 200, "emergency"),  # diagnostics: opened
    ("f1", "condition", "ETREAT", 200, "emergency"),  # clinical: opened
    ("f1", "sensitive", "ETREAT", 403, "denied"),  # outside the opened scopes
    ("f1", "observation", "TREAT", 403, "denied"),  # break-glass is emergency treatment only
]
AFTER_CELLS = [
    ("f1", "observation", "ETREAT", 403, "denied"),  # after the time limit
    ("f1", "condition", "ETREAT", 403, "denied"),
]


def test_break_glass_readers_are_in_the_patients_log_under_their_alert(world: World) -> None:
    url = world.node.url
    f1 = Consortium(url, world.members["A"]).practitioner(world.members["F"], "f1")
    open_emergency(url, world.patient, ("clinical", "diagnostics", "medications"))
    log = AuditClient(url, world.patient)
    before = len(log.log(verify=False))
    glass = submit_break_glass(
        NodeClient(url, f1), f1, world.patient.did, "collapsed in clinic", seconds=WINDOW
    )
    alerts = log.access_log(verify=False).alerts
    assert alerts[0]["alert"]["id"] == glass["id"] and alerts[0]["alert"]["requester"] == f1.did

    expected: Counter[tuple[str, str, str, str]] = Counter()
    for cells in (EMERGENCY_CELLS, AFTER_CELLS):
        if cells is AFTER_CELLS:  # the node's clock passes the break-glass's end
            time.sleep(max(0.0, int(glass["until"]) + 1 - time.time()))
        for who, record, purpose, status, outcome in cells:
            written = world.records[record]
            response = Reader(url, f1).get(written.blob_hash, purpose)
            assert response.status_code == status, (who, record, purpose, response.text)
            (proven,) = check_receipt(receipt_of(response), NodeClient(url, f1))
            cell = (f1.did, outcome, written.ref.name[:32], purpose)
            assert _cell(proven.entry) == cell
            expected[cell] += 1

    every = EMERGENCY_CELLS + AFTER_CELLS
    entries = log.log(verify=True)
    assert len(entries) == before + len(every)
    assert Counter(_cell(a.entry) for a in entries[: len(every)]) == expected
