"""CometBFT block ids and headers, and the header hash (`types/block.go`, `Header.Hash`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from careledger.crypto.merkle import merkle_root
from careledger.protocol.cometbft.encoding import (
    LightClientError,
    bytes_field,
    format_time,
    hex_value,
    int_value,
    parse_time,
    timestamp_bytes,
    varint_field,
)

# --- block ids and headers -----------------------------------------------------------------


@dataclass(frozen=True)
class BlockID:
    hash: bytes
    parts_total: int
    parts_hash: bytes

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlockID:
        parts = data.get("parts") or {}
        return cls(
            hex_value(data.get("hash"), "block id hash"),
            int_value(parts.get("total", 0), "part set total"),
            hex_value(parts.get("hash"), "part set hash"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash.hex().upper(),
            "parts": {"total": self.parts_total, "hash": self.parts_hash.hex().upper()},
        }

    @property
    def is_zero(self) -> bool:
        return not self.hash and not self.parts_total and not self.parts_hash

    def _part_set_header(self) -> bytes:
        return varint_field(1, self.parts_total) + bytes_field(2, self.parts_hash)

    def encode(self) -> bytes:
        """tendermint.types.BlockID (the part set header is non-nullable: always written)."""
        return bytes_field(1, self.hash) + bytes_field(2, self._part_set_header(), always=True)

    def encode_canonical(self) -> bytes:
        """tendermint.types.CanonicalBlockID: the same fields, as a vote signs them."""
        return self.encode()


_HASH_FIELDS = (
    "last_commit_hash",
    "data_hash",
    "validators_hash",
    "next_validators_hash",
    "consensus_hash",
    "app_hash",
    "last_results_hash",
    "evidence_hash",
    "proposer_address",
)


@dataclass(frozen=True)
class Header:
    version_block: int
    version_app: int
    chain_id: str
    height: int
    time: tuple[int, int]  # (seconds, nanos) since the Unix epoch
    last_block_id: BlockID
    last_commit_hash: bytes
    data_hash: bytes
    validators_hash: bytes
    next_validators_hash: bytes
    consensus_hash: bytes
    app_hash: bytes
    last_results_hash: bytes
    evidence_hash: bytes
    proposer_address: bytes

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Header:
        """A header as CometBFT's RPC writes it (`/block`, `/commit`)."""
        try:
            version = data["version"]
            return cls(
                int_value(version.get("block", 0), "version.block"),
                int_value(version.get("app", 0), "version.app"),
                str(data["chain_id"]),
                int_value(data["height"], "height"),
                parse_time(str(data["time"])),
                BlockID.from_json(data["last_block_id"]),
                *(hex_value(data[name], name) for name in _HASH_FIELDS),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise LightClientError(f"not a CometBFT header: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": {"block": str(self.version_block), "app": str(self.version_app)},
            "chain_id": self.chain_id,
            "height": str(self.height),
            "time": format_time(*self.time),
            "last_block_id": self.last_block_id.to_json(),
            **{name: getattr(self, name).hex().upper() for name in _HASH_FIELDS},
        }

    def hash(self) -> bytes:
        """CometBFT's Header.Hash: the Merkle root over the proto-encoded fields."""
        version = varint_field(1, self.version_block) + varint_field(2, self.version_app)
        return merkle_root(
            [
                version,
                bytes_field(1, self.chain_id.encode()),  # StringValue
                varint_field(1, self.height),  # Int64Value
                timestamp_bytes(*self.time),
                self.last_block_id.encode(),
                *(bytes_field(1, getattr(self, name)) for name in _HASH_FIELDS),  # BytesValue
            ]
        )
