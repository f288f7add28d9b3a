"""The node's audit journal: every read decision, on disk before the read is served.

`audit.sqlite` in the data directory (0600, like every file there), WAL with
`synchronous=FULL`: a commit returns once its WAL frames are fsynced, so an entry the journal
acknowledged survives a crash or a power cut.

Tables:
  entries(seq PK, entry JSON, batch NULL)      one row per read decision (AccessEntry.to_json)
  batches(seq PK, first, count, payload JSON,  one row per audit/record_batch this node made:
          tx hex, tx_hash, committed, height)  its entries are seqs first..first+count-1

A batch the chain refuses for good (its entries more than a day older than the block time:
the node was down that long) is *abandoned*: its row is kept under seq -first (negative, so
it holds its entries and no chain number), uncommitted, with no transaction, and its number
is free for the next batch. Its entries stay in the journal, never claimed to be on chain.

**Group commit.** Every write goes through one writer thread. A read appends its entries
(`await append(entries)`: no blocking on the event loop) and waits for the writer; the writer
takes everything queued since its last commit and writes it in ONE transaction, one fsync, then
wakes every waiting read. So N concurrent reads cost one fsync, not N, and a single read costs
one fsync of a few hundred bytes.

**Bounded, failing closed.** At most `max_pending` entries wait for the writer. Beyond that
`append` raises `JournalFull` at once (the read routes answer 503): a journal that cannot keep
up refuses reads; it never lets one through unjournaled. A write that fails (a full disk)
fails every append of its group (`JournalFailed`, 503 too), nothing half-written.

The batcher (`node/audit/batcher.py`) reads unbatched entries and records its batches here,
through the same writer thread (`run`), so journal writes never wait on SQLite's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from careledger.crypto.privatefs import private_sqlite

log = logging.getLogger(__name__)

T = TypeVar("T")

JOURNAL_FILE = "audit.sqlite"
MAX_PENDING = 50_000  # entries waiting for the writer: a few seconds of the busiest node
GROUP_MAX = 4_096  # requests written in one transaction at most

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    entry TEXT NOT NULL,
    batch INTEGER
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    payload TEXT NOT NULL,
    tx TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0,
    height INTEGER
);
"""


class JournalError(Exception):
    """The journal cannot take this read's entries: the read must not be served."""


class JournalFull(JournalError):
    """More entries wait for the disk than the journal holds in memory."""


class JournalFailed(JournalError):
    """The write failed (its message says why), or the journal is closed."""


@dataclass(frozen=True)
class Journaled:
    seq: int
    entry: dict[str, Any]  # AccessEntry.to_json()


@dataclass(frozen=True)
class JournalBatch:
    """A batch this node made from entries first..first+count-1."""

    seq: int
    first: int
    count: int
    payload: dict[str, Any]
    tx: bytes  # the signed audit/record_batch
    tx_hash: str
    committed: bool
    height: int | None


@dataclass(frozen=True)
class Located:
    """Where one journaled entry is: its batch's transaction and its index there ("" and -1
    while no batch holds it; `committed` once that batch is on chain)."""

    seq: int
    entry: dict[str, Any]
    batch: int | None
    tx_hash: str
    index: int
    committed: bool
    height: int | None


@dataclass
class _Append:
    entries: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]


@dataclass
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_STOP = object()


class AuditJournal:
    def __init__(self, path: Path | str, max_pending: int = MAX_PENDING) -> None:
        self.path = Path(path)
        self.max_pending = max_pending
        private_sqlite(self.path)  # 0600 before SQLite creates it; -wal/-shm follow its mode
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        private_sqlite(self.path)
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged entry survives power loss
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
        self._next_seq = int(row[0]) + 1
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0  # entries queued, not yet written
        self._pending_lock = threading.Lock()
        self._closed = False
        self.group_commits = 0  # append transactions written (each one fsync)
        self._writer = threading.Thread(target=self._write_loop, name="audit journal", daemon=True)
        self._writer.start()

    # --- the read path ---------------------------------------------------------------------

    async def append(self, entries: Sequence[dict[str, Any]]) -> int:
        """Write entries durably (fsynced) and return the journal seq of the first; the rest
        follow it one by one. JournalFull at once when the journal is full, JournalFailed
        when the write failed."""
        if not entries:
            raise ValueError("nothing to journal")
        encoded = [orjson.dumps(e).decode() for e in entries]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._pending_lock:  # queued under the lock: never after close()'s stop
            if self._closed:
                raise JournalFailed("the audit journal is closed")
            if self._pending + len(encoded) > self.max_pending:
                raise JournalFull(
                    f"the audit journal has {self._pending} entries waiting for the disk "
                    f"(limit {self.max_pending}): reads are refused until it catches up"
                )
            self._pending += len(encoded)
            self._queue.put(_Append(encoded, loop, future))
        return await future

    # --- the batcher's path ----------------------------------------------------------------

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` on the writer thread, in a transaction of its own."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            if self._closed:
                raise JournalFailed("the audit journal is closed")
            self._queue.put(_Job(work, loop, future))
        return await future

    async def unbatched(self, limit: int) -> list[Journaled]:
        """The oldest `limit` entries no batch holds yet, in journal order."""
        return await self.run(lambda db: _unbatched(db, limit))

    async def add_batch(self, batch: JournalBatch) -> None:
        """Record a batch (before it is submitted, so a crash resubmits the same one) and
        mark its entries as held by it."""
        await self.run(lambda db: _add_batch(db, batch))

    async def replace_tx(self, seq: int, tx: bytes, tx_hash: str) -> None:
        """The batch's transaction signed again (a new nonce), same payload."""
        await self.run(
            lambda db: db.execute(
                "UPDATE batches SET tx = ?, tx_hash = ? WHERE seq = ?", (tx.hex(), tx_hash, seq)
            )
        )

    async def mark_committed(self, seq: int, height: int | None, tx_hash: str) -> None:
        """The batch is on chain, at `height`, in transaction `tx_hash`."""
        await self.run(
            lambda db: db.execute(
                "UPDATE batches SET committed = 1, height = ?, tx_hash = ? WHERE seq = ?",
                (height, tx_hash, seq),
            )
        )

    async def uncommitted(self) -> list[JournalBatch]:
        """Batches recorded but not known to be on chain, oldest first (abandoned ones are
        not: they will never be)."""
        return await self.run(
            lambda db: [
                _batch(row)
                for row in db.execute(
                    f"{_BATCH_SELECT} WHERE committed = 0 AND seq > 0 ORDER BY seq"
                )
            ]
        )

    async def unrecord(self, seq: int) -> None:
        """Forget uncommitted batch `seq` and any after it (the chain holds another batch
        under that number): their entries are batched again, under new numbers."""
        await self.run(lambda db: _unrecord(db, seq))

    async def abandon(self, seq: int) -> None:
        """Give up batch `seq`, which the chain refuses for good (see the module's
        docstring); later uncommitted batches are unrecorded, their entries batched again
        (the chain has none of them: it refused `seq`, so it took nothing after it)."""
        await self.run(lambda db: _abandon(db, seq))

    async def last_batch_seq(self) -> int:
        return await self.run(
            lambda db: int(
                db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches WHERE seq > 0").fetchone()[0]
            )
        )

    async def locate(self, first: int, count: int) -> list[Located]:
        """Entries first..first+count-1 and where each went (missing seqs are left out)."""
        return await self.run(lambda db: _locate(db, first, count))

    # --- the writer thread -----------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, then stop the writer and close the file."""
        with self._pending_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._db.close()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            while len(items) < GROUP_MAX:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in items
            appends = [i for i in items if isinstance(i, _Append)]
            if appends:
                self._write_appends(appends)
            for item in items:
                if isinstance(item, _Job):
                    self._run_job(item)

    def _write_appends(self, appends: list[_Append]) -> None:
        seq = self._next_seq
        rows: list[tuple[int, str]] = []
        firsts: list[int] = []
        for append in appends:
            firsts.append(seq)
            for encoded in append.entries:
                rows.append((seq, encoded))
                seq += 1
        error: BaseException | None = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO entries (seq, entry) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")  # the fsync: every append of the group at once
            self._next_seq = seq
            self.group_commits += 1
        except Exception as exc:  # the thread goes on: every waiting read gets the error
            error = exc
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            log.error("the audit journal could not write %d entries: %s", len(rows), exc)
            with contextlib.suppress(sqlite3.Error):  # number on from what is on disk
                row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
                self._next_seq = int(row[0]) + 1
        with self._pending_lock:
            self._pending -= len(rows)
        for append, first in zip(appends, firsts, strict=True):
            if error is None:
                _settle(append.loop, append.future, first, None)
            else:
                failed = JournalFailed(f"the audit journal could not write: {error}")
                _settle(append.loop, append.future, None, failed)

    def _run_job(self, job: _Job) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = job.work(self._db)
            self._db.execute("COMMIT")
        except BaseException as exc:  # handed to the awaiting task, not lost on this thread
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            _settle(job.loop, job.future, None, exc)
            return
        _settle(job.loop, job.future, result, None)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():  # the request went away meanwhile; its entries are written anyway
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


# --- the batcher's statements ----------------------------------------------------------------

_BATCH_SELECT = "SELECT seq, first, count, payload, tx, tx_hash, committed, height FROM batches"


def _batch(row: tuple[Any, ...]) -> JournalBatch:
    seq, first, count, payload, tx, tx_hash, committed, height = row
    return JournalBatch(
        int(seq),
        int(first),
        int(count),
        orjson.loads(payload),
        bytes.fromhex(tx),
        str(tx_hash),
        bool(committed),
        None if height is None else int(height),
    )


def _unbatched(db: sqlite3.Connection, limit: int) -> list[Journaled]:
    row = db.execute("SELECT COALESCE(MAX(first + count - 1), 0) FROM batches").fetchone()
    after = int(row[0])
    rows = db.execute(
        "SELECT seq, entry FROM entries WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    )
    return [Journaled(int(seq), orjson.loads(entry)) for seq, entry in rows]


def _add_batch(db: sqlite3.Connection, batch: JournalBatch) -> None:
    db.execute(
        "INSERT INTO batches (seq, first, count, payload, tx, tx_hash, committed, height) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch.seq,
            batch.first,
            batch.count,
            orjson.dumps(batch.payload).decode(),
            batch.tx.hex(),
            batch.tx_hash,
            int(batch.committed),
            batch.height,
        ),
    )
    db.execute(
        "UPDATE entries SET batch = ? WHERE seq >= ? AND seq < ?",
        (batch.seq, batch.first, batch.first + batch.count),
    )


def _unrecord(db: sqlite3.Connection, seq: int) -> None:
    """Forget the uncommitted batches from `seq` on: their entries are unbatched again."""
    held = "SELECT seq FROM batches WHERE seq >= ? AND committed = 0"
    db.execute(f"UPDATE entries SET batch = NULL WHERE batch IN ({held})", (seq,))
    db.execute("DELETE FROM batches WHERE seq >= ? AND committed = 0", (seq,))


def _abandon(db: sqlite3.Connection, seq: int) -> None:
    _unrecord(db, seq + 1)
    (first,) = db.execute("SELECT first FROM batches WHERE seq = ?", (seq,)).fetchone()
    db.execute("UPDATE entries SET batch = ? WHERE batch = ?", (-first, seq))
    db.execute(
        "UPDATE batches SET seq = ?, tx = '', tx_hash = '', committed = 0 WHERE seq = ?",
        (-first, seq),
    )


def _locate(db: sqlite3.Connection, first: int, count: int) -> list[Located]:
    rows = db.execute(
        "SELECT e.seq, e.entry, e.batch, b.first, b.tx_hash, b.committed, b.height FROM entries e "
        "LEFT JOIN batches b ON b.seq = e.batch WHERE e.seq >= ? AND e.seq < ? ORDER BY e.seq",
        (first, first + count),
    )
    located = []
    for seq, entry, batch, batch_first, tx_hash, committed, height in rows:
        held = batch is not None
        located.append(
            Located(
                int(seq),
                orjson.loads(entry),
                int(batch) if held else None,
                str(tx_hash) if held else "",
                int(seq) - int(batch_first) if held else -1,
                bool(committed) if held else False,
                None if height is None else int(height),
            )
        )
    return located
