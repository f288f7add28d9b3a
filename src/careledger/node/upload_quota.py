"""Per-identity upload quotas: how much blob data one identity may have on a node unanchored.

A blob is uploaded before its anchor; until an anchor names it, it is an orphan that only its
uploader vouches for. Each identity may hold at most `max_bytes` in `max_blobs` such blobs on
a node; an upload over that is refused with 429 `quota_exceeded`, naming the limit. A blob
stops counting once anchored (by anyone) or once `hold_s` has passed since its upload (the
orphan bound, after which the node deletes orphans). Anchoring is noticed lazily: when an
identity reaches its limit, one query asks the chain which of its pending blobs are anchored
now. An identity whose last such check freed nothing is not checked again for
`RECHECK_S`, so a client hammering at its limit costs one query per interval, not one per
request.

The accounting is in memory (bounded: at most `max_blobs` entries per identity that
uploads); a restart forgets it, which only ever favours uploaders, never refuses one wrongly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from careledger.consensus.driver import ConsensusDriver
from careledger.node.erasure import ORPHAN_BOUND
from careledger.node.errors import ApiError
from careledger.protocol.frames import MAX_FETCH

MAX_PENDING_BYTES = 256 * 1024 * 1024
MAX_PENDING_BLOBS = 20_000
# How long an unanchored blob counts: until the node has deleted it as an orphan.
HOLD_S = ORPHAN_BOUND
RECHECK_S = 2.0


@dataclass
class _Pending:
    blobs: dict[str, tuple[int, float]] = field(default_factory=dict)  # hash -> (size, since)
    bytes: int = 0
    reserved_bytes: int = 0
    reserved_blobs: int = 0
    checked_at: float = -math.inf
    check_freed: bool = True

    def over(self, quota: UploadQuota, add_bytes: int, add_blobs: int) -> bool:
        return (
            self.bytes + self.reserved_bytes + add_bytes > quota.max_bytes
            or len(self.blobs) + self.reserved_blobs + add_blobs > quota.max_blobs
        )

    def drop(self, digest: str) -> None:
        size, _ = self.blobs.pop(digest)
        self.bytes -= size

    def idle(self) -> bool:
        return not self.blobs and not self.reserved_blobs


@dataclass(frozen=True)
class Reservation:
    did: str
    bytes: int
    blobs: int


class UploadQuota:
    def __init__(
        self,
        driver: ConsensusDriver,
        *,
        max_bytes: int = MAX_PENDING_BYTES,
        max_blobs: int = MAX_PENDING_BLOBS,
        hold_s: float = HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.max_bytes = max_bytes
        self.max_blobs = max_blobs
        self.hold_s = hold_s
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    def pending_bytes(self, did: str) -> int:
        found = self._pending.get(did)
        return found.bytes if found else 0

    async def reserve(self, did: str, sizes: Sequence[int]) -> Reservation:
        """Room for these blobs; ApiError(429, quota_exceeded) if `did` has none left."""
        pending = self._pending.setdefault(did, _Pending())
        add_bytes, add_blobs = sum(sizes), len(sizes)
        now = self._clock()
        self._expire(pending, now)
        if pending.over(self, add_bytes, add_blobs) and self._may_recheck(pending, now):
            await self._drop_anchored(pending, now)
        if pending.over(self, add_bytes, add_blobs):
            if pending.idle():
                del self._pending[did]
            raise self._exceeded(did, pending, add_bytes)
        pending.reserved_bytes += add_bytes
        pending.reserved_blobs += add_blobs
        return Reservation(did, add_bytes, add_blobs)

    def settle(self, reservation: Reservation, stored: Sequence[tuple[str, int]]) -> None:
        """Turn a reservation into pending blobs (hash, size): those that were stored."""
        pending = self._pending.setdefault(reservation.did, _Pending())
        pending.reserved_bytes -= reservation.bytes
        pending.reserved_blobs -= reservation.blobs
        now = self._clock()
        for digest, size in stored:
            if digest not in pending.blobs:
                pending.blobs[digest] = (size, now)
                pending.bytes += size
        if pending.idle():
            del self._pending[reservation.did]

    def _may_recheck(self, pending: _Pending, now: float) -> bool:
        return pending.check_freed or now - pending.checked_at >= RECHECK_S

    def _expire(self, pending: _Pending, now: float) -> None:
        for digest in [d for d, (_, since) in pending.blobs.items() if now - since > self.hold_s]:
            pending.drop(digest)

    async def _drop_anchored(self, pending: _Pending, now: float) -> None:
        before = len(pending.blobs)
        digests = list(pending.blobs)
        for first in range(0, len(digests), MAX_FETCH):
            chunk = digests[first : first + MAX_FETCH]
            found = await self.driver.query("records/blobs", orjson.dumps({"hashes": chunk}))
            if found.code != 0:
                break
            for digest, anchor in zip(chunk, orjson.loads(found.value), strict=True):
                if anchor is not None and digest in pending.blobs:
                    pending.drop(digest)
        pending.checked_at, pending.check_freed = now, len(pending.blobs) < before

    def _exceeded(self, did: str, pending: _Pending, add_bytes: int) -> ApiError:
        return ApiError(
            429,
            "quota_exceeded",
            f"{did} has {pending.bytes} bytes in {len(pending.blobs)} blobs uploaded but not "
            f"anchored on this node (plus {pending.reserved_bytes} bytes uploading); this "
            f"upload adds {add_bytes}, over the limit of {self.max_bytes} bytes and "
            f"{self.max_blobs} blobs per identity: anchor them, or wait for unanchored "
            f"blobs to expire ({int(self.hold_s)} s), before uploading more",
            {"retry-after": str(int(RECHECK_S))},
        )
