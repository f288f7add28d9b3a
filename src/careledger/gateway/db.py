"""The gateway's own SQLite file (`gateway.sqlite`): search index, directory, clients, used
token ids. Its rows are PHI of the organisation's own patients (docs/gateway.md says how an
operator protects it); the file is created owner-only.

One connection, shared by the threads that serve requests, behind a lock: SQLite serialises
writers anyway, and every statement here is short. Each part of the gateway declares its own
tables (`SCHEMA` strings passed to `GatewayDb.open`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path


class GatewayDb:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path, schemas: Sequence[str], *, durable: bool = True) -> GatewayDb:
        """`durable`: every commit fsynced (synchronous=FULL); otherwise (NORMAL) a power cut
        may lose the last commits, never the file's consistency: for what another copy
        holds anyway (the audit receipts: the node's journal has every entry)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: client registrations and used assertion ids must survive a power cut (a
        # replayed jti would otherwise be accepted again after a crash).
        connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        connection.execute("PRAGMA foreign_keys=ON")
        for schema in schemas:
            connection.executescript(schema)
        return cls(connection)

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction: everything inside commits together or not at all."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._connection.close()
