"""Converting a data directory of the earlier layout, a file per blob, to segments.

Until issue 13 a blob was the file ``<root>/<h[0:2]>/<h[2:4]>/<h>`` (its mtime its age), and
a put in progress a ``.tmp-<h>-*`` file beside it. `careledger node restore` still writes
that layout (the backup archive names each blob by its path). Opening a store converts it,
in batches: each file's bytes stored in a segment under its name with its mtime as its age,
the index committed, then the file unlinked. A crash part-way is harmless: a file whose blob
is already indexed is only unlinked the next time. A file whose bytes no longer match its
name is converted as it is, so that reads and `careledger verify` report it corrupted as
before; temporaries (stale partial writes) are deleted.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from careledger.storage.segments import fsync_directory

if TYPE_CHECKING:
    from careledger.storage.blobstore import BlobStore

log = logging.getLogger(__name__)

_FANOUT = re.compile(r"[0-9a-f]{2}")
_HASH = re.compile(r"[0-9a-f]{64}")
BATCH_BYTES = 32 * 1024 * 1024


def fanout_directories(root: Path) -> list[Path]:
    """The first-level fan-out directories of the per-file layout under `root`."""
    return sorted(
        Path(e.path)
        for e in os.scandir(root)
        if e.is_dir(follow_symlinks=False) and _FANOUT.fullmatch(e.name)
    )


def convert(store: BlobStore) -> int:
    """Move every per-file blob under `store.root` into segments; how many were moved."""
    first_level = fanout_directories(store.root)
    if not first_level:
        return 0
    moved = 0
    batch: list[tuple[Path, float]] = []
    size = 0
    for path in _files(first_level):
        if not _HASH.fullmatch(path.name):
            path.unlink(missing_ok=True)  # a temporary of an interrupted put
            continue
        stat = path.stat()
        batch.append((path, stat.st_mtime))
        size += stat.st_size
        if size >= BATCH_BYTES:
            moved += _move(store, batch)
            batch, size = [], 0
    moved += _move(store, batch)
    _remove_empty(first_level, store.root)
    log.warning("converted %d blob files to segments in %s", moved, store.root)
    return moved


def _files(first_level: list[Path]) -> Iterator[Path]:
    for first in first_level:
        for second in sorted(first.iterdir()):
            if second.is_dir() and _FANOUT.fullmatch(second.name):
                yield from sorted(p for p in second.iterdir() if p.is_file())


def _move(store: BlobStore, batch: list[tuple[Path, float]]) -> int:
    """Store one batch's files with their ages, then unlink them (index first)."""
    store.import_named([(path.name, path.read_bytes(), stored_at) for path, stored_at in batch])
    for path, _ in batch:
        path.unlink()
    for directory in {path.parent for path, _ in batch}:
        fsync_directory(directory)
    return len(batch)


def _remove_empty(first_level: list[Path], root: Path) -> None:
    for first in first_level:
        for second in list(first.iterdir()):
            if second.is_dir() and not any(second.iterdir()):
                second.rmdir()
        if not any(first.iterdir()):
            first.rmdir()
    fsync_directory(root)
