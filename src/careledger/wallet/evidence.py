"""Evidence that a transaction is in a block and succeeded there, checked offline.

The part of a record proof (`wallet/proofs.py`) that proves one transaction: its Merkle
proof under the block's transactions, its result's proof under the block's results at the
same position, and the block itself, against the caller's trust anchor (a CometBFT
validator set, or trusted header hashes). Key rotations in a record proof are proven with
the same evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from careledger.chain.block import BlockHeader, format_time_ns
from careledger.chain.codes import Code, TxFailure
from careledger.chain.results import TxOutcome
from careledger.chain.tx import SignedTx, decode_tx
from careledger.crypto.hashing import sha256
from careledger.crypto.merkle import InclusionProof, verify_inclusion
from careledger.protocol.cometbft import (
    Commit,
    Header,
    LightClientError,
    ValidatorSet,
    certify,
)

MAX_BLOCK_TXS = 1 << 32  # far above any block; bounds the work a hostile total can cause


class ProofError(Exception):
    """A record proof that does not hold; the message says which check failed."""


@dataclass(frozen=True)
class TrustedHeaders:
    """Block hashes the caller trusts, by height: compared out of band with a node or a
    published checkpoint (`verify-record --header-hash`), or fetched from a node the caller
    trusts (`--node`). Solo: the header's hash (`GET /blocks/{h}` "hash"); CometBFT: the
    block hash (block id). Hex, either case."""

    hashes: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for height, digest in self.hashes.items():
            if type(height) is not int or height < 1:
                raise ProofError(f"a trusted block height is a positive integer, not {height!r}")
            if not isinstance(digest, str) or len(digest) != 64:
                raise ProofError(f"a trusted block hash is 64 hex characters, not {digest!r}")
            try:
                bytes.fromhex(digest)
            except ValueError:
                raise ProofError(f"a trusted block hash is hex, not {digest!r}") from None

    def of(self, height: int) -> str | None:
        found = self.hashes.get(height)
        return None if found is None else found.lower()


TrustAnchor = ValidatorSet | TrustedHeaders


@dataclass(frozen=True)
class VerifiedBlock:
    consensus: str  # "solo" or "cometbft"
    height: int
    block_hash: str  # solo: the header's hash; CometBFT: its block hash (block id)
    time: str
    validators_hash: str  # CometBFT: the set that signed; "" in solo mode
    trusted_by: str  # what the block's authenticity rests on
    validators: ValidatorSet | None = None  # CometBFT: the set that signed
    signed_power: int = 0  # CometBFT: how much of its voting power signed
    trusted: bool = False  # whether the block chains to the caller's trust anchor


@dataclass(frozen=True)
class VerifiedTx:
    """A transaction shown to be in a block, at a position, with a successful result."""

    tx: SignedTx
    index: int
    result: TxOutcome
    block: VerifiedBlock


# --- one transaction in one block ----------------------------------------------------------


def verify_tx_evidence(evidence: Any, trust: TrustAnchor) -> VerifiedTx:
    """Check that a transaction is in a block the caller trusts and succeeded there."""
    if not isinstance(trust, TrustAnchor):
        raise TypeError("verify_tx_evidence needs a ValidatorSet or TrustedHeaders to trust")
    return check_tx_evidence(evidence, trust, required=True)


def check_tx_evidence(evidence: Any, trust: TrustAnchor | None, required: bool) -> VerifiedTx:
    """That a transaction is in a block and succeeded there (code 0). With `trust`, the
    block must chain to it; a height that trusted headers do not name is refused when
    `required`, else checked for consistency only (the block is then not `trusted`)."""
    try:
        raw = bytes.fromhex(str(field_of(evidence, "tx")))
        height = field_of(evidence, "height")
        tx_proof = InclusionProof.from_json(field_of(evidence, "tx_proof"))
        result = TxOutcome.from_json(field_of(evidence, "result"))
        result_proof = InclusionProof.from_json(field_of(evidence, "result_proof"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"not a transaction proof: {exc}") from None
    if type(height) is not int:
        raise ProofError("the transaction proof's height is not an integer")
    block, roots = _verify_block(field_of(evidence, "block"), height, trust)
    if sha256(raw) != tx_proof.leaf:
        raise ProofError("the transaction is not the tx proof's leaf")
    if result.encode() != result_proof.leaf:
        raise ProofError("the result is not the result proof's leaf")
    _check_positions(tx_proof, result_proof, roots.num_txs)
    if not verify_inclusion(tx_proof, roots.data_hash):
        raise ProofError(f"the tx proof does not lead to block {height}'s data_hash")
    if not verify_inclusion(result_proof, roots.results_hash):
        raise ProofError(
            f"the result proof does not lead to the results root of block {height} (result altered)"
        )
    if not result.ok:
        raise ProofError(
            f"the transaction failed on chain: result code {result.code} ({code_name(result)})"
        )
    try:
        stx = decode_tx(raw)
    except TxFailure as failure:
        raise ProofError(f"the transaction is not a signed envelope: {failure.log}") from None
    if stx.tx.chain_id != roots.chain_id:
        raise ProofError(f"the transaction is for chain {stx.tx.chain_id!r}, not the block's")
    if isinstance(trust, TrustedHeaders):  # last: a forger's block is consistent till here
        block = _against_trusted_hash(block, trust, required)
    return VerifiedTx(stx, tx_proof.index, result, block)


@dataclass(frozen=True)
class _Roots:
    chain_id: str
    data_hash: bytes
    results_hash: bytes
    num_txs: int | None  # None: CometBFT's header does not carry it


def _check_positions(tx_proof: InclusionProof, result_proof: InclusionProof, n: int | None) -> None:
    if not 0 < tx_proof.total <= MAX_BLOCK_TXS:
        raise ProofError(f"a block of {tx_proof.total} transactions is impossible")
    if n is not None and (tx_proof.total != n or result_proof.total != n):
        raise ProofError(
            f"the proofs' totals ({tx_proof.total}, {result_proof.total}) are not the "
            f"header's transaction count num_txs={n}"
        )
    if (tx_proof.index, tx_proof.total) != (result_proof.index, result_proof.total):
        raise ProofError(
            f"the tx proof (index {tx_proof.index} of {tx_proof.total}) and the result proof "
            f"(index {result_proof.index} of {result_proof.total}) are for different positions"
        )
    if not 0 <= tx_proof.index < tx_proof.total:
        raise ProofError(f"index {tx_proof.index} is outside a block of {tx_proof.total}")


def _verify_block(
    block: Any, height: int, trust: TrustAnchor | None
) -> tuple[VerifiedBlock, _Roots]:
    consensus = field_of(block, "consensus")
    if consensus == "solo":
        if isinstance(trust, ValidatorSet):
            raise ProofError(
                "a solo block has no validators to trust: trust it by its block hash "
                "(--header-hash, or --node with a node you trust)"
            )
        verified, roots = _solo_block(block, height)
    elif consensus == "cometbft":
        validators = trust if isinstance(trust, ValidatorSet) else None
        verified, roots = _cometbft_block(block, height, validators)
    else:
        raise ProofError(f"unknown consensus {consensus!r} in the proof")
    return verified, roots


def _against_trusted_hash(
    block: VerifiedBlock, trust: TrustedHeaders, required: bool
) -> VerifiedBlock:
    expected = trust.of(block.height)
    if expected is None:
        if required:
            raise ProofError(f"no trusted hash for block {block.height}, the proof's block")
        return block
    if block.block_hash.lower() != expected:
        raise ProofError(
            f"block {block.height} of the proof hashes to {block.block_hash.lower()}, not to "
            f"the trusted {expected}: it is not that chain's block (forged, or of another chain)"
        )
    trusted_by = f"the block hash trusted for height {block.height}"
    return replace(block, trusted_by=trusted_by, trusted=True)


def _solo_block(block: Mapping[str, Any], height: int) -> tuple[VerifiedBlock, _Roots]:
    try:
        header = BlockHeader.from_json(field_of(block, "header"))
        roots = _Roots(
            header.chain_id,
            bytes.fromhex(header.data_hash),
            bytes.fromhex(header.results_hash),
            header.num_txs,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"not a block header: {exc}") from None
    if header.height != height:
        raise ProofError(f"the header is of block {header.height}, not {height}")
    trusted_by = (
        f"nothing yet: block {height}'s hash, to compare with a node you trust "
        "(GET /blocks/<height>) or a published checkpoint"
    )
    time = format_time_ns(header.time_ns)
    return VerifiedBlock("solo", height, header.hash().hex(), time, "", trusted_by), roots


def _cometbft_block(
    block: Mapping[str, Any], height: int, trusted: ValidatorSet | None
) -> tuple[VerifiedBlock, _Roots]:
    try:
        header = Header.from_json(field_of(block, "header"))
        next_header = Header.from_json(field_of(block, "next_header"))
        signed = Commit.from_json(field_of(block, "commit"))
        validators = ValidatorSet.from_json(field_of(block, "validators"))
        if header.height != height:
            raise ProofError(f"the header is of block {header.height}, not {height}")
        certified = certify(header, next_header, signed, validators, trusted)
    except LightClientError as exc:
        raise ProofError(f"block {height} is not certified: {exc}") from None
    roots = _Roots(header.chain_id, header.data_hash, next_header.last_results_hash, None)
    validators_hash = validators.hash().hex().upper()
    trusted_by = (
        certified.trusted_by
        if trusted is not None
        else f"nothing yet: the proof's own validator set (hash {validators_hash}), to "
        "compare with your consortium's"
    )
    verified = VerifiedBlock(
        "cometbft",
        height,
        header.hash().hex().upper(),
        format_time_ns(header.time[0] * 1_000_000_000 + header.time[1]),
        validators_hash,
        trusted_by,
        validators,
        certified.signed_power,
        trusted=trusted is not None,
    )
    return verified, roots


def field_of(container: Any, name: str) -> Any:
    if not isinstance(container, Mapping) or name not in container:
        raise ProofError(f"the proof has no {name!r}")
    return container[name]


def code_name(result: TxOutcome) -> str:
    try:
        return Code(result.code).name
    except ValueError:
        return "unknown code"
