"""The solo producer's block store: headers, transactions and their results, in SQLite.

It plays the part of CometBFT's block store. A block and its results are written in one
SQLite transaction before the application commits its state, so after a crash the block can
be replayed into the application (see SoloProducer.recover). Each result keeps what the
header's `results_hash` commits to (code and data; gas is always 0 here) besides its log and
events, so a result proof can be made from the store alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from careledger.chain.app import IncompatibleState, TxResult
from careledger.chain.block import BlockHeader
from careledger.chain.results import TxOutcome
from careledger.crypto.privatefs import private_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    header BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    hash BLOB NOT NULL,
    height INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    raw BLOB NOT NULL,
    code INTEGER NOT NULL,
    log TEXT NOT NULL,
    events BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (height, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS txs_by_hash ON txs (hash);
"""


@dataclass(frozen=True)
class StoredTx:
    hash: bytes
    height: int
    index: int
    raw: bytes
    code: int
    log: str
    events: list[dict[str, object]]
    data: bytes = b""

    @property
    def outcome(self) -> TxOutcome:
        """What the header's results_hash commits to for this transaction."""
        return TxOutcome(self.code, self.data)


class IncompatibleBlocks(IncompatibleState):
    """A block store written by an earlier version (its blocks do not commit to results)."""


class BlockStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        private_sqlite(self.path)  # 0600 before SQLite creates it; -wal/-shm follow its mode
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        private_sqlite(self.path)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._require_results_column()

    def _require_results_column(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(txs)")}
        if "data" not in columns:
            self._db.close()
            raise IncompatibleBlocks(
                f"{self.path} was written by an earlier version whose block headers do not "
                "commit to transaction results: start a new data directory"
            )

    def close(self) -> None:
        self._db.close()

    def height(self) -> int:
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return int(row[0] or 0)

    def save(
        self, header: BlockHeader, txs: list[bytes], hashes: list[bytes], results: list[TxResult]
    ) -> None:
        rows = [
            (h, header.height, i, raw, int(r.code), r.log, _events_json(r), r.data)
            for i, (raw, h, r) in enumerate(zip(txs, hashes, results, strict=True))
        ]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO blocks (height, hash, header) VALUES (?, ?, ?)",
                (header.height, header.hash(), orjson.dumps(header.to_json())),
            )
            db.executemany("INSERT INTO txs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def header(self, height: int) -> BlockHeader | None:
        row = self._db.execute("SELECT header FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else BlockHeader.from_json(orjson.loads(row[0]))

    def stored_hash(self, height: int) -> bytes | None:
        row = self._db.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def block_txs(self, height: int) -> list[StoredTx]:
        rows = self._db.execute(
            "SELECT hash, height, idx, raw, code, log, events, data FROM txs "
            "WHERE height = ? ORDER BY idx",
            (height,),
        )
        return [_stored(row) for row in rows]

    def tx(self, tx_hash: bytes) -> StoredTx | None:
        row = self._db.execute(
            "SELECT hash, height, idx, raw, code, log, events, data FROM txs WHERE hash = ? "
            "ORDER BY code != 0, height LIMIT 1",  # the copy that took effect, if any
            (tx_hash,),
        ).fetchone()
        return None if row is None else _stored(row)

    def raw_headers(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(height, stored hash, header JSON) as stored, unparsed, for verification."""
        for height, stored_hash, header in self._db.execute(
            "SELECT height, hash, header FROM blocks ORDER BY height"
        ):
            yield height, bytes(stored_hash), bytes(header)


def _events_json(result: TxResult) -> bytes:
    return orjson.dumps([{"type": e.type, "attributes": e.attributes} for e in result.events])


def _stored(row: tuple[bytes, int, int, bytes, int, str, bytes, bytes]) -> StoredTx:
    h, height, idx, raw, code, log, events, data = row
    return StoredTx(bytes(h), height, idx, bytes(raw), code, log, orjson.loads(events), bytes(data))
