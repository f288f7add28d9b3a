"""The solo producer's intake: submissions checked by check_tx in batches, in arrival order.

Submissions wait in the intake in arrival order (the mempool's order); one task drains it
batch after batch. Each batch is decoded and read ahead on the event loop, its signatures
verified ahead by the verifier process (verifier.py) when there is one, then checked by
check_batch; each checked submission goes to the producer's `admit_checked`, which answers it
and puts an admitted one in the mempool, with no await between its check and its place there.
The producer (producer.py) owns the verifier process and the mempool; this module owns the
pipeline between a submission's arrival and its check.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from careledger.chain.app import Application, PreparedBatch, TxResult
from careledger.chain.auth import SignatureCheck, verify_checks
from careledger.consensus.driver import Admission
from careledger.consensus.solo.verifier import SignatureVerifier

log = logging.getLogger(__name__)


@dataclass
class IntakeEntry:
    """A submission waiting for its check; `answer` is set once it is checked."""

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
# Signatures the loop verifies itself (about 2 ms) before it looks at the oldest batch again:
# it verifies a later batch only while it waits for the worker, and a whole batch (about 30
# ms) kept it verifying, serving nothing else, well after the worker's answer had come.
STEAL_SLICE = 32


@dataclass
class _Ahead:
    """A batch from the intake, decoded and read ahead; its signatures verified by the worker
    (`verdicts`, once sent), on the loop (`on_loop`, a slice at a time, then
    `prepared.valid`), both (the loop's first slices, the worker the rest), or by check_tx."""

    intakes: list[IntakeEntry]
    prepared: PreparedBatch
    verdicts: asyncio.Future[list[bool] | None] | None = None
    on_loop: list[bool] = field(default_factory=list)  # the first checks' verdicts, in order

    def unsent(self) -> bool:
        """Neither sent to the worker nor wholly verified on the loop."""
        return self.verdicts is None and self.prepared.valid is None

    def rest(self) -> list[SignatureCheck]:
        """The checks the loop has not verified: what the worker is sent."""
        return self.prepared.checks[len(self.on_loop) :]

    def verify_slice(self) -> None:
        """Verify the next STEAL_SLICE checks on the loop; the last slice settles the batch."""
        done = len(self.on_loop)
        self.on_loop += verify_checks(self.prepared.checks[done : done + STEAL_SLICE])
        if len(self.on_loop) == len(self.prepared.checks):
            self.prepared.valid = self.on_loop

    def settled(self) -> PreparedBatch:
        """The batch with the verdicts it has: the loop's and the worker's, or the loop's
        alone when the worker did not answer (check_tx verifies the rest inline)."""
        prepared = self.prepared
        if prepared.valid is None:
            verdicts = self.verdicts
            rest = verdicts.result() if verdicts is not None and verdicts.done() else None
            if rest is not None:
                prepared.valid = self.on_loop + rest
            elif self.on_loop:
                prepared.checks = prepared.checks[: len(self.on_loop)]
                prepared.valid = self.on_loop
        return prepared


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
    """Verify, on the loop, a slice of the signatures of the newest batch the worker has not
    been sent (the work the worker would reach last); False when there is none."""
    for waiting in reversed(ahead):
        if waiting.unsent():
            waiting.verify_slice()
            return True
    return False


class Intake:
    """The pipeline from a submission's arrival to its check. `verifier` gives the producer's
    verifier process (None: none started), `admit_checked` takes each checked submission."""

    def __init__(
        self,
        app: Application,
        verifier: Callable[[], SignatureVerifier | None],
        admit_checked: Callable[[IntakeEntry, TxResult], None],
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._admit_checked = admit_checked
        self._waiting: deque[IntakeEntry] = deque()
        self._draining: asyncio.Task[None] | None = None

    async def admit(self, raw: bytes, digest: bytes, wait: bool) -> Admission:
        """Queue a submission behind those before it; its answer once it is checked."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Admission] = loop.create_future()
        self._waiting.append(IntakeEntry(raw, digest, wait, answer))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain_intake())
        return await answer

    async def _drain_intake(self) -> None:
        """Check what waits in the intake, batch after batch, in arrival order.

        With a verifier process, a pipeline: each batch is decoded and read ahead on the loop
        (up to VERIFY_AHEAD batches), its signatures sent to the worker (WORKER_DEPTH batches
        with it at a time), and the oldest batch checked on the loop once its answer is in,
        while the worker verifies the next ones. Rather than wait for the worker (a machine
        whose other core is busy), the loop verifies the newest batch not yet sent itself, a
        slice at a time, looking at the oldest again after each (the worker is sent the rest).
        What is verified ahead only fills the application's signature cache, under the key
        each signature verified with; check_batch decides as check_tx does, against the
        state of its own moment, so no answer depends on who verified (a batch the worker did
        not answer is verified inline). Without a verifier, each batch is checked on the loop.
        """
        ahead: deque[_Ahead] = deque()
        try:
            while True:
                current = self._verifier()
                verifier = current if current and current.alive else None
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
            for intake in [*(i for a in ahead for i in a.intakes), *self._waiting]:
                if not intake.answer.done():
                    self._admit_checked(intake, self.app.check_tx(intake.raw))
            self._waiting.clear()

    async def _await_worker(self, head: _Ahead) -> None:
        """Wait for the worker's answer to the oldest batch, for VERDICT_PATIENCE at most: a
        worker that stops answering without dying (stopped, swapped out, stuck) is given up
        (killed; every batch it has not answered is verified inline), never waited for
        forever while every submission waits behind it."""
        assert head.verdicts is not None  # not answered: sent
        done, _ = await asyncio.wait([head.verdicts], timeout=VERDICT_PATIENCE)
        verifier = self._verifier()
        if not done and verifier is not None:
            verifier.give_up(f"no answer in {VERDICT_PATIENCE:g} s")

    def _take_ahead(self, ahead: deque[_Ahead], verifier: SignatureVerifier | None) -> None:
        """Decode and read ahead what the intake holds, up to VERIFY_AHEAD batches, and keep
        WORKER_DEPTH of them with the verifier. A small batch with nothing ahead of it is
        checked at once, inline."""
        if verifier is not None:
            self._feed_worker(ahead, verifier)
        while len(ahead) < (VERIFY_AHEAD if verifier else 1) and self._waiting:
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
        """Send the oldest batches not yet verified to the worker, WORKER_DEPTH with it at most.

        The newest batch stays with the loop while the worker has one: should the loop run
        out of batches to check before the worker answers (a request or two of 500 over HTTP
        is two to four batches), it verifies that one itself meanwhile, slice by slice, instead
        of idling for a whole batch's verification; a later batch sends on what it has not
        verified."""
        with_worker = sum(1 for a in ahead if a.verdicts is not None and not a.verdicts.done())
        for waiting in ahead:
            if with_worker >= WORKER_DEPTH or (with_worker and waiting is ahead[-1]):
                return
            if waiting.unsent():
                waiting.verdicts = verifier.verify(waiting.rest())
                with_worker += 1

    def _take_intake(self) -> list[IntakeEntry]:
        return [self._waiting.popleft() for _ in range(min(INTAKE_BATCH, len(self._waiting)))]

    def _answer_checks(self, batch: list[IntakeEntry], prepared: PreparedBatch) -> None:
        for intake, result in zip(batch, self.app.check_batch(prepared), strict=True):
            self._admit_checked(intake, result)
