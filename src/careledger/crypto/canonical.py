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
    if _nesting_depth(value) > MAX_DEPTH:
        raise NotCanonicalisable(f"value is nested deeper than {MAX_DEPTH} levels")
    try:
        if _orjson_is_canonical_for(value):
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
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise NotCanonical(f"not JSON: {exc}") from exc
    try:
        canonical = canonical_bytes(value)
    except NotCanonicalisable as exc:
        raise NotCanonical(str(exc)) from exc
    if canonical != data:
        raise NotCanonical("JSON is not in RFC 8785 canonical form")
    return value


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


def _nesting_depth(value: Any) -> int:
    """Levels of arrays and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _orjson_is_canonical_for(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if type(key) is not str or not _key_sorts_alike(key):
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float:
            if item.is_integer() or item != item or item in (float("inf"), float("-inf")):
                return False
        elif kind is int:
            if not -_JS_SAFE_INT <= item <= _JS_SAFE_INT:
                return False
        elif kind is not str and kind is not bool and item is not None:
            return False
    return True


def _key_sorts_alike(key: str) -> bool:
    # Code point order equals UTF-16 order unless a character is above U+FFFF.
    return key.isascii() or max(key) <= "\uffff"
