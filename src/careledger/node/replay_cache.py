"""The replay cache: the nonces of the signed requests a node accepted, while still fresh.

A captured request replayed within the freshness window carries a nonce this cache holds; one
replayed later fails the freshness check (`crypto/requestsig.py`). Memory is bounded by
`REPLAY_CAPACITY`, and no did may hold more than `REPLAY_SHARE` of it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from careledger.crypto.requestsig import MAX_SKEW_MS, SignedRequest

REPLAY_CAPACITY = 250_000  # about 20 MiB; at most this many requests per skew window
REPLAY_SHARE = REPLAY_CAPACITY // 4  # one did's most (over 500 requests a second, sustained)


class Replayed(Exception):
    """A request whose nonce this node has already accepted."""


class ReplayCacheFull(Exception):
    """The replay cache is at capacity; refusing is the only safe answer."""


class ReplayShareUsed(ReplayCacheFull):
    """One did holds its whole share of the replay cache; only that did is refused."""


@dataclass
class _Bucket:
    """The entries of one timestamp second, and how many of them each did holds."""

    entries: set[bytes] = field(default_factory=set)
    per_did: Counter[str] = field(default_factory=Counter)


class ReplayCache:
    """The nonces of accepted requests, kept while their timestamp is within the skew window.

    Entries are 16-byte digests of (did, nonce), in buckets by timestamp second: a replay
    carries the same timestamp (the signature covers it), so one bucket is searched, and a
    bucket is dropped whole once all its timestamps are too old to pass the freshness check.
    A timestamp may be at most MAX_FUTURE_MS ahead, so an entry lives at most
    window + MAX_FUTURE_MS.

    Only registered callers' requests are remembered (the middleware never asks for an
    unregistered did's), and no did may hold more than `share` entries: filling the cache
    takes `capacity / share` registered identities, each vouched for by a member.
    """

    def __init__(
        self,
        window_ms: int = MAX_SKEW_MS,
        capacity: int = REPLAY_CAPACITY,
        share: int = REPLAY_SHARE,
    ) -> None:
        self.window_ms = window_ms
        self.capacity = capacity
        self.share = min(share, capacity)
        self._buckets: dict[int, _Bucket] = {}
        self._per_did: Counter[str] = Counter()
        self._size = 0
        self._pruned_second = -1

    def __len__(self) -> int:
        return self._size

    def held_by(self, did: str) -> int:
        return self._per_did[did]

    def check(self, signed: SignedRequest) -> None:
        """Replayed if this request was accepted before."""
        bucket = self._buckets.get(signed.ts_ms // 1000)
        if bucket is not None and _entry(signed) in bucket.entries:
            raise Replayed(f"request nonce {signed.nonce} was already used")

    def remember(self, signed: SignedRequest, now_ms: int) -> None:
        """Record an accepted request; Replayed if it already was, ReplayShareUsed if its did
        holds its share, ReplayCacheFull if the cache is full."""
        self._prune(now_ms)
        self.check(signed)
        if self._per_did[signed.did] >= self.share:
            raise ReplayShareUsed(
                f"{signed.did} has made {self._per_did[signed.did]} signed requests in the "
                f"last {self.window_ms // 1000} s, its limit; retry shortly"
            )
        if self._size >= self.capacity:
            raise ReplayCacheFull(
                f"this node has accepted {self._size} signed requests in the last "
                f"{self.window_ms // 1000} s, its limit; retry shortly"
            )
        bucket = self._buckets.setdefault(signed.ts_ms // 1000, _Bucket())
        bucket.entries.add(_entry(signed))
        bucket.per_did[signed.did] += 1
        self._per_did[signed.did] += 1
        self._size += 1

    def _prune(self, now_ms: int) -> None:
        if now_ms // 1000 == self._pruned_second:
            return
        self._pruned_second = now_ms // 1000
        oldest_fresh = now_ms - self.window_ms
        for second in [s for s in self._buckets if s * 1000 + 999 < oldest_fresh]:
            bucket = self._buckets.pop(second)
            self._size -= len(bucket.entries)
            self._per_did -= bucket.per_did  # Counter subtraction drops dids down to 0


def _entry(signed: SignedRequest) -> bytes:
    return hashlib.blake2b(f"{signed.did} {signed.nonce}".encode(), digest_size=16).digest()
