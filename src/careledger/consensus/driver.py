"""The one interface through which the node reaches consensus, whichever driver runs.

The solo producer and the CometBFT driver both implement it; the node API and everything above
it know only this.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from careledger.chain.app import QueryResult


@dataclass(frozen=True)
class Submission:
    """A submitted transaction's fate: the mempool's answer and, if waited for, the block's."""

    hash: str
    check_code: int
    check_log: str = ""
    height: int | None = None  # set once committed
    code: int | None = None  # the block's result code
    log: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.check_code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "check_code": self.check_code,
            "check_log": self.check_log,
            "height": self.height,
            "code": self.code,
            "log": self.log,
            "events": self.events,
        }


@dataclass(frozen=True)
class Admission:
    """A transaction the mempool answered: `checked` now, `committed` (if admitted and waited
    for) resolves to the block's answer. Lets a caller learn that a batch is admitted, in
    order, before its block, and submit the next batch (the next nonces) meanwhile."""

    checked: Submission
    committed: Awaitable[Submission] | None = None

    async def outcome(self) -> Submission:
        return self.checked if self.committed is None else await self.committed


class ConsensusDriver(Protocol):
    @property
    def chain_id(self) -> str: ...

    async def submit(self, raw: bytes, wait: bool) -> Submission: ...

    async def admit(self, raw: bytes, wait: bool) -> Admission:
        """Like submit, but returns once the mempool answered; await `committed` for the block."""
        ...

    async def status(self) -> dict[str, Any]: ...

    async def block(self, height: int) -> dict[str, Any] | None:
        """The block's header and transaction hashes (JSON shape of the node API)."""
        ...

    async def transaction(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The transaction, its result, its block header and its Merkle inclusion proof, and
        `evidence`: what a record proof carries (docs/records.md, "Proofs"), or None until
        the driver can give it (CometBFT: block H+1 is not committed yet)."""
        ...

    async def query(self, path: str, data: bytes, *, inline: bool = False) -> QueryResult:
        """A module query on the last committed state. In a worker thread by default (a query
        may take a while, and the event loop makes the blocks); `inline`: on the event loop,
        for a point lookup (one identity, one blob's decision) whose tens of microseconds
        cost less than the hand-off to a thread (BENCHMARKS.md, issue 9)."""
        ...
