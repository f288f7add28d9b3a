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

In `protocol/` because both sides speak it: a node's driver serves CometBFT's blocks and
commits as proof evidence, and the wallet checks them offline.
"""

from careledger.protocol.cometbft.commits import (
    CertifiedBlock,
    Commit,
    CommitSig,
    certify,
    verify_commit,
    verify_commit_trusting,
    vote_sign_bytes,
)
from careledger.protocol.cometbft.encoding import (
    FLAG_ABSENT,
    FLAG_COMMIT,
    FLAG_NIL,
    LightClientError,
    format_time,
    parse_time,
)
from careledger.protocol.cometbft.headers import BlockID, Header
from careledger.protocol.cometbft.validators import Validator, ValidatorSet, trusted_validator_set

__all__ = [
    "FLAG_ABSENT",
    "FLAG_COMMIT",
    "FLAG_NIL",
    "BlockID",
    "CertifiedBlock",
    "Commit",
    "CommitSig",
    "Header",
    "LightClientError",
    "Validator",
    "ValidatorSet",
    "certify",
    "format_time",
    "parse_time",
    "trusted_validator_set",
    "verify_commit",
    "verify_commit_trusting",
    "vote_sign_bytes",
]
