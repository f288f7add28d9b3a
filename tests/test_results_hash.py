"""Solo block headers commit to their transactions' results; replay and verify check it.

A real embedded node makes blocks holding a success and a failure (the organisation
registering the same practitioner twice: the mempool admits both, the block refuses the
second with CONFLICT); then a stored result, or the header's results_hash, is changed
the way a dishonest operator would (to make a failed anchor look successful), and both the
restart's replay and `careledger verify` must name the block.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from careledger.chain.app import Application
from careledger.chain.block import BlockHeader
from careledger.chain.codes import Code
from careledger.chain.results import TxOutcome, results_hash
from careledger.chain.store import StateStore
from careledger.chain.tx import Tx
from careledger.consensus.solo.blockstore import BlockStore
from careledger.consensus.solo.producer import ReplayMismatch, SoloProducer
from careledger.crypto.keys import Identity
from careledger.node.builder import Solo, build_node
from careledger.node.datadir import DataDir, initialise
from nodeutil import careledger_command, free_port, practitioner_payload, run_verify


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results") / "data"
    org = initialise(root)
    node = build_node(root, Solo())
    chain_id = node.app.chain_id
    nonces = iter(range(1, 5))

    async def fill() -> None:
        for _ in range(2):
            twice = practitioner_payload(chain_id, org.did, Identity.generate())
            for _ in range(2):  # the second registration fails in the block: CONFLICT
                raw = Tx(chain_id, "identity/register_practitioner", org.did, next(nonces), twice)
                admitted = await node.consensus.submit(raw.sign(org.identity), wait=False)
                assert admitted.accepted, admitted.check_log
            node.consensus.produce_block()

    asyncio.run(fill())
    node.close()
    return root


def copy_of(made: Path, tmp_path: Path) -> DataDir:
    shutil.copytree(made, tmp_path / "data")
    return DataDir(tmp_path / "data")


def test_headers_commit_to_the_results_of_their_own_block(made: Path, tmp_path: Path) -> None:
    data = copy_of(made, tmp_path)
    with sqlite3.connect(data.blocks) as db:
        header = BlockHeader.from_json(
            orjson.loads(db.execute("SELECT header FROM blocks WHERE height = 1").fetchone()[0])
        )
        codes = [c for (c,) in db.execute("SELECT code FROM txs WHERE height = 1 ORDER BY idx")]
    assert codes == [Code.OK, Code.CONFLICT]
    expected = results_hash([TxOutcome(Code.OK), TxOutcome(Code.CONFLICT)])
    assert header.results_hash == expected.hex()
    assert run_verify(data.root).returncode == 0


def _make_failure_look_successful(data: DataDir, height: int) -> None:
    """A stored result rewritten to success, and the header (and its stored hash) with it:
    the last block, so that no later block's previous_hash gives it away."""
    with sqlite3.connect(data.blocks) as db:
        db.execute("UPDATE txs SET code = 0, log = '' WHERE height = ? AND idx = 1", (height,))
        raw = db.execute("SELECT header FROM blocks WHERE height = ?", (height,)).fetchone()[0]
        header = BlockHeader.from_json(orjson.loads(raw))
        forged = replace(header, results_hash=results_hash([TxOutcome(0), TxOutcome(0)]).hex())
        db.execute(
            "UPDATE blocks SET header = ?, hash = ? WHERE height = ?",
            (orjson.dumps(forged.to_json()), forged.hash(), height),
        )


def test_verify_names_a_block_whose_stored_results_are_not_its_results_hash(
    made: Path, tmp_path: Path
) -> None:
    data = copy_of(made, tmp_path)
    with sqlite3.connect(data.blocks) as db:  # what a result hashes, without its code
        db.execute("UPDATE txs SET data = x'01' WHERE height = 2 AND idx = 0")
    result = run_verify(data.root)
    assert result.returncode == 1
    assert "block 2: stored results do not match the header's results_hash" in result.stderr


def test_a_failure_rewritten_as_success_is_named_by_verify_and_refused_on_replay(
    made: Path, tmp_path: Path
) -> None:
    data = copy_of(made, tmp_path)
    _make_failure_look_successful(data, 2)
    result = run_verify(data.root)
    assert result.returncode == 1
    assert "block 2, tx 1: stored result 0, replay gives 10" in result.stderr

    # Replaying the stored blocks into a fresh state (as after a crash) refuses it as well:
    # the app hash matches (it does not depend on results), the results do not.
    app = Application(StateStore(tmp_path / "replay.sqlite"))
    app.init_chain(data.load_genesis())
    blocks = BlockStore(data.blocks)
    try:
        with pytest.raises(ReplayMismatch, match="block 2: replay gave different transaction"):
            SoloProducer(app, blocks).recover()
        assert app.info().last_height == 1
    finally:
        blocks.close()
        app.store.close()


def test_a_block_store_from_before_results_hashes_is_refused_clearly(
    made: Path, tmp_path: Path
) -> None:
    data = copy_of(made, tmp_path)
    with sqlite3.connect(data.blocks) as db:
        db.execute("ALTER TABLE txs DROP COLUMN data")
    result = run_verify(data.root)
    assert result.returncode == 1
    assert "written by an earlier version" in result.stderr
    up = subprocess.run(
        [*careledger_command(), "up", "--data-dir", str(data.root), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 1 and "written by an earlier version" in up.stderr
    assert "Traceback" not in up.stderr
