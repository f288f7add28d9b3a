"""Converting a data directory of the earlier layout, a file per blob, to segments.

Until issue 13 a blob was the file ``<root>/<h[0:2]>/<h[2:4]>/<h>`` (its mtime its age), and
a put in progress a ``.tmp-<h>-*`` file beside it. `careledger node restore` still writes
that layout (the backup archive names each blob by its path). Opening a store converts it,
in batches: each file's bytes stored in a segment under its name with its mtime as its age,
the index committed, then the file unlinked. A crash part-way is harmless: a file whose blob
is already indexed is only unlinked the next time. A file whose bytes no longer match its
name is converted as it is, so that reads and `careledger verify` report it corrupted as
before; temporaries (stale partial writes) are deleted.

The conversion deletes files, so it trusts nothing it finds: it follows no symbolic link
(a linked directory or file would let it read, and delete, files outside the store), reads
only regular files no larger than a blob can be, and deletes only the per-file store's own
temporaries. Anything else makes it stop with LegacyLayoutError, naming the path, before it
touches that entry (what it converted until then stays converted: it is resumable).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from careledger.storage.segments import fsync_directory

if TYPE_CHECKING:
    from careledger.storage.blobstore import BlobStore

log = logging.getLogger(__name__)

_FANOUT = re.compile(r"[0-9a-f]{2}")
_HASH = re.compile(r"[0-9a-f]{64}")
# The per-file store's temporaries: ``.tmp-<hash>`` and mkstemp's random tail.
_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{64}.*", re.DOTALL)
BATCH_BYTES = 32 * 1024 * 1024
# No blob was ever larger (protocol/frames.py MAX_BLOB_BYTES, 16 MiB): a bigger file is not
# one of the store's, and reading it whole could exhaust the node's memory at start-up.
MAX_FILE_BYTES = 64 * 1024 * 1024


class LegacyLayoutError(ValueError):
    """A per-file data directory holds something the conversion will not touch."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"cannot convert the per-file blob directory: {path} {why}; move it out of the"
            " blob directory (or replace a link by what it points to) and start again"
        )
        self.path = path


def fanout_directories(root: Path) -> list[Path]:
    """The first-level fan-out directories of the per-file layout under `root` (a link
    named like one: LegacyLayoutError, as below)."""
    found = []
    for entry in os.scandir(root):
        if not _FANOUT.fullmatch(entry.name):
            continue
        if entry.is_symlink():
            raise LegacyLayoutError(Path(entry.path), "is a symbolic link")
        if entry.is_dir(follow_symlinks=False):
            found.append(Path(entry.path))
    return sorted(found)


def convert(store: BlobStore) -> int:
    """Move every per-file blob under `store.root` into segments; how many were moved."""
    first_level = fanout_directories(store.root)
    if not first_level:
        return 0
    moved = 0
    batch: list[tuple[Path, float]] = []
    size = 0
    for path, info in _files(first_level):
        if _TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)  # a temporary of an interrupted put
            continue
        batch.append((path, info.st_mtime))
        size += info.st_size
        if size >= BATCH_BYTES:
            moved += _move(store, batch)
            batch, size = [], 0
    moved += _move(store, batch)
    _remove_empty(first_level, store.root)
    log.warning("converted %d blob files to segments in %s", moved, store.root)
    return moved


def _files(first_level: list[Path]) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file of the fan-out, with its own (not a link target's) status: a blob or a
    temporary, or LegacyLayoutError."""
    for first in first_level:
        for second in sorted(first.iterdir()):
            mode = second.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise LegacyLayoutError(second, "is a symbolic link")
            if stat.S_ISDIR(mode) and _FANOUT.fullmatch(second.name):
                yield from (_checked(p) for p in sorted(second.iterdir()))


def _checked(path: Path) -> tuple[Path, os.stat_result]:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise LegacyLayoutError(path, "is a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise LegacyLayoutError(path, "is not a regular file")
    if not (_HASH.fullmatch(path.name) or _TEMPORARY.fullmatch(path.name)):
        raise LegacyLayoutError(path, "is named neither by a blob hash nor as a temporary")
    if info.st_size > MAX_FILE_BYTES and _HASH.fullmatch(path.name):
        raise LegacyLayoutError(path, f"is larger than any blob ({MAX_FILE_BYTES} bytes)")
    return path, info


def _read(path: Path) -> bytes:
    """The file's bytes, never a link's target (a link put there after the scan fails)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise LegacyLayoutError(path, "is not a regular file")
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:  # grown since the scan
        raise LegacyLayoutError(path, f"is larger than any blob ({MAX_FILE_BYTES} bytes)")
    return data


def _move(store: BlobStore, batch: list[tuple[Path, float]]) -> int:
    """Store one batch's files with their ages, then unlink them (index first)."""
    store.import_named([(path.name, _read(path), stored_at) for path, stored_at in batch])
    for path, _ in batch:
        path.unlink()
    for directory in {path.parent for path, _ in batch}:
        fsync_directory(directory)
    return len(batch)


def _remove_empty(first_level: list[Path], root: Path) -> None:
    for first in first_level:
        for second in list(first.iterdir()):
            if not second.is_symlink() and second.is_dir() and not any(second.iterdir()):
                second.rmdir()
        if not any(first.iterdir()):
            first.rmdir()
    fsync_directory(root)
