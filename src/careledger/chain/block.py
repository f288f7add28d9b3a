"""Blocks: a header chained by hash, committing to its transactions and their results.

`data_hash` is the RFC 6962 root over the SHA-256 of each transaction, as CometBFT computes it,
and `results_hash` the root over each transaction's deterministic result (chain/results.py,
CometBFT's `LastResultsHash`), so one proof format serves both drivers and a proof shows that
a transaction succeeded, not only that it was included. In solo mode `app_hash` and
`results_hash` are this block's; under CometBFT a header carries the app hash and the results
root of the block before it (CometBFT's rule), which the node API records as `app_hash_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.hashing import sha256
from careledger.crypto.merkle import InclusionProof, inclusion_proof, merkle_root


@dataclass(frozen=True)
class BlockHeader:
    chain_id: str
    height: int
    time_ns: int
    previous_hash: str  # hex; empty for the first block
    data_hash: str  # hex Merkle root of the transactions
    app_hash: str  # hex
    num_txs: int
    results_hash: str  # hex Merkle root of the transactions' results (chain/results.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "time": format_time_ns(self.time_ns),
            "previous_hash": self.previous_hash,
            "data_hash": self.data_hash,
            "app_hash": self.app_hash,
            "num_txs": self.num_txs,
            "results_hash": self.results_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockHeader:
        return cls(
            chain_id=str(data["chain_id"]),
            height=int(data["height"]),
            time_ns=parse_time_ns(str(data["time"])),
            previous_hash=str(data["previous_hash"]),
            data_hash=str(data["data_hash"]),
            app_hash=str(data["app_hash"]),
            num_txs=int(data["num_txs"]),
            results_hash=str(data["results_hash"]),
        )

    def hash(self) -> bytes:
        return sha256(canonical_bytes(self.to_json()))


def format_time_ns(time_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as CometBFT writes block times."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def parse_time_ns(text: str) -> int:
    """The inverse of format_time_ns; also takes fewer fractional digits or none."""
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not RFC 3339 UTC")
    whole, _, fraction = text[:-1].partition(".")
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    if not fraction.isdigit() and fraction:
        raise ValueError(f"time {text!r} has a bad fraction")
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


def data_hash(txs: list[bytes]) -> bytes:
    return merkle_root([sha256(tx) for tx in txs])


def tx_inclusion_proof(txs: list[bytes], index: int) -> InclusionProof:
    """Proof that SHA-256(txs[index]) is a leaf under the block's data_hash."""
    return inclusion_proof([sha256(tx) for tx in txs], index)
