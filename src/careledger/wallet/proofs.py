"""Record proofs, checked offline: a resource, its anchor, the anchor's success, its block.

A proof (docs/records.md, "Proofs") is what `RecordsClient.proof` returns and
`careledger records get --proof` writes. Checking it needs no node and no key:

- the anchor transaction is a leaf of its block's transaction tree (`data_hash`), and its
  result is the leaf at the same position of the block's results tree (solo: the header's
  `results_hash`; CometBFT: block H+1's `last_results_hash`); both proofs have the same
  index and total, and in solo mode that total is the header's `num_txs`;
- the result's code is 0: the chain accepted the anchor (a failed anchor proves nothing);
- the anchor is signed by its author's key registered at that height: the did's own key, or
  the key that a chain of `identity/rotate_key` transactions (each proven the same way,
  each signed by the key before it) leads to;
- the resource's type, id and version name the anchored record, and the resource with the
  salt opens the anchor's commitment.

All of that a forger can make consistent: a made-up block of one transaction, signed by a
key that was never registered (its did's own key vouches for itself), has a matching header
and Merkle proofs. So a proof is verified only against a **trust anchor** the caller brings
(`verify_record_proof(proof, trust)`):

- a `ValidatorSet` (CometBFT): the proof carries block H+1's header, the commit signing it
  and the validator set; the signatures must be those of the trusted set (or of more than
  1/3 of its power, if the set changed since), as a CometBFT light client checks
  (consensus/cometbft/lightclient.py);
- `TrustedHeaders` (either driver): the hash of block H the caller trusts, compared out of
  band or fetched from a node the caller trusts; the proof's block must hash to it.

Key rotations sit in older blocks. With a validator set they are certified like the anchor;
with trusted headers, those whose height has no trusted hash are checked for consistency
only. That is enough: the anchor's code 0 in a trusted block shows that the chain itself
checked the anchor's signature against the author's registered key, and a signature does
not verify under two keys, so the rotations can only name the key, not change the verdict.

`check_record_proof_untrusted(proof)` checks everything but the trust anchor and says so
(`trusted` is False); `careledger verify-record` without an anchor uses it, prints
UNVERIFIED and what is left to trust, and exits 2.

Why one (index, total) for both trees is enough under CometBFT, whose header has no
transaction count: a Merkle path that reaches a root is a real root-to-leaf path of that tree
(leaves and inner nodes are hashed with different prefixes), and the two trees have the same
number of leaves, so the same (index, total) reaches the same position in both, whatever the
claimed total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from careledger.chain.block import BlockHeader, format_time_ns
from careledger.chain.codes import Code, TxFailure
from careledger.chain.results import TxOutcome
from careledger.chain.tx import SignedTx, decode_tx
from careledger.consensus.cometbft.lightclient import (
    Commit,
    Header,
    LightClientError,
    ValidatorSet,
    certify,
)
from careledger.crypto.canonical import NotCanonicalisable, canonical_bytes
from careledger.crypto.envelope import SALT_SIZE, commit
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import KeyError_, ed25519_from_did, verify_signature
from careledger.crypto.merkle import InclusionProof, verify_inclusion
from careledger.wallet.records import RecordRef

PROOF_FORMAT = "careledger-record-proof-v2"
MAX_BLOCK_TXS = 1 << 32  # far above any block; bounds the work a hostile total can cause
MAX_ROTATIONS = 1000  # of one author's key in one proof; bounds a hostile proof's work


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


@dataclass(frozen=True)
class VerifiedRecord:
    patient: str
    ref: RecordRef
    version: int
    author: str
    signing_key: str  # hex: the author's key at the anchor's height
    rotations: int  # key rotations the proof walked from the did's own key
    block: VerifiedBlock

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def header_hash(self) -> str:
        return self.block.block_hash

    @property
    def trusted(self) -> bool:
        return self.block.trusted


def verify_record_proof(proof: Mapping[str, Any], trust: TrustAnchor) -> VerifiedRecord:
    """Check a record proof offline against the caller's trust anchor; ProofError naming the
    first check that fails, the anchor's included.

    `trust`: the validator set a CometBFT proof must be signed by (or by more than 1/3 of its
    power, if it has changed since), or the trusted hash of the anchor's block (either
    driver; the only anchor for a solo proof).
    """
    if not isinstance(trust, TrustAnchor):
        raise TypeError("verify_record_proof needs a ValidatorSet or TrustedHeaders to trust")
    return _check_record_proof(proof, trust)


def check_record_proof_untrusted(proof: Mapping[str, Any]) -> VerifiedRecord:
    """Every check of `verify_record_proof` but the trust anchor: the result's `trusted` is
    False and `block.trusted_by` names what is left to trust. A proof checked this way
    proves nothing by itself (a forger makes a consistent one); ProofError as above."""
    return _check_record_proof(proof, None)


def _check_record_proof(proof: Mapping[str, Any], trust: TrustAnchor | None) -> VerifiedRecord:
    if not isinstance(proof, Mapping) or proof.get("format") != PROOF_FORMAT:
        raise ProofError(f"not a record proof in the {PROOF_FORMAT} format")
    anchor = _check_tx_evidence(_field(proof, "anchor"), trust, required=True)
    tx = anchor.tx.tx
    if tx.type != "records/anchor":
        raise ProofError(f"the transaction is a {tx.type}, not a records/anchor")
    # Rotations are older blocks: without a trusted set, the anchor's signers are the trust.
    rotation_trust = trust if trust is not None else anchor.block.validators
    key, rotations = _author_key(proof.get("author_key") or {}, anchor, rotation_trust)
    if not _signed_by(anchor.tx, key):
        raise ProofError(
            f"the anchor's signature does not verify with {tx.sender}'s key registered at "
            f"height {anchor.block.height}"
        )
    ref, version = _check_resource(proof, tx.payload)
    return VerifiedRecord(ref.patient, ref, version, tx.sender, key.hex(), rotations, anchor.block)


# --- one transaction in one block ----------------------------------------------------------


def verify_tx_evidence(evidence: Any, trust: TrustAnchor) -> VerifiedTx:
    """Check that a transaction is in a block the caller trusts and succeeded there."""
    if not isinstance(trust, TrustAnchor):
        raise TypeError("verify_tx_evidence needs a ValidatorSet or TrustedHeaders to trust")
    return _check_tx_evidence(evidence, trust, required=True)


def _check_tx_evidence(evidence: Any, trust: TrustAnchor | None, required: bool) -> VerifiedTx:
    """That a transaction is in a block and succeeded there (code 0). With `trust`, the
    block must chain to it; a height that trusted headers do not name is refused when
    `required`, else checked for consistency only (the block is then not `trusted`)."""
    try:
        raw = bytes.fromhex(str(_field(evidence, "tx")))
        height = _field(evidence, "height")
        tx_proof = InclusionProof.from_json(_field(evidence, "tx_proof"))
        result = TxOutcome.from_json(_field(evidence, "result"))
        result_proof = InclusionProof.from_json(_field(evidence, "result_proof"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"not a transaction proof: {exc}") from None
    if type(height) is not int:
        raise ProofError("the transaction proof's height is not an integer")
    block, roots = _verify_block(_field(evidence, "block"), height, trust)
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
            f"the transaction failed on chain: result code {result.code} ({_code_name(result)})"
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
    consensus = _field(block, "consensus")
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
        header = BlockHeader.from_json(_field(block, "header"))
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
        header = Header.from_json(_field(block, "header"))
        next_header = Header.from_json(_field(block, "next_header"))
        signed = Commit.from_json(_field(block, "commit"))
        validators = ValidatorSet.from_json(_field(block, "validators"))
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


# --- the author's key ----------------------------------------------------------------------


def _author_key(
    claimed: Mapping[str, Any], anchor: VerifiedTx, trust: TrustAnchor | None
) -> tuple[bytes, int]:
    """The key the proof says signed the anchor, if the proof shows where it came from:
    the author's did itself, then each proven rotation, signed by the key before it."""
    author = anchor.tx.tx.sender
    if not isinstance(claimed, Mapping):
        raise ProofError("the proof's author_key is not an object")
    try:
        key = ed25519_from_did(author)
        signing_key = bytes.fromhex(str(claimed.get("signing_key") or key.hex()))
        rotations = list(claimed.get("rotations") or [])
    except (KeyError_, ValueError, TypeError) as exc:
        raise ProofError(f"the author's key: {exc}") from None
    if len(rotations) > MAX_ROTATIONS:
        raise ProofError(f"{len(rotations)} key rotations: more than {MAX_ROTATIONS}")
    position = (-1, -1)
    for number, evidence in enumerate(rotations, start=1):
        rotation = _check_tx_evidence(evidence, trust, required=False)
        where = (rotation.block.height, rotation.index)
        if not position < where < (anchor.block.height, anchor.index):
            raise ProofError(f"key rotation {number} is not in order before the anchor")
        key = _rotated(rotation, author, anchor.tx.tx.chain_id, key, number)
        position = where
    if key != signing_key:
        raise ProofError(
            "the proof's signing key is not the author's did key nor where the proven key "
            "rotations lead (a key of unknown origin)"
        )
    return key, len(rotations)


def _rotated(rotation: VerifiedTx, author: str, chain_id: str, key: bytes, number: int) -> bytes:
    tx = rotation.tx.tx
    if tx.type != "identity/rotate_key" or tx.sender != author:
        raise ProofError(f"key rotation {number} is not an identity/rotate_key by {author}")
    if tx.chain_id != chain_id:
        raise ProofError(f"key rotation {number} is on another chain than the anchor")
    if not _signed_by(rotation.tx, key):
        raise ProofError(f"key rotation {number} is not signed by the key before it")
    try:
        return bytes.fromhex(str(tx.payload["signing_key"]))
    except (KeyError, ValueError):
        raise ProofError(f"key rotation {number} names no signing key") from None


def _signed_by(stx: SignedTx, key: bytes) -> bool:
    try:
        return verify_signature(key, stx.signature, stx.body)
    except KeyError_:
        return False


# --- the resource --------------------------------------------------------------------------


def _check_resource(proof: Mapping[str, Any], payload: Mapping[str, Any]) -> tuple[RecordRef, int]:
    try:
        resource, salt = proof["resource"], bytes.fromhex(proof["salt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"the proof has no resource or salt: {exc}") from None
    try:
        patient, record, anchored_version = (
            payload["patient"],
            payload["record"],
            payload["version"],
        )
    except KeyError as exc:
        raise ProofError(f"the anchor has no {exc}") from None
    ref, version = _ref_of(patient, resource)
    if ref.name != record or version != anchored_version:
        raise ProofError(f"the resource is {ref} version {version}, not the anchored record")
    if _commitment(resource, salt) != payload["commitment"]:
        raise ProofError("the resource does not match the anchored commitment (altered)")
    return ref, version


def _commitment(resource: Any, salt: bytes) -> str:
    if len(salt) != SALT_SIZE:
        raise ProofError(f"the salt is {len(salt)} bytes, not {SALT_SIZE}")
    try:
        return commit(canonical_bytes(resource), salt).hex()
    except NotCanonicalisable as exc:
        raise ProofError(f"the resource is not JSON: {exc}") from None


def _ref_of(patient: str, resource: Any) -> tuple[RecordRef, int]:
    try:
        version = int(resource["meta"]["versionId"])
        return RecordRef(patient, str(resource["resourceType"]), str(resource["id"])), version
    except (KeyError, TypeError, ValueError):
        raise ProofError("the resource has no resourceType, id or meta.versionId") from None


def _field(container: Any, name: str) -> Any:
    if not isinstance(container, Mapping) or name not in container:
        raise ProofError(f"the proof has no {name!r}")
    return container[name]


def _code_name(result: TxOutcome) -> str:
    try:
        return Code(result.code).name
    except ValueError:
        return "unknown code"
