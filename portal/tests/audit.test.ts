// The access log's proofs, checked against what a real `careledger up --demo` node answered
// (tests/fixtures/audit-log.json, written by tools/audit_fixture.py with Python's own leaves).
// The node's answers are replayed from the fixture; everything checked is the page's code.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  basisOf,
  decodeBatch,
  entryFromJson,
  entryLeaf,
  groupAccesses,
  groupProofStatus,
  ProofChecker,
  proveEach,
  type AccessEntry,
  type LoggedAccess,
  type ProofResult,
} from "../src/wallet/audit";
import { hex } from "../src/crypto/bytes";
import type { NodeClient } from "../src/wallet/node";

interface Fixture {
  patient: string;
  log: { entries: { entry: Record<string, unknown>; height: number; tx: string; node: string; seq: number; index: number }[] };
  leaves: string[];
  txs: Record<string, { tx: string; evidence: Record<string, unknown> }>;
  block_hashes: Record<string, string>;
}

const fixture = JSON.parse(readFileSync(new URL("./fixtures/audit-log.json", import.meta.url), "utf8")) as Fixture;

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** A node that answers `GET /txs/{h}` and `GET /blocks/{h}` from the fixture (altered as a test
 * says). */
function replayNode(txs = fixture.txs, blocks = fixture.block_hashes): NodeClient {
  return {
    async get<T>(path: string): Promise<T> {
      const tx = /^\/txs\/([0-9a-f]{64})$/.exec(path);
      if (tx) {
        const found = txs[tx[1] as string];
        if (!found) throw Object.assign(new Error("not found"), { status: 404 });
        return found as T;
      }
      const block = /^\/blocks\/(\d+)$/.exec(path);
      if (block) return { hash: blocks[block[1] as string] } as T;
      throw new Error(`unexpected ${path}`);
    },
  } as unknown as NodeClient;
}

function accesses(): LoggedAccess[] {
  return fixture.log.entries.map((row) => ({ ...row, entry: entryFromJson(row.entry) }));
}

describe("access entries", () => {
  it("have the leaves Python computes", () => {
    expect(accesses().map((a) => hex(entryLeaf(a.entry)))).toEqual(fixture.leaves);
  });

  it("decode from their batches as the chain encoded them", () => {
    for (const access of accesses()) {
      const raw = fixture.txs[access.tx]?.evidence;
      expect(raw).toBeTruthy();
    }
    const payloads = Object.values(fixture.txs).map((t) => {
      const body = Buffer.from(t.tx, "hex");
      return JSON.parse(body.subarray(0, body.length - 64).toString("utf8")).payload as Record<string, unknown>;
    });
    const decoded = payloads.flatMap((p) => decodeBatch(p));
    expect(decoded.length).toBeGreaterThanOrEqual(fixture.log.entries.length);
  });

  it("refuse a batch with an unused party or a bad index", () => {
    const body = Buffer.from(Object.values(fixture.txs)[0]!.tx, "hex");
    const payload = JSON.parse(body.subarray(0, body.length - 64).toString("utf8")).payload;
    expect(() => decodeBatch({ ...payload, parties: [...payload.parties, "did:key:z6MkUnused"] })).toThrow(/no entry uses/);
    const entries = clone(payload.entries) as number[][];
    entries[0]![1] = 99;
    expect(() => decodeBatch({ ...payload, entries })).toThrow(/entry 0: reader index 99/);
  });
});

describe("proofs of the log's entries", () => {
  it("are valid for every entry the node logged, with the checks named", async () => {
    const checker = new ProofChecker(replayNode());
    for (const access of accesses()) {
      const proof = await checker.prove(access);
      expect(proof.problem).toBe("");
      expect(proof.status).toBe("valid");
      expect(proof.checks.join("\n")).toMatch(/entry \d+ is exactly this entry/);
    }
  });

  it("catch an entry the node altered in its answer (another outcome)", async () => {
    const access = accesses().find((a) => a.entry.outcome === "denied")!;
    const forged = { ...access, entry: { ...access.entry, outcome: "grant" } };
    const proof = await new ProofChecker(replayNode()).prove(forged);
    expect(proof.status).toBe("invalid");
    expect(proof.problem).toMatch(/not the entry the log shows/);
  });

  it("catch an altered copy listed beside the genuine entry (same batch and index)", async () => {
    const genuine = accesses()[0]!;
    const copy = { ...genuine, entry: { ...genuine.entry, at: genuine.entry.at + 3600 } };
    for (const rows of [[copy, genuine], [genuine, copy]]) {
      const proofs = await proveEach(new ProofChecker(replayNode()), rows);
      expect(proofs.get(genuine)?.status).toBe("valid");
      expect(proofs.get(copy)?.status).toBe("invalid");
      expect(groupProofStatus(rows.map((row) => proofs.get(row)))).toBe("invalid");
    }
  });

  it("catch a log row pointing at another entry of its batch", async () => {
    const access = accesses()[0]!;
    const proof = await new ProofChecker(replayNode()).prove({ ...access, index: access.index === 0 ? 1 : 0 });
    expect(proof.status).toBe("invalid");
  });

  it("catch a batch attributed to another node or sequence number", async () => {
    const access = accesses()[0]!;
    const proof = await new ProofChecker(replayNode()).prove({ ...access, seq: access.seq + 1 });
    expect(proof.status).toBe("invalid");
    expect(proof.problem).toMatch(/not batch/);
  });

  it("catch a block the node's published hash does not match", async () => {
    const blocks = Object.fromEntries(Object.keys(fixture.block_hashes).map((h) => [h, "00".repeat(32)]));
    const proof = await new ProofChecker(replayNode(fixture.txs, blocks)).prove(accesses()[0]!);
    expect(proof.status).toBe("invalid");
  });

  it("catch a transaction altered under its Merkle proof", async () => {
    const txs = clone(fixture.txs);
    const access = accesses()[0]!;
    const evidence = txs[access.tx]!.evidence as { tx: string };
    evidence.tx = evidence.tx.slice(0, 40) + (evidence.tx[40] === "0" ? "1" : "0") + evidence.tx.slice(41);
    const proof = await new ProofChecker(replayNode(txs)).prove(access);
    expect(proof.status).toBe("invalid");
  });

  it("are pending while the node has no evidence (not committed, or the next block not in)", async () => {
    const txs = clone(fixture.txs);
    const access = accesses()[0]!;
    delete (txs[access.tx] as { evidence?: unknown }).evidence;
    expect((await new ProofChecker(replayNode(txs)).prove(access)).status).toBe("pending");
    expect((await new ProofChecker(replayNode({})).prove(access)).status).toBe("pending");
  });
});

// --- grouping the log into reads a person understands ---------------------------------------

const PATIENT = "did:key:z6MkPatient";
const DOCTOR = "did:key:z6MkDoctor";
const HOSPITAL = "did:key:z6MkHospital";
const DAY = 1_795_000_000; // a noon-ish unix time; days below are counted in UTC

function read(at: number, changes: Partial<AccessEntry> = {}, index = 0): LoggedAccess {
  const entry: AccessEntry = {
    patient: PATIENT, record: `${index % 7}`.padStart(32, "a"), version: 1, reader: DOCTOR, org: HOSPITAL,
    purpose: "TREAT", outcome: "grant", at, ...changes,
  };
  return { entry, height: 10 + index, tx: "ab".repeat(32), node: "did:key:z6MkNode", seq: 1, index };
}

const utcDay = (at: number) => new Date(at * 1000).toISOString().slice(0, 10);

describe("grouped reads", () => {
  it("gather one reader's reads of a day, purpose and outcome, counting distinct records", () => {
    const entries = Array.from({ length: 20 }, (_, i) => read(DAY + i, {}, i));
    const groups = groupAccesses(entries, PATIENT, utcDay);
    expect(groups).toHaveLength(1);
    expect(groups[0]!.entries).toHaveLength(20);
    expect(groups[0]!.records).toBe(7);
    expect([groups[0]!.first, groups[0]!.last]).toEqual([DAY, DAY + 19]);
    expect(groups[0]!.entries[0]!.entry.at).toBe(DAY + 19); // newest first
  });

  it("part reads by day, purpose and outcome, newest first, the patient's own last", () => {
    const entries = [
      read(DAY + 100, { reader: PATIENT, org: "", purpose: "", outcome: "patient" }, 1),
      read(DAY + 50, {}, 2),
      read(DAY + 40, { outcome: "denied" }, 3),
      read(DAY + 30, { purpose: "HRESCH" }, 4),
      read(DAY - 86_400, {}, 5),
    ];
    const groups = groupAccesses(entries, PATIENT, utcDay);
    expect(groups.map((g) => [g.entries[0]!.index, g.allowed, g.own])).toEqual([
      [2, true, false],
      [3, false, false],
      [4, true, false],
      [5, true, false],
      [1, true, true],
    ]);
  });

  it("call a read under a break-glass an emergency, whatever rule allowed it", () => {
    expect(basisOf(read(DAY, { outcome: "author", purpose: "ETREAT" }).entry)).toBe("emergency");
    expect(basisOf(read(DAY, { outcome: "author", purpose: "TREAT" }).entry)).toBe("author");
    expect(basisOf(read(DAY, { outcome: "denied", purpose: "ETREAT" }).entry)).toBe("denied");
    const groups = groupAccesses([read(DAY, { outcome: "author", purpose: "ETREAT" }), read(DAY + 1, { outcome: "emergency", purpose: "ETREAT" }, 1)], PATIENT, utcDay);
    expect(groups.map((g) => g.basis)).toEqual(["emergency"]);
  });

  it("have a valid proof only when every entry's proof is valid", () => {
    const result = (status: ProofResult["status"]): ProofResult => ({ status, checks: [], problem: "", blockHash: "" });
    expect(groupProofStatus([result("valid"), result("valid")])).toBe("valid");
    expect(groupProofStatus([result("valid"), undefined])).toBe("checking");
    expect(groupProofStatus([result("valid"), result("pending")])).toBe("pending");
    expect(groupProofStatus([result("pending"), result("invalid"), undefined])).toBe("invalid");
  });
});
