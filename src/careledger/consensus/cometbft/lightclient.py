"""CometBFT v0.38 light-client checks: header hashes, vote sign bytes, validator sets, commits.

Pure (no I/O, no clock), so that the wallet checks a record proof offline with the very rules
a CometBFT light client uses. Every byte is CometBFT's:
- `Header.hash()`: the RFC 6962 root over the 14 proto-encoded header fields, scalars wrapped
  in gogoproto's `StringValue`/`Int64Value`/`BytesValue` (`types/block.go`, `Header.Hash`);
- `vote_sign_bytes`: the varint-length-prefixed protobuf `CanonicalVote` (type, sfixed64 height
  and round, canonical block id, timestamp, chain id) that each precommit signs
  (`types/vote.go`, `VoteSignBytes`);
- `ValidatorSet.hash()`: the root over each `SimpleValidator{pub_key, voting_power}` in the
  set's order (`types/validator_set.go`);
- `verify_commit`: CometBFT's `VerifyCommit` (every present signature checked, more than 2/3
  of the set's power for the block), and `verify_commit_trusting` its
  `VerifyCommitLightTrusting` (validators of an older, trusted set holding more than 1/3 of
  its power signed).

JSON in and out is CometBFT's own RPC shape (`/block`, `/commit`, `/validators`), so a proof
can be compared field by field with any CometBFT node. tests/vectors/cometbft/ holds values
recorded from the real binary that these functions must reproduce.
"""

from __future__ import annotations

import base64
import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from careledger.crypto.hashing import sha256
from careledger.crypto.keys import verify_signature
from careledger.crypto.merkle import merkle_root
from careledger.crypto.varint import encode_uvarint

PRECOMMIT_TYPE = 2  # tendermint.types.SignedMsgType
FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL = 1, 2, 3  # tendermint.types.BlockIDFlag
ED25519_JSON_TYPE = "tendermint/PubKeyEd25519"

_U64 = 1 << 64
_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


class LightClientError(ValueError):
    """A header, commit or validator set that does not hold; the message names the check."""


# --- protobuf, the little of it these messages need ------------------------------------------


def _varint_field(number: int, value: int) -> bytes:
    """A proto3 varint field (int64 as two's complement); left out when zero."""
    return encode_uvarint(number << 3) + encode_uvarint(value % _U64) if value else b""


def _bytes_field(number: int, value: bytes, *, always: bool = False) -> bytes:
    """A length-delimited field; left out when empty unless it is a non-nullable message."""
    if not value and not always:
        return b""
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(value)) + value


def _sfixed64_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3 | 1) + (value % _U64).to_bytes(8, "little") if value else b""


# --- time ----------------------------------------------------------------------------------


def parse_time(text: str) -> tuple[int, int]:
    """RFC 3339 UTC as CometBFT writes it (nanoseconds, trailing zeros trimmed) -> (s, ns)."""
    found = _TIME.match(text)
    if found is None:
        raise LightClientError(f"time {text!r} is not RFC 3339 UTC")
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds, int((found.group(7) or "0").ljust(9, "0"))


def format_time(seconds: int, nanos: int) -> str:
    """The inverse of parse_time, trimming trailing zeros of the fraction as Go does."""
    year, month, day, hour, minute, second = _gmtime(seconds)
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    fraction = f"{nanos:09d}".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + "Z"


def _gmtime(seconds: int) -> tuple[int, int, int, int, int, int]:
    days, rest = divmod(seconds, 86_400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, integers only).
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day, hour, minute, second


def _timestamp(seconds: int, nanos: int) -> bytes:
    """google.protobuf.Timestamp, as gogoproto's StdTimeMarshal writes it."""
    return _varint_field(1, seconds) + _varint_field(2, nanos)


# --- JSON helpers --------------------------------------------------------------------------


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value or ""))
    except ValueError:
        raise LightClientError(f"{what} is not hex") from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LightClientError(f"{what} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise LightClientError(f"{what} is not an integer") from None


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except ValueError:
        raise LightClientError(f"{what} is not base64") from None


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
            _hex(data.get("hash"), "block id hash"),
            _int(parts.get("total", 0), "part set total"),
            _hex(parts.get("hash"), "part set hash"),
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
        return _varint_field(1, self.parts_total) + _bytes_field(2, self.parts_hash)

    def encode(self) -> bytes:
        """tendermint.types.BlockID (the part set header is non-nullable: always written)."""
        return _bytes_field(1, self.hash) + _bytes_field(2, self._part_set_header(), always=True)

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
                _int(version.get("block", 0), "version.block"),
                _int(version.get("app", 0), "version.app"),
                str(data["chain_id"]),
                _int(data["height"], "height"),
                parse_time(str(data["time"])),
                BlockID.from_json(data["last_block_id"]),
                *(_hex(data[name], name) for name in _HASH_FIELDS),
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
        version = _varint_field(1, self.version_block) + _varint_field(2, self.version_app)
        return merkle_root(
            [
                version,
                _bytes_field(1, self.chain_id.encode()),  # StringValue
                _varint_field(1, self.height),  # Int64Value
                _timestamp(*self.time),
                self.last_block_id.encode(),
                *(_bytes_field(1, getattr(self, name)) for name in _HASH_FIELDS),  # BytesValue
            ]
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
        key = _b64(pub_key.get("value"), "validator public key")
        if len(key) != 32:
            raise LightClientError("a validator's Ed25519 key is 32 bytes")
        power = _int(data.get("voting_power", data.get("power")), "voting power")
        if power <= 0:
            raise LightClientError("a validator's voting power is positive")
        validator = cls(key, power)
        if "address" in data and _hex(data["address"], "address") != validator.address:
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
        public_key = _bytes_field(1, self.pub_key, always=True)
        return _bytes_field(1, public_key, always=True) + _varint_field(2, self.power)


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


# --- commits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitSig:
    flag: int
    validator_address: bytes
    time: tuple[int, int]
    signature: bytes

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommitSig:
        flag = _int(data.get("block_id_flag"), "block_id_flag")
        if flag not in (FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL):
            raise LightClientError(f"unknown block_id_flag {flag}")
        if flag == FLAG_ABSENT:
            return cls(flag, b"", (0, 0), b"")
        return cls(
            flag,
            _hex(data.get("validator_address"), "validator address"),
            parse_time(str(data.get("timestamp"))),
            _b64(data.get("signature"), "signature"),
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
                _int(data["height"], "commit height"),
                _int(data["round"], "commit round"),
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
            _varint_field(1, PRECOMMIT_TYPE),
            _sfixed64_field(2, height),
            _sfixed64_field(3, round_),
            b"" if block_id.is_zero else _bytes_field(4, block_id.encode_canonical(), always=True),
            _bytes_field(5, _timestamp(*time), always=True),  # non-nullable
            _bytes_field(6, chain_id.encode()),
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
