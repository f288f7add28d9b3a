"""Chain queries run in a worker thread on a snapshot of the last commit, so that a long query
(up to 5,000 hashes, each decided against a patient's grants) never holds up the event loop
that makes the blocks, and a block committed meanwhile never shows half in its answer.

Real SQLite files (WAL), a real solo producer; threads are synchronised with events, never
timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from careledger.chain.codes import Code
from careledger.chain.store import Snapshot, StateStore
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import SoloProducer
from careledger.crypto.keys import Identity
from nodeutil import CHAIN_ID, make_app, register_patient_tx

WAIT = 30  # seconds: only a bound on waiting for the other thread, never a measure


def test_a_snapshot_read_in_another_thread_sees_one_commit_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    store.commit(1, b"h1", b"c1", {b"a": b"1", b"b": b"1"})
    first_read, committed = threading.Event(), threading.Event()
    seen: list[object] = []

    def reader() -> None:
        with store.snapshot() as snapshot:
            seen.append(snapshot.get(b"a"))
            first_read.set()
            assert committed.wait(WAIT)
            last = snapshot.last_commit()
            seen.extend(
                [snapshot.get(b"b"), list(snapshot.iterate(b"")), (last.height, last.app_hash)]
            )
        with store.snapshot() as snapshot:
            seen.extend([snapshot.get(b"a"), snapshot.last_commit().height])

    thread = threading.Thread(target=reader)
    thread.start()
    assert first_read.wait(WAIT)
    store.commit(2, b"h2", b"c2", {b"a": b"2", b"b": b"2", b"c": b"2"})
    committed.set()
    thread.join(WAIT)

    assert store.get(b"b") == b"2"  # the committing thread sees its commit at once
    # the reader saw height 1 whole, also after height 2 committed; then height 2
    assert seen[:4] == [b"1", b"1", [(b"a", b"1"), (b"b", b"1")], (1, b"h1")]
    assert seen[4:] == [b"2", 2]
    store.close()


def test_the_solo_node_makes_blocks_while_a_query_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query held inside its snapshot (as a long one would be) while a registration is
    submitted: the block is made and committed meanwhile (the event loop is free), and the
    held query answers from the state before that block."""
    org, patient = Identity.generate(), Identity.generate()
    app = make_app(tmp_path / "state.sqlite", [org])
    blocks = BlockStore(tmp_path / "blocks.sqlite")
    producer = SoloProducer(app, blocks, block_interval=0.01)
    held, release = threading.Event(), threading.Event()
    snapshot = app.store.snapshot

    @contextlib.contextmanager
    def held_snapshot() -> Iterator[Snapshot]:
        with snapshot() as state:
            state.last_commit()  # the first read: the snapshot is taken here
            if not held.is_set():
                held.set()
                assert release.wait(WAIT), "the event loop never got to release the query"
            yield state

    monkeypatch.setattr(app.store, "snapshot", held_snapshot)
    ask = orjson.dumps({"did": patient.did})

    async def scenario() -> tuple[int, int, int, int, int]:
        running = asyncio.create_task(producer.run())
        before = app.info().last_height
        query = asyncio.create_task(producer.query("identity/identity", ask))
        while not held.is_set():  # the query is in its thread, inside its snapshot
            await asyncio.sleep(0.01)
        done = await asyncio.wait_for(
            producer.submit(register_patient_tx(CHAIN_ID, patient, org), wait=True), WAIT
        )
        release.set()
        old, new = await query, await producer.query("identity/identity", ask)
        running.cancel()
        assert done.code == Code.OK and done.height == before + 1
        return before, old.code, old.height, new.code, new.height

    before, old_code, old_height, new_code, new_height = asyncio.run(scenario())
    assert (old_code, old_height) == (Code.NOT_FOUND, before)
    assert (new_code, new_height) == (Code.OK, before + 1)
    blocks.close()
    app.store.close()
