"""The ABCI 2.0 messages of CometBFT v0.38, as field tables for `protowire`.

Transcribed from proto/tendermint/abci/types.proto (and the few tendermint.crypto,
google.protobuf types it embeds) at tag v0.38.25; every field number below is that file's.
`tests/test_abci_codec.py` decodes and re-encodes bytes recorded from real CometBFT
processes, which fails if a number or a kind here is wrong.

`tendermint.types.ConsensusParams` and `tendermint.crypto.ProofOps` are kept as opaque
encoded bytes (Kind.RAW): the application passes them through and never reads them.
"""

# ruff: noqa: RUF009  (pb() returns a dataclasses.field, as field() itself would)
from __future__ import annotations

from dataclasses import dataclass

from careledger.consensus.cometbft.protowire import Kind, pb

UINT, INT, BOOL, BYTES, STRING, MSG, RAW = (
    Kind.UINT,
    Kind.INT,
    Kind.BOOL,
    Kind.BYTES,
    Kind.STRING,
    Kind.MESSAGE,
    Kind.RAW,
)

# --- embedded types ------------------------------------------------------------------------


@dataclass
class Timestamp:  # google.protobuf.Timestamp
    seconds: int = pb(1, INT)
    nanos: int = pb(2, INT)

    @property
    def unix_ns(self) -> int:
        return self.seconds * 1_000_000_000 + self.nanos


@dataclass
class PublicKey:  # tendermint.crypto.PublicKey: a oneof, so a set member is always written
    ed25519: bytes | None = pb(1, BYTES, optional=True)
    secp256k1: bytes | None = pb(2, BYTES, optional=True)


@dataclass
class ValidatorUpdate:
    pub_key: PublicKey = pb(1, MSG, PublicKey, always=True)
    power: int = pb(2, INT)


@dataclass
class Validator:
    address: bytes = pb(1, BYTES)
    power: int = pb(3, INT)


@dataclass
class VoteInfo:
    validator: Validator = pb(1, MSG, Validator, always=True)
    block_id_flag: int = pb(3, INT)


@dataclass
class ExtendedVoteInfo:
    validator: Validator = pb(1, MSG, Validator, always=True)
    vote_extension: bytes = pb(3, BYTES)
    extension_signature: bytes = pb(4, BYTES)
    block_id_flag: int = pb(5, INT)


@dataclass
class CommitInfo:
    round: int = pb(1, INT)
    votes: list[VoteInfo] = pb(2, MSG, VoteInfo, repeated=True)


@dataclass
class ExtendedCommitInfo:
    round: int = pb(1, INT)
    votes: list[ExtendedVoteInfo] = pb(2, MSG, ExtendedVoteInfo, repeated=True)


@dataclass
class Misbehavior:
    type: int = pb(1, INT)
    validator: Validator = pb(2, MSG, Validator, always=True)
    height: int = pb(3, INT)
    time: Timestamp = pb(4, MSG, Timestamp, always=True)
    total_voting_power: int = pb(5, INT)


@dataclass
class EventAttribute:
    key: str = pb(1, STRING)
    value: str = pb(2, STRING)
    index: bool = pb(3, BOOL)


@dataclass
class Event:
    type: str = pb(1, STRING)
    attributes: list[EventAttribute] = pb(2, MSG, EventAttribute, repeated=True)


@dataclass
class ExecTxResult:
    code: int = pb(1, UINT)
    data: bytes = pb(2, BYTES)
    log: str = pb(3, STRING)
    info: str = pb(4, STRING)
    gas_wanted: int = pb(5, INT)
    gas_used: int = pb(6, INT)
    events: list[Event] = pb(7, MSG, Event, repeated=True)
    codespace: str = pb(8, STRING)


@dataclass
class Snapshot:
    height: int = pb(1, UINT)
    format: int = pb(2, UINT)
    chunks: int = pb(3, UINT)
    hash: bytes = pb(4, BYTES)
    metadata: bytes = pb(5, BYTES)


# --- requests ------------------------------------------------------------------------------


@dataclass
class RequestEcho:
    message: str = pb(1, STRING)


@dataclass
class RequestFlush:
    pass


@dataclass
class RequestInfo:
    version: str = pb(1, STRING)
    block_version: int = pb(2, UINT)
    p2p_version: int = pb(3, UINT)
    abci_version: str = pb(4, STRING)


@dataclass
class RequestInitChain:
    time: Timestamp = pb(1, MSG, Timestamp, always=True)
    chain_id: str = pb(2, STRING)
    consensus_params: bytes | None = pb(3, RAW)
    validators: list[ValidatorUpdate] = pb(4, MSG, ValidatorUpdate, repeated=True)
    app_state_bytes: bytes = pb(5, BYTES)
    initial_height: int = pb(6, INT)


@dataclass
class RequestQuery:
    data: bytes = pb(1, BYTES)
    path: str = pb(2, STRING)
    height: int = pb(3, INT)
    prove: bool = pb(4, BOOL)


CHECK_TX_NEW = 0
CHECK_TX_RECHECK = 1


@dataclass
class RequestCheckTx:
    tx: bytes = pb(1, BYTES)
    type: int = pb(2, INT)


@dataclass
class RequestCommit:
    pass


@dataclass
class RequestListSnapshots:
    pass


@dataclass
class RequestOfferSnapshot:
    snapshot: Snapshot | None = pb(1, MSG, Snapshot)
    app_hash: bytes = pb(2, BYTES)


@dataclass
class RequestLoadSnapshotChunk:
    height: int = pb(1, UINT)
    format: int = pb(2, UINT)
    chunk: int = pb(3, UINT)


@dataclass
class RequestApplySnapshotChunk:
    index: int = pb(1, UINT)
    chunk: bytes = pb(2, BYTES)
    sender: str = pb(3, STRING)


@dataclass
class RequestPrepareProposal:
    max_tx_bytes: int = pb(1, INT)
    txs: list[bytes] = pb(2, BYTES, repeated=True)
    local_last_commit: ExtendedCommitInfo = pb(3, MSG, ExtendedCommitInfo, always=True)
    misbehavior: list[Misbehavior] = pb(4, MSG, Misbehavior, repeated=True)
    height: int = pb(5, INT)
    time: Timestamp = pb(6, MSG, Timestamp, always=True)
    next_validators_hash: bytes = pb(7, BYTES)
    proposer_address: bytes = pb(8, BYTES)


@dataclass
class RequestProcessProposal:
    txs: list[bytes] = pb(1, BYTES, repeated=True)
    proposed_last_commit: CommitInfo = pb(2, MSG, CommitInfo, always=True)
    misbehavior: list[Misbehavior] = pb(3, MSG, Misbehavior, repeated=True)
    hash: bytes = pb(4, BYTES)
    height: int = pb(5, INT)
    time: Timestamp = pb(6, MSG, Timestamp, always=True)
    next_validators_hash: bytes = pb(7, BYTES)
    proposer_address: bytes = pb(8, BYTES)


@dataclass
class RequestExtendVote:
    hash: bytes = pb(1, BYTES)
    height: int = pb(2, INT)
    time: Timestamp = pb(3, MSG, Timestamp, always=True)
    txs: list[bytes] = pb(4, BYTES, repeated=True)
    proposed_last_commit: CommitInfo = pb(5, MSG, CommitInfo, always=True)
    misbehavior: list[Misbehavior] = pb(6, MSG, Misbehavior, repeated=True)
    next_validators_hash: bytes = pb(7, BYTES)
    proposer_address: bytes = pb(8, BYTES)


@dataclass
class RequestVerifyVoteExtension:
    hash: bytes = pb(1, BYTES)
    validator_address: bytes = pb(2, BYTES)
    height: int = pb(3, INT)
    vote_extension: bytes = pb(4, BYTES)


@dataclass
class RequestFinalizeBlock:
    txs: list[bytes] = pb(1, BYTES, repeated=True)
    decided_last_commit: CommitInfo = pb(2, MSG, CommitInfo, always=True)
    misbehavior: list[Misbehavior] = pb(3, MSG, Misbehavior, repeated=True)
    hash: bytes = pb(4, BYTES)
    height: int = pb(5, INT)
    time: Timestamp = pb(6, MSG, Timestamp, always=True)
    next_validators_hash: bytes = pb(7, BYTES)
    proposer_address: bytes = pb(8, BYTES)


# --- responses -----------------------------------------------------------------------------


@dataclass
class ResponseException:
    error: str = pb(1, STRING)


@dataclass
class ResponseEcho:
    message: str = pb(1, STRING)


@dataclass
class ResponseFlush:
    pass


@dataclass
class ResponseInfo:
    data: str = pb(1, STRING)
    version: str = pb(2, STRING)
    app_version: int = pb(3, UINT)
    last_block_height: int = pb(4, INT)
    last_block_app_hash: bytes = pb(5, BYTES)


@dataclass
class ResponseInitChain:
    consensus_params: bytes | None = pb(1, RAW)
    validators: list[ValidatorUpdate] = pb(2, MSG, ValidatorUpdate, repeated=True)
    app_hash: bytes = pb(3, BYTES)


@dataclass
class ResponseQuery:
    code: int = pb(1, UINT)
    log: str = pb(3, STRING)
    info: str = pb(4, STRING)
    index: int = pb(5, INT)
    key: bytes = pb(6, BYTES)
    value: bytes = pb(7, BYTES)
    proof_ops: bytes | None = pb(8, RAW)
    height: int = pb(9, INT)
    codespace: str = pb(10, STRING)


@dataclass
class ResponseCheckTx:
    code: int = pb(1, UINT)
    data: bytes = pb(2, BYTES)
    log: str = pb(3, STRING)
    info: str = pb(4, STRING)
    gas_wanted: int = pb(5, INT)
    gas_used: int = pb(6, INT)
    events: list[Event] = pb(7, MSG, Event, repeated=True)
    codespace: str = pb(8, STRING)


@dataclass
class ResponseCommit:
    retain_height: int = pb(3, INT)


@dataclass
class ResponseListSnapshots:
    snapshots: list[Snapshot] = pb(1, MSG, Snapshot, repeated=True)


# ResponseOfferSnapshot.Result and ResponseApplySnapshotChunk.Result
SNAPSHOT_ABORT = 2


@dataclass
class ResponseOfferSnapshot:
    result: int = pb(1, INT)


@dataclass
class ResponseLoadSnapshotChunk:
    chunk: bytes = pb(1, BYTES)


@dataclass
class ResponseApplySnapshotChunk:
    result: int = pb(1, INT)
    refetch_chunks: list[int] = pb(2, UINT, repeated=True)
    reject_senders: list[str] = pb(3, STRING, repeated=True)


@dataclass
class ResponsePrepareProposal:
    txs: list[bytes] = pb(1, BYTES, repeated=True)


# ResponseProcessProposal.ProposalStatus and ResponseVerifyVoteExtension.VerifyStatus
STATUS_UNKNOWN = 0
STATUS_ACCEPT = 1
STATUS_REJECT = 2


@dataclass
class ResponseProcessProposal:
    status: int = pb(1, INT)


@dataclass
class ResponseExtendVote:
    vote_extension: bytes = pb(1, BYTES)


@dataclass
class ResponseVerifyVoteExtension:
    status: int = pb(1, INT)


@dataclass
class ResponseFinalizeBlock:
    events: list[Event] = pb(1, MSG, Event, repeated=True)
    tx_results: list[ExecTxResult] = pb(2, MSG, ExecTxResult, repeated=True)
    validator_updates: list[ValidatorUpdate] = pb(3, MSG, ValidatorUpdate, repeated=True)
    consensus_param_updates: bytes | None = pb(4, RAW)
    app_hash: bytes = pb(5, BYTES)
