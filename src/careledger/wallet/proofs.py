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
  (protocol/cometbft/);
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
from dataclasses import dataclass
from typing import Any

from careledger.chain.tx import SignedTx
from careledger.crypto.canonical import NotCanonicalisable, canonical_bytes
from careledger.crypto.envelope import SALT_SIZE, commit
from careledger.crypto.keys import KeyError_, ed25519_from_did, verify_signature
from careledger.wallet.evidence import (
    ProofError,
    TrustAnchor,
    TrustedHeaders,
    VerifiedBlock,
    VerifiedTx,
    check_tx_evidence,
    field_of,
    verify_tx_evidence,
)
from careledger.wallet.records import RecordRef

PROOF_FORMAT = "careledger-record-proof-v2"
MAX_ROTATIONS = 1000  # of one author's key in one proof; bounds a hostile proof's work


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


ANCHOR_TYPES = ("records/anchor", "records/anchor_batch")


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
    anchor = check_tx_evidence(field_of(proof, "anchor"), trust, required=True)
    tx = anchor.tx.tx
    if tx.type not in ANCHOR_TYPES:
        raise ProofError(f"the transaction is a {tx.type}, not a records/anchor or anchor_batch")
    # Rotations are older blocks: without a trusted set, the anchor's signers are the trust.
    rotation_trust = trust if trust is not None else anchor.block.validators
    key, rotations = _author_key(proof.get("author_key") or {}, anchor, rotation_trust)
    if not _signed_by(anchor.tx, key):
        raise ProofError(
            f"the anchor's signature does not verify with {tx.sender}'s key registered at "
            f"height {anchor.block.height}"
        )
    ref, version = _check_resource(proof, _anchor_of(proof, tx.type, tx.payload))
    return VerifiedRecord(ref.patient, ref, version, tx.sender, key.hex(), rotations, anchor.block)


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
        rotation = check_tx_evidence(evidence, trust, required=False)
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


def _anchor_of(proof: Mapping[str, Any], tx_type: str, payload: Mapping[str, Any]) -> Any:
    """The anchor payload the proof is about: the transaction's own, or for a batch the one
    at the proof's `anchor_index` (the resource is then checked against it as against a
    single anchor: its record, type, version and commitment)."""
    if tx_type == "records/anchor":
        return payload
    anchors, index = payload.get("anchors"), proof.get("anchor_index")
    if not isinstance(anchors, list) or type(index) is not int or not 0 <= index < len(anchors):
        raise ProofError("the proof's anchor_index names no anchor of the batch")
    return anchors[index]


def _check_resource(proof: Mapping[str, Any], payload: Any) -> tuple[RecordRef, int]:
    try:
        resource, salt = proof["resource"], bytes.fromhex(proof["salt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"the proof has no resource or salt: {exc}") from None
    if not isinstance(payload, Mapping):
        raise ProofError("the anchor is not an object")
    try:
        patient, record, resource_type, anchored_version = (
            payload["patient"],
            payload["record"],
            payload["resource_type"],
            payload["version"],
        )
    except KeyError as exc:
        raise ProofError(f"the anchor has no {exc}") from None
    # The record's name is keyed with the patient's naming key, which a proof does not
    # reveal; the salted commitment binds the resource (its type, id and version included)
    # to this anchor, and the type and version are checked against the anchor's own.
    ref, version = _ref_of(patient, record, resource)
    if ref.resource_type != resource_type or version != anchored_version:
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


def _ref_of(patient: str, record: str, resource: Any) -> tuple[RecordRef, int]:
    try:
        version = int(resource["meta"]["versionId"])
        ref = RecordRef(patient, str(resource["resourceType"]), str(resource["id"]), record)
        return ref, version
    except (KeyError, TypeError, ValueError):
        raise ProofError("the resource has no resourceType, id or meta.versionId") from None


__all__ = [
    "PROOF_FORMAT",
    "ProofError",
    "TrustAnchor",
    "TrustedHeaders",
    "VerifiedBlock",
    "VerifiedRecord",
    "VerifiedTx",
    "check_record_proof_untrusted",
    "verify_record_proof",
    "verify_tx_evidence",
]
