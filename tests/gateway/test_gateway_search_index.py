"""The search index on a real gateway.sqlite: each parameter, prefix and modifier against an
independent evaluation in the test over Synthea resources, paging, sorting and the access
narrowing. (Through a real node and real HTTP: test_gateway_search_node.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from careledger.gateway.db import GatewayDb
from careledger.gateway.index.params import date_range, extract, normalise
from careledger.gateway.index.search import Access, IndexSearch, parse_query
from careledger.gateway.index.store import SCHEMA, Located, RecordIndex
from careledger.gateway.outcome import FhirError
from nodeutil import SHARED_DATA

ORG = "did:key:zOrganisation"
OTHER_ORG = "did:key:zOtherOrganisation"
BUNDLES = sorted((SHARED_DATA / "synthea-r4").glob("*_*.json"))[:4]


def _patient_did(n: int) -> str:
    return f"did:key:zPatient{n}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordIndex, list[Any]]]:
    """Four Synthea patients' resources in a real index; (index, [(Located, resource)])."""
    db = GatewayDb.open(tmp_path_factory.mktemp("index") / "gateway.sqlite", [SCHEMA])
    index = RecordIndex(db, ORG)
    items = []
    for n, path in enumerate(BUNDLES):
        bundle = json.loads(path.read_text())
        for i, entry in enumerate(bundle["entry"]):
            resource = _relative(entry["resource"])
            if resource["resourceType"] in ("Organization", "Practitioner"):
                continue
            located = Located(
                resource["resourceType"],
                resource["id"],
                _patient_did(n),
                f"{n:04d}{i:060d}",
                1,
                f"2026-01-{(i % 28) + 1:02d}T10:00:00.000Z",
                False,
                # Half the patients' records written by another organisation.
                author_org=ORG if n % 2 == 0 else OTHER_ORG,
            )
            items.append((located, resource))
    index.put(items)
    yield index, items
    db.close()


def _relative(resource: dict[str, Any]) -> dict[str, Any]:
    """Synthea's urn:uuid references as the gateway stores them (Patient/<id>)."""
    text = json.dumps(resource).replace('"urn:uuid:', '"Patient/')
    return json.loads(text)  # type: ignore[no-any-return]


def run(index: RecordIndex, resource_type: str, *items: tuple[str, str]) -> list[str]:
    query = parse_query(resource_type, [*items, ("_count", "500")])
    return [found.id for found in IndexSearch(index).run(query, None).page]


def expected(items: list[Any], resource_type: str, test: Any) -> list[str]:
    return sorted(r["id"] for loc, r in items if loc.resource_type == resource_type and test(r))


def test_code_system_and_code_forms(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, items = corpus
    observations = [r for loc, r in items if loc.resource_type == "Observation"]
    coding = observations[0]["code"]["coding"][0]
    system, code = coding["system"], coding["code"]

    def has(r: dict[str, Any], sys: str | None = None) -> bool:
        return any(
            c["code"] == code and (sys is None or c.get("system", "") == sys)
            for c in r["code"].get("coding", [])
        )

    want = expected(items, "Observation", lambda r: has(r, system))
    assert want and sorted(run(index, "Observation", ("code", f"{system}|{code}"))) == want
    assert sorted(run(index, "Observation", ("code", code))) == expected(items, "Observation", has)
    assert run(index, "Observation", ("code", f"|{code}")) == []  # Synthea names a system
    assert run(index, "Observation", ("code", f"http://other.example|{code}")) == []
    by_system = run(index, "Observation", ("code", f"{system}|"))
    assert len(by_system) == len(observations)


def test_patient_subject_and_id(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, items = corpus
    patient_id = next(
        r["id"]
        for loc, r in items
        if loc.patient == _patient_did(1) and loc.resource_type == "Patient"
    )
    want = sorted(
        r["id"]
        for loc, r in items
        if loc.resource_type == "Observation" and loc.patient == _patient_did(1)
    )
    for name, value in [
        ("patient", patient_id),
        ("patient", f"Patient/{patient_id}"),
        ("subject", f"Patient/{patient_id}"),
        ("subject:Patient", patient_id),
        ("patient", f"https://example.org/fhir/Patient/{patient_id}"),
    ]:
        assert sorted(run(index, "Observation", (name, value))) == want, name
    assert run(index, "Observation", ("patient", "no-such-patient")) == []
    assert run(index, "Patient", ("_id", patient_id)) == [patient_id]
    two = want[:2]
    assert sorted(run(index, "Observation", ("_id", ",".join(two)))) == sorted(two)


def test_date_prefixes_against_the_ranges(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, items = corpus
    observations = [r for loc, r in items if loc.resource_type == "Observation"]
    days = sorted({r["effectiveDateTime"][:10] for r in observations})
    day = days[len(days) // 2]
    lo, hi = date_range(day)

    def when(r: dict[str, Any]) -> tuple[int, int]:
        return date_range(r["effectiveDateTime"])

    cases = {
        "eq": lambda r: lo <= when(r)[0] and when(r)[1] <= hi,
        "ge": lambda r: when(r)[1] >= lo,
        "le": lambda r: when(r)[0] <= hi,
        "gt": lambda r: when(r)[1] > hi,
        "lt": lambda r: when(r)[0] < lo,
    }
    for prefix, test in cases.items():
        got = sorted(run(index, "Observation", ("date", f"{prefix}{day}")))
        assert got == expected(items, "Observation", test), prefix
    assert sorted(run(index, "Observation", ("date", day))) == expected(
        items, "Observation", cases["eq"]
    )
    # Repeated = AND: a range.
    first, last = days[1], days[-2]
    got = sorted(run(index, "Observation", ("date", f"ge{first}"), ("date", f"le{last}")))
    assert got == expected(
        items,
        "Observation",
        lambda r: when(r)[1] >= date_range(first)[0] and when(r)[0] <= date_range(last)[1],
    )


def test_periods_and_other_types_dates(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, items = corpus
    encounters = [r for loc, r in items if loc.resource_type == "Encounter"]
    year = encounters[0]["period"]["start"][:4]
    got = sorted(run(index, "Encounter", ("date", year)))
    assert encounters[0]["id"] in got
    for r in encounters:
        inside = r["period"]["start"][:4] == year and r["period"]["end"][:4] == year
        assert (r["id"] in got) == inside
    immunization = next(r for loc, r in items if loc.resource_type == "Immunization")
    assert immunization["id"] in run(
        index, "Immunization", ("date", immunization["occurrenceDateTime"][:10])
    )


def test_strings_are_prefix_case_and_accent_insensitive(tmp_path: Path) -> None:
    index = RecordIndex(GatewayDb.open(tmp_path / "g.sqlite", [SCHEMA]), ORG)
    people = {
        "p1": {"family": "Müller", "given": ["Zoë", "Anne"]},
        "p2": {"family": "Muller", "given": ["Jose"]},
        "p3": {"family": "Smith", "given": ["José"], "prefix": ["Dr."]},
    }
    index.put(
        (
            Located("Patient", pid, f"did:key:z{pid}", f"r{pid}", 1, "2026-01-01T00:00:00Z", False),
            {
                "resourceType": "Patient",
                "id": pid,
                "name": [name],
                "gender": "female",
                "birthDate": "1980-05-0" + pid[1],
            },
        )
        for pid, name in people.items()
    )
    assert sorted(run(index, "Patient", ("family", "mul"))) == ["p1", "p2"]
    assert sorted(run(index, "Patient", ("family", "MÜLLER"))) == ["p1", "p2"]
    assert run(index, "Patient", ("family:exact", "smith")) == ["p3"]
    assert run(index, "Patient", ("family:contains", "ULLE")) == ["p1", "p2"]
    assert sorted(run(index, "Patient", ("given", "jos"))) == ["p2", "p3"]
    assert sorted(run(index, "Patient", ("name", "zoe"))) == ["p1"]
    assert sorted(run(index, "Patient", ("name", "anne,smith"))) == ["p1", "p3"]
    assert run(index, "Patient", ("name", "anne"), ("family", "smith")) == []
    assert run(index, "Patient", ("birthdate", "1980-05-02")) == ["p2"]
    assert run(index, "Patient", ("birthdate", "ge1980-05-02")) == ["p2", "p3"]
    assert sorted(run(index, "Patient", ("gender", "female"))) == ["p1", "p2", "p3"]
    assert normalise("  Ångström ") == "angstrom"


def test_status_category_identifier(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, items = corpus
    assert sorted(run(index, "Observation", ("status", "final"))) == expected(
        items, "Observation", lambda r: r["status"] == "final"
    )
    category = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    assert sorted(run(index, "Observation", ("category", category))) == expected(
        items,
        "Observation",
        lambda r: any(
            c["code"] == "laboratory" for cat in r.get("category", []) for c in cat["coding"]
        ),
    )
    patient = next(r for loc, r in items if loc.resource_type == "Patient")
    ident = patient["identifier"][1]
    assert run(index, "Patient", ("identifier", f"{ident['system']}|{ident['value']}")) == [
        patient["id"]
    ]


def test_paging_sorting_and_counts(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, items = corpus
    search = IndexSearch(index)
    everything = parse_query("Observation", [("_sort", "date"), ("_count", "500")])
    all_sorted = search.run(everything, None)
    seen: list[str] = []
    offset = 0
    while True:
        query = parse_query(
            "Observation", [("_sort", "date"), ("_count", "37"), ("_offset", str(offset))]
        )
        page = search.run(query, None)
        assert page.total == all_sorted.total
        if not page.page:
            break
        seen += [p.id for p in page.page]
        offset += 37
    assert len(seen) == len(set(seen)) == all_sorted.total  # no duplicates, no gaps
    when = {
        r["id"]: r["effectiveDateTime"] for loc, r in items if loc.resource_type == "Observation"
    }
    lows = [date_range(when[i])[0] for i in seen]
    assert lows == sorted(lows)
    descending = search.run(
        parse_query("Observation", [("_sort", "-date"), ("_count", "500")]), None
    )
    highs = [date_range(when[p.id])[1] for p in descending.page]
    assert highs == sorted(highs, reverse=True)
    updated = search.run(
        parse_query("Observation", [("_sort", "-_lastUpdated"), ("_count", "500")]), None
    )
    stamps = [p.last_updated for p in updated.page]
    assert stamps == sorted(stamps, reverse=True)
    counted = search.run(parse_query("Observation", [("_summary", "count")]), None)
    assert counted.page == [] and counted.total == all_sorted.total


def test_access_narrows_matches_and_counts(corpus: tuple[RecordIndex, list[Any]]) -> None:
    index, _items = corpus
    search = IndexSearch(index)
    query = parse_query("Observation", [("_count", "500")])
    # Nothing granted: only what the organisation wrote (patients 0 and 2).
    own = Access.of_grants([], ORG, ORG, "TREAT", 1000)
    found = search.run(query, own)
    assert {p.patient for p in found.page} == {_patient_did(0), _patient_did(2)}
    # A grant of patient 1's diagnostics for treatment, and a revoked one of patient 3.
    grants = [
        _grant(_patient_did(1), ["diagnostics"]),
        _grant(_patient_did(3), ["diagnostics"], revoked_at=5),
    ]
    granted = search.run(query, Access.of_grants(grants, ORG, ORG, "TREAT", 1000))
    assert {p.patient for p in granted.page} == {_patient_did(n) for n in (0, 1, 2)}
    assert granted.total == len(granted.page)
    # The wrong purpose, an expired grant, a grant naming one record only.
    # (what it wrote, it reads for any purpose; nothing without one)
    assert (
        search.run(query, Access.of_grants(grants, ORG, ORG, "HRESCH", 1000)).total == found.total
    )
    assert search.run(query, Access.of_grants(grants, ORG, ORG, "", 1000)).total == 0
    expired = [_grant(_patient_did(1), ["diagnostics"], end=999)]
    assert (
        search.run(query, Access.of_grants(expired, ORG, ORG, "TREAT", 1000)).total == found.total
    )
    one = next(p for p in granted.page if p.patient == _patient_did(1))
    named = [_grant(_patient_did(1), ["diagnostics"], records=[one.record])]
    narrowed = search.run(query, Access.of_grants(named, ORG, ORG, "TREAT", 1000))
    assert narrowed.total == found.total + 1
    # Another practitioner's grant is not this caller's.
    theirs = [{**_grant(_patient_did(1), ["diagnostics"]), "grantee": "did:key:zColleague"}]
    assert (
        search.run(query, Access.of_grants(theirs, "did:key:zMe", ORG, "TREAT", 1000)).total
        == found.total
    )


def _grant(patient: str, scopes: list[str], **extra: Any) -> dict[str, Any]:
    grant = {
        "id": "g",
        "patient": patient,
        "grantee": ORG,
        "action": "read",
        "scopes": scopes,
        "purposes": ["TREAT"],
        "records": [],
        "start": 0,
        "end": 2000,
        "revoked_at": 0,
    }
    return grant | extra


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("nonsense", "1")], "unknown search parameter"),
        ([("date", "2020-13-45")], "not a FHIR date"),
        ([("date", "sa2020")], "prefix"),
        ([("date", "ge20x")], "not a FHIR date"),
        ([("_count", "-1")], "_count"),
        ([("_count", "ten")], "_count"),
        ([("_sort", "code")], "cannot sort"),
        ([("_include", "Observation:performer")], "_include"),
        ([("_summary", "maybe")], "_summary"),
        ([("code:below", "x")], "modifier"),
        ([("code", "a,,b")], "non-empty"),
        ([("code", ",".join(["x"] * 101))], "1 to 100"),
        ([("_offset", "x")], "_offset"),
    ],
)
def test_malformed_parameters_are_400(items: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse_query("Observation", items)
    assert refused.value.status == 400
    assert message in refused.value.diagnostics


def test_lenient_handling_ignores_unknown_parameters_and_count_is_bounded() -> None:
    query = parse_query("Observation", [("nonsense", "1"), ("_count", "100000")], lenient=True)
    assert query.criteria == [] and query.count == 500
    assert ("nonsense", "1") not in query.kept


def test_extract_finds_component_codes_and_references() -> None:
    values = extract(
        {
            "resourceType": "Observation",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}}],
            "subject": {"reference": "Patient/p1"},
            "encounter": {"reference": "Encounter/e1"},
            "effectivePeriod": {"start": "2020-01-01"},
        }
    )
    assert ("component-code", "http://loinc.org", "8480-6") in values.tokens
    assert ("combo-code", "http://loinc.org", "85354-9") in values.tokens
    assert ("_ref", "Encounter", "e1") in values.tokens
    ((name, low, high),) = values.dates
    assert name == "date" and low == date_range("2020-01-01")[0] and high > 2**60


def test_every_parameter_the_capability_statement_lists_is_searchable() -> None:
    """The CapabilityStatement (capability.py) promises no parameter search refuses."""
    from careledger.gateway.capability import SEARCH_PARAMETERS, search_parameters_of
    from careledger.gateway.index.params import parameters_of
    from careledger.gateway.resource_types import VIEW_TYPES

    for resource_type in set(SEARCH_PARAMETERS) - VIEW_TYPES:
        listed = search_parameters_of(resource_type)
        assert set(listed) <= set(parameters_of(resource_type)), resource_type
