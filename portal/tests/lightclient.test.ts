// The page's CometBFT checks against values the real CometBFT v0.38.25 made
// (tests/vectors/cometbft/, the same files tests/test_lightclient.py checks in Python), and
// a transaction's evidence built from a live network's answers: it verifies, and each
// forgery a proof would need fails at its named check.
import { readFileSync } from "node:fs";
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { fromB64, fromHex, hex } from "../src/crypto/bytes";
import {
  blockIdFromJson,
  certify,
  commitFromJson,
  headerFromJson,
  headerHash,
  parseTime,
  validatorSetFromJson,
  validatorSetHash,
  voteSignBytes,
} from "../src/wallet/lightclient";
import { inclusionProof, merkleRoot } from "../src/wallet/merkle";
import { checkTransactionEvidence } from "../src/wallet/evidence";
import { ProofError } from "../src/wallet/proof-checks";
import { encodeOutcome } from "../src/wallet/tx-decode";

/* eslint-disable @typescript-eslint/no-explicit-any -- CometBFT's RPC JSON, as recorded */
const VECTORS = new URL("../../tests/vectors/cometbft/", import.meta.url);
/** JSON with integers beyond 2^53 kept exact: written as strings (which the page's parsers
 * take, as CometBFT's RPC writes int64s). */
function readJson(name: string): any {
  const text = readFileSync(new URL(name, VECTORS), "utf8");
  return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
}
const RECORDED = readJson("recorded.json");
const GENERATED = readJson("generated.json");
const HEIGHTS: any[] = RECORDED.heights;

describe("CometBFT light client (recorded from a live network)", () => {
  it.each(HEIGHTS.map((h, i) => [i + 1, h]))("header %i hashes to its block id", (_n, recorded: any) => {
    expect(hex(headerHash(headerFromJson(recorded.block.header))).toUpperCase()).toBe(recorded.block_id.hash);
  });

  it.each(HEIGHTS.map((h, i) => [i + 1, h]))("commit %i is for the header whose validators it names", (_n, recorded: any) => {
    const header = headerFromJson(recorded.commit.header);
    const set = validatorSetFromJson(recorded.validators);
    expect(hex(validatorSetHash(set))).toBe(hex(header.hashes.validators_hash));
    const commit = commitFromJson(recorded.commit.commit);
    expect(hex(commit.blockId.hash)).toBe(hex(headerHash(header)));
  });

  it("certifies each block by the next one's commit", () => {
    for (let i = 0; i + 1 < HEIGHTS.length; i++) {
      const next = HEIGHTS[i + 1];
      const certified = certify(
        headerFromJson(HEIGHTS[i].block.header),
        headerFromJson(next.commit.header),
        commitFromJson(next.commit.commit),
        validatorSetFromJson(next.validators),
      );
      expect(3n * certified.signedPower > 2n * certified.totalPower).toBe(true);
      expect(hex(certified.blockHash).toUpperCase()).toBe(HEIGHTS[i].block_id.hash);
    }
  });
});

describe("CometBFT values computed by its Go code", () => {
  it("hashes headers as CometBFT does", () => {
    for (const { header, hash } of GENERATED.headers) expect(hex(headerHash(headerFromJson(header)))).toBe(hash);
  });
  it("hashes validator sets in the set's order", () => {
    for (const { validators, hash } of GENERATED.validators) {
      const set = validatorSetFromJson(
        validators.map((v: any) => ({ ...v, pub_key: { type: "tendermint/PubKeyEd25519", value: v.pub_key } })),
      );
      expect(hex(validatorSetHash(set))).toBe(hash);
    }
  });
  it("writes a vote's sign bytes (rounds, nil votes)", () => {
    for (const vote of GENERATED.votes) {
      const bytes = voteSignBytes(
        vote.chain_id,
        BigInt(vote.height),
        BigInt(vote.round),
        blockIdFromJson(vote.block_id),
        parseTime(vote.timestamp),
      );
      expect(hex(bytes)).toBe(vote.sign_bytes);
    }
  });
  it("encodes results and their root as last_results_hash", () => {
    for (const { results, hash } of GENERATED.results) {
      const leaves = (results ?? []).map((r: any) => {
        const encoded = encodeOutcome({
          code: r.code,
          data: fromHex(r.data),
          gasWanted: BigInt(r.gas_wanted),
          gasUsed: BigInt(r.gas_used),
        });
        expect(hex(encoded)).toBe(r.encoded);
        return encoded;
      });
      expect(hex(merkleRoot(leaves))).toBe(hash);
    }
  });
});

/** The evidence a network node's GET /txs/{hash} gives for transaction `index` of block 1. */
function evidenceOf(index: number): any {
  const found = RECORDED.txs.find((t: any) => Number(t.height) === 1 && Number(t.index) === index);
  const [block, next] = [HEIGHTS[0], HEIGHTS[1]];
  const leaves = block.results.map((r: any) =>
    encodeOutcome({ code: r.code, data: fromB64(r.data ?? ""), gasWanted: BigInt(r.gas_wanted), gasUsed: BigInt(r.gas_used) }),
  );
  const resultProof = inclusionProof(leaves, index);
  const r = block.results[index];
  return structuredClone({
    tx: hex(fromB64(found.tx)),
    height: 1,
    tx_proof: {
      index,
      total: Number(found.proof.proof.total),
      leaf: hex(sha256(fromB64(found.tx))), // the node's leaf: the transaction's hash
      aunts: found.proof.proof.aunts.map((a: string) => hex(fromB64(a))),
    },
    result: { code: r.code, data: "", gas_wanted: Number(r.gas_wanted), gas_used: Number(r.gas_used) },
    result_proof: { index, total: resultProof.total, leaf: hex(resultProof.leaf), aunts: resultProof.aunts.map(hex) },
    block: {
      consensus: "cometbft",
      header: block.block.header,
      next_header: next.commit.header,
      commit: next.commit.commit,
      validators: next.validators,
    },
  });
}

function failedCheck(evidence: unknown, trust: Map<number, string> | null): string {
  try {
    checkTransactionEvidence(evidence, trust);
  } catch (error) {
    if (error instanceof ProofError) return error.check;
    throw error;
  }
  return "passed";
}

const flip = (text: string, at: number) => text.slice(0, at) + (text[at] === "0" ? "1" : "0") + text.slice(at + 1);

describe("a transaction's evidence under CometBFT", () => {
  const trust = new Map([[1, HEIGHTS[0].block_id.hash as string]]);

  it("verifies an honest one, every check named", () => {
    const { checks, verified } = checkTransactionEvidence(evidenceOf(0), trust);
    expect(verified.block.trusted).toBe(true);
    expect(checks.every((c) => c.ok)).toBe(true);
    expect(checks.map((c) => c.id)).toEqual([
      "tx-shape",
      "tx-consensus",
      "tx-validators",
      "tx-tx-leaf",
      "tx-result-leaf",
      "tx-position",
      "tx-inclusion",
      "tx-result-committed",
      "tx-success",
      "tx-envelope",
      "tx-block-hash",
    ]);
  });

  it("refuses a failed transaction (code 10) however honest its proof", () => {
    expect(failedCheck(evidenceOf(1), trust)).toBe("tx-success");
  });

  const forgeries: [string, (e: any) => void, string][] = [
    [
      "a validator's signature altered",
      (e) => {
        const sig = fromB64(e.block.commit.signatures[0].signature);
        sig[5] = sig[5]! ^ 1;
        e.block.commit.signatures[0].signature = Buffer.from(sig).toString("base64");
      },
      "tx-validators",
    ],
    [
      "signatures removed below 2/3",
      (e) => {
        for (const s of e.block.commit.signatures.slice(0, 2)) s.block_id_flag = 1;
      },
      "tx-validators",
    ],
    ["another validator's power", (e) => (e.block.validators[0].voting_power = "100"), "tx-validators"],
    ["the header's data_hash altered", (e) => (e.block.header.data_hash = flip(e.block.header.data_hash, 3)), "tx-validators"],
    ["the transaction's signature altered", (e) => (e.tx = flip(e.tx, e.tx.length - 3)), "tx-tx-leaf"],
    ["a made-up result code", (e) => (e.result.code = 8), "tx-result-leaf"],
    ["an aunt altered", (e) => (e.tx_proof.aunts[0] = flip(e.tx_proof.aunts[0], 0)), "tx-inclusion"],
    ["the result proof's aunt altered", (e) => (e.result_proof.aunts[0] = flip(e.result_proof.aunts[0], 0)), "tx-result-committed"],
    [
      "the index moved",
      (e) => {
        e.tx_proof.index = 1;
        e.result_proof.index = 1;
      },
      "tx-inclusion",
    ],
    ["the result of another position", (e) => (e.result_proof.index = 2), "tx-position"],
  ];
  it.each(forgeries)("refuses %s", (_what, change, check) => {
    const evidence = evidenceOf(0);
    change(evidence);
    expect(failedCheck(evidence, trust)).toBe(check);
  });

  it("refuses a block whose hash is not the trusted one", () => {
    expect(failedCheck(evidenceOf(0), new Map([[1, "00".repeat(32)]]))).toBe("tx-block-hash");
  });
});
