"""Every read through a running node is audited: journaled before it is served, receipted,
committed on chain, and in the patient's log with a proof.

Real `careledger up` processes; every identity, record and grant a real signed transaction;
every read a real signed HTTP request. The batch interval is set with `--audit-interval`
(the same as CARELEDGER_AUDIT_INTERVAL): long, to kill a node between a read and its batch;
0, for a node that promises and never commits.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accessutil import Consortium, Reader
from careledger.crypto.keyfile import KeyFile
from careledger.protocol.frames import unpack_results
from careledger.protocol.receipts import AuditReceipt, BadReceipt
from careledger.wallet.audit import (
    AuditClient,
    NotAudited,
    Receipted,
    check_receipt,
    receipt_of,
)
from careledger.wallet.break_glass import EmergencyClient, break_glass
from careledger.wallet.evidence import ProofError
from careledger.wallet.node_client import NodeClient, NodeError
from careledger.wallet.records import RecordsClient, RecordsError
from nodeutil import NodeProcess, careledger_command, enrol, free_port, serve_over_http
from test_break_glass import practitioner

pytestmark = pytest.mark.timeout(300)


@dataclass
class World:
    node: NodeProcess
    net: Consortium
    doctor: KeyFile  # a practitioner of the founder


def _start(tmp: Path, *extra: str) -> NodeProcess:
    node = NodeProcess(tmp / "data", free_port())
    node.start("--block-interval", "0.05", *extra)
    return node


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = _start(tmp_path_factory.mktemp("audit"), "--audit-interval", "0.05")
    try:
        net = Consortium(node.url, node.organisation())
        yield World(node, net, net.practitioner(net.founder, "Dr. A"))
    finally:
        node.stop()


def _fetch(reader: Reader, hashes: list[str], purpose: str) -> httpx.Response:
    body = httpx.Request("POST", "/", json={"hashes": hashes}).read()
    response = reader.http.post(f"/blobs/fetch?purpose={purpose}", content=body, auth=reader.auth)
    assert response.status_code == 200, response.text
    return response


def _client(url: str, keyfile: KeyFile) -> NodeClient:
    return NodeClient(url, keyfile)


def test_every_read_is_one_entry_on_chain_with_its_proof(world: World) -> None:
    """Allowed, denied, unknown and malformed reads, by GET and by fetch: each read gives
    exactly one entry, each receipt's entries are proven on chain, and the patient's log
    holds exactly the reads of its records, each with a valid proof."""
    net, doctor = world.net, world.doctor
    patient = net.patient()
    granted, other = net.write(patient, patient.did), net.write(patient, patient.did)
    net.grant(patient, doctor.did, records=(granted.name,))
    reader, own = net.reader(doctor), net.reader(patient)
    unknown = secrets.token_hex(32)

    responses = [
        reader.get(granted.hash, "TREAT"),  # grant
        reader.get(other.hash, "TREAT"),  # denied: the grant does not name it
        reader.get(unknown, "TREAT"),  # not_found
        own.get(granted.hash),  # patient
        _fetch(reader, [granted.hash, other.hash, "zz", unknown], "TREAT"),
    ]
    assert [r.status_code for r in responses] == [200, 403, 404, 200, 200]
    assert [s for s, _ in unpack_results(responses[-1].content)] == [200, 403, 400, 404]
    expected = [
        ["grant"],
        ["denied"],
        ["not_found"],
        ["patient"],
        ["grant", "denied", "malformed", "not_found"],
    ]
    for response, outcomes in zip(responses, expected, strict=True):
        receipted = receipt_of(response)
        assert receipted.receipt.entries == len(outcomes)
        signer = patient if outcomes == ["patient"] else doctor
        proven = check_receipt(receipted, _client(world.node.url, signer))
        assert [p.entry.outcome for p in proven] == outcomes
        assert all(p.entry.reader == signer.did and p.block is not None for p in proven)

    log = AuditClient(world.node.url, patient).log(verify=True)
    mine = {"grant": 2, "denied": 2, "patient": 1}  # the entries naming this patient
    assert sorted(a.entry.outcome for a in log) == sorted(
        o for o, n in mine.items() for _ in range(n)
    )
    assert all(a.block is not None and a.entry.patient == patient.did for a in log)
    assert [a.entry.at for a in log] == sorted((a.entry.at for a in log), reverse=True)
    granted_reads = [a for a in log if a.entry.outcome == "grant"]
    assert {a.entry.record for a in granted_reads} == {granted.name[:32]}
    assert {(a.entry.purpose, a.entry.org) for a in granted_reads} == {("TREAT", net.founder.did)}


def test_a_tampered_log_answer_fails_its_proof(world: World) -> None:
    net = world.net
    patient = net.patient()
    record = net.write(patient, patient.did)
    assert net.reader(patient).get(record.hash).status_code == 200
    again = receipt_of(net.reader(patient).get(record.hash))
    check_receipt(again, _client(world.node.url, patient))

    def flip_version(body: bytes) -> bytes:  # one entry's version, 1 -> 2
        page = orjson.loads(body)
        page["entries"][0]["entry"]["version"] += 1
        return orjson.dumps(page)

    def flip_reader(body: bytes) -> bytes:  # one character of the reader's did
        page = orjson.loads(body)
        entry = page["entries"][-1]["entry"]
        last = entry["reader"][-1]
        entry["reader"] = entry["reader"][:-1] + ("A" if last != "A" else "B")
        return orjson.dumps(page)

    for tamper in (flip_version, flip_reader):
        client = _lying_client(world.node.url, patient, "/query/audit/log", tamper)
        with pytest.raises(ProofError, match="not the entry the log shows"):
            AuditClient(client, patient).log(verify=True)
    assert len(AuditClient(world.node.url, patient).log(verify=True)) == 2  # the truth holds


def test_a_patient_lists_only_its_own_log(world: World) -> None:
    net = world.net
    alice, bob = net.patient(), net.patient()
    for asker in (bob, net.founder, world.doctor):
        with pytest.raises(NodeError) as refused:
            _client(world.node.url, asker).query("audit/log", patient=alice.did)
        assert refused.value.status == 403
    with pytest.raises(NodeError) as refused:
        _client(world.node.url, alice).query("audit/last_seq", node=alice.did)
    assert refused.value.status == 403  # batch bookkeeping is for members and nodes


def test_a_receipt_is_for_its_request_and_its_entries_only(world: World) -> None:
    net = world.net
    patient = net.patient()
    record = net.write(patient, patient.did)
    first = receipt_of(net.reader(patient).get(record.hash))
    second = receipt_of(net.reader(patient).get(record.hash))
    client = _client(world.node.url, patient)
    check_receipt(first, client)
    with pytest.raises(BadReceipt, match="not signed by node"):
        check_receipt(Receipted(first.receipt, second.request), client)  # another request
    r = first.receipt
    forged = AuditReceipt(r.node, r.entries, r.first + 1, r.digest, r.signature)
    with pytest.raises(BadReceipt, match="not signed by node"):
        check_receipt(Receipted(forged, first.request), client)
    # Another reader cannot learn where this reader's entries went.
    with pytest.raises(NodeError) as refused:
        _client(world.node.url, world.doctor).get(
            "/audit/entries", first=str(r.first), count=str(r.entries)
        )
    assert refused.value.status == 403


def test_the_records_sdk_refuses_a_read_served_without_its_receipt(world: World) -> None:
    """Through a node that strips the receipt (a proxy in front of the real node, passing
    the signed requests through, keeping only the content type): the SDK refuses the blobs
    at once (502 "not audited"), though their bytes came; straight from the node it reads."""
    net = world.net
    patient = net.patient()
    record = net.write(patient, patient.did)
    direct = RecordsClient(world.node.url, patient).fetch([record.hash])
    assert direct == [(200, record.blob)]
    stripping = _tampering_proxy(world.node.url, "/none", lambda b: b)
    with serve_over_http(stripping) as url, pytest.raises(RecordsError) as refused:
        RecordsClient(url, patient).fetch([record.hash])
    assert refused.value.status == 502 and "not audited" in str(refused.value)


def test_an_answered_read_survives_a_kill_before_its_batch(tmp_path: Path) -> None:
    """The node answers a read, then is killed (SIGKILL) before its batch: the entry it
    promised was journaled (fsynced) before the answer, and is on chain after a restart."""
    node = _start(tmp_path, "--audit-interval", "3600")  # a batch at start, then an hour
    try:
        net = Consortium(node.url, node.organisation())
        patient = net.patient()
        record = net.write(patient, patient.did)
        response = net.reader(patient).get(record.hash)
        assert response.status_code == 200 and response.content == record.blob
        receipted = receipt_of(response)
        located = _client(node.url, patient).get(
            "/audit/entries", first=str(receipted.receipt.first), count="1"
        )
        assert located["entries"][0]["committed"] is False  # not yet on chain
        node.kill()
        node.start("--block-interval", "0.05", "--audit-interval", "0.05")
        (proven,) = check_receipt(receipted, _client(node.url, patient))
        assert (proven.entry.outcome, proven.entry.record) == ("patient", record.name[:32])
        log = AuditClient(node.url, patient).log(verify=True)
        assert [a.entry.outcome for a in log] == ["patient"]
    finally:
        node.stop()


def test_a_node_that_never_commits_is_caught_by_the_receipt(tmp_path: Path) -> None:
    node = _start(tmp_path, "--audit-interval", "0")  # journals and receipts, never batches
    try:
        net = Consortium(node.url, node.organisation())
        patient = net.patient()
        record = net.write(patient, patient.did)
        response = net.reader(patient).get(record.hash)
        assert response.status_code == 200  # served, and receipted...
        with pytest.raises(NotAudited, match="not on chain after 2 s") as caught:
            check_receipt(receipt_of(response), _client(node.url, patient), grace=2)
        assert caught.value.receipt == receipt_of(response).receipt
        assert AuditClient(node.url, patient).log() == []  # ...and the chain has nothing
    finally:
        node.stop()


# --- helpers --------------------------------------------------------------------------------


class _Lying(httpx.BaseTransport):
    """A transport that rewrites the body of one route's answers."""

    def __init__(self, path: str, rewrite: Callable[[bytes], bytes]) -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path != self.path:
            return response
        body = self.rewrite(response.read())
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=body)


def _lying_client(
    url: str, keyfile: KeyFile, path: str, rewrite: Callable[[bytes], bytes]
) -> NodeClient:
    http = httpx.Client(base_url=url, transport=_Lying(path, rewrite), timeout=30)
    return NodeClient(url, keyfile, http=http)


def test_careledger_audit_prints_the_log_with_each_proof(world: World, tmp_path: Path) -> None:
    net = world.net
    patient = net.patient()
    record = net.write(patient, patient.did)
    net.grant(patient, world.doctor.did)
    assert net.reader(world.doctor).get(record.hash, "TREAT").status_code == 200
    assert net.reader(world.doctor).get(record.hash, "HRESCH").status_code == 403
    keys = tmp_path / "patient.json"
    patient.save(keys)
    _wait_for_log(world.node.url, patient, 2)
    command = [*careledger_command(), "audit", "--keys", str(keys), "--node", world.node.url]
    table = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("proof ok") == 2 and "2 proof(s) ok" in table.stdout
    assert "denied" in table.stdout and "grant" in table.stdout
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    entries = orjson.loads(as_json.stdout)["entries"]
    assert [(e["entry"]["outcome"], e["entry"]["purpose"], e["proof"]) for e in entries] == [
        ("denied", "HRESCH", "ok"),
        ("grant", "TREAT", "ok"),
    ]


def _wait_for_log(url: str, patient: KeyFile, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(AuditClient(url, patient).log(verify=False)) < count:
        assert time.monotonic() < deadline, "the reads never reached the log"
        time.sleep(0.05)


def test_careledger_audit_exits_non_zero_when_a_proof_fails(world: World, tmp_path: Path) -> None:
    """Through a node that alters one entry of the log it answers (a proxy in front of the
    real node, passing the signed requests through): the altered entry's proof fails."""
    net = world.net
    patient = net.patient()
    record = net.write(patient, patient.did)
    for _ in range(2):
        assert net.reader(patient).get(record.hash).status_code == 200
    _wait_for_log(world.node.url, patient, 2)
    keys = tmp_path / "patient.json"
    patient.save(keys)

    def flip_version(body: bytes) -> bytes:
        page = orjson.loads(body)
        page["entries"][0]["entry"]["version"] += 1
        return orjson.dumps(page)

    with serve_over_http(_tampering_proxy(world.node.url, "/query/audit/log", flip_version)) as url:
        command = [*careledger_command(), "audit", "--keys", str(keys), "--node", url]
        failed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert failed.stdout.count("proof ok") == 1 and "FAILED" in failed.stdout
    assert "1 entr(ies) failed their proof" in failed.stderr


def _tampering_proxy(upstream: str, path: str, rewrite: Callable[[bytes], bytes]) -> Starlette:
    client = httpx.AsyncClient(base_url=upstream, timeout=30)

    async def forward(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = await client.request(
            request.method, target, headers=headers, content=await request.body()
        )
        body = rewrite(answer.content) if request.url.path == path else answer.content
        kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type",)}
        return Response(body, status_code=answer.status_code, headers=kept)

    return Starlette(routes=[Route("/{rest:path}", forward, methods=["GET", "POST"])])


def test_a_break_glass_read_is_an_emergency_entry_under_its_alert(tmp_path: Path) -> None:
    """The alert is on top of the patient's log, the emergency read is an "emergency" entry
    proven on chain, and once the break-glass ended `careledger audit` offers to rotate the
    scopes it exposed (and rotates them with --rotate)."""
    node = _start(tmp_path, "--audit-interval", "0.05")  # one member: k = 1, its node releases
    try:
        clinic = RecordsClient(node.url, node.organisation())
        patient = enrol(clinic, "glass patient")
        written = RecordsClient(node.url, patient).write(patient.did, CONDITION)
        EmergencyClient(node.url, patient).open()
        doctor = practitioner(node.url, node.organisation(), "Dr. Glass")
        keys = break_glass(node.url, doctor, patient.did, "unconscious", seconds=3)
        response = Reader(node.url, doctor).get(written.blob_hash, "ETREAT")
        assert response.status_code == 200, response.text
        (proven,) = check_receipt(receipt_of(response), _client(node.url, doctor))
        assert (proven.entry.outcome, proven.entry.purpose) == ("emergency", "ETREAT")
        log = AuditClient(node.url, patient).access_log()
        ((alert, _),) = [(a["alert"], a["height"]) for a in log.alerts]
        assert (alert["requester"], alert["reason"]) == (doctor.did, "unconscious")
        assert log.entries[0].entry.outcome == "emergency"

        while time.time() <= keys.until:  # the break-glass ends
            time.sleep(0.2)
        keys_file = tmp_path / "patient.json"
        patient.save(keys_file)
        command = [*careledger_command(), "audit", "--keys", str(keys_file), "--node", node.url]
        offered = subprocess.run([*command, "--no-rotate"], capture_output=True, text=True)
        assert offered.returncode == 0, offered.stderr
        assert offered.stdout.index("BREAK-GLASS") < offered.stdout.index("proof ok")
        assert "1 break-glass(es) ended" in offered.stdout and "Not rotated" in offered.stdout
        rotated = subprocess.run([*command, "--rotate"], capture_output=True, text=True)
        assert rotated.returncode == 0, rotated.stderr
        assert "Rotated clinical, diagnostics, medications" in rotated.stdout
        assert EmergencyClient(node.url, patient).ended_unrotated() == []
    finally:
        node.stop()


CONDITION = {
    "resourceType": "Condition",
    "id": "condition-1",
    "subject": {"reference": "Patient/p-1"},
    "code": {"text": "asthma"},
}
