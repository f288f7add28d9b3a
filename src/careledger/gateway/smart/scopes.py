"""SMART scopes: what a token lets a client do, on top of (never beyond) consent.

Accepted forms (system/ only: backend services act for no user or patient):
    system/Observation.rs     v2: c create, r read, u update, d delete, s search (in that order)
    system/*.cruds            v2, every type
    system/Observation.read   v1 (read = rs, write = cud, * = cruds)
A scope that matches none of these (another context, an unknown type, letters out of order)
is `InvalidScope`: the token endpoint answers invalid_scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The resource types the gateway serves (a scope naming another is invalid).
from careledger.gateway.resource_types import RESOURCE_TYPES

_V2 = re.compile(r"system/(\*|[A-Z][A-Za-z]{1,63})\.(c?r?u?d?s?)")
_V1 = re.compile(r"system/(\*|[A-Z][A-Za-z]{1,63})\.(read|write|\*)")
_V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}
INTERACTIONS = frozenset("cruds")
MAX_SCOPES = 64


class InvalidScope(ValueError):
    pass


@dataclass(frozen=True)
class ScopeSet:
    """The (resource type or "*", interaction letter) pairs a token grants."""

    granted: frozenset[tuple[str, str]]
    text: str  # the scopes as granted, space-separated (the token response's "scope")

    def allows(self, resource_type: str, interaction: str) -> bool:
        """`interaction`: one of c r u d s."""
        return (resource_type, interaction) in self.granted or ("*", interaction) in self.granted

    def narrowed_to(self, requested: ScopeSet) -> ScopeSet:
        """What both this (a client's registered) set and `requested` allow: the requested
        scopes' text if all of it is allowed, else the v2 scopes of what is left (a wildcard
        on one side keeps the other side's type)."""
        kept = frozenset(
            pair
            for asked in requested.granted
            for held in self.granted
            if (pair := _meet(asked, held)) is not None
        )
        if kept == requested.granted:
            return requested
        return ScopeSet(kept, _v2_text(kept))


def _meet(asked: tuple[str, str], held: tuple[str, str]) -> tuple[str, str] | None:
    """The (type, letter) both allow, if any."""
    (asked_type, letter), (held_type, held_letter) = asked, held
    if letter != held_letter:
        return None
    if held_type in ("*", asked_type):
        return asked
    if asked_type == "*":
        return held
    return None


def _v2_text(pairs: frozenset[tuple[str, str]]) -> str:
    """SMART v2 scopes for these pairs, one per type, letters in c r u d s order."""
    types = sorted({resource_type for resource_type, _ in pairs})
    words = []
    for resource_type in types:
        letters = "".join(letter for letter in "cruds" if (resource_type, letter) in pairs)
        words.append(f"system/{resource_type}.{letters}")
    return " ".join(words)


def parse_scopes(text: str) -> ScopeSet:
    words = text.split()
    if not words or len(words) > MAX_SCOPES:
        raise InvalidScope(f"ask for 1 to {MAX_SCOPES} system/ scopes")
    granted: set[tuple[str, str]] = set()
    for word in words:
        granted |= _one_scope(word)
    return ScopeSet(frozenset(granted), " ".join(words))


def _one_scope(word: str) -> set[tuple[str, str]]:
    v2 = _V2.fullmatch(word)
    v1 = _V1.fullmatch(word) if v2 is None else None
    match = v2 or v1
    if match is None or (v2 is not None and not v2.group(2)):
        raise InvalidScope(f"{word!r} is not a SMART system scope (system/Type.rs, system/*.read)")
    resource_type = match.group(1)
    if resource_type != "*" and resource_type not in RESOURCE_TYPES:
        raise InvalidScope(f"{word!r}: no resource type {resource_type!r} here")
    letters = match.group(2) if v2 is not None else _V1_LETTERS[match.group(2)]
    return {(resource_type, letter) for letter in letters}
