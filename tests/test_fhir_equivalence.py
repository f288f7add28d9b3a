"""The fast FHIR check (wallet/fhir_fast.py) against the R4B models it is compiled from.

A corpus of mutants is generated from real resources (Synthea bundles, the FHIR R4 examples):
fields dropped, unknown fields, wrong JSON types, bad codes, ids, dates and numbers, lists
where one value goes and the reverse, nulls, two values of one choice, wrong resourceType,
broken primitive extensions. For every mutant the models refuse, the fast check must not
accept it (it may only say "not sure", and the models then refuse it as before); so
`validate_resource` gives every mutant the models' verdict. Valid resources pass both, and
real data takes the fast path.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from careledger.wallet.fhir import (
    InvalidResource,
    model_class,
    validate_resource,
    validate_with_models,
)
from careledger.wallet.fhir_fast import surely_valid
from nodeutil import SHARED_DATA

SYNTHEA = SHARED_DATA / "synthea-r4"
EXAMPLES = SHARED_DATA / "fhir-r4-examples"
MUTANTS_PER_RESOURCE = 8

BAD_STRINGS: list[Any] = [
    "", " ", "a  b", " lead", "trail ", "\x0b", "tab\there", "line\nbreak", "\x1c", "ü",
    "2015-02-30", "2015-13-01", "2015-02", "2015", "2015-02-07", "2015-02-07T13:28",
    "2015-02-07T25:00:00Z", "2015-02-07T13:28:17", "2015-02-07T13:28:17.123+15:00",
    "2015-02-07T13:28:17.1234567Z", "2016-12-31T23:59:60Z", "0000-01-01", "13:28:17",
    "24:00:00", "not a date", "urn:oid:1.2", "urn:oid:1.02", "bad id!", "x" * 300, "YWJj",
    "YWJ", "-5", "5", "5.0", "1e3", "true", "final", "Patient/1",
]  # fmt: skip
BAD_NUMBERS: list[Any] = [-1, 0, 1, 2**31, -(2**31) - 1, 1.5, 5.0, 1e-7, "5", "1.5", True]
WRONG_TYPES: list[Any] = [7, 7.5, True, False, "text", None, [], {}, ["x"], [None], {"a": 1}]


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def verdict(check: Callable[[Any], None], resource: Any) -> str:
    try:
        check(resource)
    except InvalidResource:
        return "refused"
    except Exception as exc:  # a crash is a verdict of its own (and a defect)
        return f"raised {type(exc).__name__}"
    return "accepted"


def by_models(resource: Any) -> None:
    """The old validator: the resource's type looked up, then the R4B model (pydantic)."""
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(kind, str) or not kind:
        raise InvalidResource("resourceType is missing")
    validate_with_models(resource, model_class(kind))


def fast(resource: Any) -> bool:
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(kind, str) or not kind:
        return False
    try:
        model = model_class(kind)
    except InvalidResource:
        return False
    return surely_valid(resource, model)


# --- the mutations ------------------------------------------------------------------------


def places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a JSON document, the document itself first."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from places(item, (*path, index))


def replace(document: Any, path: tuple[Any, ...], new: Any) -> Any:
    copied = copy.deepcopy(document)
    parent = copied
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return copied


def edit_dict(document: Any, path: tuple[Any, ...], edit: Callable[[dict[str, Any]], None]) -> Any:
    copied = copy.deepcopy(document)
    target = copied
    for step in path:
        target = target[step]
    edit(target)
    return copied


def mutate(resource: dict[str, Any], rng: random.Random) -> Any:
    spots = list(places(resource))
    path, value = rng.choice(spots)
    dicts = [(p, v) for p, v in spots if isinstance(v, dict) and v]
    operation = rng.randrange(12)
    if operation == 0 and dicts:  # drop a field
        p, d = rng.choice(dicts)
        key = rng.choice(list(d))
        return edit_dict(resource, p, lambda t: t.pop(key))
    if operation == 1 and dicts:  # an unknown field, or a known one misspelt
        p, d = rng.choice(dicts)
        key = rng.choice([*d, "colour"])
        new = rng.choice([key + "x", key.upper(), "colour", "fhir_comments", "resource_type"])
        return edit_dict(resource, p, lambda t: t.__setitem__(new, rng.choice(["x", 1])))
    if operation == 2 and path:  # a value of the wrong JSON type
        return replace(resource, path, rng.choice(WRONG_TYPES))
    if operation == 3 and path and isinstance(value, str):  # a bad string, code, date, id
        return replace(resource, path, rng.choice(BAD_STRINGS))
    if operation == 4 and path and isinstance(value, int | float):  # numbers out of range
        return replace(resource, path, rng.choice(BAD_NUMBERS))
    if operation == 5 and path:  # one value where a list goes, or a list for one value
        if isinstance(value, list) and value:
            return replace(resource, path, value[0])
        return replace(resource, path, [value])
    if operation == 6 and path and isinstance(value, list):  # a null or nothing in a list
        return replace(resource, path, rng.choice([[*value, None], [], [None]]))
    if operation == 7 and dicts:  # a second value for a choice (value[x], effective[x]...)
        return two_choices(resource, dicts, rng)
    if operation == 8:  # the resource's type wrong, or a type on an element
        if dicts and rng.random() < 0.5:
            p, _ = rng.choice(dicts)
            kind = rng.choice(["Coding", "Observation", "Patient", "CodeableConcept"])
            return edit_dict(resource, p, lambda t: t.__setitem__("resourceType", kind))
        kind = rng.choice(["Observatoin", "Patient", "Encounter", "HumanName", ""])
        return {**resource, "resourceType": kind}
    if operation == 9 and path and isinstance(value, dict):  # an element as a JSON string
        return replace(resource, path, orjson.dumps(value).decode())
    if operation == 10 and dicts:  # a primitive's extension: empty, right, or wrong
        return primitive_extension(resource, dicts, rng)
    if operation == 11 and path:  # a null
        return replace(resource, path, None)
    return replace(resource, path, rng.choice(WRONG_TYPES)) if path else {}


def two_choices(resource: Any, dicts: list[Any], rng: random.Random) -> Any:
    p, d = rng.choice(dicts)
    key = rng.choice(list(d))
    stem = key.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    for index in range(1, len(key)):
        if key[index].isupper():
            stem = key[:index]
            break
    extra = rng.choice([("String", "x"), ("Boolean", True), ("Integer", 1), ("Quantity", {})])
    return edit_dict(resource, p, lambda t: t.__setitem__(stem + extra[0], extra[1]))


def primitive_extension(resource: Any, dicts: list[Any], rng: random.Random) -> Any:
    p, d = rng.choice(dicts)
    key = rng.choice(list(d))
    good = {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}
    value = rng.choice([{}, good, {"id": "a"}, {"colour": 1}, [good], "x", {"extension": []}])
    drop = rng.random() < 0.3  # the value gone, only the extension says why

    def edit(target: dict[str, Any]) -> None:
        target["_" + key] = value
        if drop:
            target.pop(key)

    return edit_dict(resource, p, edit)


def originals() -> list[dict[str, Any]]:
    """Real resources: a spread of every Synthea type and the FHIR R4 examples."""
    rng = random.Random(13)
    per_type: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(SYNTHEA.glob("*.json"))[:12]:
        for entry in load(path)["entry"]:
            per_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    chosen = [r for group in per_type.values() for r in rng.sample(group, min(15, len(group)))]
    examples = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = load(path)
        if verdict(validate_resource, resource) == "accepted" and len(path.read_bytes()) < 20000:
            examples.append(resource)
    return chosen + rng.sample(examples, min(300, len(examples)))


@pytest.fixture(scope="module")
def corpus() -> tuple[list[dict[str, Any]], list[Any]]:
    rng = random.Random(1313)
    valid = originals()
    mutants = [mutate(r, rng) for r in valid for _ in range(MUTANTS_PER_RESOURCE)]
    return valid, mutants


def test_valid_resources_pass_both_and_take_the_fast_path(
    corpus: tuple[list[dict[str, Any]], list[Any]],
) -> None:
    valid, _ = corpus
    assert len(valid) >= 500
    for resource in valid:
        assert verdict(by_models, resource) == "accepted"
        assert verdict(validate_resource, resource) == "accepted"
    fast_share = sum(fast(r) for r in valid) / len(valid)
    assert fast_share >= 0.98, fast_share


def test_every_synthea_resource_takes_the_fast_path() -> None:
    slow = [
        entry["resource"]["resourceType"]
        for path in sorted(SYNTHEA.glob("*.json"))
        for entry in load(path)["entry"]
        if not fast(entry["resource"])
    ]
    assert slow == []


def test_what_the_models_refuse_the_fast_check_never_accepts(
    corpus: tuple[list[dict[str, Any]], list[Any]],
) -> None:
    _, mutants = corpus
    wrongly_accepted = []
    counts: dict[str, int] = {}
    for mutant in mutants:
        old = verdict(by_models, mutant)
        counts[old] = counts.get(old, 0) + 1
        if old != "accepted" and fast(mutant):
            wrongly_accepted.append((old, mutant))
    print(f"\n{len(mutants)} mutants: {counts}")
    assert wrongly_accepted == [], wrongly_accepted[:3]
    assert counts["refused"] >= 2500, counts  # the corpus really holds invalid resources
    assert counts["accepted"] >= 500, counts  # ... and mutants the models still accept
    assert set(counts) == {"accepted", "refused"}, counts  # no crash: a clear refusal


def test_validate_resource_gives_every_mutant_the_models_verdict(
    corpus: tuple[list[dict[str, Any]], list[Any]],
) -> None:
    _, mutants = corpus
    differ = []
    fast_accepted = 0
    for mutant in mutants:
        old, new = verdict(by_models, mutant), verdict(validate_resource, mutant)
        fast_accepted += fast(mutant)
        if old != new:
            differ.append((old, new, mutant))
    print(f"\nfast path accepted {fast_accepted} of {len(mutants)} mutants")
    assert differ == [], differ[:3]
