// The page's record-proof check on proofs a real node gave (tests/portal/test_proofs_interop.py
// writes them and runs this file; without that fixture it is skipped). For each case it
// writes what it decided ("passed", or the id of the first check that failed) for the pytest
// to compare with Python's verdict and the check it expects, and for the honest proof it
// flips every byte of the transaction, the header's hashes and the Merkle paths: each flip
// must be refused.
import { readFileSync, writeFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ProofError } from "../src/wallet/proof-checks";
import { checkRecordProof } from "../src/wallet/proofs";

/* eslint-disable @typescript-eslint/no-explicit-any -- proof JSON from Python */
const FIXTURE = process.env.CARELEDGER_PROOF_FIXTURE;
const DECIDED = process.env.CARELEDGER_PROOF_DECIDED;

interface Case {
  name: string;
  proof: any;
  trust: Record<string, string>;
  expect: string;
}

function trustOf(c: Case): Map<number, string> {
  return new Map(Object.entries(c.trust).map(([h, v]) => [Number(h), v]));
}

function decide(proof: unknown, trust: Map<number, string>): { decided: string; checks: string[]; rotations?: number } {
  try {
    const verified = checkRecordProof(proof, trust);
    return { decided: "passed", checks: verified.checks.map((c) => c.id), rotations: verified.rotations };
  } catch (error) {
    if (error instanceof ProofError) return { decided: error.check, checks: error.checks.filter((c) => c.ok).map((c) => c.id) };
    throw error; // anything else is a bug in the checker: the test fails
  }
}

function flipByte(text: string, index: number): string {
  const byte = parseInt(text.slice(2 * index, 2 * index + 2), 16) ^ 1;
  return text.slice(0, 2 * index) + byte.toString(16).padStart(2, "0") + text.slice(2 * index + 2);
}

/** Every byte of each hex field of the anchor's evidence, flipped one at a time. */
function byteFlips(honest: any, trust: Map<number, string>): { tried: number; survived: string[] } {
  const fields: [string, (p: any) => any, string][] = [];
  const anchor = (p: any) => p.anchor;
  fields.push(["tx", anchor, "tx"]);
  for (const name of ["previous_hash", "data_hash", "app_hash", "results_hash"]) fields.push([name, (p) => p.anchor.block.header, name]);
  for (const proof of ["tx_proof", "result_proof"]) {
    fields.push([`${proof}.leaf`, (p) => p.anchor[proof], "leaf"]);
    honest.anchor[proof].aunts.forEach((_: string, i: number) => fields.push([`${proof}.aunts[${i}]`, (p) => p.anchor[proof].aunts, String(i)]));
  }
  let tried = 0;
  const survived: string[] = [];
  for (const [label, parent, key] of fields) {
    const length = parent(honest)[key].length / 2;
    for (let i = 0; i < length; i++) {
      const forged = structuredClone(honest);
      parent(forged)[key] = flipByte(parent(forged)[key], i);
      tried += 1;
      if (decide(forged, trust).decided === "passed") survived.push(`${label} byte ${i}`);
    }
  }
  return { tried, survived };
}

describe.skipIf(!FIXTURE)("record proofs from a real node", () => {
  it("decides every case as Python does", () => {
    const cases: Case[] = JSON.parse(readFileSync(FIXTURE!, "utf8")).cases;
    const decided: Record<string, any> = {};
    for (const c of cases) decided[c.name] = decide(c.proof, trustOf(c));
    const honest = cases.find((c) => c.name === "honest batch anchor")!;
    decided[honest.name].byte_flips = byteFlips(honest.proof, trustOf(honest));
    writeFileSync(DECIDED!, JSON.stringify(decided));
    for (const c of cases) expect([c.name, decided[c.name].decided]).toEqual([c.name, c.expect]);
    expect(decided[honest.name].byte_flips.survived).toEqual([]);
  });
});
