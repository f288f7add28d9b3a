"""Validators and validator sets, their hash, and a trusted set read from a genesis file or a
`/validators` answer (`types/validator_set.go`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from careledger.crypto.hashing import sha256
from careledger.crypto.merkle import merkle_root
from careledger.protocol.cometbft.encoding import (
    ED25519_JSON_TYPE,
    LightClientError,
    b64_value,
    bytes_field,
    hex_value,
    int_value,
    varint_field,
)

# --- validators ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Validator:
    pub_key: bytes  # Ed25519, 32 bytes
    power: int

    @property
    def address(self) -> bytes:
        return sha256(self.pub_key)[:20]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Validator:
        """A validator from `/validators` (voting_power) or a genesis file (power)."""
        if not isinstance(data, Mapping):
            raise LightClientError("a validator is a JSON object")
        pub_key = data.get("pub_key") or {}
        if not isinstance(pub_key, Mapping):
            raise LightClientError("a validator's pub_key is a JSON object")
        if pub_key.get("type") != ED25519_JSON_TYPE:
            raise LightClientError(f"validator key type {pub_key.get('type')!r} is not Ed25519")
        key = b64_value(pub_key.get("value"), "validator public key")
        if len(key) != 32:
            raise LightClientError("a validator's Ed25519 key is 32 bytes")
        power = int_value(data.get("voting_power", data.get("power")), "voting power")
        if power <= 0:
            raise LightClientError("a validator's voting power is positive")
        validator = cls(key, power)
        if "address" in data and hex_value(data["address"], "address") != validator.address:
            raise LightClientError("a validator's address is not its key's address")
        return validator

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address.hex().upper(),
            "pub_key": {
                "type": ED25519_JSON_TYPE,
                "value": base64.b64encode(self.pub_key).decode(),
            },
            "voting_power": str(self.power),
        }

    def encode(self) -> bytes:
        """tendermint.types.SimpleValidator{pub_key: PublicKey{ed25519}, voting_power}."""
        public_key = bytes_field(1, self.pub_key, always=True)
        return bytes_field(1, public_key, always=True) + varint_field(2, self.power)


@dataclass(frozen=True)
class ValidatorSet:
    validators: tuple[Validator, ...]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> ValidatorSet:
        """The validators in the order given (a proof's order is what its hash checks)."""
        if not isinstance(data, list) or not data:
            raise LightClientError("a validator set is a non-empty list")
        found = cls(tuple(Validator.from_json(v) for v in data))
        if len({v.address for v in found.validators}) != len(found.validators):
            raise LightClientError("a validator appears twice in the set")
        return found

    @classmethod
    def canonical(cls, validators: Sequence[Validator]) -> ValidatorSet:
        """In CometBFT's order (power descending, then address), as from a genesis file."""
        ordered = sorted(validators, key=lambda v: (-v.power, v.address))
        return cls(tuple(ordered))

    def to_json(self) -> list[dict[str, Any]]:
        return [v.to_json() for v in self.validators]

    def hash(self) -> bytes:
        return merkle_root([v.encode() for v in self.validators])

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def by_address(self, address: bytes) -> Validator | None:
        return next((v for v in self.validators if v.address == address), None)


def trusted_validator_set(document: Any) -> ValidatorSet:
    """A validator set the user trusts, from a CometBFT genesis file, a `/validators` or
    `/genesis` RPC answer, or a plain list of validators; put in CometBFT's order."""
    found = document
    for key in ("result", "genesis"):
        if isinstance(found, Mapping) and key in found:
            found = found[key]
    if isinstance(found, Mapping):
        found = found.get("validators")
    if not isinstance(found, list) or not found:
        raise LightClientError("no validators in the file (a genesis.json or /validators)")
    validators = ValidatorSet.from_json(found)
    return ValidatorSet.canonical(validators.validators)
