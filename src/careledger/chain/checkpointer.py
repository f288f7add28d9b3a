"""WAL checkpoints of a SQLite file, in a thread of their own, off the committing thread.

SQLite's automatic checkpoint runs inside the COMMIT that fills the write-ahead log past
1,000 pages: the committing thread (the node's event loop) then copies the log into the
database file and syncs it. A block of registrations dirties pages all over the state's
B-tree, so with blocks of a few hundred registrations nearly every commit checkpoints. This
thread does it instead, on its own connection, after the commits that would have filled
the log: SQLite lets a checkpoint
run beside the writer (PASSIVE: it copies what no reader still needs, blocking no one), and
the sqlite3 module releases the GIL while it runs. Durability is unchanged: a commit is
durable once its log frames are synced (synchronous=FULL, at COMMIT), before any checkpoint.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# SQLite checkpoints automatically once the WAL holds 1,000 pages; a changed row dirties at
# most about one page, so this asks at least as rarely (a block of scattered keys dirties
# nearly one page per row). Below it the WAL only grows, as it did before.
CHECKPOINT_ROWS = 1000


class Checkpointer:
    """Checkpoints `path`'s WAL after commits, in a daemon thread, until `close`."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._wanted = threading.Event()
        self._rows = 0  # committed since the last checkpoint was asked for
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"checkpoint {path}", daemon=True)
        self._thread.start()

    def committed(self, rows: int) -> None:
        """A commit of `rows` changed rows added to the WAL: checkpoint once about
        CHECKPOINT_ROWS have been committed since the last one, when the thread is next free."""
        self._rows += rows
        if self._rows >= CHECKPOINT_ROWS:
            self._rows = 0
            self._wanted.set()

    def close(self) -> None:
        self._closing = True
        self._wanted.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:  # the next commit tries again; the log only grows meanwhile
                log.exception("checkpoint failed")
