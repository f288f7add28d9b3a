"""Append-only segment files and the SQLite index that names what is in them.

A segment (``<root>/segments/<number>.seg``, 0600) is blob bytes one after another, nothing
else: no header, so that a blob erased by punching its range out leaves no byte of it (its
hash and its place were only ever in the index). The index (``<root>/index.sqlite``, WAL,
``synchronous=FULL``) maps a blob's SHA-256 to (segment, offset, length, stored_at) and is the
only truth about what is stored: bytes the index does not name are garbage from a batch that
failed or a crash, never served, and cut off (`Segments.trim`) before the next append.

Writers (one process's threads, and other processes: `careledger verify`, a backup, a test)
hold `WriteLock`: a thread lock and an exclusive `flock` on ``<root>/lock``. Readers take no
lock: an index row is committed only after its bytes are synced, so a row a reader sees
always points at bytes on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from careledger.crypto.privatefs import FILE_MODE, make_private_dir, private_sqlite

SEGMENT_DIR = "segments"
SEGMENT_SUFFIX = ".seg"
INDEX_NAME = "index.sqlite"
LOCK_NAME = "lock"
# A new segment starts once the active one holds this much: big enough that a million
# record blobs (a few KiB each) fit in a few dozen files, small enough to delete whole once
# every blob in it has gone.
SEGMENT_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    hash BLOB PRIMARY KEY,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_segment ON blobs (segment, offset);
CREATE INDEX IF NOT EXISTS blobs_by_age ON blobs (stored_at);
"""


@dataclass(frozen=True)
class Location:
    """Where a stored blob's bytes are: `length` bytes at `offset` of the segment `path`."""

    path: Path
    offset: int
    length: int
    stored_at: float


@dataclass(frozen=True)
class NewBlob:
    digest: str
    data: bytes
    stored_at: float


class WriteLock:
    """Serialises every writer of one store: threads (a lock) and processes (`flock`)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock


class Index:
    """The SQLite index: one connection per thread (sqlite3 objects are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # Every thread's connection, so that close() ends them all: left to the garbage
        # collector, the last one's close (which checkpoints and deletes the -wal and -shm
        # files) would come at any later moment, under a copy or a backup of the directory.
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        private_sqlite(path)  # 0600 before SQLite creates it; -wal/-shm follow its mode
        db = self.connection()
        db.executescript(_SCHEMA)
        private_sqlite(path)

    def connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # Used by its own thread only; closed by close() from whichever thread calls it.
            db = sqlite3.connect(
                self.path, isolation_level=None, timeout=60, check_same_thread=False
            )
            with self._connections_lock:
                self._connections.append(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged upload survives power loss
            db.execute("PRAGMA secure_delete=ON")  # an erased blob's row is zeroed, not freed
            self._local.db = db
        return db

    def close(self) -> None:
        """Close every thread's connection (the store is not used after this)."""
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()

    def locate(self, digest: str, segments: Path) -> Location | None:
        row = (
            self.connection()
            .execute(
                "SELECT segment, offset, length, stored_at FROM blobs WHERE hash = ?",
                (bytes.fromhex(digest),),
            )
            .fetchone()
        )
        if row is None:
            return None
        return Location(segment_path(segments, row[0]), row[1], row[2], row[3])

    def known(self, digests: list[str]) -> set[str]:
        db = self.connection()
        found: set[str] = set()
        for start in range(0, len(digests), 500):
            chunk = [bytes.fromhex(d) for d in digests[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT hash FROM blobs WHERE hash IN ({marks})", chunk)
            found.update(r[0].hex() for r in rows)
        return found

    def end_of(self, segment: int) -> int:
        """Where the last indexed blob of `segment` ends (0 if none)."""
        row = (
            self.connection()
            .execute(
                "SELECT offset + length FROM blobs WHERE segment = ? ORDER BY offset DESC LIMIT 1",
                (segment,),
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def count_in(self, segment: int) -> int:
        row = (
            self.connection()
            .execute("SELECT COUNT(*) FROM blobs WHERE segment = ?", (segment,))
            .fetchone()
        )
        return int(row[0])

    def all_with_stored_at(self, since: float | None = None) -> list[tuple[str, float]]:
        db = self.connection()
        if since is None:
            rows = db.execute("SELECT hash, stored_at FROM blobs")
        else:
            rows = db.execute("SELECT hash, stored_at FROM blobs WHERE stored_at >= ?", (since,))
        return [(r[0].hex(), r[1]) for r in rows]


def segment_path(segments: Path, number: int) -> Path:
    return segments / f"{number:08d}{SEGMENT_SUFFIX}"


def segment_numbers(segments: Path) -> list[int]:
    numbers = []
    for entry in os.scandir(segments):
        stem = entry.name.removesuffix(SEGMENT_SUFFIX)
        if entry.name.endswith(SEGMENT_SUFFIX) and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


class Segments:
    """The segment directory: appends, trims, punches. Callers hold the WriteLock."""

    def __init__(self, directory: Path, index: Index) -> None:
        self.directory = directory
        self.index = index
        make_private_dir(directory)

    def store(self, blobs: list[NewBlob], restarted: list[str], now: float) -> None:
        """Write `blobs` at the end of the active segment and sync them, then, in one
        transaction, index them and restart the age of the `restarted` (already stored)
        ones. A crash before the commit leaves only unindexed bytes, which the next write
        trims; any failure trims this batch's bytes at once."""
        if not blobs:
            self._commit([], restarted, now)
            return
        number, start = self._place(sum(len(b.data) for b in blobs))
        fd = os.open(segment_path(self.directory, number), os.O_WRONLY)
        try:
            rows = _write_at(fd, start, number, blobs)
            os.fdatasync(fd)
            self._commit(rows, restarted, now)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                os.fdatasync(fd)
            raise
        finally:
            os.close(fd)

    def _place(self, size: int) -> tuple[int, int]:
        """The segment and offset the next batch goes to, garbage past the index cut off."""
        numbers = segment_numbers(self.directory)
        number = numbers[-1] if numbers else 1
        end = self.trim(number)
        if end > 0 and end + size > SEGMENT_BYTES:
            number, end = number + 1, 0
            _open_new_segment(segment_path(self.directory, number), self.directory)
        elif not numbers:
            _open_new_segment(segment_path(self.directory, number), self.directory)
        return number, end

    def trim_active(self) -> None:
        numbers = segment_numbers(self.directory)
        if numbers:
            self.trim(numbers[-1])

    def trim(self, number: int) -> int:
        """Cut segment `number` back to its last indexed byte; that length."""
        end = self.index.end_of(number)
        path = segment_path(self.directory, number)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > end:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, end)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
        return end

    def _commit(
        self, rows: list[tuple[bytes, int, int, int, float]], restarted: list[str], now: float
    ) -> None:
        if not rows and not restarted:
            return
        db = self.index.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO blobs (hash, segment, offset, length, stored_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "UPDATE blobs SET stored_at = ? WHERE hash = ?",
                [(now, bytes.fromhex(d)) for d in restarted],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def erase(self, digest: str) -> bool:
        """Remove a blob's bytes (punched out, synced) and then its index row; a segment
        left without blobs is deleted. The bytes go first: a crash between leaves a row
        pointing at zeros (read as corrupted, erased again by the next sweep), never bytes
        that no row names."""
        where = self.index.locate(digest, self.directory)
        if where is None:
            return False
        fd = os.open(where.path, os.O_WRONLY)
        try:
            punch_out(fd, where.offset, where.length)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        db = self.index.connection()
        db.execute("DELETE FROM blobs WHERE hash = ?", (bytes.fromhex(digest),))
        self._drop_if_empty(where.path)
        return True

    def _drop_if_empty(self, path: Path) -> None:
        number = int(path.name.removesuffix(SEGMENT_SUFFIX))
        if self.index.count_in(number) == 0:
            path.unlink(missing_ok=True)
            fsync_directory(self.directory)

    def clean(self) -> int:
        """At start-up: trim every segment to its index, delete those with no blob; how many
        bytes of unindexed leftovers were removed."""
        removed = 0
        for number in segment_numbers(self.directory):
            path = segment_path(self.directory, number)
            before = path.stat().st_size
            removed += before - self.trim(number)
            if self.index.count_in(number) == 0:
                path.unlink(missing_ok=True)
                fsync_directory(self.directory)
        return removed


def _write_at(
    fd: int, start: int, number: int, blobs: list[NewBlob]
) -> list[tuple[bytes, int, int, int, float]]:
    rows = []
    offset = start
    for blob in blobs:
        rows.append((bytes.fromhex(blob.digest), number, offset, len(blob.data), blob.stored_at))
        offset += len(blob.data)
    payload = b"".join(b.data for b in blobs)
    written = 0
    while written < len(payload):
        written += os.pwrite(fd, payload[written:], start + written)
    return rows


def _open_new_segment(path: Path, directory: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask
    finally:
        os.close(fd)
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    # A file's creation or removal is durable only once its directory is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_at(where: Location, size: int | None = None) -> bytes:
    """The blob's bytes (or its first `size`), possibly short if the segment was torn."""
    want = where.length if size is None else min(size, where.length)
    fd = os.open(where.path, os.O_RDONLY)
    try:
        return os.pread(fd, want, where.offset)
    finally:
        os.close(fd)


# --- punching a range out of a file --------------------------------------------------------

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return,unused-ignore]


_fallocate = _load_fallocate()


def punch_out(fd: int, offset: int, length: int) -> None:
    """Make `length` bytes at `offset` read as zeros: a hole punched with fallocate(2)
    (whole blocks freed, the partial blocks at either end zeroed), or, on a file system
    without holes, zeros written over them. The caller syncs."""
    if length <= 0:
        return
    if _fallocate is not None:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _fallocate(fd, mode, offset, length) == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(error, f"fallocate: {os.strerror(error)}")
    zeros = bytes(min(length, 1024 * 1024))
    done = 0
    while done < length:
        done += os.pwrite(fd, zeros[: length - done], offset + done)
