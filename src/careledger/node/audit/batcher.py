"""The node's audit batcher: journaled access entries, committed on chain in signed batches.

A background task of the node (`node/builder.py`). Every `interval` seconds it takes the
oldest journaled entries no batch holds yet (up to what one `audit/record_batch` takes:
MAX_BATCH_ENTRIES entries, the parties and records tables' bounds, MAX_DT seconds between
the first and last, a transaction's bytes), and:

1. encodes and signs the batch with this node's key (`DataDir.node_key`) with the next
   sequence number, and records it in the journal, entries marked, BEFORE submitting it:
   a crash after this point resubmits the same batch, never a different one under that seq;
2. submits it through the node's driver and waits for its block;
3. marks it committed.

At start, and after any failure, it asks the chain (`audit/last_seq`) how far this node's
batches got: an uncommitted batch whose seq the chain already has was committed before the
crash (marked so, once the chain's root of that batch is this batch's: if it is not, another
process signs with this node's key, and the batch is unrecorded and its entries batched
again); the first one it lacks is signed again with a fresh nonce (a nonce spent by a
failed transaction is not reusable) and resubmitted. A failure (the chain refuses, the node
is not yet registered) is logged once per distinct reason and retried with a growing pause:
the entries stay journaled meanwhile, and reads keep being served and journaled.

A batch the chain refuses for good, its time more than a day (the chain's MAX_BATCH_AGE)
before now, is abandoned (`AuditJournal.abandon`, logged as an error) rather than retried
forever: retrying would hold back every entry after it, so a node that was down for a day
would never commit a read again. Its entries stay in the journal, marked as not on chain
(their receipts fail `check_receipt`, which is the truth).

`CARELEDGER_AUDIT_INTERVAL` (seconds, default 0.25) sets the interval of `careledger up` and
network nodes; 0 disables batching (reads are still journaled and receipted): tests use it
to make a node that promises and never commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from careledger.chain.app import QueryResult
from careledger.chain.codes import Code
from careledger.chain.modules.audit.entries import (
    MAX_BATCH_ENTRIES,
    MAX_BATCH_PARTIES,
    MAX_BATCH_RECORDS,
    MAX_DT,
    RECORD_PREFIX_HEX,
    AccessEntry,
    BadBatch,
    decode_batch,
    encode_batch,
    fitting_batch,
)
from careledger.chain.modules.audit.handler import MAX_BATCH_AGE
from careledger.chain.tx import MAX_TX_BYTES, Tx, tx_hash
from careledger.consensus.driver import Admission, Submission
from careledger.crypto.keyfile import KeyFile
from careledger.crypto.merkle import merkle_root
from careledger.node.audit.journal import AuditJournal, JournalBatch
from careledger.node.consent_guard import wall_clock_s

log = logging.getLogger(__name__)

RECORD_BATCH = "audit/record_batch"
INTERVAL_ENV = "CARELEDGER_AUDIT_INTERVAL"
DEFAULT_INTERVAL = 0.25
MAX_PAUSE = 10.0  # seconds between retries after failures, at most
# Batches made and submitted together: admitted one after the other (in seq order), their
# blocks awaited together, so a backlog drains several batches a block, not one.
PIPELINE = 4
ENVELOPE_BYTES = 1024  # chain id, type, sender, nonce and signature around the payload
_ENTRY_FIELDS = frozenset(
    ("patient", "record", "version", "reader", "org", "purpose", "outcome", "at")
)


def interval_from_env(default: float = DEFAULT_INTERVAL) -> float:
    """The batch interval `CARELEDGER_AUDIT_INTERVAL` names (0: no batching); ValueError
    for anything but a non-negative number."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return default
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds >= 0, not {text!r}")
    return value


class BatchDriver(Protocol):
    async def submit(self, raw: bytes, wait: bool) -> Submission: ...

    async def admit(self, raw: bytes, wait: bool) -> Admission: ...

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult: ...


class BatchNotCommitted(Exception):
    """A batch the chain did not take (the message says why); it is retried."""


class AuditBatcher:
    def __init__(
        self,
        journal: AuditJournal,
        driver: BatchDriver,
        node_key: KeyFile,
        chain_id: str,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], int] = wall_clock_s,
    ) -> None:
        self.journal = journal
        self.driver = driver
        self.node_key = node_key
        self.chain_id = chain_id
        self.interval = interval
        self.clock = clock  # unix seconds: how old a refused batch is
        self.committed = 0  # batches committed by this process (tests, logs)
        self._nonce: int | None = None
        self._last_error = ""

    async def run(self) -> None:
        """Batch until cancelled (the node's lifespan)."""
        pause = self.interval
        while True:
            try:
                await self.catch_up()
                while await self.batch_once():
                    pass  # a full batch was taken: the backlog goes on at once
                pause = self.interval
                self._last_error = ""
            except Exception as exc:  # a batcher that dies would audit nothing more
                self._report(str(exc) if isinstance(exc, BatchNotCommitted) else repr(exc))
                pause = min(max(pause * 2, self.interval), MAX_PAUSE)
            await asyncio.sleep(pause)

    async def catch_up(self) -> None:
        """Settle the journal's uncommitted batches with the chain: mark those it has,
        resubmit the first it lacks (and the rest after it, in order)."""
        pending = await self.journal.uncommitted()
        if not pending:
            return
        last = await self._last_seq()
        for batch in pending:
            if batch.seq <= last:
                settled = await self._settle_committed(batch)
            else:
                settled = await self._submit(batch, fresh_nonce=True)
            if not settled:
                return  # given up or unrecorded: the batches after it were unrecorded too

    async def batch_once(self) -> bool:
        """Make, record and commit up to PIPELINE batches from unbatched entries; True if
        they took all they could (more entries may be waiting)."""
        rows = await self.journal.unbatched(PIPELINE * MAX_BATCH_ENTRIES)
        if not rows:
            return False
        seq = max(await self.journal.last_batch_seq(), await self._last_seq()) + 1
        entries = [journaled_entry(r.entry) for r in rows]
        batches: list[JournalBatch] = []
        taken = 0
        while taken < len(rows) and len(batches) < PIPELINE:
            count, payload = self._fitting(seq, entries[taken:])
            raw = await self._sign(payload)
            first = rows[taken].seq
            batch = JournalBatch(seq, first, count, payload, raw, tx_hash(raw).hex(), False, None)
            await self.journal.add_batch(batch)  # before submitting: a crash resubmits it
            batches.append(batch)
            taken, seq = taken + count, seq + 1
        await self._submit_all(batches)
        return taken == PIPELINE * MAX_BATCH_ENTRIES or taken < len(rows)

    async def _submit_all(self, batches: Sequence[JournalBatch]) -> None:
        """Admit the batches in seq order, then wait for their blocks. The first the mempool
        refuses is settled with its refusal (found on chain, abandoned, or
        BatchNotCommitted); those after it stay recorded, uncommitted, for the next run's
        `catch_up` (an abandoned or unrecorded batch unrecords them: the chain took none)."""
        admitted: list[tuple[JournalBatch, Admission]] = []
        for batch in batches:
            admission = await self.driver.admit(batch.tx, True)
            admitted.append((batch, admission))
            if not admission.checked.accepted:
                break
        for batch, admission in admitted:
            if not await self._settle(batch, await admission.outcome()):
                return

    def _fitting(self, seq: int, entries: Sequence[AccessEntry]) -> tuple[int, dict[str, Any]]:
        """How many leading entries one batch takes (at least one), and its payload."""
        parties: set[str] = set()
        records: set[str] = set()
        low = high = entries[0].at
        n = 0
        for entry in entries[:MAX_BATCH_ENTRIES]:  # no batch holds more: look no further
            parties |= {p for p in (entry.patient, entry.reader, entry.org) if p}
            if entry.record:
                records.add(entry.record[:RECORD_PREFIX_HEX])
            low, high = min(low, entry.at), max(high, entry.at)
            if (
                len(parties) > MAX_BATCH_PARTIES
                or len(records) > MAX_BATCH_RECORDS
                or high - low > MAX_DT
            ):
                break
            n += 1
        max_bytes = MAX_TX_BYTES - ENVELOPE_BYTES
        # The usual case, every entry within the table bounds fits the bytes: one encoding
        # (which checks every entry) serves as both the size test and the payload; else a
        # few more (distinct records: about 1,100 entries fit of 2,000).
        count, payload = fitting_batch(self.node_key.did, seq, entries[: max(n, 1)], max_bytes)
        if payload is None:  # not even one fits (an entry is far under max_bytes): one alone
            return 1, encode_batch(self.node_key.did, seq, entries[:1])
        return count, payload

    async def _submit(self, batch: JournalBatch, fresh_nonce: bool) -> bool:
        """Submit and mark committed (True); False if the batch was abandoned (refused for
        good); BatchNotCommitted for a refusal worth retrying."""
        if fresh_nonce:
            batch = await self._signed_again(batch)
        return await self._settle(batch, await self.driver.submit(batch.tx, wait=True))

    async def _settle(self, batch: JournalBatch, submission: Submission) -> bool:
        """Mark the batch committed, or find it on chain (True); abandon or unrecord it
        (False); or raise BatchNotCommitted."""
        if submission.accepted and submission.code == 0:
            await self.journal.mark_committed(batch.seq, submission.height, batch.tx_hash)
            self.committed += 1
            return True
        self._nonce = None  # spent or not, ask the chain before the next signature
        if await self._last_seq() >= batch.seq:  # it made it after all (an earlier try)?
            return await self._settle_committed(batch)
        why = submission.check_log if not submission.accepted else submission.log
        code = submission.check_code if not submission.accepted else submission.code
        if code == Code.BAD_BATCH and self._too_old(batch):
            # Refused for good (it would be at every retry) and holding back every entry
            # after it: give it up, say so, and go on with the next entries.
            await self.journal.abandon(batch.seq)
            log.error(
                "audit batch %d abandoned: the chain refuses it for good (%s); its %d "
                "entries stay in the journal, not on chain",
                batch.seq,
                why,
                batch.count,
            )
            return False
        raise BatchNotCommitted(f"audit batch {batch.seq} was not committed: {why}")

    def _too_old(self, batch: JournalBatch) -> bool:
        """Whether the batch's time lies more than the chain's MAX_BATCH_AGE before now: no
        later block takes it (a batch dated ahead of the block, or malformed, is retried)."""
        return int(batch.payload["time"]) < self.clock() - MAX_BATCH_AGE

    async def _settle_committed(self, batch: JournalBatch) -> bool:
        """Mark a batch whose number the chain already has, with the transaction that carried
        it there (an earlier submission than the journal's last signature, maybe): True. If
        the chain's batch of that number has other entries (its root differs: another process
        signs with this node's key), this one was never committed: it is unrecorded, its
        entries batched again under the next numbers, and False."""
        seq = batch.seq
        found = await self._query("audit/batch", {"node": self.node_key.did, "seq": str(seq)})
        ours = merkle_root([e.leaf() for e in decode_batch(batch.payload)]).hex()
        if found["root"] != ours:
            await self.journal.unrecord(seq)
            log.error(
                "audit batch %d on chain (tx %s) holds other entries than this node's batch %d: "
                "is another process signing with this node's key? Its %d entries are batched "
                "again",
                seq,
                found["tx"],
                seq,
                batch.count,
            )
            return False
        await self.journal.mark_committed(seq, int(found["height"]), str(found["tx"]))
        self.committed += 1
        return True

    async def _signed_again(self, batch: JournalBatch) -> JournalBatch:
        raw = await self._sign(batch.payload)
        digest = tx_hash(raw).hex()
        await self.journal.replace_tx(batch.seq, raw, digest)
        return JournalBatch(
            batch.seq, batch.first, batch.count, batch.payload, raw, digest, False, None
        )

    async def _sign(self, payload: dict[str, Any]) -> bytes:
        if self._nonce is None:
            found = await self._query("auth/nonce", {"did": self.node_key.did})
            self._nonce = int(found["last_nonce"])
        self._nonce += 1
        tx = Tx(self.chain_id, RECORD_BATCH, self.node_key.did, self._nonce, payload)
        return tx.sign(self.node_key.identity)

    async def _last_seq(self) -> int:
        return int((await self._query("audit/last_seq", {"node": self.node_key.did}))["seq"])

    async def _query(self, path: str, params: dict[str, str]) -> Any:
        found = await self.driver.query(path, orjson.dumps(params))
        if found.code != 0:
            raise BatchNotCommitted(f"cannot ask the chain {path}: {found.log}")
        return orjson.loads(found.value)

    def _report(self, error: str) -> None:
        if error != self._last_error:  # once per distinct reason, not every retry
            log.error("%s (the entries stay journaled; retrying)", error)
            self._last_error = error


def journaled_entry(data: Mapping[str, Any]) -> AccessEntry:
    """An entry as this node's journal holds it (`AccessEntry.to_json`), its fields' types
    checked (BadBatch otherwise). Its values are checked once, by `encode_batch`, before
    any batch holding it is signed (`from_json` checked them a second time)."""
    if not isinstance(data, Mapping) or set(data) != _ENTRY_FIELDS:
        raise BadBatch(f"a journaled access entry has exactly the fields {sorted(_ENTRY_FIELDS)}")
    texts = [data[n] for n in _ENTRY_FIELDS if n not in ("version", "at")]
    numbers = (data["version"], data["at"])
    if not all(type(t) is str for t in texts) or not all(type(n) is int for n in numbers):
        raise BadBatch("an access entry's fields are strings, 'version' and 'at' integers")
    return AccessEntry(**data)
