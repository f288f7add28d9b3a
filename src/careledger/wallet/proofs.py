"""Record proofs, checked offline: a resource, its anchor transaction, the block header.

A proof is what `RecordsClient.proof` returns (and `careledger records get --proof` writes):
the anchor transaction, its Merkle inclusion proof, the block header, the resource and the
commitment's salt. Checking it needs no node and no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from careledger.chain.block import BlockHeader
from careledger.chain.tx import decode_tx
from careledger.crypto.canonical import canonical_bytes
from careledger.crypto.envelope import commit
from careledger.crypto.hashing import sha256
from careledger.crypto.keys import KeyError_, ed25519_from_did, verify_signature
from careledger.crypto.merkle import InclusionProof, verify_inclusion
from careledger.wallet.records import RecordRef


@dataclass(frozen=True)
class VerifiedRecord:
    patient: str
    ref: RecordRef
    version: int
    author: str
    height: int
    header_hash: str
    data_hash: str
    notes: list[str] = field(default_factory=list)


class ProofError(Exception):
    """A record proof that does not hold; the message says which check failed."""


def verify_record_proof(proof: Mapping[str, Any]) -> VerifiedRecord:
    """Check, offline, that the resource is the one anchored by a transaction in a block.

    Checks: the transaction's hash is the proof's leaf; the leaf is in the header's
    transaction Merkle root; the transaction is a records/anchor signed by its sender's
    key; the resource's type, id and version name that anchor's record; and the resource
    with the salt opens the anchor's commitment. What remains to trust is the header: compare
    `header_hash` at `height` with any node or a published checkpoint.
    """
    try:
        raw = bytes.fromhex(proof["tx"])
        header = BlockHeader.from_json(proof["header"])
        inclusion = InclusionProof.from_json(proof["proof"])
        resource, salt = proof["resource"], bytes.fromhex(proof["salt"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"not a record proof: {exc}") from None
    if sha256(raw) != inclusion.leaf:
        raise ProofError("the transaction is not the proof's leaf")
    if not verify_inclusion(inclusion, bytes.fromhex(header.data_hash)):
        raise ProofError("the inclusion proof does not lead to the block header's data_hash")
    stx = decode_tx(raw)
    if stx.tx.type != "records/anchor":
        raise ProofError(f"the transaction is a {stx.tx.type}, not a records/anchor")
    notes = []
    try:
        signed = verify_signature(ed25519_from_did(stx.tx.sender), stx.signature, stx.body)
    except KeyError_:
        signed = False
    if not signed:
        notes.append("signature not by the author's original key (rotated since?)")
    payload = stx.tx.payload
    ref, version = _ref_of(payload["patient"], resource)
    if ref.name != payload["record"] or version != payload["version"]:
        raise ProofError(f"the resource is {ref} version {version}, not the anchored record")
    if commit(canonical_bytes(resource), salt).hex() != payload["commitment"]:
        raise ProofError("the resource does not match the anchored commitment (altered)")
    return VerifiedRecord(
        payload["patient"],
        ref,
        version,
        stx.tx.sender,
        header.height,
        header.hash().hex(),
        header.data_hash,
        notes,
    )


def _ref_of(patient: str, resource: Mapping[str, Any]) -> tuple[RecordRef, int]:
    try:
        version = int(resource["meta"]["versionId"])
        return RecordRef(patient, str(resource["resourceType"]), str(resource["id"])), version
    except (KeyError, TypeError, ValueError):
        raise ProofError("the resource has no resourceType, id or meta.versionId") from None
