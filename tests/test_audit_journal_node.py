"""The audit inside one node (in process, real HTTP on loopback): a read is refused, never
served unaudited, when the journal cannot take it; access entries as FHIR AuditEvents."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from accessutil import Consortium
from careledger.chain.modules.audit.entries import OUTCOMES, AccessEntry
from careledger.crypto.keys import Identity
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import initialise
from careledger.protocol.receipts import HEADER
from careledger.wallet.audit import LoggedAccess, to_audit_event
from careledger.wallet.fhir import validate_resource
from nodeutil import serve_over_http

pytestmark = pytest.mark.timeout(120)


def test_a_full_journal_refuses_the_read_with_503_and_serves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    founder = initialise(root)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0)
    try:
        with serve_over_http(node.asgi()) as url:
            net = Consortium(url, founder)
            patient = net.patient()
            record = net.write(patient, patient.did)
            reader = net.reader(patient)
            served = reader.get(record.hash)
            assert served.status_code == 200 and HEADER.lower() in served.headers
            node.audit.journal.max_pending = 0  # a journal that cannot take one more entry
            refused = reader.get(record.hash)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert record.blob not in refused.content
            frames = reader.http.post(
                "/blobs/fetch", json={"hashes": [record.hash]}, auth=reader.auth
            )
            assert frames.status_code == 503 and record.blob not in frames.content
            node.audit.journal.max_pending = 10
            assert reader.get(record.hash).content == record.blob  # and it recovers
    finally:
        node.close()
    rows = sqlite3.connect(root / "audit.sqlite").execute("SELECT COUNT(*) FROM entries")
    assert rows.fetchone()[0] == 2  # the two served reads, not the refused ones


def _access(outcome: str, purpose: str = "TREAT") -> LoggedAccess:
    reader, org, patient, node = (Identity.generate().did for _ in range(4))
    anchored = outcome not in ("not_found", "malformed", "unavailable")
    entry = AccessEntry(
        patient=patient if anchored else "",
        record="ab" * 16 if anchored else "",
        version=1 if anchored else 0,
        reader=reader,
        org=org,
        purpose=purpose,
        outcome=outcome,
        at=1_800_000_000,
    )
    return LoggedAccess(entry, 12, "cd" * 32, node, 3, 0)


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_every_outcome_maps_to_a_valid_fhir_audit_event(outcome: str) -> None:
    access = _access(outcome, "" if outcome == "patient" else "TREAT")
    event = to_audit_event(access)
    validate_resource(event)  # fhir.resources R4B: raises InvalidResource otherwise
    assert (event["type"]["code"], event["subtype"][0]["code"], event["action"]) == (
        "rest",
        "read",
        "R",
    )
    allowed = outcome in OUTCOMES[:5]
    assert event["outcome"] == ("0" if allowed else "8" if outcome == "unavailable" else "4")
    (requestor,) = [a for a in event["agent"] if a["requestor"]]
    assert requestor["who"]["identifier"]["value"] == access.entry.reader
    assert event["recorded"] == "2027-01-15T08:00:00Z"
    if access.entry.patient:
        assert event["entity"][0]["what"]["identifier"]["value"] == access.entry.patient
