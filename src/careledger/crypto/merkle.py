"""RFC 6962 Merkle tree over byte strings, with inclusion proofs.

Leaves are hashed as SHA-256(0x00 || leaf) and inner nodes as SHA-256(0x01 || left || right),
splitting at the largest power of two below n. CometBFT uses the same construction over the
SHA-256 of each transaction, so proofs have one shape in solo and network mode.
"""

from dataclasses import dataclass

from careledger.crypto.hashing import sha256

EMPTY_ROOT = sha256(b"")


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf)


def inner_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    return _root_of_hashes([leaf_hash(leaf) for leaf in leaves])


def _root_of_hashes(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return inner_hash(_root_of_hashes(hashes[:k]), _root_of_hashes(hashes[k:]))


@dataclass(frozen=True)
class InclusionProof:
    index: int
    total: int
    leaf: bytes
    aunts: tuple[bytes, ...]  # sibling hashes from the leaf up to the root

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "total": self.total,
            "leaf": self.leaf.hex(),
            "aunts": [a.hex() for a in self.aunts],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "InclusionProof":
        aunts = data["aunts"]
        if not isinstance(aunts, list):
            raise ValueError("aunts must be a list")
        return cls(
            index=int(str(data["index"])),
            total=int(str(data["total"])),
            leaf=bytes.fromhex(str(data["leaf"])),
            aunts=tuple(bytes.fromhex(str(a)) for a in aunts),
        )


def inclusion_proof(leaves: list[bytes], index: int) -> InclusionProof:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} out of range 0..{len(leaves) - 1}")
    hashes = [leaf_hash(leaf) for leaf in leaves]
    return InclusionProof(index, len(leaves), leaves[index], tuple(_aunts(hashes, index)))


def _aunts(hashes: list[bytes], index: int) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return [*_aunts(hashes[:k], index), _root_of_hashes(hashes[k:])]
    return [*_aunts(hashes[k:], index - k), _root_of_hashes(hashes[:k])]


def verify_inclusion(proof: InclusionProof, root: bytes) -> bool:
    """True when the proof's leaf is at its index in a tree of its total with this root."""
    if not 0 <= proof.index < proof.total:
        return False
    computed = _root_from_path(leaf_hash(proof.leaf), proof.index, proof.total, list(proof.aunts))
    return computed == root


def _root_from_path(node: bytes, index: int, total: int, aunts: list[bytes]) -> bytes | None:
    if total == 1:
        return node if not aunts else None
    if not aunts:
        return None
    k = _split(total)
    sibling = aunts[-1]
    if index < k:
        left = _root_from_path(node, index, k, aunts[:-1])
        return None if left is None else inner_hash(left, sibling)
    right = _root_from_path(node, index - k, total - k, aunts[:-1])
    return None if right is None else inner_hash(sibling, right)
