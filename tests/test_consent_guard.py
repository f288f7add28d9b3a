"""Reads through a running node are decided by the consent guard, and only there.

A real `careledger up` process; every identity, record and grant is a real signed transaction
through its API; every read a real signed HTTP request. Each test takes patients of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from accessutil import Consortium, Reader
from careledger.chain.app import QueryResult
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.requestsig import Audience, authorization
from careledger.node.blobs import MAX_FETCH_RESPONSE
from careledger.node.builder import Solo, build_node
from careledger.node.consent_guard import INLINE_DECISIONS, AccessDecision, QueryDriver
from careledger.node.datadir import initialise
from careledger.protocol.frames import MAX_BLOB_BYTES, unpack_results
from careledger.wallet.records_api import RecordsApi
from nodeutil import NodeProcess, free_port, serve_over_http

pytestmark = pytest.mark.timeout(300)


@dataclass
class World:
    node: NodeProcess
    net: Consortium
    org_a: KeyFile  # the founder: it writes records and has practitioners
    doctor_a: KeyFile
    org_b: KeyFile  # a second member
    doctor_b: KeyFile
    nurse_b: KeyFile


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    node = NodeProcess(tmp_path_factory.mktemp("guard") / "data", free_port())
    node.start("--block-interval", "0.05")
    try:
        net = Consortium(node.url, node.organisation())
        org_b = net.admit_member("Org B")
        yield World(
            node,
            net,
            net.founder,
            net.practitioner(net.founder, "Dr. A"),
            org_b,
            net.practitioner(org_b, "Dr. B"),
            net.practitioner(org_b, "Nurse B"),
        )
    finally:
        node.stop()


def _reason(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert error["code"] == "forbidden", error
    return str(error["message"])


def test_a_patient_reads_its_own_blob_without_stating_a_purpose(world: World) -> None:
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    read = world.net.reader(patient).get(record.hash)
    assert read.status_code == 200 and read.content == record.blob
    # ...and with one, which changes nothing for the patient.
    assert world.net.reader(patient).get(record.hash, "PATRQT").content == record.blob


def test_a_member_organisation_without_a_grant_reads_nothing(world: World) -> None:
    """Before issue 8 any member organisation read every blob; now it is a reader like any
    other: no grant, no blob, whatever purpose it states."""
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    for who in (world.org_b, world.doctor_b, world.org_a, world.doctor_a):
        denied = world.net.reader(who).get(record.hash, "TREAT")
        assert denied.status_code == 403
        assert _reason(denied) == f"no read grant of the patient covers {who.did}"
    other_patient = world.net.patient()
    denied = world.net.reader(other_patient).get(record.hash)
    assert denied.status_code == 403 and _reason(denied) == "no purpose stated"
    denied = world.net.reader(other_patient).get(record.hash, "TREAT")
    assert _reason(denied) == "not acting for a member organisation"


def test_a_practitioner_reads_only_for_a_purpose_its_grant_names(world: World) -> None:
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    grant = world.net.grant(patient, world.org_b.did, purposes=("TREAT", "ETREAT"))
    doctor = world.net.reader(world.doctor_b)

    assert doctor.get(record.hash, "TREAT").content == record.blob  # the org's grant covers it
    assert doctor.get(record.hash, "ETREAT").status_code == 200
    no_purpose = doctor.get(record.hash)
    assert no_purpose.status_code == 403 and _reason(no_purpose) == "no purpose stated"
    research = doctor.get(record.hash, "HRESCH")
    assert research.status_code == 403
    assert _reason(research) == f"grant {grant} is for purposes TREAT, ETREAT, not HRESCH"
    # Not a purpose code at all: refused as malformed, before anything is decided.
    for target in ("?purpose=treat", "?purpose=", "?purpose=TREAT&purpose=HRESCH", "?x=1"):
        bad = doctor.http.get(f"/blobs/{record.hash}{target}", auth=doctor.auth)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed", target


def test_a_grant_covers_only_its_scopes_and_the_sensitive_scope_only_by_name(
    world: World,
) -> None:
    patient = world.net.patient()
    clinical = world.net.write(patient, patient.did, "clinical")
    sensitive = world.net.write(patient, patient.did, "sensitive")
    financial = world.net.write(patient, patient.did, "financial")
    broad = ("clinical", "diagnostics", "medications", "administrative", "financial")
    grant = world.net.grant(patient, world.org_b.did, scopes=broad)
    reader = world.net.reader(world.org_b)
    assert reader.get(clinical.hash, "TREAT").status_code == 200
    assert reader.get(financial.hash, "TREAT").status_code == 200
    denied = reader.get(sensitive.hash, "TREAT")
    assert denied.status_code == 403
    assert _reason(denied) == (
        f"grant {grant} does not cover scope sensitive (the sensitive scope must be named)"
    )
    world.net.grant(patient, world.org_b.did, scopes=("sensitive",))
    assert reader.get(sensitive.hash, "TREAT").content == sensitive.blob


def test_a_record_level_grant_covers_its_records_and_no_other(world: World) -> None:
    patient = world.net.patient()
    named, other = world.net.write(patient, patient.did), world.net.write(patient, patient.did)
    grant = world.net.grant(patient, world.org_b.did, records=(named.name,))
    reader = world.net.reader(world.doctor_b)
    assert reader.get(named.hash, "TREAT").content == named.blob
    denied = reader.get(other.hash, "TREAT")
    assert denied.status_code == 403
    assert _reason(denied) == f"grant {grant} does not name record {other.name}"


def test_a_practitioner_level_grant_serves_that_practitioner_only(world: World) -> None:
    """The organisation's keys could open the blob (the cryptographic boundary is the
    organisation); the node serves it only to the practitioner the grant names."""
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    grant = world.net.grant(patient, world.doctor_b.did)
    assert world.net.reader(world.doctor_b).get(record.hash, "TREAT").status_code == 200
    for colleague in (world.nurse_b, world.org_b):
        denied = world.net.reader(colleague).get(record.hash, "TREAT")
        assert denied.status_code == 403
        assert _reason(denied) == f"grant {grant} names practitioner {world.doctor_b.did}"


def test_the_author_organisation_reads_what_it_wrote_with_a_purpose(world: World) -> None:
    patient = world.net.patient()
    world.net.grant(patient, world.org_a.did, action="write", scopes=("clinical",))
    record = world.net.write(world.org_a, patient.did)
    for who in (world.org_a, world.doctor_a):
        assert world.net.reader(who).get(record.hash, "TREAT").content == record.blob
        no_purpose = world.net.reader(who).get(record.hash)
        assert _reason(no_purpose) == "no purpose stated"
    assert world.net.reader(world.doctor_b).get(record.hash, "TREAT").status_code == 403


def test_a_revoked_grant_stops_serving_at_the_block_that_revokes_it(world: World) -> None:
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    grant = world.net.grant(patient, world.org_b.did)
    reader = world.net.reader(world.doctor_b)
    assert reader.get(record.hash, "TREAT").status_code == 200
    height = world.net.revoke(patient, grant)  # returns once the block is committed
    denied = reader.get(record.hash, "TREAT")
    assert denied.status_code == 403
    assert _reason(denied) == f"grant {grant} was revoked at height {height}"


def test_a_grant_ends_by_the_node_clock(world: World) -> None:
    """`at` is the node's wall clock: the grant stops at its end, whatever the blocks do."""
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    end = int(time.time()) + 3
    grant = world.net.grant(patient, world.org_b.did, end=end)
    reader = world.net.reader(world.doctor_b)
    while time.time() < end + 1:  # waiting for the period to pass, not measuring anything
        time.sleep(0.2)
    denied = reader.get(record.hash, "TREAT")
    assert denied.status_code == 403
    assert _reason(denied) == f"grant {grant} expired at {end}"


def test_an_erased_blob_is_gone_for_everyone(world: World) -> None:
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    world.net.grant(patient, world.org_b.did)
    world.net.erase(patient, [record])
    for who, purpose in ((patient, ""), (world.doctor_b, "TREAT")):
        gone = world.net.reader(who).get(record.hash, purpose)
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "erased"


def test_a_fetch_answers_each_blob_with_its_own_status(world: World) -> None:
    patient = world.net.patient()
    granted, named_only = (
        world.net.write(patient, patient.did),
        world.net.write(patient, patient.did),
    )
    sensitive = world.net.write(patient, patient.did, "sensitive")
    erased = world.net.write(patient, patient.did)
    grant = world.net.grant(patient, world.org_b.did, records=(granted.name, erased.name))
    world.net.erase(patient, [erased])
    unanchored = "ab" * 32
    asked = [granted.hash, named_only.hash, sensitive.hash, erased.hash, unanchored, "nope"]
    asked.append(granted.hash)  # asked twice: answered twice
    frames = world.net.reader(world.doctor_b).fetch(asked, "TREAT")
    assert [status for status, _ in frames] == [200, 403, 403, 410, 404, 400, 200]
    assert frames[0][1] == frames[6][1] == granted.blob
    assert frames[1][1].decode() == f"grant {grant} does not name record {named_only.name}"
    assert "sensitive" in frames[2][1].decode()
    assert "erased" in frames[3][1].decode()
    # The records SDK's fetch states its purpose the same way, from its own signed request.
    api = RecordsApi(world.net.client.signed_as(world.doctor_b), purpose="TREAT")
    assert [s for s, _ in api.fetch([granted.hash, named_only.hash])] == [200, 403]
    assert [s for s, _ in api.fetch([granted.hash], purpose="HRESCH")] == [403]
    assert [s for s, _ in api.fetch([granted.hash], purpose="")] == [403]


def test_the_purpose_cannot_be_changed_after_signing(world: World) -> None:
    """The purpose is in the signed target: a request signed for TREAT, sent (or replayed)
    with another purpose, does not verify."""
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    world.net.grant(patient, world.org_b.did, purposes=("HRESCH",))
    status = world.net.client.status()
    audience = Audience(status["chain_id"], status["node_id"])
    doctor = world.doctor_b
    signed_for = f"/blobs/{record.hash}?purpose=TREAT"
    header = authorization(
        doctor.identity, doctor.did, audience, "GET", signed_for, b"", time.time_ns() // 10**6
    )
    http = httpx.Client(base_url=world.node.url)
    altered = http.get(f"/blobs/{record.hash}?purpose=HRESCH", headers={"authorization": header})
    assert altered.status_code == 401 and altered.json()["error"]["code"] == "unauthenticated"
    honest = http.get(signed_for, headers={"authorization": header})
    assert honest.status_code == 403  # the purpose it was signed for, which is not granted


def test_replication_is_for_member_organisations_only(world: World) -> None:
    patient = world.net.patient()
    record = world.net.write(patient, patient.did)
    for member in (world.org_a, world.org_b):  # no grant needed: custody, not a read
        copied = world.net.reader(member).replicate([record.hash, "cd" * 32])
        assert copied.status_code == 200
        frames = _frames(copied)
        assert frames[0] == (200, record.blob) and frames[1][0] == 404
    for outsider in (world.doctor_a, world.doctor_b, patient):
        refused = world.net.reader(outsider).replicate([record.hash])
        assert refused.status_code == 403, outsider
        assert "not a member organisation" in _reason(refused)
    applicant = world.net.applicant("Not Yet Admitted")  # an organisation, not a member
    refused = world.net.reader(applicant).replicate([record.hash])
    assert refused.status_code == 401  # it may not act at all
    # A member asking through the reader routes is a reader like any other.
    denied = world.net.reader(world.org_b).fetch([record.hash], "TREAT")
    assert denied[0][0] == 403


def _frames(response: httpx.Response) -> list[tuple[int, bytes]]:
    return unpack_results(response.content)


def test_a_fetch_response_holds_at_most_its_byte_limit(world: World) -> None:
    """5,000 copies of one large blob would be a response of tens of gigabytes: the node
    answers the copies past its limit with 413, unread."""
    patient = world.net.patient()
    big = world.net.write(patient, patient.did, size=MAX_BLOB_BYTES - 4096)
    frames = world.net.reader(patient).fetch([big.hash] * 5000)
    served = [s for s, _ in frames].count(200)
    assert served == MAX_FETCH_RESPONSE // len(big.blob)
    assert {s for s, _ in frames[served:]} == {413}
    assert all(blob == big.blob for _, blob in frames[:served])


# --- in process: the hook, and one query per request ---------------------------------------


class Observer:
    def __init__(self) -> None:
        self.heard: list[list[AccessDecision]] = []

    async def on_decision(self, decisions: Sequence[AccessDecision]) -> None:
        self.heard.append(list(decisions))


class Failing:
    async def on_decision(self, decisions: Sequence[AccessDecision]) -> None:
        raise RuntimeError("the audit log is unavailable")


class Counting:
    """The guard's chain, counting the queries it is asked."""

    def __init__(self, inner: QueryDriver) -> None:
        self.inner = inner
        self.paths: list[str] = []
        self.inline: list[bool] = []

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult:
        self.paths.append(path)
        self.inline.append(inline)
        return await self.inner.query(path, data, inline=inline)


def test_every_decision_reaches_the_observers_in_one_shape(tmp_path: Path) -> None:
    root = tmp_path / "data"
    founder = initialise(root)
    node = build_node(root, Solo(block_interval=0.05))
    observer, counting = Observer(), Counting(node.consent_guard.driver)
    node.consent_guard.observers.append(observer)
    node.consent_guard.driver = counting
    try:
        with serve_over_http(node.asgi()) as url:
            net = Consortium(url, founder)
            doctor = net.practitioner(founder, "Dr. A")
            patient = net.patient()
            mine, other = net.write(patient, patient.did), net.write(patient, patient.did)
            grant = net.grant(patient, doctor.did, records=(mine.name,))
            before = int(time.time())
            frames = Reader(url, doctor).fetch([mine.hash, other.hash, "zz"], "TREAT")
            after = int(time.time())
            assert [s for s, _ in frames] == [200, 403, 400]
            assert counting.paths == ["records/read_access"]  # one query for the request
            # Two hashes are decided on the event loop; a big fetch's in a worker thread
            # (a long decision must not hold up the loop that makes the blocks).
            assert counting.inline == [True]
            many = [mine.hash] + [f"{i:064x}" for i in range(INLINE_DECISIONS)]
            Reader(url, doctor).fetch(many, "TREAT")
            assert counting.inline == [True, False]

            decisions = observer.heard[0]
            allowed, denied, malformed = decisions
            assert before <= allowed.at <= after
            assert allowed == AccessDecision(
                blob=mine.hash,
                reader=doctor.did,
                org=founder.did,
                patient=patient.did,
                record=mine.name,
                version=1,
                scope="clinical",
                purpose="TREAT",
                allowed=True,
                status=200,
                reason=f"read grant {grant}",
                grant=grant,
                at=allowed.at,
                basis="grant",
            )
            assert (denied.allowed, denied.status, denied.record, denied.grant) == (
                False,
                403,
                other.name,
                "",
            )
            assert denied.reason == f"grant {grant} does not name record {other.name}"
            assert (malformed.status, malformed.patient) == (400, "")

            # A GET is one decision too; and an observer that fails stops the read.
            patient_reader = Reader(url, patient)
            assert patient_reader.get(mine.hash).status_code == 200
            assert observer.heard[-1][0].reason == "patient"
            assert observer.heard[-1][0].org == ""
            node.consent_guard.observers.append(Failing())
            failed = patient_reader.get(mine.hash)
            assert failed.status_code == 500 and mine.blob not in failed.content
            assert len(observer.heard) == 4  # it heard the decision that was not served
    finally:
        node.close()
