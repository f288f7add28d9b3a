"""The node's audit journal on a real SQLite file: group commit, the bound, durability."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from careledger.node.audit.journal import AuditJournal, JournalBatch, JournalFailed, JournalFull


def _entry(i: int) -> dict[str, Any]:
    return {"reader": f"r{i}", "outcome": "denied", "at": 1_800_000_000 + i}


async def _blocked(journal: AuditJournal) -> tuple[threading.Event, asyncio.Future[None]]:
    """Hold the writer thread in a job until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(30)

    job = asyncio.ensure_future(journal.run(hold))
    while not started.is_set():
        await asyncio.sleep(0.001)
    return release, job


def test_concurrent_reads_share_one_fsync(tmp_path: Path) -> None:
    """200 reads queued while the writer is busy are written in ONE transaction (one
    fsync), each read getting its own consecutive journal numbers."""
    journal = AuditJournal(tmp_path / "audit.sqlite")

    async def main() -> list[int]:
        release, job = await _blocked(journal)
        reads = [asyncio.ensure_future(journal.append([_entry(i), _entry(-i)])) for i in range(200)]
        await asyncio.sleep(0.05)
        assert not any(r.done() for r in reads)  # nothing acknowledged before it is written
        release.set()
        await job
        return list(await asyncio.gather(*reads))

    try:
        firsts = asyncio.run(main())
        assert journal.group_commits == 1
        assert sorted(firsts) == list(range(1, 401, 2))
    finally:
        journal.close()
    rows = sqlite3.connect(tmp_path / "audit.sqlite").execute("SELECT COUNT(*) FROM entries")
    assert rows.fetchone()[0] == 400


def test_a_full_journal_refuses_at_once_and_writes_nothing_of_it(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "audit.sqlite", max_pending=10)

    async def main() -> None:
        release, job = await _blocked(journal)
        waiting = asyncio.ensure_future(journal.append([_entry(i) for i in range(8)]))
        await asyncio.sleep(0)
        with pytest.raises(JournalFull):
            await journal.append([_entry(100), _entry(101), _entry(102)])
        release.set()
        await job
        assert await waiting == 1
        assert await journal.append([_entry(200)]) == 9  # room again once written

    try:
        asyncio.run(main())
    finally:
        journal.close()
    readers = sqlite3.connect(tmp_path / "audit.sqlite").execute("SELECT entry FROM entries")
    assert all('"r10' not in row[0] for row in readers)  # r100..r102 refused


def test_entries_and_batches_survive_a_reopen_and_numbering_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    journal = AuditJournal(path)

    async def first() -> None:
        assert await journal.append([_entry(1), _entry(2), _entry(3)]) == 1
        rows = await journal.unbatched(10)
        assert [r.seq for r in rows] == [1, 2, 3]
        batch = JournalBatch(1, 1, 2, {"seq": 1}, b"\x01tx", "ab" * 32, False, None)
        await journal.add_batch(batch)

    asyncio.run(first())
    journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened = AuditJournal(path)

    async def second() -> None:
        assert await reopened.append([_entry(4)]) == 4
        assert [r.seq for r in await reopened.unbatched(10)] == [3, 4]
        (pending,) = await reopened.uncommitted()
        assert (pending.seq, pending.first, pending.count, pending.tx) == (1, 1, 2, b"\x01tx")
        located = await reopened.locate(1, 4)
        assert [(x.batch, x.index) for x in located] == [(1, 0), (1, 1), (None, -1), (None, -1)]
        await reopened.mark_committed(1, 7, "cd" * 32)
        assert await reopened.uncommitted() == []
        assert (await reopened.locate(2, 1))[0].tx_hash == "cd" * 32

    try:
        asyncio.run(second())
    finally:
        reopened.close()


def test_a_failing_job_fails_alone(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "audit.sqlite")

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO entries (seq, entry) VALUES (999, 'x')")
        raise RuntimeError("half-way")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="half-way"):
            await journal.run(broken)
        assert await journal.append([_entry(1)]) == 1  # rolled back: 999 was never written

    try:
        asyncio.run(main())
    finally:
        journal.close()


def test_a_failed_write_fails_its_reads_and_the_journal_goes_on(tmp_path: Path) -> None:
    """A write that fails (here: the next number already taken behind the writer's back, as
    a disk error would fail it) fails every read of its group with JournalFailed, writes
    nothing of them, and the next reads are journaled after what is on disk."""
    journal = AuditJournal(tmp_path / "audit.sqlite")

    def squat(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO entries (seq, entry) VALUES (2, '{}')")

    async def main() -> None:
        assert await journal.append([_entry(1)]) == 1
        await journal.run(squat)
        with pytest.raises(JournalFailed, match="could not write"):
            await journal.append([_entry(2), _entry(3)])
        assert await journal.append([_entry(4)]) == 3

    try:
        asyncio.run(main())
    finally:
        journal.close()
    rows = sqlite3.connect(tmp_path / "audit.sqlite").execute("SELECT seq FROM entries")
    assert [r[0] for r in rows] == [1, 2, 3]
