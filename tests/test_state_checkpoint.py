"""The state store's WAL is checkpointed by a thread of its own (chain/checkpointer.py), not
inside the commit: the database file gets the committed rows while the store is open, the
thread ends with the store, and the rows are written in key order with the same result."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

from careledger.chain.store import StateStore


def rows_in_the_database_file_alone(path: Path, scratch: Path) -> int:
    """State rows in the main database file without its WAL: what checkpoints copied in."""
    alone = scratch / "alone.sqlite"
    shutil.copyfile(path, alone)
    db = sqlite3.connect(alone)
    try:
        return int(db.execute("SELECT COUNT(*) FROM state").fetchone()[0])
    except sqlite3.DatabaseError:  # not even the table checkpointed yet, or a copy taken
        return 0  # while the checkpointer was writing pages (torn): ask again
    finally:
        db.close()


def block(height: int, rows: int) -> dict[bytes, bytes | None]:
    # Scattered keys, as a block's dids and hashes are.
    return {
        f"k/{(i * 7919 + height) % 100_003:06d}/{height}".encode(): b"v" * 100 for i in range(rows)
    }


def test_commits_are_checkpointed_into_the_database_file_while_the_store_is_open(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    try:
        for height in range(1, 21):
            store.commit(height, bytes(32), bytes(32), block(height, 500))
        deadline = time.monotonic() + 30
        copied = 0
        while time.monotonic() < deadline and copied < 20 * 500:
            copied = rows_in_the_database_file_alone(store.path, tmp_path)
            time.sleep(0.05)
        assert copied == 20 * 500  # no automatic checkpoint runs (wal_autocheckpoint=0)
        assert store.get(next(iter(block(20, 500)))) == b"v" * 100
    finally:
        store.close()
    assert not [t for t in threading.enumerate() if t.name == f"checkpoint {store.path}"]


def test_deletes_and_overwrites_commit_as_before(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    try:
        store.commit(1, bytes(32), bytes(32), {b"b": b"2", b"a": b"1", b"c": b"3"})
        store.commit(2, bytes(32), bytes(32), {b"c": None, b"a": b"one", b"d": b"4"})
        assert list(store.all_rows()) == [(b"a", b"one"), (b"b", b"2"), (b"d", b"4")]
    finally:
        store.close()
    reopened = StateStore(tmp_path / "state.sqlite")
    try:
        assert list(reopened.all_rows()) == [(b"a", b"one"), (b"b", b"2"), (b"d", b"4")]
        assert reopened.last_commit().height == 2
    finally:
        reopened.close()
