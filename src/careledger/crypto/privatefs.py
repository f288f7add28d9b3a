"""Files and directories readable by their owner only, whatever the process umask.

A node's data directory holds the state, the blocks and the record blobs (ciphertexts with
their wrapped keys): files are 0600 and directories 0700. Created with the default modes
(0o666, 0o777) they would follow the umask: readable by everyone under 0o022, writable by
everyone under 0o000. Here the mode is given at creation and set again after it
(fchmod/chmod), so the result is exact whatever the umask.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 directories.

    An existing directory is left as it is: it may be one the user chose (say, their home).
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        directory.chmod(DIR_MODE)


def make_private_file(path: Path) -> None:
    """Make sure ``path`` exists with mode 0600 (created so, or tightened if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (truncating it) with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(data)


def replace_private_file(path: Path, data: bytes) -> None:
    """`write_private_file`, atomically: ``data`` goes to a temporary file beside ``path``
    (0600, fsynced) that then replaces it, so a reader sees the old content or the new, never
    a truncated file. For files rewritten while others read them: a node rewrites its
    node.json at every start, which `node status` and the operator's tools poll."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def private_sqlite(path: Path) -> None:
    """Prepare an SQLite database file: 0600, and its -wal and -shm files 0600 if present.

    SQLite creates the -wal and -shm files with the database file's mode (and fchmods them to
    it past the umask), so a 0600 database keeps them 0600 too; call again after opening in
    WAL mode to tighten files left by an older version.
    """
    # Never open an existing database file here: closing any descriptor of a file drops
    # every POSIX lock this process holds on it, so another connection of this process would
    # lose its SQLite locks (and a second process could write under it). A missing file (or
    # the missing target of a link: the operator put the state on another disk) is created.
    try:
        path.chmod(FILE_MODE)
    except FileNotFoundError:
        make_private_file(path)
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            sidecar.chmod(FILE_MODE)
