"""FHIR search over the index: parameters parsed, matched in SQL, narrowed to what the caller
may read, sorted and paged.

    query = parse_query("Observation", [("patient", "p1"), ("code", "http://loinc.org|8867-4")])
    found = IndexSearch(index).run(query, access)        # Found(total, page, includes)

Parsing follows FHIR R4 search: parameters repeated are AND, values separated by commas OR;
`system|code`, `|code` (no system), `code` (any system), `system|` (any code of the system);
dates with `eq ne gt lt ge le sa eb ap` prefixes (eq ge le gt lt supported; the others 400);
strings match case- and accent-insensitively from the start (`:exact` the whole value,
`:contains` anywhere). An unknown parameter is a 400 unless the request says
`Prefer: handling=lenient`, when it is ignored (and left out of the self link).

Date prefixes compare the resource's [low, high] range with the searched value's
[low, high] (its precision: "2020" is the year): eq: the resource's range lies inside the
value's; ge: it ends at or after the value's start; le: it starts at or before the value's
end; gt: it ends after the value's end; lt: it starts before the value's start (HAPI's
reading of R4 3.1.1.5.7, which also matches ranges that overlap the boundary).

Who may read what is decided before paging (`Access`: the caller's grants, as the chain
lists them, and the records its organisation wrote), so that `total` and every page count
only records the caller may read; the records of a page are then read through the node,
which decides again and audits (gateway/search.py drops any it refuses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from careledger.chain.modules.purposes import PURPOSES
from careledger.gateway.index import params
from careledger.gateway.index.params import DATE, REFERENCE, STRING, TOKEN, Param
from careledger.gateway.index.store import _COLUMNS, Located, RecordIndex
from careledger.gateway.outcome import FhirError
from careledger.gateway.shaping import Shape, parse_elements, parse_summary

DEFAULT_COUNT = 20
MAX_COUNT = 500
MAX_VALUES = 100  # comma-separated values of one parameter
MAX_OFFSET = 10_000_000
# Result parameters: how results come back, not which match. `_totalMethod` (Aidbox's; fhirpy's
# count() sends `_count=0&_totalMethod=count`) is accepted and ignored: the total is exact.
RESULT_PARAMS = frozenset(
    {
        "_count", "_offset", "_sort", "_include", "_summary", "_elements", "_total",
        "_totalMethod", "_format", "_pretty",
    }
)  # fmt: skip
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUPPORTED_PREFIXES = frozenset({"eq", "gt", "lt", "ge", "le"})
MODIFIERS = {TOKEN: {"", "exact"}, STRING: {"", "exact", "contains"}, DATE: {""}}
_PATIENT_REF = re.compile(r"(?:.*/)?(?:Patient/)?([A-Za-z0-9\-.]{1,64})")


@dataclass(frozen=True)
class Criterion:
    name: str
    param: Param
    modifier: str
    values: tuple[str, ...]  # OR


@dataclass
class Query:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    include: list[str] = field(default_factory=list)  # "Observation:patient"
    summary_count: bool = False
    shape: Shape = field(default_factory=Shape)  # _summary (not count), _elements
    # The parameters as the self and next links repeat them (unknown ones left out).
    kept: list[tuple[str, str]] = field(default_factory=list)


def parse_query(
    resource_type: str, items: Iterable[tuple[str, str]], *, lenient: bool = False
) -> Query:
    """A search of `resource_type` from its (name, value) parameters: FhirError 400 for a
    malformed or unknown one (an unknown one is ignored when `lenient`)."""
    known = params.parameters_of(resource_type)
    query = Query(resource_type)
    for raw_name, value in items:
        name, _, modifier = raw_name.partition(":")
        if name in RESULT_PARAMS:
            _result_param(query, name, value)
            if name not in ("_offset", "_format"):
                query.kept.append((raw_name, value))
            continue
        param = known.get(name)
        if param is None:
            if lenient:
                continue
            raise FhirError(400, f"unknown search parameter {name!r} for {resource_type}")
        query.criteria.append(_criterion(name, param, modifier, value))
        query.kept.append((raw_name, value))
    return query


def _criterion(name: str, param: Param, modifier: str, value: str) -> Criterion:
    if param.kind == REFERENCE:
        if modifier not in ("", "Patient"):
            raise FhirError(400, f"{name} refers to a Patient, not {modifier!r}")
        modifier = ""
    elif modifier not in MODIFIERS[param.kind]:
        raise FhirError(400, f"modifier :{modifier} is not supported on {name}")
    values = tuple(_split(value))
    if not values or len(values) > MAX_VALUES or any(not v for v in values):
        raise FhirError(400, f"{name}: give 1 to {MAX_VALUES} non-empty values")
    if param.kind == DATE:
        for text in values:
            _date_value(name, text)  # 400 now if malformed
    return Criterion(name, param, modifier, values)


def _split(value: str) -> list[str]:
    """Values separated by commas (a `\\,` is a comma inside a value)."""
    parts = re.split(r"(?<!\\),", value)
    return [part.replace("\\,", ",").strip() for part in parts]


def _result_param(query: Query, name: str, value: str) -> None:
    if name == "_count":
        query.count = min(_integer(name, value, 0), MAX_COUNT)
    elif name == "_offset":
        query.offset = min(_integer(name, value, 0), MAX_OFFSET)
    elif name == "_sort":
        query.sort = [_sort_key(query.resource_type, key) for key in _split(value)]
    elif name == "_include":
        query.include.append(_include(query.resource_type, value))
    elif name == "_summary":
        if value == "count":
            query.summary_count = True
        else:
            query.shape = Shape(parse_summary(value), query.shape.elements)
    elif name == "_elements":
        query.shape = Shape(query.shape.summary, parse_elements(value))


def _integer(name: str, value: str, low: int) -> int:
    if not value.isdigit() or int(value) < low:
        raise FhirError(400, f"{name} must be a whole number from {low}, not {value!r}")
    return int(value)


def _sort_key(resource_type: str, key: str) -> tuple[str, bool]:
    name = key.removeprefix("-")
    if name not in params.SORTABLE or name not in params.parameters_of(resource_type):
        raise FhirError(400, f"cannot sort {resource_type} by {name!r} (date, _lastUpdated)")
    return name, key.startswith("-")


def _include(resource_type: str, value: str) -> str:
    source, _, target = value.partition(":")
    if source != resource_type or target not in ("patient", "subject"):
        raise FhirError(
            400, f"_include={value!r}: only {resource_type}:patient or :subject is supported"
        )
    if target not in params.parameters_of(resource_type):
        raise FhirError(400, f"{resource_type} has no {target} to include")
    return value


def _date_value(name: str, text: str) -> tuple[str, int, int]:
    prefix = text[:2] if text[:2] in PREFIXES else "eq"
    bare = text[2:] if text[:2] in PREFIXES else text
    if prefix not in SUPPORTED_PREFIXES:
        raise FhirError(400, f"{name}: prefix {prefix!r} is not supported (eq ge le gt lt)")
    try:
        low, high = params.date_range(bare)
    except ValueError:
        raise FhirError(400, f"{name}: {text!r} is not a FHIR date") from None
    if prefix in ("gt", "lt") and _finer_than_milliseconds(bare):
        # The index keeps milliseconds: a value stamped in the same millisecond as a finer
        # search value (smart-fetch's `_lastUpdated=gt<its clock, in microseconds>`) covers
        # instants on both sides of it, so, as FHIR's overlapping ranges say, gt and lt match it.
        prefix = "ge" if prefix == "gt" else "le"
    return prefix, low, high


def _finer_than_milliseconds(text: str) -> bool:
    fraction = re.search(r"\.([0-9]+)", text)
    return fraction is not None and fraction.group(1)[3:].strip("0") != ""


# --- who may read what -----------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What a caller may read, decided as the chain decides a read (ConsentKeeper
    .read_decision), only ever more narrowly: a valid purpose, and either its organisation
    wrote the record's latest version, or an active read grant to the caller or its
    organisation covers the record's scope (and names the record, if it names any) for
    that purpose. Delegations and break-glass are left to direct reads: a search never finds
    by them."""

    organisation: str
    purpose: str
    covered: Mapping[str, tuple[tuple[frozenset[str], frozenset[str] | None], ...]]

    @classmethod
    def of_grants(
        cls,
        grants: Sequence[Mapping[str, Any]],
        reader: str,
        organisation: str,
        purpose: str,
        now: int,
    ) -> Access:
        covered: dict[str, list[tuple[frozenset[str], frozenset[str] | None]]] = {}
        for grant in grants:
            if not _grant_allows(grant, reader, organisation, purpose, now):
                continue
            records = frozenset(grant.get("records") or ()) or None
            entry = (frozenset(grant.get("scopes") or ()), records)
            covered.setdefault(str(grant["patient"]), []).append(entry)
        return cls(organisation, purpose, {p: tuple(c) for p, c in covered.items()})

    def allows(self, located: Located) -> bool:
        if not self.purpose or self.purpose not in PURPOSES:
            return False
        if located.author_org and located.author_org == self.organisation:
            return True
        for scopes, records in self.covered.get(located.patient, ()):
            if located.scope in scopes and (records is None or located.record in records):
                return True
        return False

    def patients(self) -> frozenset[str]:
        """The patients some grant lets the caller read."""
        return frozenset(self.covered)


def _grant_allows(
    grant: Mapping[str, Any], reader: str, organisation: str, purpose: str, now: int
) -> bool:
    return (
        grant.get("action") == "read"
        and grant.get("grantee") in (reader, organisation)
        and not grant.get("revoked_at")
        and int(grant.get("start", 0)) <= now < int(grant.get("end", 0))
        and purpose in (grant.get("purposes") or ())
    )


# --- running a query -------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    total: int
    page: list[Located]  # the page's matches, in order


class IndexSearch:
    def __init__(self, index: RecordIndex) -> None:
        self.index = index

    def run(self, query: Query, access: Access | None) -> Found:
        """The matches the caller may read (all of them when `access` is None: the gateway's
        own lookups, never a client's answer), counted, and the page asked for."""
        matches = [m for m in self.matches(query) if access is None or access.allows(m)]
        page = [] if query.summary_count else matches[query.offset : query.offset + query.count]
        return Found(len(matches), page)

    def matches(self, query: Query) -> list[Located]:
        where, args = ["r.resource_type = ?", "r.deleted = 0"], [query.resource_type]
        # With a patient or ids named, few rows qualify: test each of them against the value
        # tables (correlated EXISTS on their keys); else let the value tables drive (IN).
        driven = any(c.param.kind == REFERENCE or c.name == "_id" for c in query.criteria)
        for criterion in query.criteria:
            clause, clause_args = self._clause(query.resource_type, criterion, driven)
            where.append(clause)
            args += clause_args
        order = [_order_by(query.resource_type, name, desc) for name, desc in query.sort]
        sql = (
            f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))} "
            f"FROM resources r WHERE {' AND '.join(where)} "
            f"ORDER BY {', '.join([*order, 'r.id'])}"
        )
        with self.index.db.read() as db:
            rows = db.execute(sql, args).fetchall()
        return [Located.of(row) for row in rows]

    def _clause(
        self, resource_type: str, criterion: Criterion, driven: bool
    ) -> tuple[str, list[Any]]:
        if criterion.name == "_id":
            marks = ", ".join("?" * len(criterion.values))
            return f"r.id IN ({marks})", list(criterion.values)
        kind = criterion.param.kind
        if kind == REFERENCE:
            dids = self._patients(criterion.values)
            if not dids:
                return "0", []
            return f"r.patient IN ({', '.join('?' * len(dids))})", dids
        if kind == TOKEN:
            table, alias, tests, test_args = "search_token", "t", *_token_tests(criterion)
        elif kind == STRING:
            table, alias, tests, test_args = "search_string", "s", *_string_tests(criterion)
        else:
            table, alias, tests, test_args = "search_date", "d", *_date_tests(criterion)
        if driven:
            sub = (
                f"EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.resource_type = "
                f"r.resource_type AND {alias}.id = r.id AND {alias}.name = ? AND ({tests}))"
            )
            return sub, [criterion.name, *test_args]
        sub = (
            f"r.id IN (SELECT {alias}.id FROM {table} {alias} WHERE {alias}.resource_type = ? "
            f"AND {alias}.name = ? AND ({tests}))"
        )
        return sub, [resource_type, criterion.name, *test_args]

    def _patients(self, values: Sequence[str]) -> list[str]:
        """The dids of the patients named (Patient/x, x, or an absolute URL)."""
        dids = []
        for value in values:
            match = _PATIENT_REF.fullmatch(value)
            did = self.index.patient_did(match.group(1)) if match else None
            if did is not None:
                dids.append(did)
        return dids


def _token_tests(criterion: Criterion) -> tuple[str, list[Any]]:
    ors, args = [], []
    for value in criterion.values:
        if "|" not in value:
            ors.append("t.code = ?")
            args.append(value)
            continue
        system, _, code = value.partition("|")
        if code:
            ors.append("(t.code = ? AND t.system = ?)")
            args += [code, system]
        else:
            ors.append("t.system = ?")
            args.append(system)
    return " OR ".join(ors), args


def _string_tests(criterion: Criterion) -> tuple[str, list[Any]]:
    ors, args = [], []
    for value in criterion.values:
        text = params.normalise(value)
        if criterion.modifier == "exact":
            ors.append("s.value = ?")
            args.append(text)
        elif criterion.modifier == "contains":
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            ors.append("s.value LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        else:
            ors.append("(s.value >= ? AND s.value < ?)")
            args += [text, text + "\U0010ffff"]
    return " OR ".join(ors), args


_DATE_TEST = {
    "eq": "(d.low >= ? AND d.high <= ?)",
    "ge": "d.high >= ?",
    "le": "d.low <= ?",
    "gt": "d.high > ?",
    "lt": "d.low < ?",
}


def _date_bounds(prefix: str, low: int, high: int) -> list[int]:
    """The searched range's bounds each test of _DATE_TEST compares with."""
    return {"eq": [low, high], "ge": [low], "le": [high], "gt": [high], "lt": [low]}[prefix]


def _date_tests(criterion: Criterion) -> tuple[str, list[Any]]:
    ors, args = [], []
    for text in criterion.values:
        prefix, low, high = _date_value(criterion.name, text)
        ors.append(_DATE_TEST[prefix])
        args += _date_bounds(prefix, low, high)
    return " OR ".join(ors), args


def _order_by(resource_type: str, name: str, descending: bool) -> str:
    # The parameter name comes from SORTABLE (checked when parsed), never from the request.
    bound = "MAX(d.high)" if descending else "MIN(d.low)"
    key = (
        f"(SELECT {bound} FROM search_date d WHERE d.resource_type = r.resource_type "
        f"AND d.id = r.id AND d.name = '{name}')"
    )
    # Resources without the value last, whichever the direction.
    return f"{key} IS NULL, {key} {'DESC' if descending else 'ASC'}"


# --- the directory: a few hundred resources, matched in memory ------------------------------


def matches_values(query: Query, resource_id: str, values: params.Values) -> bool:
    """Whether a resource with these search values matches every criterion (for the
    directory's resources, which are not in the index's tables)."""
    return all(_matches(criterion, resource_id, values) for criterion in query.criteria)


def _matches(criterion: Criterion, resource_id: str, values: params.Values) -> bool:
    name, kind = criterion.name, criterion.param.kind
    if name == "_id":
        return resource_id in criterion.values
    if kind == TOKEN:
        mine = [(system, code) for n, system, code in values.tokens if n == name]
        return any(_token_matches(value, mine) for value in criterion.values)
    if kind == STRING:
        texts = [text for n, text in values.strings if n == name]
        return any(_string_matches(criterion.modifier, value, texts) for value in criterion.values)
    if kind == DATE:
        ranges = [(low, high) for n, low, high in values.dates if n == name]
        return any(_date_matches(name, value, ranges) for value in criterion.values)
    return False


def _token_matches(value: str, mine: Sequence[tuple[str, str]]) -> bool:
    if "|" not in value:
        return any(code == value for _, code in mine)
    system, _, code = value.partition("|")
    return any(s == system and (not code or c == code) for s, c in mine)


def _string_matches(modifier: str, value: str, texts: Sequence[str]) -> bool:
    wanted = params.normalise(value)
    if modifier == "exact":
        return wanted in texts
    if modifier == "contains":
        return any(wanted in text for text in texts)
    return any(text.startswith(wanted) for text in texts)


def _date_matches(name: str, value: str, ranges: Sequence[tuple[int, int]]) -> bool:
    prefix, low, high = _date_value(name, value)
    tests = {
        "eq": lambda lo, hi: lo >= low and hi <= high,
        "ge": lambda lo, hi: hi >= low,
        "le": lambda lo, hi: lo <= high,
        "gt": lambda lo, hi: hi > high,
        "lt": lambda lo, hi: lo < low,
    }
    return any(tests[prefix](lo, hi) for lo, hi in ranges)
