"""Reaching under the blob store's API, for tests that play the disk or the clock: the raw
segment bytes of a blob, and its age in the index (`storage/blobstore.py`)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from careledger.storage.blobstore import BlobStore


def backdate(store: BlobStore, digest: str, seconds: float) -> None:
    """Make a blob look as if it was stored `seconds` ago (its age is a column of the index;
    works on a running node's store too: SQLite in WAL mode)."""
    with sqlite3.connect(store.index.path, timeout=60) as db:
        changed = db.execute(
            "UPDATE blobs SET stored_at = ? WHERE hash = ?",
            (time.time() - seconds, bytes.fromhex(digest)),
        ).rowcount
    assert changed == 1, f"blob {digest} is not stored"


def raw_bytes(store: BlobStore, digest: str) -> bytes:
    where = store.locate(digest)
    with where.path.open("rb") as segment:
        segment.seek(where.offset)
        return segment.read(where.length)


def overwrite(store: BlobStore, digest: str, data: bytes, at: int = 0) -> None:
    """Write `data` over the blob's bytes in its segment, `at` bytes into the blob."""
    where = store.locate(digest)
    with where.path.open("r+b") as segment:
        segment.seek(where.offset + at)
        segment.write(data)


def flip_byte(store: BlobStore, digest: str, at: int | None = None) -> bytes:
    """Flip one bit of one of the blob's bytes on disk (the middle one by default); returns
    the original bytes (to put back with `overwrite`)."""
    original = raw_bytes(store, digest)
    index = len(original) // 2 if at is None else at % len(original)
    overwrite(store, digest, bytes([original[index] ^ 0x01]), index)
    return original


def files_holding(root: Path, data: bytes, piece: int = 32) -> list[str]:
    """The files under `root` (segments, index, anything) holding any `piece`-byte slice of
    `data` at a `piece`-aligned position: a trace of it, whole or in part."""
    needles = {data[i : i + piece] for i in range(0, max(1, len(data) - piece + 1), piece)}
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if any(needle in raw for needle in needles):
            found.append(str(path.relative_to(root)))
    return found
