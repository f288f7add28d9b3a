"""Erasure on this node: no copy of an erased or orphaned blob outlives its bound.

What is deleted, and when (docs/records.md, "Erasure"):
- The blobs of erased records (ciphertext and every wrapped key, one blob per record
  version, punched out of its segment file: `storage/blobstore.py`): at once, by
  `BlobEraser.on_commit`, an application commit listener run after the erasing block
  commits. A deletion the file system refuses is kept in `pending` and retried by `run`
  with a bounded backoff (RETRY_FIRST doubling up to RETRY_MAX), logged each time, until it
  succeeds; the chain does not wait for it.
- Orphans, blobs uploaded but never anchored (the writer crashed, or its anchor was refused):
  by `run`'s sweep once they are ORPHAN_TTL old (their `stored_at`). Writers anchor within
  seconds of the upload; an anchor for a blob stored longer ago than ANCHORABLE_AGE is refused
  (`anchorable`), so an anchor never races the expiry of its own blob.
- The sweep also deletes any stored blob the chain says is erased (a copy that some path wrote
  after the erase, or a deletion lost with a restart). Bytes of a write that failed or
  crashed are cut off by the store itself (before its next write, and at start-up).
  It runs at start and every SWEEP_INTERVAL; the first pass looks at every blob, later passes
  only at blobs stored since the previous pass's cutoff (older ones were decided already).

Hence the documented bound: no orphan survives ORPHAN_BOUND on a running node, and
`careledger verify` reports an older one as a fault. Which blobs are anchored and which erased
is asked of the records module (`records/blobs`), never read from raw state keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from careledger.chain.app import Application, CommittedBlock, QueryResult
from careledger.chain.modules.records.events import RecordsErased
from careledger.chain.modules.records.queries import MAX_BLOBS_QUERY
from careledger.node.ownership import names, owner_of, stored_owner
from careledger.storage.blobstore import (
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    InvalidBlobHash,
)

log = logging.getLogger(__name__)

# An orphan holds wrapped data keys that no `records/erase` can reach (nothing on the chain
# names it), so its life is bounded. An hour is three orders of magnitude above the seconds a
# writer takes from upload to anchor, and rides out a writer's retry after a node restart; an
# anchor later than ANCHORABLE_AGE is refused with "upload it again", which restarts the clock.
ORPHAN_TTL = 3600.0
SWEEP_INTERVAL = 300.0
ORPHAN_BOUND = ORPHAN_TTL + SWEEP_INTERVAL
# Margin between the last moment an anchor is admitted and the expiry of its blob: an admitted
# anchor commits within seconds unless the chain stalls longer than this.
ANCHOR_MARGIN = 600.0
ANCHORABLE_AGE = ORPHAN_TTL - ANCHOR_MARGIN
RETRY_FIRST = 1.0
RETRY_MAX = 60.0

Query = Callable[[str, bytes], QueryResult]


class ChainQueryFailed(RuntimeError):
    """The records module did not answer which blobs are anchored."""


def anchorable(store: BlobStore, digest: object, *, now: float | None = None) -> bool:
    """The blob is stored here and young enough that its anchor commits before it expires."""
    if not isinstance(digest, str) or digest not in store:
        return False
    try:
        stored_at = store.stored_at(digest)
    except BlobNotFound:
        return False
    return young_enough_to_anchor(stored_at, now)


def young_enough_to_anchor(stored_at: float, now: float | None = None) -> bool:
    """A blob stored at `stored_at` (Unix seconds) may still be anchored (see anchorable)."""
    return (time.time() if now is None else now) - stored_at < ANCHORABLE_AGE


@dataclass(frozen=True)
class SweepReport:
    erased: int  # stored blobs of erased records, deleted
    expired: int  # orphans older than the TTL, deleted
    orphans: int  # younger orphans, kept for now
    temporaries: int  # stale partial writes, deleted


class BlobEraser:
    """Deletes what must not stay: erased records' blobs at once, orphans after ORPHAN_TTL."""

    def __init__(
        self,
        store: BlobStore,
        query: Query,
        *,
        orphan_ttl: float = ORPHAN_TTL,
        sweep_interval: float = SWEEP_INTERVAL,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.query = query
        self.orphan_ttl = orphan_ttl
        self.sweep_interval = sweep_interval
        self.retry_first = retry_first
        self.retry_max = retry_max
        self._clock = clock
        self.pending: set[str] = set()  # erased blobs whose deletion failed, to retry
        self._checked_before: float | None = None  # blobs stored before this were decided
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the chain's view -----------------------------------------------------------------

    def anchors(self, digests: Sequence[str]) -> list[dict[str, Any] | None]:
        """What the records module knows of each blob: its anchor (with `erased_at`) or None."""
        found: list[dict[str, Any] | None] = []
        for start in range(0, len(digests), MAX_BLOBS_QUERY):
            chunk = list(digests[start : start + MAX_BLOBS_QUERY])
            result = self.query("records/blobs", orjson.dumps({"hashes": chunk}))
            if result.code != 0:
                raise ChainQueryFailed(f"records/blobs: {result.log}")
            found += orjson.loads(result.value)
        return found

    def unwanted(self, digests: Sequence[str]) -> set[str]:
        """The blobs among `digests` that no node may keep: erased, or anchoring no record."""
        return {
            digest
            for digest, anchor in zip(digests, self.anchors(digests), strict=True)
            if anchor is None or anchor["erased_at"]
        }

    # --- erasure --------------------------------------------------------------------------

    def on_commit(self, block: CommittedBlock) -> None:
        """Delete the blobs of records erased in this block (an Application commit listener).

        Only a blob whose header names one of the erased records goes: an erasure of a record
        that anchored someone else's blob hash deletes nothing of theirs."""
        self.erase(
            digest
            for result in block.tx_results
            for erased in RecordsErased.all_in(result.events)
            for digest in erased.blob_hashes
            if self._belongs(digest, erased)
        )

    def _belongs(self, digest: str, erased: RecordsErased) -> bool:
        if digest not in self.store:
            return True  # nothing stored to protect
        owner = stored_owner(self.store, digest)
        if owner is not None and owner.patient == erased.patient and owner.record in erased.records:
            return True
        log.warning("erasure names blob %s, whose header names another record: kept", digest)
        return False

    def storable(self, fetched: Mapping[str, bytes]) -> list[str]:
        """The fetched blobs this node may store: anchored, not erased, and naming in their
        header the record that anchored them."""
        digests = list(fetched)
        keep = []
        for digest, anchor in zip(digests, self.anchors(digests), strict=True):
            if anchor is None or anchor["erased_at"]:
                continue
            if names(owner_of(fetched[digest]), anchor["patient"], anchor["record"]):
                keep.append(digest)
            else:
                log.warning("blob %s names another record than its anchor's: not stored", digest)
        return keep

    def erase(self, digests: Iterable[str]) -> int:
        """Delete these blobs now; any the file system refuses is retried later by `run`.
        Returns how many were on disk and are gone."""
        todo = list(digests)
        removed, failures = _delete_all(self.store, todo)
        self._note(todo, failures)
        return removed

    def _note(self, tried: Iterable[str], failures: dict[str, OSError]) -> None:
        for digest in tried:
            if digest not in failures:
                self.pending.discard(digest)
        for digest, error in failures.items():
            if digest not in self.pending:
                log.warning("could not delete erased blob %s (%s); will retry", digest, error)
            self.pending.add(digest)
        if failures:
            self._nudge()

    def _nudge(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- the background task --------------------------------------------------------------

    async def run(self) -> None:
        """Sweep at start and every `sweep_interval`; retry failed deletions meanwhile."""
        self._wake = wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        next_sweep = time.monotonic()
        delay = self.retry_first
        retry_at: float | None = None
        while True:
            now = time.monotonic()
            if now >= next_sweep:
                await self._sweep_logged()
                next_sweep = now + self.sweep_interval
            if retry_at is not None and now >= retry_at:
                retry_at = None
                if self.pending:
                    delay = await self._retry(delay)
            if self.pending and retry_at is None:
                retry_at = time.monotonic() + delay
            wake_at = next_sweep if retry_at is None else min(next_sweep, retry_at)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, wake_at - time.monotonic()))

    async def _retry(self, delay: float) -> float:
        """One more try at the pending deletions; the next delay (doubled while failing)."""
        todo = sorted(self.pending)
        _, failures = await asyncio.to_thread(_delete_all, self.store, todo)
        self._note(todo, failures)
        if not failures:
            log.info("deleted %d erased blob(s) on retry", len(todo))
            return self.retry_first
        following = min(delay * 2, self.retry_max)
        log.warning(
            "%d erased blob(s) still not deleted; next try in %.0f s", len(failures), following
        )
        return following

    async def _sweep_logged(self) -> None:
        try:
            report = await self.sweep()
        except (ChainQueryFailed, OSError, BlobStoreError) as exc:
            log.error("blob sweep failed, trying again in %.0f s: %s", self.sweep_interval, exc)
            return
        if report.erased or report.expired or report.temporaries:
            log.info("blob sweep: %s", report)

    async def sweep(self) -> SweepReport:
        """Delete stored blobs of erased records, orphans older than the TTL, stale temporaries."""
        now = self._clock()
        cutoff = now - self.orphan_ttl
        since = None if self._checked_before is None else self._checked_before - self.sweep_interval
        stored = await asyncio.to_thread(_stored_since, self.store, since)
        erased: list[str] = []
        old_orphans: list[str] = []
        young_orphans = 0
        for start in range(0, len(stored), MAX_BLOBS_QUERY):
            chunk = stored[start : start + MAX_BLOBS_QUERY]
            for (digest, stored_at), anchor in zip(
                chunk, self.anchors([d for d, _ in chunk]), strict=True
            ):
                if anchor is None and stored_at < cutoff:
                    old_orphans.append(digest)
                elif anchor is None:
                    young_orphans += 1
                elif anchor["erased_at"] and names(
                    stored_owner(self.store, digest), anchor["patient"], anchor["record"]
                ):
                    erased.append(digest)
            await asyncio.sleep(0)  # the chain's queries and commits share this loop
        removed, failures = await asyncio.to_thread(_delete_all, self.store, erased)
        self._note(erased, failures)
        expired = await asyncio.to_thread(_expire_all, self.store, old_orphans, cutoff)
        temporaries = await asyncio.to_thread(self.store.remove_stale_temporaries, cutoff)
        self._checked_before = cutoff
        return SweepReport(removed, expired, young_orphans, temporaries)


def sweep_erased(store: BlobStore, app: Application) -> int:
    """Delete stored blobs whose records are erased, now (at start-up: a crash may have
    skipped on_commit). Returns how many were deleted."""
    eraser = BlobEraser(store, app.query)
    return eraser.erase(_erased_among(eraser, list(store)))


def _erased_among(eraser: BlobEraser, digests: list[str]) -> list[str]:
    """The stored blobs whose own record (the one their header names) is erased."""
    anchors = eraser.anchors(digests)
    return [
        digest
        for digest, anchor in zip(digests, anchors, strict=True)
        if anchor is not None
        and anchor["erased_at"]
        and names(stored_owner(eraser.store, digest), anchor["patient"], anchor["record"])
    ]


def _stored_since(store: BlobStore, since: float | None) -> list[tuple[str, float]]:
    return list(store.with_stored_at(since))


def _delete_all(store: BlobStore, digests: Iterable[str]) -> tuple[int, dict[str, OSError]]:
    removed = 0
    failures: dict[str, OSError] = {}
    for digest in digests:
        try:
            removed += store.delete(digest)
        except OSError as exc:
            failures[digest] = exc
        except InvalidBlobHash:  # not a blob hash at all: nothing on disk to delete
            log.error("erasure skipped %r: not a blob hash", digest[:80])
    return removed, failures


def _expire_all(store: BlobStore, digests: Iterable[str], stored_before: float) -> int:
    expired = 0
    for digest in digests:
        try:
            expired += store.expire(digest, stored_before)
        except OSError as exc:
            log.warning("could not delete orphan blob %s (%s); next sweep retries", digest, exc)
    return expired
