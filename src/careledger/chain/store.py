"""The state store: one SQLite file (WAL) holding the key/value state and the last commit.

A block's changes, its height and its app hash are written in one SQLite transaction, so a
crash leaves either the previous block's state or the new one, never a mixture.

Queries may read off the committing thread through `StateStore.snapshot()`: a connection of
the reading thread's own, in one read transaction, sees the last commit as of its first read
and nothing of a later one (WAL: readers and the writer do not block each other).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from careledger.chain.checkpointer import Checkpointer
from careledger.crypto.privatefs import private_sqlite

Changes = Mapping[bytes, bytes | None]  # None deletes the key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits (
    height INTEGER PRIMARY KEY,
    app_hash BLOB NOT NULL,
    changes_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class _Missing:
    """Not in the read cache (as opposed to cached as absent, None)."""


MISSING = _Missing()

# Keys read ahead in one query (StateStore.prefetch): below SQLite's oldest default limit
# on bound parameters (999).
_PREFETCH_CHUNK = 900


@dataclass(frozen=True)
class LastCommit:
    height: int
    app_hash: bytes


class ReadCache:
    """Committed state reads (absent keys too), least recently used evicted first.

    Bounded by an estimate of the memory it holds: key and value bytes plus ENTRY_OVERHEAD
    for the Python objects around them (two bytes objects, a dict slot and the order links:
    about 160 bytes in CPython 3.11, measured with tracemalloc). A bound by bytes, not by
    entries, because a value may be a few bytes (a nonce) or tens of KiB (an erasure list).
    """

    ENTRY_OVERHEAD = 160

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._entries: OrderedDict[bytes, bytes | None] = OrderedDict()
        self.max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def __getitem__(self, key: bytes) -> bytes | None:
        value = self._entries[key]  # KeyError when not cached
        self._entries.move_to_end(key)
        return value

    def lookup(self, key: bytes) -> bytes | _Missing | None:
        """The cached value (None for a key cached as absent), or MISSING."""
        entries = self._entries
        if key not in entries:
            return MISSING
        entries.move_to_end(key)
        return entries[key]

    def put(self, key: bytes, value: bytes | None) -> None:
        if key in self._entries:
            self.bytes -= self._size(key, self._entries.pop(key))
        self._entries[key] = value
        self.bytes += self._size(key, value)
        while self.bytes > self.max_bytes:
            evicted, evicted_value = self._entries.popitem(last=False)
            self.bytes -= self._size(evicted, evicted_value)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _size(self, key: bytes, value: bytes | None) -> int:
        return len(key) + (len(value) if value is not None else 0) + self.ENTRY_OVERHEAD


class StateStore:
    """Committed state. Reads see only what the last commit wrote."""

    # Reads of committed state are cached (absent keys too): check_tx and the block that
    # follows read the same identities and nonces. Commits update the cache in place.

    def __init__(self, path: Path | str, cache_bytes: int = 32 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.cache = ReadCache(cache_bytes)
        private_sqlite(self.path)  # 0600 before SQLite creates it; -wal/-shm follow its mode
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        private_sqlite(self.path)
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged block survives power loss
        # Point reads dominate (identities, nonces): memory-mapped pages and a 64 MiB page
        # cache halve a lookup's cost (16 -> 8 us for a miss on 100k rows, measured).
        self._db.execute("PRAGMA mmap_size=268435456")
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.executescript(_SCHEMA)
        # Checkpoints run in a thread of their own, not in the commit (chain/checkpointer.py).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = Checkpointer(self.path)
        # Snapshot readers: one connection per reading thread, kept for its next snapshot
        # (opening one costs about 0.3 ms, a snapshot on a kept one 7 us), closed with the store.
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # The last commit, read once: only commit() below changes it (one writer per file),
        # and check_tx asks for the next height on every transaction.
        self._last: LastCommit | None = None

    def close(self) -> None:
        self._checkpointer.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self._db.close()

    def get(self, key: bytes) -> bytes | None:
        entries = self.cache._entries  # ReadCache.lookup, inlined: a dozen reads per transaction
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        value = _get(self._db, key)
        self.cache.put(key, value)
        return value

    def prefetch(self, keys: Iterable[bytes]) -> None:
        """Read these keys into the read cache (absent ones as absent), in one query per
        _PREFETCH_CHUNK keys instead of one per key: a batch of new senders' identities and
        nonces, read before the batch is checked. Only the committed state, as get reads."""
        wanted = list(dict.fromkeys(k for k in keys if k not in self.cache))
        for start in range(0, len(wanted), _PREFETCH_CHUNK):
            chunk = wanted[start : start + _PREFETCH_CHUNK]
            marks = ",".join("?" * len(chunk))
            found = dict(
                self._db.execute(f"SELECT key, value FROM state WHERE key IN ({marks})", chunk)
            )
            for key in chunk:
                value = found.get(key)
                self.cache.put(key, None if value is None else bytes(value))

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Key/value pairs whose key starts with prefix (and is at least start), in key
        order."""
        return _iterate(self._db, prefix, start)

    def last_commit(self) -> LastCommit:
        if self._last is None:
            self._last = _last_commit(self._db)
        return self._last

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """The committed state as of the first read, unchanged by later commits until the
        block ends: for reads on a thread other than the one that commits (a query in a
        worker thread). It reads SQLite on the calling thread's own connection, not the read
        cache (which belongs to the committing thread)."""
        db = self._reader()
        db.execute("BEGIN")  # deferred: the snapshot is taken at the first read
        try:
            yield Snapshot(db)
        finally:
            db.execute("ROLLBACK")  # read only: ends the read transaction, open cursors too

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
            db.execute("PRAGMA mmap_size=268435456")
            with self._readers_lock:
                self._readers.append(db)
            self._local.db = db
        return db

    def app_hash_at(self, height: int) -> bytes | None:
        row = self._db.execute(
            "SELECT app_hash FROM commits WHERE height = ?", (height,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def commit(
        self,
        height: int,
        app_hash: bytes,
        changes_hash: bytes,
        changes: Changes,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Apply a block's changes and record its height and app hash, atomically."""
        # In key order: a block's keys are scattered (hashes, dids), and B-tree inserts in
        # order touch each page once in turn (2,000-row blocks: 40% less insert time, measured).
        upserts = sorted((k, v) for k, v in changes.items() if v is not None)
        deletes = [(k,) for k, v in changes.items() if v is None]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", upserts)
            db.executemany("DELETE FROM state WHERE key = ?", deletes)
            db.execute(
                "INSERT INTO commits (height, app_hash, changes_hash) VALUES (?, ?, ?)",
                (height, app_hash, changes_hash),
            )
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list((meta or {}).items()))
            db.execute("COMMIT")  # may fail too (a full disk): the transaction is then rolled back
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                db.execute("ROLLBACK")
            self.cache.clear()
            raise
        finally:
            self._last = None  # read again, once, at the next ask
        self._checkpointer.committed(len(changes))
        for key, value in changes.items():
            self.cache.put(key, value)

    def all_rows(self) -> Iterator[tuple[bytes, bytes]]:
        return self.iterate(b"")

    def commits(self) -> Iterator[tuple[int, bytes, bytes]]:
        for height, app_hash, changes_hash in self._db.execute(
            "SELECT height, app_hash, changes_hash FROM commits ORDER BY height"
        ):
            yield height, bytes(app_hash), bytes(changes_hash)


class Snapshot:
    """Committed state read in one SQLite read transaction (`StateStore.snapshot`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        return _get(self._db, key)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._db, prefix, start)

    def last_commit(self) -> LastCommit:
        return _last_commit(self._db)


def _get(db: sqlite3.Connection, key: bytes) -> bytes | None:
    row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])


def _iterate(db: sqlite3.Connection, prefix: bytes, start: bytes) -> Iterator[tuple[bytes, bytes]]:
    rows = db.execute(
        "SELECT key, value FROM state WHERE key >= ? AND key < ? ORDER BY key",
        (max(prefix, start), _prefix_end(prefix)),
    )
    for key, value in rows:
        yield bytes(key), bytes(value)


def _last_commit(db: sqlite3.Connection) -> LastCommit:
    row = db.execute("SELECT height, app_hash FROM commits ORDER BY height DESC LIMIT 1").fetchone()
    return LastCommit(0, b"") if row is None else LastCommit(row[0], bytes(row[1]))


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key with this prefix."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * (len(prefix) + 64)
    return stripped[:-1] + bytes([stripped[-1] + 1])
