// readRecords over records sealed with the real envelope (crypto/envelope.ts), served by a
// node stand-in that answers `records/records` and `POST /blobs/fetch` as the node does. Each
// attack (an altered blob, a blob of another record, a wrong commitment, a swapped wrapped
// key) must come back as that record's integrity failure while the others still open. The
// same flow against a real node: tests/portal/test_records_read.py.
import { describe, expect, it } from "vitest";
import { hex } from "../src/crypto/bytes";
import { binding, packBlob, parseBlob, sealRecord } from "../src/crypto/envelope";
import { Identity } from "../src/crypto/identity";
import { KeyRing } from "../src/crypto/keyfile";
import { recordName } from "../src/crypto/naming";
import { sha256 } from "@noble/hashes/sha2.js";
import type { NodeClient } from "../src/wallet/node";
import { readRecords, type Anchor, type ChainRecord, type KeySource } from "../src/wallet/records";

const master = Uint8Array.from({ length: 32 }, (_, i) => i);
const ring = new KeyRing("did:key:zPatientUnderTest", "patient", Identity.fromMaster(master), "Test Patient");
const PATIENT = ring.did;
const LABEL = "scope/diagnostics/1";
const keys: KeySource = { scopeKey: async (patient, scope, epoch) => (patient === PATIENT ? ring.scopeKey(scope, epoch) : null) };

const encounter = { resourceType: "Encounter", id: "enc-1", status: "finished", class: { code: "AMB" }, meta: { versionId: "1" } };
const weight = (id: string, kg: number, encounterId = "enc-1") => ({
  resourceType: "Observation",
  id,
  status: "final",
  code: { coding: [{ system: "http://loinc.org", code: "29463-7", display: "Body Weight" }] },
  encounter: { reference: `Encounter/${encounterId}` },
  effectiveDateTime: "2020-01-01",
  valueQuantity: { value: kg, unit: "kg" },
  meta: { versionId: "1" },
});

interface Stored {
  rec: ChainRecord;
  blob: Uint8Array;
  status?: number;
}

async function seal(resource: Record<string, unknown>, version = 1): Promise<Stored> {
  const type = String(resource.resourceType);
  const id = String(resource.id);
  const name = recordName(ring.namingKey, type, id);
  const sealed = await sealRecord(
    resource,
    binding(PATIENT, type, id, version),
    [{ label: LABEL, publicKey: ring.scopePublicKey("diagnostics", 1) }],
    { patient: PATIENT, record: name },
  );
  const latest: Anchor = {
    version,
    blob_hash: sealed.blobHash,
    commitment: sealed.commitment,
    recipients: [LABEL],
    scope: "diagnostics",
    author: PATIENT,
    org: "",
    tombstone: false,
    height: 10 + version,
  };
  return {
    rec: { record: name, resource_type: type, versions: version, erased_at: 0, scope: "diagnostics", org: "", latest },
    blob: sealed.blob,
  };
}

/** Answers the two calls readRecords makes, as the node would for `stored`; every hash asked
 * for goes into `asked`. */
function nodeServing(stored: Stored[], asked: Set<string> = new Set()): NodeClient {
  const node = {
    async query(module: string, name: string, params: Record<string, string>) {
      expect([module, name, params.patient]).toEqual(["records", "records", PATIENT]);
      return stored.map((s) => s.rec);
    },
    async fetchBlobs(hashes: string[]) {
      const served = new Map<string, { status: number; body: Uint8Array }>();
      for (const hash of hashes) {
        asked.add(hash);
        const s = stored.find((x) => x.rec.latest?.blob_hash === hash);
        const refusal = s?.status === 500 ? s.blob : new TextEncoder().encode("refused");
        served.set(hash, s ? { status: s.status ?? 200, body: s.status ? refusal : s.blob } : { status: 404, body: new Uint8Array() });
      }
      return served;
    },
  };
  return node as unknown as NodeClient;
}

const known = (...ids: [string, string][]) => ids.map(([resourceType, id]) => ({ resourceType, id }));

describe("readRecords", () => {
  it("opens every record it can name, following references to name more", async () => {
    const stored = [await seal(encounter), await seal(weight("w1", 80)), await seal(weight("w2", 81))];
    const { records, failures } = await readRecords(nodeServing(stored), PATIENT, keys, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "w1"], ["Observation", "w2"]),
    });
    expect(failures).toEqual([]);
    expect(records.map((r) => `${r.resourceType}/${r.id}`).sort()).toEqual(["Encounter/enc-1", "Observation/w1", "Observation/w2"]);
    const w1 = records.find((r) => r.id === "w1")!;
    expect(w1.resource).toEqual(weight("w1", 80));
    expect(w1).toMatchObject({ version: 1, author: PATIENT, height: 11, erased: false, name: stored[1]!.rec.record });
  });

  it("reports an altered blob as an integrity failure and still opens the others", async () => {
    const good = await seal(weight("w1", 80));
    const bad = await seal(weight("w2", 81));
    bad.blob = bad.blob.slice();
    bad.blob[bad.blob.length - 1]! ^= 1;
    const { records, failures } = await readRecords(nodeServing([good, bad]), PATIENT, keys, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "w1"], ["Observation", "w2"]),
    });
    expect(records.map((r) => r.id)).toEqual(["w1"]);
    expect(failures).toEqual([expect.objectContaining({ name: bad.rec.record, kind: "integrity" })]);
    expect(failures[0]!.reason).toMatch(/does not match the fingerprint/);
  });

  it("refuses a blob of another record served under this record's anchor", async () => {
    // The node serves w1's genuine blob for w2, and the anchor was made to match its hash:
    // the header names w1, not w2.
    const w1 = await seal(weight("w1", 80));
    const w2 = await seal(weight("w2", 81));
    w2.blob = w1.blob;
    w2.rec.latest = { ...w2.rec.latest!, blob_hash: w1.rec.latest!.blob_hash, commitment: w1.rec.latest!.commitment };
    const { records, failures } = await readRecords(nodeServing([w2]), PATIENT, keys, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "w2"]),
    });
    expect(records).toEqual([]);
    expect(failures).toEqual([expect.objectContaining({ kind: "integrity", reason: expect.stringMatching(/names another record/) })]);
  });

  it("refuses content that does not open the anchored commitment", async () => {
    const w1 = await seal(weight("w1", 80));
    w1.rec.latest = { ...w1.rec.latest!, commitment: hex(sha256(new Uint8Array([1]))) };
    const { failures } = await readRecords(nodeServing([w1]), PATIENT, keys, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "w1"]),
    });
    expect(failures).toEqual([expect.objectContaining({ kind: "integrity", reason: expect.stringMatching(/commitment/) })]);
  });

  it("refuses a wrapped key swapped for another record's (the anchor matching the new blob)", async () => {
    const w1 = await seal(weight("w1", 80));
    const w2 = await seal(weight("w2", 81));
    const parsed = parseBlob(w2.blob);
    const forged = packBlob({ patient: PATIENT, record: w2.rec.record }, parseBlob(w1.blob).wrapped, parsed.ciphertext);
    w2.blob = forged;
    w2.rec.latest = { ...w2.rec.latest!, blob_hash: hex(sha256(forged)) };
    const { records, failures } = await readRecords(nodeServing([w1, w2]), PATIENT, keys, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "w1"], ["Observation", "w2"]),
    });
    expect(records.map((r) => r.id)).toEqual(["w1"]);
    expect(failures).toEqual([expect.objectContaining({ name: w2.rec.record, kind: "decryption" })]);
  });

  it("says which records are erased, deleted, refused, unopenable or unnamed", async () => {
    const erased = await seal(weight("e", 1));
    erased.rec.erased_at = 40;
    const deleted = await seal(weight("d", 2));
    deleted.rec.latest = { ...deleted.rec.latest!, tombstone: true, version: 2 };
    const refused = await seal(weight("r", 3));
    refused.status = 403;
    const gone = await seal(weight("g", 4));
    gone.status = 410;
    const unnamed = await seal(weight("u", 5));
    const corrupted = await seal(weight("c", 6));
    corrupted.status = 500;
    corrupted.blob = new TextEncoder().encode(`corrupted: blob ${corrupted.rec.latest!.blob_hash} no longer matches its hash`);
    const stored = [erased, deleted, refused, gone, unnamed, corrupted];
    const asked = new Set<string>();
    const { records, failures } = await readRecords(nodeServing(stored, asked), PATIENT, keys, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "e"], ["Observation", "d"], ["Observation", "r"], ["Observation", "g"], ["Observation", "c"]),
    });
    expect(records).toEqual([]);
    const kinds = Object.fromEntries(failures.map((f) => [f.name, f.kind]));
    expect(kinds).toEqual({
      [erased.rec.record]: "erased",
      [deleted.rec.record]: "deleted",
      [refused.rec.record]: "denied",
      [gone.rec.record]: "erased",
      [unnamed.rec.record]: "unnamed",
      [corrupted.rec.record]: "integrity",
    });
    // A fetch is a read in the patient's access log: only what can be opened is asked for.
    expect([...asked].sort()).toEqual([refused, gone, corrupted].map((s) => s.rec.latest!.blob_hash).sort());
  });

  it("reports a record no key of the reader opens", async () => {
    const w1 = await seal(weight("w1", 80));
    const none: KeySource = { scopeKey: async () => null };
    const { failures } = await readRecords(nodeServing([w1]), PATIENT, none, undefined, {
      namingKey: ring.namingKey,
      knownIds: known(["Observation", "w1"]),
    });
    expect(failures).toEqual([expect.objectContaining({ kind: "decryption" })]);
  });
});
