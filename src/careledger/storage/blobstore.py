"""Content-addressed blob store on disk: a blob's name is the SHA-256 of its bytes.

Layout: ``<root>/<h[0:2]>/<h[2:4]>/<h>`` (two levels of 256-way fan-out keep directories
small at millions of blobs). A put is durable when it returns: the bytes are written to a
temporary file in the same directory, fsynced, renamed into place and the directory fsynced,
so that an anchor submitted after ``put`` never points at a blob a crash could lose.
Large batches flush the file system twice instead (``syncfs``, see ``put_many``).
Reads re-hash the bytes, so a flipped bit on disk is reported, never served.

Erasure and expiry (``node/erasure.py`` decides what; this module does it durably):
- A temporary file is named after the blob it will become (``.tmp-<hash>-<random>``), so
  ``delete`` removes a blob together with any partial copy of it. A put whose temporary was
  deleted that way fails with ``BlobErasedWhileWriting`` instead of renaming it into place.
- A blob's age is its file's mtime: storing a blob that is already stored restarts it, and
  ``expire`` deletes a blob only if it is still older than a cutoff, checked and unlinked
  under the same lock as that restart, so a re-upload never loses a race with the expiry.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from careledger.crypto.privatefs import DIR_MODE, make_private_dir

_HASH = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"


class BlobStoreError(Exception):
    """Base class of the errors of the blob store."""


class InvalidBlobHash(BlobStoreError, ValueError):
    """A name that is not 64 lowercase hex digits (which also rules out path traversal)."""


class BlobNotFound(BlobStoreError, KeyError):
    """No blob with this hash (never stored, or erased)."""


class BlobCorrupted(BlobStoreError):
    """The bytes on disk no longer hash to their name."""


class BlobErasedWhileWriting(BlobStoreError):
    """The blob was deleted (erased) while this put was writing it; nothing was stored."""


def blob_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        make_private_dir(self.root)
        # Serialises a blob's age check and unlink (expire) with the restart of its age
        # (a put of a stored blob), so that an expiry never deletes a just-uploaded blob.
        self._age_lock = threading.Lock()

    def path_of(self, digest: str) -> Path:
        _check_hash(digest)
        return self.root / digest[0:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its SHA-256 hex; storing it twice is a no-op."""
        return self.put_many([data])[0]

    def put_many(self, blobs: Iterable[bytes]) -> list[str]:
        """Store several blobs durably (for batches).

        Small batches: each file fsynced, renamed into place, each touched directory fsynced.
        Batches of SYNCFS_BATCH new blobs or more (on Linux): every temporary file written,
        one ``syncfs`` (their bytes and new directories durable), every rename, a second
        ``syncfs`` (the names durable). Two flushes of the file system instead of two
        fsyncs per blob, with the same guarantee: a blob's final name never points at
        bytes that a crash could lose, and everything is durable when this returns.
        """
        digests: list[str] = []
        todo: list[tuple[Path, bytes]] = []
        for data in blobs:
            digest = blob_hash(data)
            digests.append(digest)
            path = self.path_of(digest)
            if not self._restart_age(path):
                todo.append((path, data))
        if len(todo) >= SYNCFS_BATCH and _syncfs is not None:
            self._put_batch(todo)
            return digests
        dirty: set[Path] = set()
        for path, data in todo:
            dirty |= self._make_fanout(path.parent)
            _write_file_synced(path, data)
            dirty.add(path.parent)
        _fsync_directories(dirty)
        return digests

    def _put_batch(self, todo: list[tuple[Path, bytes]]) -> None:
        temporaries: list[tuple[str, Path]] = []
        try:
            for path, data in todo:
                self._make_fanout(path.parent)
                fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), dir=path.parent)
                temporaries.append((tmp_name, path))
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(data)
            self._syncfs()  # the bytes and the fan-out directories
            for tmp_name, path in temporaries:
                _rename_into_place(tmp_name, path)
            temporaries = []
            self._syncfs()  # the names
        except BaseException:
            for tmp_name, _ in temporaries:
                _unlink_quietly(Path(tmp_name))
            raise

    def _syncfs(self) -> None:
        assert _syncfs is not None
        fd = os.open(self.root, os.O_RDONLY)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def _make_fanout(self, directory: Path) -> set[Path]:
        """Create the fan-out directories; return the parents whose entries changed."""
        changed: set[Path] = set()
        for level in (directory.parent, directory):
            if not level.is_dir():
                level.mkdir(mode=DIR_MODE, exist_ok=True)
                level.chmod(DIR_MODE)  # exactly 0700, whatever the umask
                changed.add(level.parent)
        return changed

    def get(self, digest: str) -> bytes:
        """The blob's bytes, checked against its hash."""
        try:
            data = self.path_of(digest).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc
        if blob_hash(data) != digest:
            raise BlobCorrupted(f"blob {digest} is corrupted: its bytes hash to something else")
        return data

    def head(self, digest: str, size: int) -> bytes:
        """The blob's first `size` bytes, unchecked (only `get` re-hashes): for reading a
        small header without loading a large blob."""
        try:
            with self.path_of(digest).open("rb") as file:
                return file.read(size)
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def head_and_stored_at(self, digest: str, size: int) -> tuple[bytes, float]:
        """`head` and `stored_at` with one open: the first `size` bytes (unchecked) and the
        mtime of the same file (what an anchor's pre-submit check reads of each blob)."""
        try:
            with self.path_of(digest).open("rb") as file:
                return file.read(size), os.fstat(file.fileno()).st_mtime
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def size(self, digest: str) -> int:
        """The stored blob's size in bytes, 0 when it is not stored (unchecked: `get`
        re-hashes)."""
        try:
            return self.path_of(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def has(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and _HASH.fullmatch(digest) is not None and self.has(digest)

    def delete(self, digest: str) -> bool:
        """Remove a blob and any partial copy of it durably (erasure).

        True if the blob itself existed; deleting twice is harmless. Raises OSError when the
        file system refuses (the caller retries: see node/erasure.py)."""
        path = self.path_of(digest)
        partial_copies = self._remove_temporaries_of(path)
        try:
            path.unlink()
        except FileNotFoundError:
            existed = False
        else:
            existed = True
        if existed or partial_copies:
            _fsync_directories({path.parent})
        return existed

    def _remove_temporaries_of(self, path: Path) -> bool:
        try:
            entries = list(os.scandir(path.parent))
        except FileNotFoundError:
            return False
        prefix = _temporary_prefix(path)
        partial = [Path(e.path) for e in entries if e.name.startswith(prefix)]
        for temporary in partial:
            _unlink_quietly(temporary)
        return bool(partial)

    # --- age: orphans (uploaded, never anchored) expire --------------------------------------

    def stored_at(self, digest: str) -> float:
        """When the blob was last stored (its file's mtime, Unix seconds)."""
        try:
            return self.path_of(digest).stat().st_mtime
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def with_stored_at(self) -> Iterator[tuple[str, float]]:
        """Every stored hash with its `stored_at` (unordered)."""
        for entry in self._entries():
            if _HASH.fullmatch(entry.name):
                try:
                    yield entry.name, entry.stat().st_mtime
                except FileNotFoundError:
                    continue  # deleted while listing

    def expire(self, digest: str, stored_before: float) -> bool:
        """Delete the blob if it was last stored before `stored_before` (Unix seconds).

        The check and the unlink hold the lock that a put of the same blob takes to restart
        its age, so a blob stored again meanwhile is kept. True if it was deleted."""
        path = self.path_of(digest)
        with self._age_lock:
            try:
                if path.stat().st_mtime >= stored_before:
                    return False
                path.unlink()
            except FileNotFoundError:
                return False
        _fsync_directories({path.parent})
        return True

    def _restart_age(self, path: Path) -> bool:
        """Mark a stored blob as stored now; False if it is not stored."""
        with self._age_lock:
            try:
                os.utime(path)
            except FileNotFoundError:
                return False
        return True

    def __iter__(self) -> Iterator[str]:
        """Every stored hash (unordered); temporary files of interrupted puts are skipped."""
        for entry in self._entries():
            if _HASH.fullmatch(entry.name):
                yield entry.name

    def _entries(self) -> Iterator[os.DirEntry[str]]:
        for first in _subdirs(self.root):
            for second in _subdirs(first):
                for entry in os.scandir(second):
                    if entry.is_file():
                        yield entry

    def remove_stale_temporaries(self, written_before: float | None = None) -> int:
        """Delete leftovers of puts interrupted by a crash: all of them at start-up (None),
        or, on a running node, those last written before `written_before` (Unix seconds:
        far older than any put in progress)."""
        removed = 0
        for entry in self._entries():
            if not entry.name.startswith(_TMP_PREFIX):
                continue
            try:
                if written_before is None or entry.stat().st_mtime < written_before:
                    Path(entry.path).unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


# Below this many new blobs, per-file fsyncs are cheaper than flushing the file system.
SYNCFS_BATCH = 32


def _load_syncfs() -> Callable[[int], None] | None:
    """Linux syncfs(2) (errors reported since Linux 5.8), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if function(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs: {os.strerror(errno)}")

    return syncfs


_syncfs = _load_syncfs()


def _check_hash(digest: str) -> None:
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise InvalidBlobHash(f"not a SHA-256 hex digest: {str(digest)[:80]!r}")


def _subdirs(path: Path) -> Iterator[Path]:
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False) and len(entry.name) == 2:
            yield Path(entry.path)


def _temporary_prefix(path: Path) -> str:
    """Temporaries carry their blob's hash, so that erasing a blob finds its partial copies."""
    return f"{_TMP_PREFIX}{path.name}-"


def _write_file_synced(path: Path, data: bytes) -> None:
    # Write beside the target and rename: readers see the whole blob or none of it.
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        _rename_into_place(tmp_name, path)
    except BaseException:
        _unlink_quietly(Path(tmp_name))
        raise


def _rename_into_place(tmp_name: str, path: Path) -> None:
    try:
        os.replace(tmp_name, path)
    except FileNotFoundError:
        # Only `delete` removes another put's temporary: the blob was erased meanwhile.
        raise BlobErasedWhileWriting(f"blob {path.name} was erased while being stored") from None


def _fsync_directories(directories: Iterable[Path]) -> None:
    # A rename, unlink or mkdir is durable only once its directory is synced.
    for directory in directories:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)
