"""Content-addressed blob store on disk: a blob's name is the SHA-256 of its bytes.

Layout: ``<root>/<h[0:2]>/<h[2:4]>/<h>`` (two levels of 256-way fan-out keep directories
small at millions of blobs). A put is durable when it returns: the bytes are written to a
temporary file in the same directory, fsynced, renamed into place and the directory fsynced,
so that an anchor submitted after ``put`` never points at a blob a crash could lose.
Large batches flush the file system twice instead (``syncfs``, see ``put_many``).
Reads re-hash the bytes, so a flipped bit on disk is reported, never served.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
import tempfile
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


def blob_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        make_private_dir(self.root)

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
            if not path.exists():
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
                fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
                temporaries.append((tmp_name, path))
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(data)
            self._syncfs()  # the bytes and the fan-out directories
            for tmp_name, path in temporaries:
                os.replace(tmp_name, path)
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

    def has(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and _HASH.fullmatch(digest) is not None and self.has(digest)

    def delete(self, digest: str) -> bool:
        """Remove a blob durably (erasure). True if it existed; deleting twice is harmless."""
        path = self.path_of(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_directories({path.parent})
        return True

    def __iter__(self) -> Iterator[str]:
        """Every stored hash (unordered); temporary files of interrupted puts are skipped."""
        for first in _subdirs(self.root):
            for second in _subdirs(first):
                for entry in os.scandir(second):
                    if entry.is_file() and _HASH.fullmatch(entry.name):
                        yield entry.name

    def remove_stale_temporaries(self) -> int:
        """Delete leftovers of puts interrupted by a crash; call at start-up only."""
        removed = 0
        for first in _subdirs(self.root):
            for second in _subdirs(first):
                for entry in os.scandir(second):
                    if entry.name.startswith(_TMP_PREFIX):
                        _unlink_quietly(Path(entry.path))
                        removed += 1
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


def _write_file_synced(path: Path, data: bytes) -> None:
    # Write beside the target and rename: readers see the whole blob or none of it.
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        _unlink_quietly(Path(tmp_name))
        raise


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
