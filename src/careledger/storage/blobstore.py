"""Content-addressed blob store on disk: a blob's name is the SHA-256 of its bytes.

Layout (issue 13): blobs are packed one after another in append-only segment files, and an
SQLite index names where each is (`storage/segments.py`). A file per blob cost a file
creation, a rename and two syncs of metadata each (~60% of the node's time in the records
benchmark); a batch now costs one write, one `fdatasync` of its segment and one index commit.

- Durable when `put`/`put_many` returns: the bytes are synced before the index rows that name
  them are committed (``synchronous=FULL``), so an anchor submitted after a put never points
  at a blob a crash could lose, and a crash between the two leaves bytes no row names, never
  a half-visible blob; they are cut off before the next write and at start-up.
- Reads re-hash the bytes, so a flipped bit or a torn segment is reported, never served.
- Erasure (`delete`, `expire`) punches the blob's range out of its segment (fallocate hole,
  or zeros written over it), syncs, then drops its index row; a segment left without blobs
  is deleted. Segments hold no headers: once punched, nothing of the blob is left in them.
- A blob's age (`stored_at`) is kept in the index: storing a stored blob again restarts it,
  and `expire` deletes a blob only if it is still older than a cutoff, both under the
  store's write lock, so a re-upload never loses a race with the expiry.
- Writers in any thread or process serialise on one lock (thread lock + `flock`); readers
  take none. A put in progress when its blob is erased completes first and the erase then
  removes it: the erasure always wins.

A data directory of the earlier layout (a file per blob, ``<h[0:2]>/<h[2:4]>/<h>``) is
converted when the store is opened (`storage/legacy.py`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from careledger.crypto.privatefs import make_private_dir
from careledger.storage import legacy
from careledger.storage.segments import (
    INDEX_NAME,
    LOCK_NAME,
    SEGMENT_DIR,
    Index,
    Location,
    NewBlob,
    Segments,
    WriteLock,
    read_at,
)

_HASH = re.compile(r"[0-9a-f]{64}")


class BlobStoreError(Exception):
    """Base class of the errors of the blob store."""


class InvalidBlobHash(BlobStoreError, ValueError):
    """A name that is not 64 lowercase hex digits."""


class BlobNotFound(BlobStoreError, KeyError):
    """No blob with this hash (never stored, or erased)."""


class BlobCorrupted(BlobStoreError):
    """The bytes on disk no longer hash to their name (altered, or a torn segment)."""


def blob_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        make_private_dir(self.root)
        self.index = Index(self.root / INDEX_NAME)
        self.segments = Segments(self.root / SEGMENT_DIR, self.index)
        self._lock = WriteLock(self.root / LOCK_NAME)
        # Under the write lock from the first file listed to the last unlinked: another
        # process opening the same directory meanwhile (a node and `careledger verify`)
        # waits, then finds nothing left to convert, rather than reading or unlinking files
        # this one has already moved.
        with self._lock.held():
            legacy.convert(self)

    def close(self) -> None:
        """Close the index's connections; the store is not used after this."""
        self.index.close()

    # --- writing ----------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its SHA-256 hex; storing it twice is a no-op
        (but for restarting its age)."""
        return self.put_many([data])[0]

    def put_many(self, blobs: Iterable[bytes]) -> list[str]:
        """Store several blobs durably, in one segment write and one index commit."""
        batch = [(blob_hash(data), data) for data in blobs]
        with self._lock.held():
            now = time.time()
            stored = self.index.known([digest for digest, _ in batch])
            new = _new_blobs(((d, data, now) for d, data in batch), stored)
            self.segments.store(new, sorted(stored), now)
        return [digest for digest, _ in batch]

    def import_named(self, entries: list[tuple[str, bytes, float]]) -> None:
        """Store (hash, bytes, stored_at) as given, without re-hashing: the legacy
        conversion keeps a corrupted file's name so that reads report it corrupted. A blob
        already stored is left as it is. The caller holds the write lock (the conversion
        runs under it, in `__init__`)."""
        stored = self.index.known([digest for digest, _, _ in entries])
        self.segments.store(_new_blobs(iter(entries), stored), [], time.time())

    def delete(self, digest: str) -> bool:
        """Remove a blob durably (erasure): its bytes punched out of its segment, then its
        index row. True if it was stored; deleting twice is harmless. Raises OSError when
        the file system refuses (the caller retries: see node/erasure.py)."""
        _check_hash(digest)
        with self._lock.held():
            erased = self.segments.erase(digest)
            # Bytes of a put that a crash or a kill interrupted sit unindexed at the end of
            # the active segment (possibly this blob's): they go too.
            self.segments.trim_active()
            return erased

    def expire(self, digest: str, stored_before: float) -> bool:
        """Delete the blob if it was last stored before `stored_before` (Unix seconds).

        The check and the deletion hold the lock that a put of the same blob takes to
        restart its age, so a blob stored again meanwhile is kept. True if it was deleted."""
        _check_hash(digest)
        with self._lock.held():
            where = self.index.locate(digest, self.segments.directory)
            if where is None or where.stored_at >= stored_before:
                return False
            return self.segments.erase(digest)

    def remove_stale_temporaries(self, written_before: float | None = None) -> int:
        """At start-up (`written_before` None): cut off bytes that no index row names (a
        batch a crash interrupted) and delete segments without blobs; returns how many bytes
        went. On a running node (a cutoff given) there is nothing to do: every write trims
        such leftovers before it appends."""
        if written_before is not None:
            return 0
        with self._lock.held():
            return self.segments.clean()

    # --- reading ----------------------------------------------------------------------------

    def locate(self, digest: str) -> Location:
        """Where the blob's bytes are (for `careledger verify`'s messages and for tests)."""
        _check_hash(digest)
        where = self.index.locate(digest, self.segments.directory)
        if where is None:
            raise BlobNotFound(digest)
        return where

    def get(self, digest: str) -> bytes:
        """The blob's bytes, checked against its hash."""
        where = self.locate(digest)
        try:
            data = read_at(where)
        except FileNotFoundError:
            data = b""
        if blob_hash(data) != digest:
            if not self.has(digest):  # erased while we read: gone, not corrupted
                raise BlobNotFound(digest)
            raise BlobCorrupted(f"blob {digest} is corrupted: its bytes hash to something else")
        return data

    def head(self, digest: str, size: int) -> bytes:
        """The blob's first `size` bytes, unchecked (only `get` re-hashes): for reading a
        small header without loading a large blob."""
        return self.head_and_stored_at(digest, size)[0]

    def head_and_stored_at(self, digest: str, size: int) -> tuple[bytes, float]:
        """`head` and `stored_at` with one index lookup: the first `size` bytes (unchecked)
        and when the blob was last stored (what an anchor's pre-submit check reads)."""
        where = self.locate(digest)
        try:
            return read_at(where, size), where.stored_at
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def size(self, digest: str) -> int:
        """The stored blob's size in bytes, 0 when it is not stored (unchecked: `get`
        re-hashes)."""
        try:
            return self.locate(digest).length
        except BlobNotFound:
            return 0

    def has(self, digest: str) -> bool:
        _check_hash(digest)
        return self.index.locate(digest, self.segments.directory) is not None

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and _HASH.fullmatch(digest) is not None and self.has(digest)

    def stored_at(self, digest: str) -> float:
        """When the blob was last stored (Unix seconds)."""
        return self.locate(digest).stored_at

    def with_stored_at(self, since: float | None = None) -> Iterator[tuple[str, float]]:
        """Every stored hash with its `stored_at` (unordered); only those stored at or
        after `since` if given."""
        yield from self.index.all_with_stored_at(since)

    def __iter__(self) -> Iterator[str]:
        """Every stored hash (unordered)."""
        for digest, _ in self.index.all_with_stored_at():
            yield digest


def _new_blobs(entries: Iterator[tuple[str, bytes, float]], stored: set[str]) -> list[NewBlob]:
    """The entries not stored yet, each hash once."""
    new: dict[str, NewBlob] = {}
    for digest, data, stored_at in entries:
        if digest not in stored and digest not in new:
            new[digest] = NewBlob(digest, data, stored_at)
    return list(new.values())


def _check_hash(digest: str) -> None:
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise InvalidBlobHash(f"not a SHA-256 hex digest: {str(digest)[:80]!r}")
