"""Transaction results as block headers commit to them: CometBFT's `LastResultsHash`.

A result's leaf is the protobuf `ExecTxResult` holding only its deterministic fields (code,
data, gas_wanted, gas_used), exactly as CometBFT v0.38's `types.NewResults` strips it; the
root is the RFC 6962 Merkle root over those leaves in block order. Log, info, events and
codespace are left out: they may differ between nodes (and between releases), so nothing
may depend on them. Solo headers carry this root as `results_hash` over the block's own
results; under CometBFT, block H+1's `last_results_hash` is the same root over block H's
results, so one result-proof format serves both drivers.

Pure: no I/O, importable by the wallet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from careledger.crypto.merkle import InclusionProof, inclusion_proof, merkle_root
from careledger.crypto.varint import encode_uvarint

_U64 = 1 << 64
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1

# Field tags of tendermint.abci.ExecTxResult (field number << 3 | wire type).
_CODE_TAG = b"\x08"  # 1: uint32, varint
_DATA_TAG = b"\x12"  # 2: bytes, length-delimited
_GAS_WANTED_TAG = b"\x28"  # 5: int64, varint
_GAS_USED_TAG = b"\x30"  # 6: int64, varint


@dataclass(frozen=True)
class TxOutcome:
    """The part of a transaction's result that a block header commits to."""

    code: int
    data: bytes = b""
    gas_wanted: int = 0
    gas_used: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.code <= _UINT32_MAX:
            raise ValueError(f"result code {self.code} is not a uint32")
        for gas in (self.gas_wanted, self.gas_used):
            if not _INT64_MIN <= gas <= _INT64_MAX:
                raise ValueError(f"gas {gas} is not an int64")

    @property
    def ok(self) -> bool:
        return self.code == 0

    def encode(self) -> bytes:
        """Protobuf bytes, proto3 rules (zero values left out), fields in number order."""
        out = bytearray()
        if self.code:
            out += _CODE_TAG + encode_uvarint(self.code)
        if self.data:
            out += _DATA_TAG + encode_uvarint(len(self.data)) + self.data
        if self.gas_wanted:
            out += _GAS_WANTED_TAG + encode_uvarint(self.gas_wanted % _U64)
        if self.gas_used:
            out += _GAS_USED_TAG + encode_uvarint(self.gas_used % _U64)
        return bytes(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "data": self.data.hex(),
            "gas_wanted": self.gas_wanted,
            "gas_used": self.gas_used,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TxOutcome:
        fields = (data["code"], data["gas_wanted"], data["gas_used"])
        if not all(type(v) is int for v in fields):
            raise ValueError("result code and gas must be integers")
        return cls(data["code"], bytes.fromhex(str(data["data"])), fields[1], fields[2])


def results_hash(outcomes: Sequence[TxOutcome]) -> bytes:
    return merkle_root([o.encode() for o in outcomes])


def result_inclusion_proof(outcomes: Sequence[TxOutcome], index: int) -> InclusionProof:
    """Proof that outcomes[index]'s encoding is leaf `index` under the results root."""
    return inclusion_proof([o.encode() for o in outcomes], index)


class HasOutcome(Protocol):
    """A full result (chain.app.TxResult): it has a code and data, and more not hashed."""

    @property
    def code(self) -> int: ...

    @property
    def data(self) -> bytes: ...


def outcomes_hash(results: Iterable[HasOutcome]) -> bytes:
    """The results root over full results; this application's gas is always 0."""
    return results_hash([TxOutcome(int(r.code), r.data) for r in results])
