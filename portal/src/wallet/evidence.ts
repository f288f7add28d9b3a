// One transaction in one block (port of wallet/evidence.py): given a transaction's evidence
// from the node (`GET /txs/{hash}` -> "evidence"), it checks the block (solo: the header;
// CometBFT: block H+1 names H's hash, the validator set hashes to H+1's validators_hash, and
// validators holding more than 2/3 of its power signed H+1), that the transaction and result
// are the proofs' leaves at one position whose total is the header's transaction count, that
// the transaction is included under data_hash and the result under the results root, that the
// result is success (code 0) and the transaction a signed envelope of the block's chain, and
// last that the block's hash is the one the page trusts.
import { sha256 } from "@noble/hashes/sha2.js";
import { equalBytes, hex } from "../crypto/bytes";
import { canonicalBytes } from "../crypto/jcs";
import { certify, commitFromJson, headerFromJson, validatorSetFromJson } from "./lightclient";
import { type InclusionProof, verifyInclusion } from "./merkle";
import { bytesOf, type Check, Checklist, fail, fieldOf, intOf } from "./proof-checks";
import { codeName, decodeTx, type DecodedTx, encodeOutcome, outcomeOf, type TxOutcome } from "./tx-decode";

const MAX_BLOCK_TXS = 2 ** 32; // bounds the work a hostile total can cause

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
export function checkTxEvidence(
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
export function againstTrust(list: Checklist, block: VerifiedBlock, trust: TrustedHashes | null, required: boolean, prefix: string): VerifiedBlock {
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

/** One transaction's evidence alone (an audit batch, a rotation): in a block, at a position,
 * succeeded, and (with `trust`) in the block the page trusts. */
export function checkTransactionEvidence(evidence: unknown, trust: TrustedHashes | null): { checks: Check[]; verified: VerifiedTx } {
  const list = new Checklist();
  const verified = checkTxEvidence(list, evidence, trust, trust !== null, "tx", "transaction");
  return { checks: list.checks, verified };
}
