"""Issue 9 review: attacks on the audit and break-glass, each against the real code (a real
node in process over real HTTP, or the real Application on SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from accessutil import Consortium, Reader
from careledger.chain.modules.audit.entries import AccessEntry, encode_batch
from careledger.chain.modules.audit.handler import MAX_BATCH_AGE
from careledger.chain.tx import Tx
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.keys import Identity
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise
from careledger.wallet.audit import AuditClient
from careledger.wallet.node_client import NodeClient
from careledger.wallet.records import RecordsClient
from nodeutil import NodeProcess, enrol, free_port, serve_over_http
from test_audit_journal_node import assert_every_read_refused, read_then_crash_at_the_batch
from test_break_glass import RECORDS, practitioner
from test_break_glass_cli import careledger

pytestmark = pytest.mark.timeout(120)


def _stale_entry(at: int) -> AccessEntry:
    reader, org = Identity.generate().did, Identity.generate().did
    return AccessEntry("", "", 0, reader, org, "TREAT", "not_found", at)


def test_a_batch_too_old_for_the_chain_does_not_stall_the_audit_for_good(tmp_path: Path) -> None:
    """A node down for two days restarts with a journaled read no batch held yet: the chain
    refuses its batch for good (more than a day before the block). The batcher must give that
    batch up (its entries stay in the journal, marked as not on chain) and go on: the reads
    served after the restart are committed, not held back forever behind it."""
    root = tmp_path / "data"
    founder = initialise(root)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0.05)
    two_days_ago = int(time.time()) - 2 * MAX_BATCH_AGE
    asyncio.run(node.audit.journal.append([_stale_entry(two_days_ago).to_json()]))
    try:
        with serve_over_http(node.asgi()) as url:
            net = Consortium(url, founder)
            patient = net.patient()
            record = net.write(patient, patient.did)
            assert net.reader(patient).get(record.hash).status_code == 200
            deadline = time.monotonic() + 30
            log = AuditClient(url, patient).log(verify=True)
            while not log and time.monotonic() < deadline:
                time.sleep(0.1)
                log = AuditClient(url, patient).log(verify=True)
            assert [a.entry.outcome for a in log] == ["patient"], "the later read never committed"
    finally:
        node.close()
    db = sqlite3.connect(root / "audit.sqlite")
    (stale,) = db.execute("SELECT batch FROM entries WHERE seq = 1").fetchone()
    committed = db.execute("SELECT committed FROM batches WHERE seq = ?", (stale,)).fetchone()
    assert committed == (0,)  # the stale entry is not claimed to be on chain


def test_a_node_whose_key_may_not_act_on_chain_serves_no_read(tmp_path: Path) -> None:
    """A node whose own key is not a registered node identity that may act (a later member's
    node before `identity/register_node`, a node of an expelled organisation) has every batch
    refused: it must not serve reads whose entries can never be committed. 503
    `node_not_registered`, nothing served, nothing receipted."""
    root = tmp_path / "data"
    founder = initialise(root)
    stranger = Identity.generate()  # a node key the chain never registered
    DataDir(root).node_key.unlink()
    KeyFile(stranger.did, "node", stranger, "Demo Hospital node").save(DataDir(root).node_key)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0.05)
    try:
        with serve_over_http(node.asgi()) as url:
            assert_every_read_refused(Consortium(url, founder), "node_not_registered")
    finally:
        node.close()


def test_a_batch_number_the_chain_holds_with_other_entries_is_not_taken_as_ours(
    tmp_path: Path,
) -> None:
    """The journal holds batch 1 uncommitted (a crash before its submission), and the chain
    already has a batch 1 of this node key with OTHER entries (a second process run from a
    copy of the data directory, the same key). At restart the node must not mark its own
    batch committed on the strength of the number alone (its entries would be lost while the
    journal says they are on chain): it compares the chain's root with its batch's, and
    batches its entries again under the next number."""
    root = tmp_path / "data"
    founder = initialise(root)
    node_key = KeyFile.load(DataDir(root).node_key)
    node = build_node(root, Solo(block_interval=0.05), audit_interval=0)
    try:
        with serve_over_http(node.asgi()) as url:
            net = Consortium(url, founder)
            patient, _ = read_then_crash_at_the_batch(node, net)
            twin = encode_batch(node_key.did, 1, [_stale_entry(int(time.time()))])
            raw = Tx(net.chain_id, "audit/record_batch", node_key.did, 1, twin)
            assert NodeClient(url, founder).submit(raw.sign(node_key.identity))["code"] == 0
    finally:
        node.close()

    restarted = build_node(root, Solo(block_interval=0.05), audit_interval=0.05)
    try:
        with serve_over_http(restarted.asgi()) as url:
            deadline = time.monotonic() + 30
            log = AuditClient(url, patient).log(verify=True)
            while not log and time.monotonic() < deadline:
                time.sleep(0.1)
                log = AuditClient(url, patient).log(verify=True)
            assert [a.entry.outcome for a in log] == ["patient"], "the read was lost"
            assert [a.seq for a in log] == [2]
    finally:
        restarted.close()


def test_a_break_glass_reason_cannot_crash_or_restyle_the_patients_audit(tmp_path: Path) -> None:
    """The reason is the practitioner's free text, printed by the patient's `careledger
    audit`. As rich markup, "[/x]" made the CLI die (MarkupError) before the patient saw its
    log: the break-glass hid its own alert. It is printed literally."""
    node = NodeProcess(tmp_path / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        clinic = RecordsClient(node.url, node.organisation())
        patient = enrol(clinic, "patient")
        RecordsClient(node.url, patient).write(patient.did, {**RECORDS["condition"], "id": "c1"})
        patient_file, doctor_file = tmp_path / "patient.json", tmp_path / "doctor.json"
        patient.save(patient_file)
        practitioner(node.url, node.organisation(), "Dr. Hide").save(doctor_file)
        opened = careledger("consent", "emergency", "--as", str(patient_file), "--node", node.url)
        assert opened.returncode == 0, opened.stderr
        reason = "[/x] [green]no break-glass here[/green]"
        broke = careledger(
            "break-glass", "--as", str(doctor_file), "--patient", patient.did,
            "--reason", reason, "--seconds", "600", "--node", node.url,
        )  # fmt: skip
        assert broke.returncode == 0, broke.stderr
        audit = careledger("audit", "--keys", str(patient_file), "--node", node.url, "--no-rotate")
        assert audit.returncode == 0, audit.stderr
        printed = " ".join(audit.stdout.split())  # rich wraps long lines at spaces
        assert "BREAK-GLASS" in printed and reason in printed
    finally:
        node.stop()


def _txs(url: str, keyfile: KeyFile, digest: str) -> int:
    """The status of `keyfile` asking this node for transaction `digest`."""
    reader = Reader(url, keyfile)
    return reader.http.get(f"/txs/{digest}", auth=reader.auth).status_code


def test_an_audit_batch_and_a_break_glass_are_shown_only_to_their_parties(
    tmp_path: Path,
) -> None:
    """`GET /txs/{hash}` shows a transaction's payload: an audit batch says who read whose
    records, a break-glass its reason. Any registered identity could fetch them (the hashes
    are listed in `/blocks/{height}`). Now: a batch to members, nodes and the parties it
    names; a break-glass to its patient, requester and members."""
    node = NodeProcess(tmp_path / "data", free_port())
    node.start("--block-interval", "0.05", "--audit-interval", "0.05")
    try:
        organisation = node.organisation()
        clinic = RecordsClient(node.url, organisation)
        patient, stranger = enrol(clinic, "patient"), enrol(clinic, "stranger")
        written = RecordsClient(node.url, patient).write(
            patient.did, {**RECORDS["condition"], "id": "c1"}
        )
        assert RecordsClient(node.url, patient).fetch([written.blob_hash])[0][0] == 200
        audit = AuditClient(node.url, patient)
        deadline = time.monotonic() + 30
        while not audit.log(verify=False) and time.monotonic() < deadline:
            time.sleep(0.1)
        (entry,) = audit.log(verify=True)  # the patient's own proof still fetches it
        assert _txs(node.url, patient, entry.tx) == 200
        assert _txs(node.url, organisation, entry.tx) == 200
        assert _txs(node.url, stranger, entry.tx) == 403

        patient_file, doctor_file = tmp_path / "patient.json", tmp_path / "doctor.json"
        patient.save(patient_file)
        doctor = practitioner(node.url, organisation, "Dr. Seen")
        doctor.save(doctor_file)
        opened = careledger("consent", "emergency", "--as", str(patient_file), "--node", node.url)
        assert opened.returncode == 0, opened.stderr
        broke = careledger(
            "break-glass", "--as", str(doctor_file), "--patient", patient.did,
            "--reason", "found unconscious", "--seconds", "600", "--node", node.url,
        )  # fmt: skip
        assert broke.returncode == 0, broke.stderr
        (alert,) = audit.access_log(verify=False).alerts
        assert _txs(node.url, patient, alert["tx"]) == 200
        assert _txs(node.url, doctor, alert["tx"]) == 200
        assert _txs(node.url, stranger, alert["tx"]) == 403
    finally:
        node.stop()
