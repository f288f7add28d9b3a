// Record proofs checked in the page: the port of wallet/proofs.py and wallet/evidence.py
// (docs/records.md, "Proofs"). Given an anchor transaction's evidence from the node
// (`GET /txs/{hash}` -> "evidence"), the author's key history and the block hashes the page
// trusts, it checks, in Python's order:
//   the block (solo: the header; CometBFT: block H+1 names H's hash, the validator set hashes
//   to H+1's validators_hash, and validators holding more than 2/3 of its power signed H+1),
//   the transaction and result are the proofs' leaves, both proofs sit at one position whose
//   total is the header's transaction count, the transaction is included under data_hash and
//   the result under the results root, the result is success (code 0), the transaction is a
//   signed envelope of the block's chain, the anchor is signed by its author's key registered
//   at that height (the did's own key, or where proven rotations lead), the anchor names the
//   record (and, when the page holds it, the resource opens the anchored commitment), and
//   last the block's hash is the one the page trusts (a forger's block is consistent till
//   there: a proof alone proves nothing).
// Every check is reported by name; the first that fails throws ProofError naming it.
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, fromHex, hex, utf8 } from "../crypto/bytes";
import { ed25519FromDid, verify } from "../crypto/identity";
import { canonicalBytes } from "../crypto/jcs";
import { certify, commitFromJson, headerFromJson, LightClientError, validatorSetFromJson } from "./lightclient";
import { type InclusionProof, verifyInclusion } from "./merkle";
import { bytesField, varintField } from "./protobuf";

export const PROOF_FORMAT = "careledger-record-proof-v2";
export const ANCHOR_TYPES = ["records/anchor", "records/anchor_batch"];
const SIGNATURE_BYTES = 64;
const MAX_TX_BYTES = 64 * 1024;
const MAX_BLOCK_TXS = 2 ** 32; // bounds the work a hostile total can cause
const MAX_ROTATIONS = 1000;
const SALT_SIZE = 32;
const COMMITMENT_LABEL = utf8("careledger-commitment-v1");

/** The chain's result codes (chain/codes.py), for messages. */
export const CODE_NAMES: Record<number, string> = {
  0: "OK", 1: "MALFORMED", 2: "OVERSIZED", 3: "WRONG_CHAIN", 4: "UNKNOWN_TYPE", 5: "BAD_SIGNATURE",
  6: "REPLAY", 7: "INVALID_PAYLOAD", 8: "UNAUTHORISED", 9: "NOT_FOUND", 10: "CONFLICT",
  11: "NONCE_TOO_FAR", 12: "ERASED", 13: "UNKNOWN_SENDER", 14: "NO_CONSENT", 15: "BAD_BATCH",
  16: "BATCH_REPLAYED", 17: "BATCH_GAP", 99: "INTERNAL",
};

export function codeName(code: number): string {
  return CODE_NAMES[code] ?? "unknown code";
}

// --- checks, each by name ------------------------------------------------------------------

/** One check of a proof: `id` is stable (tests, data attributes), `label` says it in words. */
export interface Check {
  id: string;
  label: string;
  ok: boolean;
  detail: string;
}

/** A proof that does not hold: `check` is the id of the first check that failed, `checks`
 * those that passed before it and the failed one last. */
export class ProofError extends Error {
  override name = "ProofError";
  constructor(
    message: string,
    readonly check: string,
    readonly checks: Check[],
  ) {
    super(message);
  }
}

/** Thrown inside a check with the reason; the checklist turns it into a ProofError. */
class Failed extends Error {}

function fail(reason: string): never {
  throw new Failed(reason);
}

class Checklist {
  readonly checks: Check[] = [];

  /** Runs one check: its return value is the detail shown when it passes. */
  run<T>(id: string, label: string, body: () => T, detail: (value: T) => string = () => ""): T {
    let value: T;
    try {
      value = body();
    } catch (error) {
      const reason = error instanceof Failed || error instanceof LightClientError ? error.message : `${error}`;
      this.checks.push({ id, label, ok: false, detail: reason });
      throw new ProofError(`${label}: ${reason}`, id, [...this.checks]);
    }
    this.checks.push({ id, label, ok: true, detail: detail(value) });
    return value;
  }
}

// --- JSON shapes ---------------------------------------------------------------------------

type Json = Record<string, unknown>;

function fieldOf(container: unknown, name: string): unknown {
  if (typeof container !== "object" || container === null || Array.isArray(container) || !(name in container)) {
    fail(`the proof has no ${JSON.stringify(name)}`);
  }
  return (container as Json)[name];
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function bytesOf(value: unknown, what: string): Uint8Array {
  if (typeof value !== "string") fail(`${what} is not hex`);
  try {
    return fromHex(value);
  } catch {
    fail(`${what} is not hex`);
  }
}

function intOf(value: unknown, what: string): number {
  if (typeof value === "number" && Number.isSafeInteger(value)) return value;
  if (typeof value === "string" && /^[0-9]{1,15}$/.test(value)) return Number(value);
  fail(`${what} is not an integer`);
}

function heightOf(value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) fail("the transaction proof's height is not an integer");
  return value;
}

function inclusionOf(value: unknown, what: string): InclusionProof {
  const aunts = fieldOf(value, "aunts");
  if (!Array.isArray(aunts)) fail(`${what}: aunts must be a list`);
  return {
    index: intOf(fieldOf(value, "index"), `${what} index`),
    total: intOf(fieldOf(value, "total"), `${what} total`),
    leaf: bytesOf(fieldOf(value, "leaf"), `${what} leaf`),
    aunts: aunts.map((a, i) => bytesOf(a, `${what} aunt ${i}`)),
  };
}

// --- results as headers commit to them (chain/results.py) ----------------------------------

export interface TxOutcome {
  code: number;
  data: Uint8Array;
  gasWanted: bigint;
  gasUsed: bigint;
}

function outcomeOf(value: unknown): TxOutcome {
  const code = fieldOf(value, "code");
  const wanted = fieldOf(value, "gas_wanted");
  const used = fieldOf(value, "gas_used");
  if (![code, wanted, used].every((v) => typeof v === "number" && Number.isSafeInteger(v))) {
    fail("result code and gas must be integers");
  }
  if (!((code as number) >= 0 && (code as number) <= 0xffffffff)) fail(`result code ${code} is not a uint32`);
  return { code: code as number, data: bytesOf(fieldOf(value, "data"), "result data"), gasWanted: BigInt(wanted as number), gasUsed: BigInt(used as number) };
}

/** The protobuf ExecTxResult with only code, data, gas_wanted, gas_used (CometBFT's
 * `types.NewResults`): the leaf the results root commits to. */
export function encodeOutcome(outcome: TxOutcome): Uint8Array {
  return concat(
    varintField(1, BigInt(outcome.code)),
    bytesField(2, outcome.data),
    varintField(5, outcome.gasWanted),
    varintField(6, outcome.gasUsed),
  );
}

// --- transactions (chain/tx.py) ------------------------------------------------------------

export interface DecodedTx {
  chainId: string;
  type: string;
  sender: string;
  nonce: number;
  payload: Json;
  body: Uint8Array; // the canonical JSON the signature covers
  signature: Uint8Array;
  hash: string; // hex SHA-256 of the wire bytes
}

export class TxDecodeError extends Error {
  override name = "TxDecodeError";
}

/** The signed envelope `RFC 8785 body || 64-byte Ed25519 signature`; refuses what the chain
 * calls MALFORMED: a body that is not canonical JSON, missing or extra fields, wrong types. */
export function decodeTx(raw: Uint8Array): DecodedTx {
  if (raw.length > MAX_TX_BYTES) throw new TxDecodeError(`the transaction is ${raw.length} bytes, over ${MAX_TX_BYTES}`);
  if (raw.length <= SIGNATURE_BYTES) throw new TxDecodeError("the transaction is too short to hold a signature");
  const body = raw.slice(0, raw.length - SIGNATURE_BYTES);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    if (!equalBytes(canonicalBytes(value), body)) throw new Error("not canonical");
  } catch {
    throw new TxDecodeError("the transaction's body is not canonical JSON");
  }
  const fields = ["chain_id", "nonce", "payload", "sender", "type"];
  if (!isObject(value) || Object.keys(value).sort().join() !== fields.join()) {
    throw new TxDecodeError(`an envelope has exactly the fields ${fields.join(", ")}`);
  }
  const { chain_id: chainId, type, sender, nonce, payload } = value;
  if (typeof chainId !== "string" || typeof type !== "string" || typeof sender !== "string") {
    throw new TxDecodeError("chain_id, type and sender must be strings");
  }
  if (typeof nonce !== "number" || !Number.isSafeInteger(nonce) || nonce < 1) throw new TxDecodeError("the nonce is not a positive integer");
  if (!isObject(payload)) throw new TxDecodeError("the payload must be an object");
  return { chainId, type, sender, nonce, payload, body, signature: raw.slice(raw.length - SIGNATURE_BYTES), hash: hex(sha256(raw)) };
}

function signedBy(tx: DecodedTx, key: Uint8Array): boolean {
  return key.length === 32 && verify(key, tx.signature, tx.body);
}

// --- one transaction in one block (wallet/evidence.py) -------------------------------------

export interface VerifiedBlock {
  consensus: "solo" | "cometbft";
  height: number;
  blockHash: string; // lower-case hex: the solo header's hash, or CometBFT's block id
  time: string;
  validatorsHash: string; // CometBFT: the set that signed; "" in solo mode
  signedPower: bigint; // CometBFT: the power that signed block H+1
  totalPower: bigint;
  trusted: boolean; // the hash matched one the page trusts
}

export interface VerifiedTx {
  tx: DecodedTx;
  index: number;
  total: number;
  result: TxOutcome;
  block: VerifiedBlock;
}

/** Block hashes the page trusts, by height: what the node it is signed in to reports at
 * `GET /blocks/{h}` ("hash"), as `careledger verify-record --node` trusts it. */
export type TrustedHashes = ReadonlyMap<number, string>;

interface Roots {
  chainId: string;
  dataHash: Uint8Array;
  resultsHash: Uint8Array;
  numTxs: number | null; // CometBFT's header does not carry it
}

/** That a transaction is in a block and succeeded there. With `trust`, a block whose height
 * it names must hash to it; one it does not name fails when `required`. `prefix` names the
 * evidence in check ids ("anchor", "rotation-1"). */
function checkTxEvidence(
  list: Checklist,
  evidence: unknown,
  trust: TrustedHashes | null,
  required: boolean,
  prefix: string,
  what: string,
): VerifiedTx {
  const parsed = list.run(`${prefix}-shape`, `The ${what}'s proof material is complete`, () => ({
    raw: bytesOf(fieldOf(evidence, "tx"), "the transaction"),
    height: heightOf(fieldOf(evidence, "height")),
    txProof: inclusionOf(fieldOf(evidence, "tx_proof"), "the tx proof"),
    result: outcomeOf(fieldOf(evidence, "result")),
    resultProof: inclusionOf(fieldOf(evidence, "result_proof"), "the result proof"),
    block: fieldOf(evidence, "block"),
  }));
  const { raw, height, txProof, result, resultProof } = parsed;
  const { block, roots } = verifyBlock(list, parsed.block, height, prefix, what);
  list.run(`${prefix}-tx-leaf`, `The ${what} is the leaf its inclusion proof starts from`, () => {
    if (!equalBytes(sha256(raw), txProof.leaf)) fail("the transaction is not the tx proof's leaf");
  });
  list.run(`${prefix}-result-leaf`, `Its result is the leaf its result proof starts from`, () => {
    if (!equalBytes(encodeOutcome(result), resultProof.leaf)) fail("the result is not the result proof's leaf");
  });
  list.run(
    `${prefix}-position`,
    roots.numTxs === null ? "Both proofs are for one position in the block" : "Both proofs are for one position, and the block's transaction count matches the header",
    () => checkPositions(txProof, resultProof, roots.numTxs),
    () => `transaction ${txProof.index + 1} of ${txProof.total}`,
  );
  list.run(
    `${prefix}-inclusion`,
    `The ${what} is included in block ${height}'s transactions (data_hash)`,
    () => {
      if (!verifyInclusion(txProof, roots.dataHash)) fail(`the tx proof does not lead to block ${height}'s data_hash`);
    },
    () => `data_hash ${hex(roots.dataHash)}`,
  );
  list.run(
    `${prefix}-result-committed`,
    block.consensus === "solo"
      ? `Its result is committed in block ${height}'s header (results_hash)`
      : `Its result is committed in block ${height + 1}'s header (last_results_hash)`,
    () => {
      if (!verifyInclusion(resultProof, roots.resultsHash)) {
        fail(`the result proof does not lead to the results root of block ${height} (result altered)`);
      }
    },
    () => `results root ${hex(roots.resultsHash)}`,
  );
  list.run(
    `${prefix}-success`,
    `The ${what} succeeded on chain (result code 0)`,
    () => {
      if (result.code !== 0) fail(`the transaction failed on chain: result code ${result.code} (${codeName(result.code)})`);
    },
  );
  const tx = list.run(
    `${prefix}-envelope`,
    `The ${what} is a signed envelope of the block's chain`,
    () => {
      let decoded: DecodedTx;
      try {
        decoded = decodeTx(raw);
      } catch (error) {
        fail(`the transaction is not a signed envelope: ${(error as Error).message}`);
      }
      if (decoded.chainId !== roots.chainId) fail(`the transaction is for chain ${JSON.stringify(decoded.chainId)}, not the block's`);
      return decoded;
    },
    (decoded) => `${decoded.type} by ${decoded.sender}`,
  );
  return { tx, index: txProof.index, total: txProof.total, result, block: againstTrust(list, block, trust, required, prefix) };
}

function checkPositions(txProof: InclusionProof, resultProof: InclusionProof, numTxs: number | null): void {
  if (!(txProof.total > 0 && txProof.total <= MAX_BLOCK_TXS)) fail(`a block of ${txProof.total} transactions is impossible`);
  if (numTxs !== null && (txProof.total !== numTxs || resultProof.total !== numTxs)) {
    fail(`the proofs' totals (${txProof.total}, ${resultProof.total}) are not the header's transaction count num_txs=${numTxs}`);
  }
  if (txProof.index !== resultProof.index || txProof.total !== resultProof.total) {
    fail(
      `the tx proof (index ${txProof.index} of ${txProof.total}) and the result proof (index ${resultProof.index} of ${resultProof.total}) are for different positions`,
    );
  }
  if (!(txProof.index >= 0 && txProof.index < txProof.total)) fail(`index ${txProof.index} is outside a block of ${txProof.total}`);
}

/** The trust anchor, checked last: the block hashes to the hash the page trusts. */
function againstTrust(list: Checklist, block: VerifiedBlock, trust: TrustedHashes | null, required: boolean, prefix: string): VerifiedBlock {
  if (trust === null) return block;
  const expected = trust.get(block.height)?.toLowerCase();
  if (expected === undefined && !required) return block;
  list.run(
    `${prefix}-block-hash`,
    `Block ${block.height}'s hash is the one the node reports`,
    () => {
      if (expected === undefined) fail(`no trusted hash for block ${block.height}, the proof's block`);
      if (block.blockHash !== expected) {
        fail(
          `block ${block.height} of the proof hashes to ${block.blockHash}, not to the trusted ${expected}: it is not that chain's block (forged, or of another chain)`,
        );
      }
    },
    () => block.blockHash,
  );
  return { ...block, trusted: true };
}

function verifyBlock(list: Checklist, block: unknown, height: number, prefix: string, what: string): { block: VerifiedBlock; roots: Roots } {
  const consensus = list.run(`${prefix}-consensus`, `The ${what}'s block is of a known kind`, () => {
    const found = fieldOf(block, "consensus");
    if (found !== "solo" && found !== "cometbft") fail(`unknown consensus ${JSON.stringify(found)} in the proof`);
    return found;
  });
  return consensus === "solo" ? soloBlock(list, block, height, prefix) : cometBlock(list, block, height, prefix);
}

/** The solo header (chain/block.py): its hash is SHA-256 of its RFC 8785 bytes. */
function soloBlock(list: Checklist, block: unknown, height: number, prefix: string): { block: VerifiedBlock; roots: Roots } {
  return list.run(
    `${prefix}-header`,
    `The block header is block ${height}'s, and hashes`,
    () => {
      const header = fieldOf(block, "header");
      const normal = soloHeaderJson(header);
      if (normal.height !== height) fail(`the header is of block ${normal.height}, not ${height}`);
      const roots: Roots = {
        chainId: normal.chain_id,
        dataHash: bytesOf(normal.data_hash, "data_hash"),
        resultsHash: bytesOf(normal.results_hash, "results_hash"),
        numTxs: normal.num_txs,
      };
      const blockHash = hex(sha256(canonicalBytes(normal)));
      const verified: VerifiedBlock = {
        consensus: "solo", height, blockHash, time: normal.time, validatorsHash: "", signedPower: 0n, totalPower: 0n, trusted: false,
      };
      return { block: verified, roots };
    },
    (found) => `header hash ${found.block.blockHash}`,
  );
}

interface SoloHeaderJson {
  chain_id: string;
  height: number;
  time: string;
  previous_hash: string;
  data_hash: string;
  app_hash: string;
  num_txs: number;
  results_hash: string;
}

/** The header as BlockHeader.from_json(...).to_json() writes it (what its hash covers). */
function soloHeaderJson(header: unknown): SoloHeaderJson {
  const text = (name: string) => {
    const value = fieldOf(header, name);
    if (typeof value !== "string") fail(`not a block header: ${name} is not a string`);
    return value;
  };
  return {
    chain_id: text("chain_id"),
    height: intOf(fieldOf(header, "height"), "the header's height"),
    time: normalTime(text("time")),
    previous_hash: text("previous_hash"),
    data_hash: text("data_hash"),
    app_hash: text("app_hash"),
    num_txs: intOf(fieldOf(header, "num_txs"), "num_txs"),
    results_hash: text("results_hash"),
  };
}

/** RFC 3339 UTC with nine fractional digits, as chain/block.py format_time_ns writes it. */
function normalTime(text: string): string {
  const found = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d*))?Z$/.exec(text);
  if (!found || (found[2] !== undefined && found[2] !== "" && !/^\d+$/.test(found[2]))) {
    fail(`not a block header: time ${JSON.stringify(text)} is not RFC 3339 UTC`);
  }
  return `${found[1]}.${(found[2] ?? "").padEnd(9, "0").slice(0, 9)}Z`;
}

/** Block H under CometBFT: certified by block H+1's header, the commit signing it and the
 * validator set at H+1 (protocol/cometbft `certify`). */
function cometBlock(list: Checklist, block: unknown, height: number, prefix: string): { block: VerifiedBlock; roots: Roots } {
  const certified = list.run(
    `${prefix}-validators`,
    `Block ${height + 1}, which names block ${height}, is signed by more than 2/3 of the validators' power`,
    () => {
      const header = headerFromJson(fieldOf(block, "header"));
      if (header.height !== BigInt(height)) fail(`the header is of block ${header.height}, not ${height}`);
      return certify(
        header,
        headerFromJson(fieldOf(block, "next_header")),
        commitFromJson(fieldOf(block, "commit")),
        validatorSetFromJson(fieldOf(block, "validators")),
      );
    },
    (found) => `${found.signedPower} of ${found.totalPower} voting power signed; validator set ${hex(found.validatorsHash).toUpperCase()}`,
  );
  const { header, nextHeader } = certified;
  const [seconds, nanos] = header.time;
  const time = `${new Date(Number(seconds) * 1000).toISOString().slice(0, 19)}.${nanos.toString().padStart(9, "0")}Z`;
  return {
    block: {
      consensus: "cometbft",
      height,
      blockHash: hex(certified.blockHash),
      time,
      validatorsHash: hex(certified.validatorsHash),
      signedPower: certified.signedPower,
      totalPower: certified.totalPower,
      trusted: false,
    },
    roots: {
      chainId: header.chainId,
      dataHash: header.hashes.data_hash,
      resultsHash: nextHeader.hashes.last_results_hash,
      numTxs: null,
    },
  };
}

// --- record proofs (wallet/proofs.py) ------------------------------------------------------

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
  if (hex(sha256(concat(COMMITMENT_LABEL, salt, canonical))) !== payload.commitment) {
    fail("the resource does not match the anchored commitment (altered)");
  }
}

/** One transaction's evidence alone (an audit batch, a rotation): in a block, at a position,
 * succeeded, and (with `trust`) in the block the page trusts. */
export function checkTransactionEvidence(evidence: unknown, trust: TrustedHashes | null): { checks: Check[]; verified: VerifiedTx } {
  const list = new Checklist();
  const verified = checkTxEvidence(list, evidence, trust, trust !== null, "tx", "transaction");
  return { checks: list.checks, verified };
}
