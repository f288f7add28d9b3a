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

from careledger.chain.app import Application, BlockContext, PreparedBatch, QueryResult, TxResult
from careledger.chain.block import BlockHeader, data_hash, format_time_ns, tx_inclusion_proof
from careledger.chain.codes import Code
from careledger.chain.results import outcomes_hash, result_inclusion_proof
from careledger.chain.tx import tx_hash
from careledger.consensus.driver import Admission, Submission
from careledger.consensus.solo.blockstore import BlockStore, StoredTx
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


@dataclass
class _Intake:
    raw: bytes
    hash: bytes
    wait: bool
    answer: asyncio.Future[Admission]


# Transactions checked together: one batch's signatures go to the verifier process in one
# request (verifier.py) while the batches before it are checked on the event loop.
INTAKE_BATCH = 256
# A batch this small, with nothing ahead of it, is checked at once on the event loop: the
# hand-off to the worker costs more than it saves, and a lone submission is answered without
# waiting for another process.
INLINE_BATCH = 8
# Batches decoded and read ahead of their check: the worker's and those the loop may verify
# itself rather than wait; few enough that what is verified ahead is read against a recent
# mempool view.
VERIFY_AHEAD = 12
# Batches with the worker at once: enough to keep it busy while the loop makes a block (four
# batches of verification last about as long as a block of 2,000 registrations takes; with
# eight, the loop verified 20 of 75 batches itself instead of 30, and spent 0.25 ms of CPU
# per registration instead of 0.27, on a quiet machine).
WORKER_DEPTH = 8
# Turns of the event loop a batch's check gives the worker's answer to arrive (a pipe's data
# reaches the waiting future in about three) before the loop verifies a later batch itself.
ANSWER_TURNS = 3
# Seconds the loop waits for the worker's answer to the oldest batch, once it has nothing
# left to verify itself, before it gives the worker up (verifier.py `give_up`): a batch of
# 256 registrations takes the worker about 30 ms, eight of them well under a second even on
# a busy machine; a worker that has not answered in this long is stopped or stuck.
VERDICT_PATIENCE = 10.0


@dataclass
class _Ahead:
    """A batch from the intake, decoded and read ahead; its signatures verified by the worker
    (`verdicts`, once sent) or on the loop (`prepared.valid`), or by check_tx."""

    intakes: list[_Intake]
    prepared: PreparedBatch
    verdicts: asyncio.Future[list[bool] | None] | None = None

    def settled(self) -> PreparedBatch:
        """The batch with the worker's verdicts, if it gave them (None: verified inline)."""
        if self.prepared.valid is None and self.verdicts is not None and self.verdicts.done():
            self.prepared.valid = self.verdicts.result()
        return self.prepared


async def _answered(head: _Ahead) -> bool:
    """Whether the batch needs no more of the worker (answered, or never sent), after a few
    turns of the event loop for an answer on its way."""
    verdicts = head.verdicts
    if verdicts is None:
        return True
    for _ in range(ANSWER_TURNS):
        if verdicts.done():
            return True
        await asyncio.sleep(0)
    return verdicts.done()


def _verify_newest_unsent(ahead: deque[_Ahead]) -> bool:
    """Verify, on the loop, the signatures of the newest batch the worker has not been sent
    (the work the worker would reach last); False when there is none."""
    for waiting in reversed(ahead):
        if waiting.verdicts is None and waiting.prepared.valid is None:
            waiting.prepared.verify()
            return True
    return False


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
        # Submissions wait here for check_tx, in arrival order (the mempool's order). One
        # task drains it in batches; a worker process verifies their signatures ahead.
        self._intake: deque[_Intake] = deque()
        self._draining: asyncio.Task[None] | None = None
        # Verify the intake's signatures ahead in a worker process (verifier.py), started and
        # stopped by `run`. None: when the machine has a second core for it.
        self.verify_ahead = worth_a_process() if verify_ahead is None else verify_ahead
        self.verifier: SignatureVerifier | None = None

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
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Admission] = loop.create_future()
        self._intake.append(_Intake(raw, digest, wait, answer))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain_intake())
        return await answer

    def _admit_checked(self, intake: _Intake, checked: TxResult) -> None:
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

    async def _drain_intake(self) -> None:
        """Check what waits in the intake, batch after batch, in arrival order.

        With a verifier process, a pipeline: each batch is decoded and read ahead on the loop
        (up to VERIFY_AHEAD batches), its signatures sent to the worker (WORKER_DEPTH batches
        with it at a time), and the oldest batch checked on the loop once its answer is in,
        while the worker verifies the next ones. Rather than wait for the worker (a machine
        whose other core is busy), the loop verifies the newest batch not yet sent itself.
        What is verified ahead only fills the application's signature cache, under the key
        each signature verified with; check_batch decides as check_tx does, against the
        state of its own moment, so no answer depends on who verified (a batch the worker did
        not answer is verified inline). Without a verifier, each batch is checked on the loop.
        """
        ahead: deque[_Ahead] = deque()
        try:
            while True:
                verifier = self.verifier if self.verifier and self.verifier.alive else None
                self._take_ahead(ahead, verifier)
                if not ahead:
                    return
                head = ahead[0]
                if not await _answered(head):
                    if _verify_newest_unsent(ahead):
                        continue  # the worker may have answered meanwhile
                    await self._await_worker(head)
                # Answered before it leaves `ahead`: if checking it fails, the fallback
                # below still finds (and answers) its submissions.
                self._answer_checks(head.intakes, head.settled())
                ahead.popleft()
                await asyncio.sleep(0)  # let the API and the block producer in between
        except Exception:  # never leave a submission unanswered: check the rest one by one
            log.exception("the intake's batch check failed; checking one by one")
            for intake in [*(i for a in ahead for i in a.intakes), *self._intake]:
                if not intake.answer.done():
                    self._admit_checked(intake, self.app.check_tx(intake.raw))
            self._intake.clear()

    async def _await_worker(self, head: _Ahead) -> None:
        """Wait for the worker's answer to the oldest batch, for VERDICT_PATIENCE at most: a
        worker that stops answering without dying (stopped, swapped out, stuck) is given up
        (killed; every batch it has not answered is verified inline), never waited for
        forever while every submission waits behind it."""
        assert head.verdicts is not None  # not answered: sent
        done, _ = await asyncio.wait([head.verdicts], timeout=VERDICT_PATIENCE)
        if not done and self.verifier is not None:
            self.verifier.give_up(f"no answer in {VERDICT_PATIENCE:g} s")

    def _take_ahead(self, ahead: deque[_Ahead], verifier: SignatureVerifier | None) -> None:
        """Decode and read ahead what the intake holds, up to VERIFY_AHEAD batches, and keep
        WORKER_DEPTH of them with the verifier. A small batch with nothing ahead of it is
        checked at once, inline."""
        if verifier is not None:
            self._feed_worker(ahead, verifier)
        while len(ahead) < (VERIFY_AHEAD if verifier else 1) and self._intake:
            batch = self._take_intake()
            if not ahead and len(batch) <= INLINE_BATCH:
                for intake in batch:  # signatures verified inline, by check_tx
                    self._admit_checked(intake, self.app.check_tx(intake.raw))
                continue
            raws = [i.raw for i in batch]
            ahead.append(_Ahead(batch, self.app.prepare_batch(raws, signatures=bool(verifier))))
            if verifier is not None:  # at once: the worker starts while the loop decodes on
                self._feed_worker(ahead, verifier)

    @staticmethod
    def _feed_worker(ahead: deque[_Ahead], verifier: SignatureVerifier) -> None:
        """Send the oldest batches not yet verified to the worker, WORKER_DEPTH with it at most."""
        with_worker = sum(1 for a in ahead if a.verdicts is not None and not a.verdicts.done())
        for waiting in ahead:
            if with_worker >= WORKER_DEPTH:
                return
            if waiting.verdicts is None and waiting.prepared.valid is None:
                waiting.verdicts = verifier.verify(waiting.prepared.checks)
                with_worker += 1

    def _take_intake(self) -> list[_Intake]:
        return [self._intake.popleft() for _ in range(min(INTAKE_BATCH, len(self._intake)))]

    def _answer_checks(self, batch: list[_Intake], prepared: PreparedBatch) -> None:
        for intake, result in zip(batch, self.app.check_batch(prepared), strict=True):
            self._admit_checked(intake, result)

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
