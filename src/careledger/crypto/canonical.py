"""Canonical bytes: RFC 8785 (JSON Canonicalization Scheme).

Everything that is signed or hashed is first turned into these bytes, so that two parties
holding the same JSON value always sign and hash the same bytes.
"""

from typing import Any

import orjson
import rfc8785

_JS_SAFE_INT = 2**53 - 1
# The deepest nesting of arrays and objects a parsed document may have. Every signed format
# here is at most a few levels deep; a bound far below orjson's (255 to write, 1024 to read)
# and Python's recursion limit makes a deep document a parse error everywhere, rather than an
# exception whose depth depends on each process's stack.
MAX_DEPTH = 32


class NotCanonical(ValueError):
    """Bytes that are not JSON, or JSON that is not in RFC 8785 form."""


class NotCanonicalisable(ValueError):
    """A value that has no RFC 8785 form (not JSON, or an integer beyond 2**53)."""


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value.

    The ``rfc8785`` package is the reference but runs about 7,000 resources/s; orjson with
    sorted keys produces identical bytes, 30x faster, except for integral or negative-zero
    floats ("1.0" vs "1"), integers beyond 2**53 and keys outside the Basic Multilingual
    Plane (sorted by code point vs UTF-16 unit). One walk finds those cases and sends them
    to the reference, so the output is always RFC 8785.
    """
    fast, _ = _walk(value)  # raises NotCanonicalisable when too deep
    try:
        if fast:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise NotCanonicalisable(f"value has no RFC 8785 form: {exc}") from exc


def parse_canonical(data: bytes) -> Any:
    """Parse JSON and insist that the input was already canonical.

    Anything that is not a canonical JSON document of at most MAX_DEPTH levels raises
    NotCanonical, whatever the bytes: invalid UTF-8, lone surrogates, integers beyond 2**53
    (orjson reads them as floats), deep nesting, duplicate keys (the kept value re-encodes
    differently), non-finite numbers.
    """
    return parse_canonical_noting_floats(data)[0]


def parse_canonical_noting_floats(data: bytes) -> tuple[Any, bool]:
    """`parse_canonical`, and whether the value holds a float anywhere (`contains_float`),
    found by the same walk: a transaction's decoding needs both."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NotCanonical(f"not JSON: {exc}") from exc
    try:
        fast, has_float = _walk(value)
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS) if fast else None
        if canonical is None:
            canonical = canonical_bytes(value)
    except NotCanonicalisable as exc:
        raise NotCanonical(str(exc)) from exc
    except (TypeError, ValueError) as exc:  # as canonical_bytes words it
        raise NotCanonical(f"value has no RFC 8785 form: {exc}") from exc
    if canonical != data:
        raise NotCanonical("JSON is not in RFC 8785 canonical form")
    return value, has_float


def contains_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _walk(value: Any) -> tuple[bool, bool]:
    """(whether orjson's sorted output is RFC 8785 for this value, whether it holds a float).

    One walk, level by level and without recursion, which also refuses a value nested deeper
    than MAX_DEPTH (NotCanonicalisable) before anything recursive sees it.
    """
    alike, has_float = True, False
    level, depth = [value], 0
    while level:
        below: list[Any] = []
        holds_container = False
        for item in level:
            kind = type(item)
            if kind is str:  # the common case first: a walk per transaction is hot
                continue
            if kind is dict:
                holds_container = True
                if alike:
                    for key in item:
                        if type(key) is not str or not _key_sorts_alike(key):
                            alike = False
                            break
                below.extend(item.values())
            elif kind is list or kind is tuple:
                holds_container = True
                alike = alike and kind is list
                below.extend(item)
            else:
                has_float = has_float or kind is float
                alike = alike and _scalar_alike(item, kind)
        if holds_container:
            depth += 1
            if depth > MAX_DEPTH:
                raise NotCanonicalisable(f"value is nested deeper than {MAX_DEPTH} levels")
        level = below
    return alike, has_float


def _scalar_alike(item: Any, kind: type) -> bool:
    if kind is float:
        return not (item.is_integer() or item != item or item in (float("inf"), float("-inf")))
    if kind is int:
        return bool(-_JS_SAFE_INT <= item <= _JS_SAFE_INT)
    return kind is bool or item is None


def _key_sorts_alike(key: str) -> bool:
    # Code point order equals UTF-16 order unless a character is above U+FFFF.
    return key.isascii() or max(key) <= "\uffff"
