// Gathering a record version's proof material from the node, in the page (the parts of
// wallet/proving.py that need no decryption): the anchor transaction found by its block's
// events, its evidence (`GET /txs/{hash}`), the author's key history with the proven
// rotations that lead to the key at the anchor, and the block hashes the node reports (what
// the page trusts, as `careledger verify-record --node`). wallet/proofs.ts checks it.
import { fromHex } from "../crypto/bytes";
import { ed25519FromDid } from "../crypto/identity";
import { hex } from "../crypto/bytes";
import { NodeError, type NodeClient } from "./node";
import { checkRecordProof, PROOF_FORMAT, type ExpectedAnchor, type VerifiedRecord } from "./proofs";
import { decodeTx } from "./tx-decode";

/** A version's anchor as `records/versions` lists it in `history`. */
export interface AnchorEntry {
  author: string;
  blob_hash: string;
  commitment: string;
  height: number;
  org: string;
  recipients: string[];
  scope: string;
  tombstone: boolean;
  version: number;
}

export interface RecordVersions {
  patient: string;
  record: string;
  resource_type: string;
  scope: string;
  versions: number;
  erased_at: number;
  org: string;
  history: AnchorEntry[];
}

interface BlockTx {
  hash: string;
  index: number;
  code: number;
  log: string;
  events: { type: string; attributes: Record<string, string> }[];
}

export interface NodeBlock {
  hash: string;
  header: { chain_id: string; height: number; time: string; num_txs: number; [key: string]: unknown };
  txs: BlockTx[];
}

interface NodeTransaction {
  hash: string;
  tx: string;
  height: number | string;
  evidence: Record<string, unknown> | null;
}

/** A CometBFT node has a transaction's evidence once the block after it is committed. */
const EVIDENCE_TRIES = 20;
const EVIDENCE_PAUSE_MS = 500;

export function recordVersions(node: NodeClient, patient: string, record: string): Promise<RecordVersions> {
  return node.query<RecordVersions>("records", "versions", { patient, record });
}

/** The hash of the transaction that anchored this version, found by its block's events
 * (by patient, record and version: a tombstone has no blob hash to tell it apart). */
export async function anchorTxHash(node: NodeClient, patient: string, record: string, anchor: AnchorEntry): Promise<string> {
  const block = await node.block<NodeBlock>(anchor.height);
  for (const tx of block.txs) {
    for (const event of tx.events ?? []) {
      const a = event.attributes;
      if (event.type !== "records.anchored" || tx.code !== 0) continue;
      if (a.patient === patient && a.record === record && a.version === String(anchor.version) && a.blob_hash === anchor.blob_hash) {
        return tx.hash;
      }
    }
  }
  throw new NodeError(404, "not_found", `No anchor of this version in block ${anchor.height}.`);
}

export async function txEvidence(node: NodeClient, hash: string): Promise<Record<string, unknown>> {
  for (let attempt = 0; ; attempt++) {
    const found = await node.transaction<NodeTransaction>(hash);
    if (found.evidence) return found.evidence;
    if (attempt >= EVIDENCE_TRIES) {
      throw new NodeError(503, "no_evidence", "The node has no proof of this transaction yet: the block after it is not committed. Try again in a moment.");
    }
    await new Promise((resolve) => setTimeout(resolve, EVIDENCE_PAUSE_MS));
  }
}

interface KeyHistoryEntry {
  since: number;
  signing_key: string;
}

/** The author's key at the anchor's position and the proven rotations leading to it (the
 * identity query's `keys`; rotations after the anchor left out), as proving.py gathers it. */
export async function authorKeyEvidence(
  node: NodeClient,
  did: string,
  anchor: { height: number; tx_proof: { index: number } },
): Promise<{ signing_key: string; rotations: Record<string, unknown>[] }> {
  let key = hex(ed25519FromDid(did));
  const identity = await node.query<{ keys?: KeyHistoryEntry[] }>("identity", "identity", { did });
  const history = [...(identity.keys ?? [])].sort((a, b) => a.since - b.since);
  const rotations: Record<string, unknown>[] = [];
  for (const entry of history) {
    if (entry.signing_key === key || entry.since > anchor.height) continue; // the registration, or later
    const evidence = await txEvidence(node, await rotationTxHash(node, did, entry.since, entry.signing_key));
    const where = [Number(evidence.height), Number((evidence.tx_proof as { index: number }).index)] as const;
    if (where[0] > anchor.height || (where[0] === anchor.height && where[1] > anchor.tx_proof.index)) break;
    rotations.push(evidence);
    key = entry.signing_key;
  }
  return { signing_key: key, rotations };
}

async function rotationTxHash(node: NodeClient, did: string, height: number, newKey: string): Promise<string> {
  const block = await node.block<NodeBlock>(height);
  for (const tx of block.txs) {
    const rotated = (tx.events ?? []).some((e) => e.type === "identity.key_rotated" && e.attributes.did === did);
    if (!rotated || tx.code !== 0) continue;
    const found = await node.transaction<NodeTransaction>(tx.hash);
    if (decodeTx(fromHex(found.tx)).payload.signing_key === newKey) return tx.hash;
  }
  throw new NodeError(404, "not_found", `No rotation of ${did} in block ${height}.`);
}

/** The block hashes the node reports at these heights: what the page trusts. */
export async function trustedHashes(node: NodeClient, heights: number[]): Promise<Map<number, string>> {
  const trust = new Map<number, string>();
  for (const height of new Set(heights)) trust.set(height, (await node.block<NodeBlock>(height)).hash);
  return trust;
}

export interface GatheredProof {
  proof: Record<string, unknown>;
  expected: ExpectedAnchor;
  trust: Map<number, string>;
  txHash: string;
}

/** Everything a version's proof needs but the decrypted resource (which only its readers
 * hold): the page checks the rest, and says the content was not checked. */
export async function gatherRecordProof(node: NodeClient, versions: RecordVersions, anchor: AnchorEntry): Promise<GatheredProof> {
  const txHash = await anchorTxHash(node, versions.patient, versions.record, anchor);
  const evidence = await txEvidence(node, txHash);
  const tx = decodeTx(fromHex(String(evidence.tx)));
  const position = { height: Number(evidence.height), tx_proof: evidence.tx_proof as { index: number } };
  const authorKey = await authorKeyEvidence(node, tx.sender, position);
  const proof: Record<string, unknown> = { format: PROOF_FORMAT, anchor: evidence, author_key: authorKey };
  if (tx.type === "records/anchor_batch") {
    // a batch names each record once (docs/chain.md): its anchor for this record
    proof.anchor_index = (tx.payload.anchors as { record?: string; patient?: string }[]).findIndex(
      (a) => a.patient === versions.patient && a.record === versions.record,
    );
  }
  const heights = [position.height, ...authorKey.rotations.map((r) => Number(r.height))];
  const expected = { patient: versions.patient, record: versions.record, version: anchor.version, blobHash: anchor.blob_hash };
  return { proof, expected, trust: await trustedHashes(node, heights), txHash };
}

/** Gather and check in one step (the Record page's "Check proof"). */
export async function checkVersionProof(node: NodeClient, versions: RecordVersions, anchor: AnchorEntry): Promise<VerifiedRecord> {
  const gathered = await gatherRecordProof(node, versions, anchor);
  return checkRecordProof(gathered.proof, gathered.trust, gathered.expected);
}
