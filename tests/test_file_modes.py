"""A node's data directory is its owner's only: files 0600, directories 0700, whatever the umask.

The attack: under the default umask (0o022) the state, the block store and the record blobs
(ciphertexts with their wrapped data keys) were readable by every local user; under 0o000 they
were writable too, so another user could alter or replace a node's state and blobs.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from careledger.crypto.keyfile import KeyFile
from careledger.crypto.privatefs import private_sqlite, replace_private_file
from careledger.demo import seed_demo
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Every path under root (root included) -> its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def use_the_node(root: Path) -> None:
    """What `careledger up --demo` does to a fresh data directory, and a restart."""
    organisation = initialise(root)
    node = build_node(root, Solo(0.05))
    try:
        seed_demo(node, organisation)  # key files, a block: state and block store written
        node.blob_store.put(b"one blob")
        node.blob_store.put_many([os.urandom(64) for _ in range(33)])
    finally:
        node.close()
    build_node(root, Solo()).close()  # reopened: SQLite makes its -wal and -shm files again


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_every_file_is_0600_and_every_directory_0700(tmp_path: Path, mask: int) -> None:
    root = tmp_path / "node" / "data"
    with umask(mask):
        use_the_node(root)
        node = build_node(root, Solo())  # open, so that the SQLite side files exist while we look
        try:
            found = modes(root)
        finally:
            node.close()
    data = DataDir(root)
    names = set(found)
    assert {"state.sqlite", "state.sqlite-wal", "state.sqlite-shm"} <= names
    assert {"blocks.sqlite", "blocks.sqlite-wal", "genesis.json", "keys/organisation.json"} <= names
    assert {"blobs/index.sqlite", "blobs/index.sqlite-wal", "blobs/lock"} <= names
    assert any(n.startswith("blobs/segments/") and n.endswith(".seg") for n in names)
    assert len(list(data.keys.glob("*.json"))) > 1  # the demo identities' key files too
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert wrong == {}
    assert stat.S_IMODE((tmp_path / "node").stat().st_mode) == 0o700  # a parent we created
    KeyFile.load(data.organisation_key)  # and the key file still loads (0600 is required)


def test_tightening_a_database_keeps_the_locks_this_process_holds_on_it(tmp_path: Path) -> None:
    """private_sqlite on an open database must not drop its connection's locks: closing any
    descriptor of a file drops every POSIX lock the process holds on it, and a second process
    could then write while the first is mid-transaction."""
    path = tmp_path / "state.sqlite"
    private_sqlite(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    private_sqlite(path)  # as a second store opened on the same file does
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0,"
            " isolation_level=None); c.execute('BEGIN IMMEDIATE')",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    holder.execute("COMMIT")
    assert other.returncode != 0 and "locked" in other.stderr


def test_a_rewritten_config_is_never_seen_truncated(tmp_path: Path) -> None:
    """A node rewrites node.json at every start while `node status` (and the consortium
    tests' waits) read it: written in place, a reader found it empty (orjson: "a zero-length,
    empty document") in CI. `replace_private_file` swaps a complete file in: a reader polling
    through 300 rewrites sees only whole documents; the file stays 0600, no temporary left."""
    path = tmp_path / "node.json"
    documents = [
        orjson.dumps({"rpc_url": f"http://127.0.0.1:{n}", "pad": "x" * 50_000}) for n in range(2)
    ]
    replace_private_file(path, documents[0])
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(300):
        replace_private_file(path, documents[n % 2])
    done.set()
    reader.join()
    assert seen and set(seen) <= set(documents)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]
