// RFC 6962 Merkle trees as the chain builds them (crypto/merkle.py): leaves hashed as
// SHA-256(0x00 || leaf), inner nodes as SHA-256(0x01 || left || right), split at the largest
// power of two below n. CometBFT uses the same construction, so one checker serves a solo
// block's data_hash and results_hash, and CometBFT's header, validator and results hashes.
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes } from "../crypto/bytes";

export interface InclusionProof {
  index: number;
  total: number;
  leaf: Uint8Array;
  aunts: Uint8Array[]; // sibling hashes from the leaf up to the root
}

export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(0), leaf));
}

function innerHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(1), left, right));
}

/** Largest power of two strictly less than n (n >= 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

export function merkleRoot(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array());
  return rootOfHashes(leaves.map(leafHash));
}

function rootOfHashes(hashes: Uint8Array[]): Uint8Array {
  if (hashes.length === 1) return hashes[0]!;
  const k = split(hashes.length);
  return innerHash(rootOfHashes(hashes.slice(0, k)), rootOfHashes(hashes.slice(k)));
}

/** True when the proof's leaf sits at its index in a tree of its total with this root. */
export function verifyInclusion(proof: InclusionProof, root: Uint8Array): boolean {
  if (!(Number.isSafeInteger(proof.index) && Number.isSafeInteger(proof.total))) return false;
  if (!(0 <= proof.index && proof.index < proof.total)) return false;
  const computed = rootFromPath(leafHash(proof.leaf), proof.index, proof.total, proof.aunts);
  return computed !== null && equalBytes(computed, root);
}

function rootFromPath(node: Uint8Array, index: number, total: number, aunts: Uint8Array[]): Uint8Array | null {
  if (total === 1) return aunts.length === 0 ? node : null;
  if (aunts.length === 0) return null;
  const k = split(total);
  const sibling = aunts[aunts.length - 1]!;
  const rest = aunts.slice(0, -1);
  if (index < k) {
    const left = rootFromPath(node, index, k, rest);
    return left === null ? null : innerHash(left, sibling);
  }
  const right = rootFromPath(node, index - k, total - k, rest);
  return right === null ? null : innerHash(sibling, right);
}

/** The proof that leaves[index] is in the tree (tests build evidence with it). */
export function inclusionProof(leaves: Uint8Array[], index: number): InclusionProof {
  if (!(index >= 0 && index < leaves.length)) throw new RangeError(`leaf ${index} out of range`);
  return { index, total: leaves.length, leaf: leaves[index]!, aunts: aunts(leaves.map(leafHash), index) };
}

function aunts(hashes: Uint8Array[], index: number): Uint8Array[] {
  if (hashes.length === 1) return [];
  const k = split(hashes.length);
  if (index < k) return [...aunts(hashes.slice(0, k), index), rootOfHashes(hashes.slice(k))];
  return [...aunts(hashes.slice(k), index - k), rootOfHashes(hashes.slice(0, k))];
}
