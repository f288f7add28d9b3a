"""Buffered views of the state: a block's writes and, inside it, one transaction's writes.

A transaction writes into its own overlay; only when it succeeds are its writes folded into
the block's overlay, so a failed transaction leaves nothing behind.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator
from typing import Any, Protocol

import orjson


class Readable(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key has this prefix (and is at least `start`), in key order."""
        ...


class _Unchanged:
    """Not among an overlay's changes (as opposed to deleted there, None)."""


_UNCHANGED = _Unchanged()


class Overlay:
    """Writes buffered over a readable parent; `changes` are what would be committed.

    The changed keys are also kept sorted (built on the first prefix read, then maintained
    by insertion), so a prefix read costs O(log n + matches) instead of a scan of every
    change: a block of thousands of transactions, or the mempool's check state, would
    otherwise make each prefix read linear and the block quadratic.
    """

    def __init__(self, parent: Readable) -> None:
        self._parent = parent
        self._changes: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] | None = None

    @property
    def changes(self) -> dict[bytes, bytes | None]:
        return self._changes

    @changes.setter
    def changes(self, changes: dict[bytes, bytes | None]) -> None:
        self._changes = changes
        self._sorted = None

    def get(self, key: bytes) -> bytes | None:
        # Down the stack of overlays in a loop, one dict lookup each, rather than a call per
        # level: a transaction reads a dozen keys through two overlays (its own and the
        # block's, or the mempool's) before the store.
        overlay = self
        while True:
            value = overlay._changes.get(key, _UNCHANGED)
            if value is not _UNCHANGED:
                return value  # type: ignore[return-value]  # bytes, or None: deleted
            parent = overlay._parent
            if type(parent) is not Overlay:
                return parent.get(key)
            overlay = parent

    def _put(self, key: bytes, value: bytes | None) -> None:
        if self._sorted is not None and key not in self._changes:
            bisect.insort(self._sorted, key)
        self._changes[key] = value

    def set(self, key: bytes, value: bytes) -> None:
        self._put(key, value)

    def delete(self, key: bytes) -> None:
        self._put(key, None)

    def _changed_under(self, prefix: bytes, start: bytes) -> list[tuple[bytes, bytes | None]]:
        if self._sorted is None:
            self._sorted = sorted(self._changes)
        keys, found = self._sorted, []
        for i in range(bisect.bisect_left(keys, max(prefix, start)), len(keys)):
            key = keys[i]
            if not key.startswith(prefix):
                break
            found.append((key, self._changes[key]))
        return found

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        mine = self._changed_under(prefix, start)
        merged = heapq.merge(
            ((k, 0, v) for k, v in mine),
            ((k, 1, v) for k, v in self._parent.iterate(prefix, start)),
        )
        last: bytes | None = None
        for key, _, value in merged:
            if key == last:
                continue  # this overlay's entry shadows the parent's
            last = key
            if value is not None:
                yield key, value

    def write_into(self, other: Overlay) -> None:
        if other._sorted is None:  # no sorted keys to keep up: one update, as _put each would
            other._changes.update(self._changes)
            return
        for key, value in self._changes.items():
            other._put(key, value)


class KV:
    """JSON values under string keys, scoped to one module's prefix."""

    def __init__(self, store: Overlay | Readable, prefix: str) -> None:
        self._store = store
        self._prefix = prefix.encode() + b"/"

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    @staticmethod
    def full_key(module: str, key: str) -> bytes:
        """The store's key for `key` of `module` (what KV(state, module) reads for it)."""
        return f"{module}/{key}".encode()

    def sibling(self, module: str) -> KV:
        """The same state under another module's prefix (for that module's keeper: a query
        of one module that needs another's state, as records/read_access needs consent)."""
        return KV(self._store, module)

    def get(self, key: str) -> Any:
        raw = self._store.get(self._prefix + key.encode())  # self._key(key), inlined: hot
        return None if raw is None else orjson.loads(raw)

    def has(self, key: str) -> bool:
        return self._store.get(self._prefix + key.encode()) is not None

    def set(self, key: str, value: Any) -> None:
        self._writable().set(self._key(key), encode_value(value))

    def delete(self, key: str) -> None:
        self._writable().delete(self._key(key))

    def items(self, prefix: str, after: str = "") -> Iterator[tuple[str, Any]]:
        """(key, value) under `prefix` in key order; with `after`, only the keys that sort
        after prefix + after (a cursor: the seek costs one index lookup, not a scan)."""
        skip = len(self._prefix)
        start = self._key(prefix + after) + b"\x00" if after else b""
        for key, raw in self._store.iterate(self._key(prefix), start):
            yield key[skip:].decode(), orjson.loads(raw)

    def _writable(self) -> Overlay:
        if not isinstance(self._store, Overlay):
            raise TypeError("this state view is read-only")
        return self._store


def encode_value(value: Any) -> bytes:
    """Deterministic JSON for state values (sorted keys; the chain has no floats).

    Copied into a bytes object of its own size: the one orjson returns keeps its 4 KiB
    working buffer however short the JSON (orjson 3.13, measured with tracemalloc), and
    state values are held by the tens of thousands (a block's overlay, the read cache), so
    a 300-byte identity would cost 4 KiB of memory.
    """
    return bytes(memoryview(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
