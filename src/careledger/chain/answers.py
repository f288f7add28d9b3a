"""What the application answers its drivers (the solo producer and the ABCI server): the
ABCI-shaped results of check_tx, finalize_block, info and query, and what a commit listener
is told. Re-exported by chain/app.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from careledger.chain.codes import Code
from careledger.chain.modules.base import Event, ValidatorUpdate


@dataclass(frozen=True)
class TxResult:
    code: int
    log: str = ""
    data: bytes = b""
    events: tuple[Event, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


@dataclass(frozen=True)
class BlockContext:
    height: int
    time_ns: int


@dataclass(frozen=True)
class FinalizeResult:
    tx_results: list[TxResult]
    validator_updates: list[ValidatorUpdate]
    app_hash: bytes


@dataclass(frozen=True)
class AppInfo:
    last_height: int
    last_app_hash: bytes
    chain_id: str


@dataclass(frozen=True)
class QueryResult:
    code: int
    log: str = ""
    value: bytes = b""
    height: int = 0


@dataclass(frozen=True)
class CommittedBlock:
    """What a commit listener is told: the block's transactions and each one's result."""

    height: int
    time_ns: int
    txs: list[bytes]
    tx_results: list[TxResult]


CommitListener = Callable[[CommittedBlock], None]
