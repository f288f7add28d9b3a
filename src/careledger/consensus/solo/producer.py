"""The solo block producer: the embedded consensus driver of `careledger up`.

It keeps a mempool admitted by check_tx, makes a block every `block_interval` seconds (or as
soon as `max_block_txs` are waiting), stores the block, then has the application commit.
The order matters for crash safety: a block stored but not yet committed by the application is
replayed into it on the next start, exactly as CometBFT replays blocks after its handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from careledger.chain.app import Application, BlockContext, QueryResult, TxResult
from careledger.chain.block import BlockHeader, data_hash, format_time_ns, tx_inclusion_proof
from careledger.chain.codes import Code
from careledger.chain.results import outcomes_hash, result_inclusion_proof
from careledger.chain.tx import tx_hash
from careledger.consensus.driver import Admission, Submission
from careledger.consensus.solo.blockstore import BlockStore, StoredTx
from careledger.consensus.solo.intake import Intake, IntakeEntry
from careledger.consensus.solo.verifier import SignatureVerifier, worth_a_process

log = logging.getLogger(__name__)

_HALTED = "the node has halted after a local fault (see its log) and takes no transactions"


class ReplayMismatch(RuntimeError):
    """A stored block replayed into the application gave a different app hash."""


@dataclass
class _Pending:
    raw: bytes
    hash: bytes
    done: asyncio.Future[Submission] | None


class SoloProducer:
    def __init__(
        self,
        app: Application,
        blocks: BlockStore,
        *,
        block_interval: float = 0.25,
        max_block_txs: int = 5000,
        clock: Callable[[], int] = time.time_ns,
        on_halt: Callable[[], None] | None = None,
        verify_ahead: bool | None = None,
    ) -> None:
        self.app = app
        self.blocks = blocks
        self.block_interval = block_interval
        self.max_block_txs = max_block_txs
        self._clock = clock
        self._mempool: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        # Set when making or committing a block failed (LocalFault, the block store): the
        # producer stops for good, answers no more writes, and calls on_halt (which stops
        # the node's server so that `careledger up` exits non-zero).
        self.halted: BaseException | None = None
        self.on_halt = on_halt
        self._in_block: list[_Pending] = []  # the block being made, answered if it fails
        self._producing = 0
        # Verify the intake's signatures ahead in a worker process (verifier.py), started and
        # stopped by `run`. None: when the machine has a second core for it.
        self.verify_ahead = worth_a_process() if verify_ahead is None else verify_ahead
        self.verifier: SignatureVerifier | None = None
        # Submissions wait here for check_tx, in arrival order (the mempool's order). One
        # task drains it in batches; a worker process verifies their signatures ahead.
        self._intake = Intake(app, lambda: self.verifier, self._admit_checked)

    @property
    def chain_id(self) -> str:
        return self.app.chain_id

    # --- start-up -------------------------------------------------------------------------

    def recover(self) -> int:
        """Replay stored blocks the application has not committed; returns how many."""
        replayed = 0
        while (height := self.app.info().last_height + 1) <= self.blocks.height():
            header = self.blocks.header(height)
            assert header is not None
            txs = [t.raw for t in self.blocks.block_txs(height)]
            result = self.app.finalize_block(BlockContext(height, header.time_ns), txs)
            if result.app_hash.hex() != header.app_hash:
                raise ReplayMismatch(f"block {height}: replay gave a different app hash")
            if outcomes_hash(result.tx_results).hex() != header.results_hash:
                raise ReplayMismatch(f"block {height}: replay gave different transaction results")
            self.app.commit()
            replayed += 1
        return replayed

    # --- the mempool ----------------------------------------------------------------------

    async def submit(self, raw: bytes, wait: bool) -> Submission:
        return await (await self.admit(raw, wait)).outcome()

    async def admit(self, raw: bytes, wait: bool) -> Admission:
        """check_tx by way of the intake (signatures verified ahead, in batches), then the
        mempool: both in arrival order, with no await between a check and its place in the
        mempool (a block made in between would miss it in its recheck)."""
        digest = tx_hash(raw)
        if self.halted is not None:
            return Admission(Submission(digest.hex(), int(Code.INTERNAL), _HALTED))
        return await self._intake.admit(raw, digest, wait)

    def _admit_checked(self, intake: IntakeEntry, checked: TxResult) -> None:
        """Answer a checked submission; an admitted one joins the mempool now (even if its
        submitter went away meanwhile: check_tx has already taken it into the mempool view)."""
        digest = intake.hash.hex()
        if self.halted is not None:
            admission = Admission(Submission(digest, int(Code.INTERNAL), _HALTED))
        elif not checked.ok:
            admission = Admission(Submission(digest, int(checked.code), checked.log))
        else:
            waiting = intake.wait and not intake.answer.done()
            done = intake.answer.get_loop().create_future() if waiting else None
            self._mempool.append(_Pending(intake.raw, intake.hash, done))
            if len(self._mempool) >= self.max_block_txs:
                self._wake.set()
            admission = Admission(Submission(digest, 0), done)
        if not intake.answer.done():
            intake.answer.set_result(admission)

    # --- block production -----------------------------------------------------------------

    async def run(self) -> None:
        """Make blocks until cancelled, or until a fault halts the producer. The signature
        verifier process (`verify_ahead`) runs for as long as this does."""
        if self.verify_ahead and self.verifier is None:
            try:
                self.verifier = await SignatureVerifier.start()
            except OSError:
                log.exception("the signature verifier did not start; verifying inline")
        try:
            while self.halted is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.block_interval)
                self._wake.clear()
                if not self._mempool:
                    continue
                try:
                    self.produce_block()
                except Exception as fault:
                    self._halt(fault)
                    return
                # One block per block time: what the intake admitted meanwhile waits for the
                # next (blocks made back to back while it admits would carry one intake batch
                # each: a block's commit costs nearly as much for 256 registrations as for
                # 2,000). A full block's worth waiting is made at once, after the API's turn.
                if len(self._mempool) >= self.max_block_txs:
                    self._wake.set()
        finally:
            if self.verifier is not None:
                verifier, self.verifier = self.verifier, None
                await verifier.close()  # what it has not answered is verified inline

    def _halt(self, fault: Exception) -> None:
        """Stop for good: a block that failed to execute or commit must not be retried here."""
        self.halted = fault
        log.critical(
            "block producer halted at height %d (%s: %s); the node stops rather than commit a"
            " divergent state. Restart it once the cause is fixed: a stored block is replayed.",
            self._producing,
            type(fault).__name__,
            fault,
        )
        for pending in [*self._in_block, *self._mempool]:  # no block will come for them
            _resolve(pending, Submission(pending.hash.hex(), int(Code.INTERNAL), _HALTED))
        self._mempool.clear()
        if self.on_halt is not None:
            self.on_halt()

    def produce_block(self) -> BlockHeader | None:
        if not self._mempool:
            return None
        batch = [
            self._mempool.popleft() for _ in range(min(len(self._mempool), self.max_block_txs))
        ]
        self._in_block, self._producing = batch, self.blocks.height() + 1
        txs = [p.raw for p in batch]
        height = self.app.info().last_height + 1
        time_ns = self._block_time(height)
        result = self.app.finalize_block(BlockContext(height, time_ns), txs)
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            time_ns=time_ns,
            previous_hash=(self.blocks.stored_hash(height - 1) or b"").hex(),
            data_hash=data_hash(txs).hex(),
            app_hash=result.app_hash.hex(),
            num_txs=len(txs),
            results_hash=outcomes_hash(result.tx_results).hex(),
        )
        self.blocks.save(header, txs, [p.hash for p in batch], result.tx_results)
        self.app.commit()
        for pending, tx_result in zip(batch, result.tx_results, strict=True):
            _resolve(pending, _committed(pending.hash, height, tx_result))
        self._recheck()
        return header

    def _recheck(self) -> None:
        """Re-admit what still waits against the new state (commit reset the mempool view)."""
        waiting, self._mempool = self._mempool, deque()
        for pending in waiting:
            checked = self.app.check_tx(pending.raw, recheck=True)
            if checked.ok:
                self._mempool.append(pending)
            else:
                _resolve(pending, Submission(pending.hash.hex(), int(checked.code), checked.log))

    def _block_time(self, height: int) -> int:
        previous = self.blocks.header(height - 1)
        now = self._clock()
        return max(now, previous.time_ns + 1) if previous else now

    # --- reads ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        info = self.app.info()
        latest = self.blocks.header(info.last_height)
        return {
            "chain_id": info.chain_id,
            "height": info.last_height,
            "app_hash": info.last_app_hash.hex(),
            "latest_block_time": format_time_ns(latest.time_ns) if latest else None,
            "mempool_size": len(self._mempool),
            "consensus": "solo",
        }

    async def block(self, height: int) -> dict[str, Any] | None:
        header = self.blocks.header(height)
        if header is None:
            return None
        stored_hash = self.blocks.stored_hash(height) or b""
        return {
            "hash": stored_hash.hex(),
            "header": header.to_json(),
            "txs": [_tx_summary(t) for t in self.blocks.block_txs(height)],
        }

    async def transaction(self, digest: bytes) -> dict[str, Any] | None:
        stored = self.blocks.tx(digest)
        if stored is None:
            return None
        header = self.blocks.header(stored.height)
        assert header is not None
        block = self.blocks.block_txs(stored.height)
        proof = tx_inclusion_proof([t.raw for t in block], stored.index)
        result_proof = result_inclusion_proof([t.outcome for t in block], stored.index)
        return {
            **_tx_summary(stored),
            "tx": stored.raw.hex(),
            "height": stored.height,
            "header": header.to_json(),
            "proof": proof.to_json(),
            # What wallet/proofs.py checks offline (docs/records.md, "Proofs").
            "evidence": {
                "tx": stored.raw.hex(),
                "height": stored.height,
                "tx_proof": proof.to_json(),
                "result": stored.outcome.to_json(),
                "result_proof": result_proof.to_json(),
                "block": {"consensus": "solo", "header": header.to_json()},
            },
        }

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult:
        # On a snapshot, in a worker thread: a query may take a while (up to 5,000 hashes,
        # each decided against a patient's grants), and the event loop makes the blocks. A
        # point lookup asked `inline` costs less than the hand-off (ConsensusDriver.query).
        if inline:
            return self.app.query_snapshot(path, data)
        return await asyncio.to_thread(self.app.query_snapshot, path, data)


def _resolve(pending: _Pending, outcome: Submission) -> None:
    if pending.done is not None and not pending.done.done():
        pending.done.set_result(outcome)


def _committed(digest: bytes, height: int, result: TxResult) -> Submission:
    events = [{"type": e.type, "attributes": e.attributes} for e in result.events]
    return Submission(digest.hex(), 0, "", height, int(result.code), result.log, events)


def _tx_summary(stored: StoredTx) -> dict[str, Any]:
    return {
        "hash": stored.hash.hex(),
        "index": stored.index,
        "code": stored.code,
        "log": stored.log,
        "events": stored.events,
    }
