// Record proofs checked in the page: the port of wallet/proofs.py (docs/records.md,
// "Proofs"). Given a record proof, the author's key history and the block hashes the page
// trusts, it checks, in Python's order: the anchor transaction's evidence (wallet/evidence.ts),
// that the anchor is signed by its author's key registered at that height (the did's own key,
// or where proven rotations lead), that the anchor names the record (and, when the page holds
// it, that the resource opens the anchored commitment), and last that the block's hash is the
// one the page trusts (a forger's block is consistent till there: a proof alone proves nothing).
// Every check is reported by name; the first that fails throws ProofError naming it.
import { equalBytes, hex } from "../crypto/bytes";
import { commit, SALT_SIZE } from "../crypto/envelope";
import { ed25519FromDid } from "../crypto/identity";
import { canonicalBytes } from "../crypto/jcs";
import { againstTrust, checkTxEvidence, type TrustedHashes, type VerifiedTx } from "./evidence";
import { bytesOf, type Check, Checklist, fail, fieldOf, isObject, type Json } from "./proof-checks";
import { type DecodedTx, signedBy } from "./tx-decode";

export const PROOF_FORMAT = "careledger-record-proof-v2";
export const ANCHOR_TYPES = ["records/anchor", "records/anchor_batch"];
const MAX_ROTATIONS = 1000;

/** What the page expects the anchor to be: from `records/versions` (the history's entry). */
export interface ExpectedAnchor {
  patient: string;
  record: string;
  version: number;
  blobHash?: string;
}

export interface VerifiedRecord {
  checks: Check[];
  anchor: VerifiedTx;
  author: string;
  signingKey: string; // hex: the author's key at the anchor's height
  rotations: number;
  anchorPayload: Json;
  trusted: boolean;
}

/** Checks a record proof (`careledger-record-proof-v2`; `resource` and `salt` optional: the
 * page checks the commitment when it holds the decrypted resource). `trust`: block hashes
 * the page trusts (null: everything but the trust anchor, which the result says). Throws
 * ProofError naming the first check that fails. */
export function checkRecordProof(proof: unknown, trust: TrustedHashes | null, expected?: ExpectedAnchor): VerifiedRecord {
  const list = new Checklist();
  list.run("format", "The proof is a CareLedger record proof", () => {
    if (fieldOf(proof, "format") !== PROOF_FORMAT) fail(`not a record proof in the ${PROOF_FORMAT} format`);
  });
  const body = proof as Json;
  // The anchor's own block hash is checked at the end (below): first everything it carries.
  const anchor = checkTxEvidence(list, fieldOf(body, "anchor"), null, true, "anchor", "anchor");
  const tx = anchor.tx;
  list.run("anchor-type", "The transaction anchors a record", () => {
    if (!ANCHOR_TYPES.includes(tx.type)) fail(`the transaction is a ${tx.type}, not a records/anchor or anchor_batch`);
  }, () => tx.type);
  const { key, rotations } = authorKey(list, body.author_key ?? {}, anchor, trust);
  list.run(
    "signature",
    `The anchor is signed by its author's key registered at height ${anchor.block.height}`,
    () => {
      if (!signedBy(tx, key)) {
        fail(`the anchor's signature does not verify with ${tx.sender}'s key registered at height ${anchor.block.height}`);
      }
    },
    () => `${tx.sender}, key ${hex(key).slice(0, 16)}…${rotations ? ` (after ${rotations} key rotation${rotations > 1 ? "s" : ""})` : ""}`,
  );
  const payload = list.run("anchor-record", "The anchor names this record and version", () => anchorOf(body, tx, expected), (p) =>
    `version ${String(p.version)} of ${String(p.resource_type)} ${String(p.record).slice(0, 16)}…`,
  );
  if ("resource" in body || "salt" in body) {
    list.run("commitment", "The record's content opens the anchored commitment", () => checkResource(body, payload));
  }
  const block = againstTrust(list, anchor.block, trust, true, "anchor");
  return {
    checks: list.checks,
    anchor: { ...anchor, block },
    author: tx.sender,
    signingKey: hex(key),
    rotations,
    anchorPayload: payload,
    trusted: block.trusted,
  };
}

/** The key the proof says signed the anchor, if the proof shows where it came from: the
 * author's did itself, then each proven rotation, signed by the key before it. */
function authorKey(list: Checklist, claimed: unknown, anchor: VerifiedTx, trust: TrustedHashes | null): { key: Uint8Array; rotations: number } {
  const author = anchor.tx.sender;
  const { start, signingKey, rotations } = list.run("author-key-shape", "The author's key history is readable", () => {
    if (!isObject(claimed)) fail("the proof's author_key is not an object");
    let own: Uint8Array;
    try {
      own = ed25519FromDid(author);
    } catch (error) {
      fail(`the author's key: ${(error as Error).message}`);
    }
    const rotations = claimed.rotations ?? [];
    if (!Array.isArray(rotations)) fail("the author's key rotations are not a list");
    if (rotations.length > MAX_ROTATIONS) fail(`${rotations.length} key rotations: more than ${MAX_ROTATIONS}`);
    const named = claimed.signing_key;
    const signingKey = named ? bytesOf(named, "the author's signing key") : own;
    return { start: own, signingKey, rotations: rotations as unknown[] };
  });
  let key = start;
  let position: [number, number] = [-1, -1];
  rotations.forEach((evidence, i) => {
    const number = i + 1;
    const rotation = checkTxEvidence(list, evidence, trust, false, `rotation-${number}`, `key rotation ${number}`);
    const where: [number, number] = [rotation.block.height, rotation.index];
    key = list.run(`rotation-${number}-signed`, `Key rotation ${number} is the author's, before the anchor, signed by the key before it`, () => {
      if (!(before(position, where) && before(where, [anchor.block.height, anchor.index]))) fail(`key rotation ${number} is not in order before the anchor`);
      const tx = rotation.tx;
      if (tx.type !== "identity/rotate_key" || tx.sender !== author) fail(`key rotation ${number} is not an identity/rotate_key by ${author}`);
      if (tx.chainId !== anchor.tx.chainId) fail(`key rotation ${number} is on another chain than the anchor`);
      if (!signedBy(tx, key)) fail(`key rotation ${number} is not signed by the key before it`);
      return bytesOf(tx.payload.signing_key, `key rotation ${number}'s signing key`);
    });
    position = where;
  });
  list.run(
    "author-key",
    `The author's key at height ${anchor.block.height} is the did's own key or where its proven rotations lead`,
    () => {
      if (!equalBytes(key, signingKey)) {
        fail("the proof's signing key is not the author's did key nor where the proven key rotations lead (a key of unknown origin)");
      }
    },
    () => (rotations.length ? `${rotations.length} proven rotation${rotations.length > 1 ? "s" : ""}` : "the did's own key"),
  );
  return { key, rotations: rotations.length };
}

function before(a: [number, number], b: [number, number]): boolean {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

/** The anchor payload the proof is about: the transaction's own, or the batch's anchor at
 * `anchor_index`; it must name the expected record and version. */
function anchorOf(proof: Json, tx: DecodedTx, expected?: ExpectedAnchor): Json {
  let payload: unknown = tx.payload;
  if (tx.type === "records/anchor_batch") {
    const anchors = tx.payload.anchors;
    const index = proof.anchor_index;
    if (!Array.isArray(anchors) || typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= anchors.length) {
      fail("the proof's anchor_index names no anchor of the batch");
    }
    payload = anchors[index];
  }
  if (!isObject(payload)) fail("the anchor is not an object");
  // a tombstone (a FHIR delete) anchors no blob and commits to nothing
  const fields = payload.tombstone === true ? ["patient", "record", "resource_type", "version"] : ["patient", "record", "resource_type", "version", "commitment"];
  for (const name of fields) {
    if (!(name in payload)) fail(`the anchor has no '${name}'`);
  }
  if (expected) {
    const named = `${String(payload.patient)} record ${String(payload.record)} version ${String(payload.version)}`;
    if (payload.patient !== expected.patient || payload.record !== expected.record || payload.version !== expected.version) {
      fail(`the anchor is of ${named}, not of the record asked for`);
    }
    if (expected.blobHash !== undefined && (payload.blob_hash ?? "") !== expected.blobHash) {
      fail("the anchor names another blob than the record's version");
    }
  }
  return payload;
}

/** The decrypted resource with its salt opens the anchor's commitment, and names the
 * anchored type and version (the record's name is keyed: the commitment binds the id). */
function checkResource(proof: Json, payload: Json): void {
  const resource = proof.resource;
  const salt = bytesOf(proof.salt, "the salt");
  if (!isObject(resource)) fail("the proof has no resource");
  const meta = resource.meta;
  const version = isObject(meta) ? Number(meta.versionId) : NaN;
  if (typeof resource.resourceType !== "string" || typeof resource.id !== "string" || !Number.isInteger(version)) {
    fail("the resource has no resourceType, id or meta.versionId");
  }
  if (resource.resourceType !== payload.resource_type || version !== payload.version) {
    fail(`the resource is ${resource.resourceType}/${resource.id} version ${version}, not the anchored record`);
  }
  if (salt.length !== SALT_SIZE) fail(`the salt is ${salt.length} bytes, not ${SALT_SIZE}`);
  let canonical: Uint8Array;
  try {
    canonical = canonicalBytes(resource);
  } catch (error) {
    fail(`the resource is not JSON: ${(error as Error).message}`);
  }
  if (hex(commit(canonical, salt)) !== payload.commitment) {
    fail("the resource does not match the anchored commitment (altered)");
  }
}
