"""Commits: vote sign bytes, full and trusting verification, and a block certified by the
next block's commit (`types/vote.go`, `types/validator_set.go` VerifyCommit*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from careledger.crypto.keys import verify_signature
from careledger.crypto.varint import encode_uvarint
from careledger.protocol.cometbft.encoding import (
    FLAG_ABSENT,
    FLAG_COMMIT,
    FLAG_NIL,
    PRECOMMIT_TYPE,
    LightClientError,
    b64_value,
    bytes_field,
    hex_value,
    int_value,
    parse_time,
    sfixed64_field,
    timestamp_bytes,
    varint_field,
)
from careledger.protocol.cometbft.headers import BlockID, Header
from careledger.protocol.cometbft.validators import Validator, ValidatorSet

# --- commits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitSig:
    flag: int
    validator_address: bytes
    time: tuple[int, int]
    signature: bytes

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommitSig:
        flag = int_value(data.get("block_id_flag"), "block_id_flag")
        if flag not in (FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL):
            raise LightClientError(f"unknown block_id_flag {flag}")
        if flag == FLAG_ABSENT:
            return cls(flag, b"", (0, 0), b"")
        return cls(
            flag,
            hex_value(data.get("validator_address"), "validator address"),
            parse_time(str(data.get("timestamp"))),
            b64_value(data.get("signature"), "signature"),
        )


@dataclass(frozen=True)
class Commit:
    height: int
    round: int
    block_id: BlockID
    signatures: tuple[CommitSig, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Commit:
        """A commit as `/commit` writes it under signed_header.commit (or a block's
        last_commit)."""
        try:
            return cls(
                int_value(data["height"], "commit height"),
                int_value(data["round"], "commit round"),
                BlockID.from_json(data["block_id"]),
                tuple(CommitSig.from_json(s) for s in data["signatures"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise LightClientError(f"not a CometBFT commit: {exc}") from None

    def vote_sign_bytes(self, chain_id: str, index: int) -> bytes:
        """What validator `index` signed: CometBFT's VoteSignBytes of its precommit."""
        sig = self.signatures[index]
        block_id = self.block_id if sig.flag == FLAG_COMMIT else BlockID(b"", 0, b"")
        return vote_sign_bytes(chain_id, self.height, self.round, block_id, sig.time)


def vote_sign_bytes(
    chain_id: str, height: int, round_: int, block_id: BlockID, time: tuple[int, int]
) -> bytes:
    canonical = b"".join(
        [
            varint_field(1, PRECOMMIT_TYPE),
            sfixed64_field(2, height),
            sfixed64_field(3, round_),
            b"" if block_id.is_zero else bytes_field(4, block_id.encode_canonical(), always=True),
            bytes_field(5, timestamp_bytes(*time), always=True),  # non-nullable
            bytes_field(6, chain_id.encode()),
        ]
    )
    return encode_uvarint(len(canonical)) + canonical


def _more_than(signed: int, total: int, numerator: int, denominator: int) -> bool:
    """CometBFT's tally rule: signed > total * numerator / denominator (integer division)."""
    return signed > total * numerator // denominator


def verify_commit(
    chain_id: str, validators: ValidatorSet, block_id: BlockID, height: int, commit: Commit
) -> int:
    """CometBFT's VerifyCommit: the commit is for this block and height, every present
    signature verifies against the validator at its index, and validators holding more than
    2/3 of the set's power signed for the block. Returns the power that signed for it."""
    if commit.height != height:
        raise LightClientError(f"the commit is for height {commit.height}, not {height}")
    if commit.block_id != block_id:
        raise LightClientError("the commit signs another block id than the header's hash")
    if len(commit.signatures) != len(validators.validators):
        raise LightClientError(
            f"the commit has {len(commit.signatures)} signatures for a set of "
            f"{len(validators.validators)} validators"
        )
    signed = 0
    for index, (sig, validator) in enumerate(
        zip(commit.signatures, validators.validators, strict=True)
    ):
        if sig.flag == FLAG_ABSENT:
            continue
        if sig.validator_address != validator.address:
            raise LightClientError(f"signature {index} is not by validator {index} of the set")
        _check_signature(chain_id, commit, index, validator)
        if sig.flag == FLAG_COMMIT:
            signed += validator.power
    if not _more_than(signed, validators.total_power, 2, 3):
        raise LightClientError(
            f"validators with {signed} of {validators.total_power} voting power signed: "
            "not more than 2/3"
        )
    return signed


def verify_commit_trusting(
    chain_id: str, trusted: ValidatorSet, commit: Commit, numerator: int = 1, denominator: int = 3
) -> int:
    """CometBFT's VerifyCommitLightTrusting, checking every signature it counts: validators
    of the trusted set (found by address) holding more than numerator/denominator of its
    power signed this commit. Returns the trusted power that signed."""
    signed = 0
    seen: set[bytes] = set()
    for index, sig in enumerate(commit.signatures):
        if sig.flag != FLAG_COMMIT:
            continue
        validator = trusted.by_address(sig.validator_address)
        if validator is None:
            continue  # not in the trusted set: neither counts nor harms
        if validator.address in seen:
            raise LightClientError(f"validator {validator.address.hex()} signed twice")
        seen.add(validator.address)
        _check_signature(chain_id, commit, index, validator)
        signed += validator.power
    if not _more_than(signed, trusted.total_power, numerator, denominator):
        raise LightClientError(
            f"trusted validators with {signed} of {trusted.total_power} voting power signed: "
            f"not more than {numerator}/{denominator}"
        )
    return signed


def _check_signature(chain_id: str, commit: Commit, index: int, validator: Validator) -> None:
    message = commit.vote_sign_bytes(chain_id, index)
    if not verify_signature(validator.pub_key, commit.signatures[index].signature, message):
        raise LightClientError(
            f"signature {index} (validator {validator.address.hex().upper()}) does not verify"
        )


# --- a block certified by the next block's commit ------------------------------------------


@dataclass(frozen=True)
class CertifiedBlock:
    """Block H's header, made trustworthy by block H+1's header and the commit signing it."""

    header: Header
    next_header: Header
    validators: ValidatorSet
    signed_power: int
    trusted_by: str  # "the proof's own validator set" or how the trusted set was used


def certify(
    header: Header,
    next_header: Header,
    commit: Commit,
    validators: ValidatorSet,
    trusted: ValidatorSet | None = None,
) -> CertifiedBlock:
    """Check that the validators signed block H+1 and that H+1 names block H.

    H+1's `last_block_id` names H's hash and its `last_results_hash` commits to H's results,
    so a commit for H+1 certifies both. With `trusted`, the validator set must be the trusted
    one, or validators of the trusted one holding more than 1/3 of its power must have signed
    (a light client's skipping verification: the set may have changed since).
    """
    if next_header.chain_id != header.chain_id:
        raise LightClientError("the two headers are of different chains")
    if next_header.height != header.height + 1:
        raise LightClientError(f"header {next_header.height} does not follow {header.height}")
    if next_header.last_block_id.hash != header.hash():
        raise LightClientError(
            f"block {header.height}'s header does not hash to the block id that block "
            f"{next_header.height} names (header altered)"
        )
    if commit.block_id.hash != next_header.hash():
        raise LightClientError(f"the commit does not sign block {next_header.height}'s header")
    if validators.hash() != next_header.validators_hash:
        raise LightClientError("the validator set does not hash to the header's validators_hash")
    signed = verify_commit(header.chain_id, validators, commit.block_id, next_header.height, commit)
    trusted_by = "the proof's own validator set"
    if trusted is not None:
        if trusted.hash() == validators.hash():
            trusted_by = "the trusted validator set"
        else:
            verify_commit_trusting(header.chain_id, trusted, commit)
            trusted_by = "more than 1/3 of the trusted validator set's power"
    return CertifiedBlock(header, next_header, validators, signed, trusted_by)
