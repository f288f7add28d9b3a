"""Search against a real node: results never contain a record the caller may not read, whatever
the parameters, and the follower empties the index of records whose grant ends or that are
erased.

The world (a real `careledger up` process, every grant a real signed transaction):

  A    the organisation whose gateway searches; practitioners a1 and a2 (keys in its keys dir)
  B    another member organisation, which enrolled patients P1..P6 and writes their records
  P0   enrolled by A: A wrote its records (A reads them without a grant)
  P1   granted A: broad scopes, treatment            P2   granted A: diagnostics, one record
  P3   granted A, then revoked                       P4   granted A until a moment ago
  P5   granted practitioner a1 only                  P6   granted A for research only

Every patient has a sensitive record (a PSY label) that no broad grant covers. The index is
seeded with every record of every patient, as a stale index would be (a grant ended since the
last pass), so that what search leaves out is its own decision. The truth is the node's: a
record is readable by a caller iff the node serves its blob to that caller for its purpose.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessutil import Consortium
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.scopekeys import BROAD_SCOPES
from careledger.gateway.context import Gateway
from careledger.gateway.index.search import IndexSearch, parse_query
from careledger.gateway.index.store import Located
from careledger.gateway.principal import Principal
from careledger.gateway.search import find, search, searchset_bundle
from careledger.gateway.smart.scopes import parse_scopes
from careledger.wallet.consent import ConsentClient
from careledger.wallet.records import RecordsClient, Written
from nodeutil import NodeProcess, enrol, free_port

LOINC = "http://loinc.org"
CODES = ("8867-4", "29463-7", "8480-6")
PSY = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}
STAMP = "2026-01-01T00:00:00.000Z"
SCOPES = parse_scopes("system/*.rs")


@dataclass
class World:
    node: NodeProcess
    gateway: Gateway
    a: KeyFile
    b: KeyFile
    staff: dict[str, KeyFile]
    patients: dict[str, KeyFile]
    written: dict[str, list[tuple[Written, dict[str, Any]]]]  # patient -> records
    grants: dict[str, str]

    def principal(self, who: str, purpose: str = "TREAT") -> Principal:
        did = self.a.did if who == "A" else self.staff[who].did
        return Principal(f"client-{who}", did, SCOPES, purpose)

    def records(self) -> list[tuple[Written, dict[str, Any]]]:
        return [item for items in self.written.values() for item in items]

    def readable(self, principal: Principal) -> set[str]:
        """The record names the node serves `principal` (its own decision, per blob)."""
        client = self.gateway.records_for(principal)
        records = self.records()
        answers = client.fetch([w.blob_hash for w, _ in records])
        return {
            w.ref.name
            for (w, _), (status, _) in zip(records, answers, strict=True)
            if status == 200
        }


def resources_of(label: str, n: int) -> list[dict[str, Any]]:
    pid = f"p{label}"
    subject = {"reference": f"Patient/{pid}"}
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"family": f"Family{label}", "given": ["Zoë" if n % 2 else "Ann"]}],
            "gender": "female" if n % 2 else "male",
            "birthDate": f"19{70 + n}-0{1 + n % 9}-15",
            "meta": {"lastUpdated": STAMP},
        },
        {
            "resourceType": "Encounter",
            "id": f"enc-{label}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "period": {
                "start": f"2020-0{1 + n % 9}-01T10:00:00Z",
                "end": f"2020-0{1 + n % 9}-01T11:00:00Z",
            },
            "meta": {"lastUpdated": STAMP},
        },
    ]
    for i, code in enumerate(CODES):
        out.append(
            {
                "resourceType": "Observation",
                "id": f"obs-{label}-{i}",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "vital-signs",
                            }
                        ]
                    }
                ],
                "identifier": [{"system": "urn:test", "value": f"MARK-{label}-{i}"}],
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": subject,
                "encounter": {"reference": f"Encounter/enc-{label}"},
                "effectiveDateTime": f"202{i}-0{1 + n % 9}-1{i}T08:00:00Z",
                "valueQuantity": {"value": 60 + n + i, "unit": "1/min"},
                "meta": {"lastUpdated": f"2026-01-0{1 + i}T00:00:00.000Z"},
            }
        )
    out.append(
        {
            "resourceType": "Observation",
            "id": f"psy-{label}",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": CODES[0]}]},
            "subject": subject,
            "effectiveDateTime": "2021-05-05T08:00:00Z",
            "meta": {**PSY, "lastUpdated": STAMP},
        }
    )
    out.append(
        {
            "resourceType": "Condition",
            "id": f"cond-{label}",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195662009"}]},
            "subject": subject,
            "onsetDateTime": "2019-03-03",
            "meta": {"lastUpdated": STAMP},
        }
    )
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("search")
    node = NodeProcess(root / "data", free_port())
    node.start("--block-interval", "0.05")
    gateway = None
    try:
        built = build_world(node, root)
        gateway = built.gateway
        yield built
    finally:
        if gateway is not None:
            gateway.close()
        node.stop()


def build_world(node: NodeProcess, root: Path) -> World:
    a = node.organisation()
    consortium = Consortium(node.url, a)
    b = consortium.admit_member("Org B")
    keys = root / "keys"
    keys.mkdir()
    staff = {who: consortium.practitioner(a, who) for who in ("a1", "a2")}
    for who, keyfile in staff.items():
        keyfile.save(keys / f"practitioner-{who}.json")
    gateway = Gateway(node.url, a, root / "gateway", keys_dir=keys)
    clinic_a = RecordsClient(node.url, a, purpose="TREAT")
    clinic_b = RecordsClient(node.url, b, purpose="TREAT")
    patients: dict[str, KeyFile] = {"P0": enrol(clinic_a, "P0")}
    patients |= {f"P{n}": enrol(clinic_b, f"P{n}") for n in range(1, 7)}
    written = {}
    for n, (label, patient) in enumerate(patients.items()):
        writer = clinic_a if label == "P0" else clinic_b
        resources = resources_of(label, n)
        written[label] = list(
            zip(writer.write_many(patient.did, resources), resources, strict=True)
        )
    now = int(time.time())
    grants = {}
    grant = {label: ConsentClient(node.url, patients[label]) for label in patients}
    grants["P1"] = grant["P1"].grant(a.did, scopes=BROAD_SCOPES)
    one = written["P2"][3][0].ref.name  # obs-P2-1
    grants["P2"] = grant["P2"].grant(a.did, scopes=("diagnostics",), records=(one,))
    grants["P3"] = grant["P3"].grant(a.did, scopes=BROAD_SCOPES)
    grants["P4"] = grant["P4"].grant(a.did, scopes=BROAD_SCOPES, end=now + 4)
    grants["P5"] = grant["P5"].grant(staff["a1"].did, scopes=BROAD_SCOPES)
    grants["P6"] = grant["P6"].grant(a.did, scopes=BROAD_SCOPES, purposes=("HRESCH",))
    grant["P3"].revoke(grants["P3"])
    world = World(node, gateway, a, b, staff, patients, written, grants)
    seed_index(world)
    time.sleep(max(0.0, now + 5 - time.time()))  # P4's grant has ended
    return world


def seed_index(world: World) -> None:
    """Every record of every patient in the index, as a stale index would hold them."""
    items = []
    for label, records in world.written.items():
        author = world.a.did if label == "P0" else world.b.did
        for w, resource in records:
            located = Located(
                w.ref.resource_type,
                w.ref.resource_id,
                w.ref.patient,
                w.ref.name,
                w.version,
                resource["meta"]["lastUpdated"],
                False,
                author_org=author,
            )
            items.append((located, resource))
    world.gateway.index.put(items)


CALLERS = [("A", "TREAT"), ("a1", "TREAT"), ("a2", "TREAT"), ("A", "HRESCH"), ("a1", "HRESCH")]
TYPES = ["Observation", "Patient", "Encounter", "Condition"]


def check_search(
    world: World,
    principal: Principal,
    resource_type: str,
    items: list[tuple[str, str]],
    readable: set[str],
) -> None:
    query = parse_query(resource_type, items)
    matching = [(k, v) for k, v in items if k not in ("_summary", "_count", "_offset", "_include")]
    every = IndexSearch(world.gateway.index).run(
        parse_query(resource_type, [*matching, ("_count", "500")]), None
    )
    should = [m for m in every.page if m.record in readable]
    found = search(world.gateway, principal, query)
    names = {located.record for located, _ in found.matches}
    leaked = names - readable
    assert not leaked, f"{principal.did[-6:]} {principal.purpose} {items}: leaked {leaked}"
    assert found.total == len(should), (items, found.total, len(should))
    page = [] if query.summary_count else should[query.offset : query.offset + query.count]
    assert [loc.record for loc, _ in found.matches] == [m.record for m in page]
    for located, resource in [*found.matches, *found.included]:
        assert located.record in readable
        assert resource["id"] == located.id


def test_the_node_and_the_index_agree_on_who_reads_what(world: World) -> None:
    """The world is what the module says: the node's own decisions, caller by caller."""
    label_of = {
        w.ref.name: (label, w.ref.resource_id) for label, rs in world.written.items() for w, _ in rs
    }
    seen = {
        (who, purpose): {label_of[name] for name in world.readable(world.principal(who, purpose))}
        for who, purpose in CALLERS
    }
    a_reads = {label for label, _ in seen[("A", "TREAT")]}
    assert a_reads == {"P0", "P1", "P2"}
    assert ("P2", "obs-P2-1") in seen[("A", "TREAT")] and ("P2", "obs-P2-0") not in seen[
        ("A", "TREAT")
    ]
    assert ("P1", "psy-P1") not in seen[("A", "TREAT")] and ("P0", "psy-P0") in seen[("A", "TREAT")]
    assert {label for label, _ in seen[("a1", "TREAT")]} == {"P0", "P1", "P2", "P5"}
    assert {label for label, _ in seen[("a2", "TREAT")]} == {"P0", "P1", "P2"}
    assert {label for label, _ in seen[("A", "HRESCH")]} == {"P0", "P6"}


@pytest.mark.parametrize(("who", "purpose"), CALLERS)
def test_searches_return_exactly_what_the_caller_may_read(
    world: World, who: str, purpose: str
) -> None:
    principal = world.principal(who, purpose)
    readable = world.readable(principal)
    cases: list[tuple[str, list[tuple[str, str]]]] = [
        ("Observation", []),
        ("Observation", [("code", f"{LOINC}|{CODES[0]}")]),
        ("Observation", [("code", CODES[1]), ("date", "ge2021")]),
        ("Observation", [("_sort", "-date"), ("_count", "3")]),
        ("Observation", [("_summary", "count")]),
        ("Observation", [("_include", "Observation:patient"), ("_count", "4"), ("_offset", "2")]),
        ("Observation", [("category", "vital-signs"), ("status", "final")]),
        ("Patient", [("gender", "female")]),
        ("Patient", [("name", "zoe")]),
        ("Patient", [("birthdate", "ge1970")]),
        ("Encounter", [("date", "2020")]),
        ("Condition", [("code", "http://snomed.info/sct|195662009")]),
        ("Condition", [("_lastUpdated", "ge2025")]),
    ]
    for label in world.patients:
        cases.append(("Observation", [("patient", f"p{label}")]))
        cases.append(("Observation", [("subject", f"Patient/p{label}"), ("code", CODES[0])]))
        cases.append(("Patient", [("_id", f"p{label}")]))
    for resource_type, items in cases:
        check_search(world, principal, resource_type, items, readable)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    caller=st.sampled_from(CALLERS),
    resource_type=st.sampled_from(TYPES),
    patient=st.one_of(st.none(), st.sampled_from([f"P{n}" for n in range(7)])),
    code=st.one_of(st.none(), st.sampled_from([*CODES, "195662009"])),
    date=st.one_of(
        st.none(), st.sampled_from(["ge2020", "lt2021-06", "2022", "le2019-03-03", "gt2020-01-10"])
    ),
    sort=st.sampled_from(["", "date", "-_lastUpdated"]),
    count=st.integers(0, 7),
    offset=st.integers(0, 6),
)
def test_no_parameters_make_a_search_leak(
    world: World,
    caller: tuple[str, str],
    resource_type: str,
    patient: str | None,
    code: str | None,
    date: str | None,
    sort: str,
    count: int,
    offset: int,
) -> None:
    items: list[tuple[str, str]] = [("_count", str(count)), ("_offset", str(offset))]
    if patient and resource_type != "Patient":
        items.append(("patient", f"p{patient}"))
    elif patient:
        items.append(("_id", f"p{patient}"))
    if code and resource_type in ("Observation", "Condition"):
        items.append(("code", code))
    if date and resource_type in ("Observation", "Encounter", "Condition"):
        items.append(("date", date))
    if sort and (sort != "date" or resource_type != "Patient"):
        items.append(("_sort", sort))
    principal = world.principal(*caller)
    check_search(world, principal, resource_type, items, world.readable(principal))


def test_paging_links_walk_every_match_once(world: World) -> None:
    principal = world.principal("a1")
    readable = world.readable(principal)
    base = "https://gateway.example/fhir"
    seen: list[str] = []
    items = [("_count", "4"), ("_sort", "date")]
    total = None
    for _ in range(50):
        query = parse_query("Observation", items)
        found = search(world.gateway, principal, query)
        bundle = searchset_bundle(base, query, found)
        total = bundle["total"]
        seen += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(base + "/Observation?")
        if "next" not in links:
            break
        from urllib.parse import parse_qsl, urlsplit

        items = parse_qsl(urlsplit(links["next"]).query)
    observations = {
        w.ref.resource_id
        for w, _ in world.records()
        if w.ref.resource_type == "Observation" and w.ref.name in readable
    }
    assert len(seen) == len(set(seen)) == total == len(observations)
    assert set(seen) == observations


def test_the_index_file_is_owner_only(world: World) -> None:
    files = list(world.gateway.data_dir.glob("gateway.sqlite*"))
    assert files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert world.gateway.data_dir.stat().st_mode & 0o077 == 0


def test_find_answers_only_readable_matches(world: World) -> None:
    """What conditional references and If-None-Exist see: only the caller's."""
    found = find(world.gateway, world.principal("a2"), "Patient", [("_id", "pP5")])
    assert found == []
    found = find(world.gateway, world.principal("a1"), "Patient", [("_id", "pP5")])
    assert [f.id for f in found] == ["pP5"]


def test_the_follower_forgets_ended_grants_and_erased_records(world: World) -> None:
    index = world.gateway.index
    patient = {label: kf.did for label, kf in world.patients.items()}
    assert index.of_patient(patient["P3"]) and index.of_patient(patient["P4"])
    report = world.gateway.follower.sync_once()
    assert report.errors == []
    kept = {label: {row.id for row in index.of_patient(did)} for label, did in patient.items()}
    assert kept["P3"] == set()  # revoked
    assert kept["P4"] == set()  # expired: no event fired, the pass saw it
    assert kept["P2"] == {"obs-P2-1"}  # the one record the grant names
    assert "psy-P1" not in kept["P1"] and "obs-P1-0" in kept["P1"]  # never the sensitive scope
    assert "psy-P0" in kept["P0"]  # A wrote it: A reads it
    assert kept["P5"] and "psy-P5" not in kept["P5"]  # a1's grant
    assert kept["P6"]  # for research: still a grant in force
    # The patient erases a record: gone from search at once, and from the index.
    erased = next(w for w, r in world.written["P1"] if r["id"] == "obs-P1-0")
    RecordsClient(world.node.url, world.patients["P1"]).erase([erased.ref])
    found = search(
        world.gateway, world.principal("A"), parse_query("Observation", [("patient", "pP1")])
    )
    assert "obs-P1-0" not in {loc.id for loc, _ in found.matches}
    world.gateway.follower.sync_once()
    assert "obs-P1-0" not in {row.id for row in index.of_patient(patient["P1"])}
    # ... and from the disk: its search values are overwritten, not left in free pages or
    # in the write-ahead log (a P1 record still indexed is there: the control).
    on_disk = b"".join(p.read_bytes() for p in world.gateway.data_dir.glob("gateway.sqlite*"))
    assert b"MARK-P1-1" in on_disk and b"MARK-P1-0" not in on_disk
    assert b"MARK-P3-0" not in on_disk and b"MARK-P4-0" not in on_disk  # grants ended
    # P1 revokes: everything of P1 leaves the index (B wrote it all).
    ConsentClient(world.node.url, world.patients["P1"]).revoke(world.grants["P1"])
    world.gateway.follower.sync_once()
    assert index.of_patient(patient["P1"]) == []
    assert (
        search(
            world.gateway, world.principal("A"), parse_query("Observation", [("patient", "pP1")])
        ).total
        == 0
    )


def test_the_follower_indexes_every_covered_record_by_name_and_new_versions(
    world: World, tmp_path: Path
) -> None:
    """A fresh gateway that knows one Observation of P5 (granted to a1) learns every record
    a1's grant covers, the Patient, the Encounter and the Observations nothing it holds
    refers to, by their names alone (each wrap says its type and id: design change 28),
    reading them through the node as a1, and never the sensitive one; a new version written
    by the patient is picked up on the next pass."""
    gateway = Gateway(world.node.url, world.a, tmp_path / "fresh", keys_dir=world.gateway.keys_dir)
    try:
        obs, resource = next((w, r) for w, r in world.written["P5"] if r["id"] == "obs-P5-1")
        seed = Located(
            "Observation",
            "obs-P5-1",
            obs.ref.patient,
            obs.ref.name,
            1,
            STAMP,
            False,
            author_org=world.b.did,
        )
        gateway.index.put([(seed, resource)])
        report = gateway.follower.sync_once()
        assert report.errors == []
        ids = {row.id for row in gateway.index.of_patient(obs.ref.patient)}
        covered = {r["id"] for _, r in world.written["P5"] if r["id"] != "psy-P5"}
        assert {"obs-P5-1", "pP5", "enc-P5"} <= covered
        assert ids == covered and "psy-P5" not in ids  # sensitive: not in a1's grant
        assert report.unknown == 0
        patient_client = RecordsClient(world.node.url, world.patients["P5"])
        changed = {**resource, "code": {"coding": [{"system": LOINC, "code": "9279-1"}]}}
        changed.pop("meta")
        written = patient_client.write(
            obs.ref.patient, {**changed, "meta": {"lastUpdated": "2026-02-01T00:00:00.000Z"}}
        )
        assert written.version == 2
        gateway.follower.sync_once()
        located = gateway.index.locate("Observation", "obs-P5-1")
        assert located is not None and located.version == 2
        principal = Principal("c", world.staff["a1"].did, SCOPES, "TREAT")
        found = search(gateway, principal, parse_query("Observation", [("code", "9279-1")]))
        assert [loc.id for loc, _ in found.matches] == ["obs-P5-1"]
        assert found.matches[0][1]["meta"]["versionId"] == "2"
    finally:
        gateway.close()


def test_a_stale_practitioner_key_file_does_not_stop_the_follower(
    world: World, tmp_path: Path
) -> None:
    """A key file of a practitioner the chain does not know (never registered) is skipped;
    the pass goes on for the others."""
    from careledger.crypto.keys import Identity

    keys = tmp_path / "keys"
    keys.mkdir()
    world.staff["a1"].save(keys / "practitioner-a1.json")
    stranger = Identity.generate()
    KeyFile(stranger.did, "practitioner", stranger, "gone").save(keys / "practitioner-old.json")
    gateway = Gateway(world.node.url, world.a, tmp_path / "gw", keys_dir=keys)
    try:
        report = gateway.follower.sync_once()
        assert any(stranger.did in error for error in report.errors)
        assert gateway.follower.interval > 0
    finally:
        gateway.close()
