// readRecords over records sealed with the real envelope (crypto/envelope.ts), served by a
// node stand-in that answers `records/records` and `POST /blobs/fetch` as the node does. The
// reader knows no FHIR id: it opens each record by its on-chain name (design change 28). Each
// attack (an altered blob, a blob of another record, a wrong commitment, a wrap copied from
// another record, a name that is not the HMAC of the record's type and id, a type or version
// the chain does not say) must come back as that record's failure while the others still
// open. The same flow against a real node: tests/portal/test_records_read.py.
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
/** The patient's own keys: every scope key and the naming key. */
const keys: KeySource = {
  scopeKey: async (patient, scope, epoch) => (patient === PATIENT ? ring.scopeKey(scope, epoch) : null),
  namingKey: async (patient) => (patient === PATIENT ? ring.namingKey : null),
};
/** A grantee given the diagnostics scope key and no naming key: it opens by the wraps alone. */
const grantee: KeySource = {
  scopeKey: async (patient, scope, epoch) => (patient === PATIENT && scope === "diagnostics" ? ring.scopeKey(scope, epoch) : null),
  namingKey: async () => null,
};

const encounter = { resourceType: "Encounter", id: "enc-1", status: "finished", class: { code: "AMB" }, meta: { versionId: "1" } };
const weight = (id: string, kg: number, version = 1) => ({
  resourceType: "Observation",
  id,
  status: "final",
  code: { coding: [{ system: "http://loinc.org", code: "29463-7", display: "Body Weight" }] },
  encounter: { reference: "Encounter/enc-1" },
  effectiveDateTime: "2020-01-01",
  valueQuantity: { value: kg, unit: "kg" },
  meta: { versionId: String(version) },
});

interface Stored {
  rec: ChainRecord;
  blob: Uint8Array;
  status?: number;
}

interface SealOptions {
  version?: number;
  labels?: string[];
  /** The on-chain name (default: the HMAC of the resource's own type and id). */
  name?: string;
}

async function seal(resource: Record<string, unknown>, options: SealOptions = {}): Promise<Stored> {
  const version = options.version ?? 1;
  const type = String(resource.resourceType);
  const id = String(resource.id);
  const name = options.name ?? recordName(ring.namingKey, type, id);
  const labels = options.labels ?? [LABEL];
  const recipients = labels.map((label) => {
    const [, scope, epoch] = label.split("/");
    return { label, publicKey: ring.scopePublicKey(scope!, Number(epoch)) };
  });
  const sealed = await sealRecord(resource, binding(PATIENT, type, id, version), recipients, { patient: PATIENT, record: name });
  const latest: Anchor = {
    version,
    blob_hash: sealed.blobHash,
    commitment: sealed.commitment,
    recipients: labels,
    scope: labels[0]!.split("/")[1]!,
    author: PATIENT,
    org: "",
    tombstone: false,
    height: 10 + version,
  };
  return {
    rec: { record: name, resource_type: type, versions: version, erased_at: 0, scope: latest.scope, org: "", latest },
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

/** Re-anchor a stored record on its (altered) blob, as a writer who forged both would. */
function anchorOn(s: Stored, blob: Uint8Array): void {
  s.blob = blob;
  s.rec.latest = { ...s.rec.latest!, blob_hash: hex(sha256(blob)) };
}

describe("readRecords", () => {
  it("opens every record knowing only the names the chain lists", async () => {
    const stored = [await seal(encounter, { labels: ["scope/clinical/1"] }), await seal(weight("w1", 80)), await seal(weight("w2", 81))];
    const progress: [number, number][] = [];
    const { records, failures } = await readRecords(nodeServing(stored), PATIENT, keys, undefined, {
      progress: (opened, total) => progress.push([opened, total]),
    });
    expect(failures).toEqual([]);
    expect(records.map((r) => `${r.resourceType}/${r.id}`).sort()).toEqual(["Encounter/enc-1", "Observation/w1", "Observation/w2"]);
    const w1 = records.find((r) => r.id === "w1")!;
    expect(w1.resource).toEqual(weight("w1", 80));
    expect(w1).toMatchObject({ version: 1, author: PATIENT, height: 11, erased: false, name: stored[1]!.rec.record });
    expect(progress.at(-1)).toEqual([3, 3]);
  });

  it("opens a later version by name, its id from the wrap", async () => {
    const w1 = await seal(weight("w1", 82, 3), { version: 3 });
    const { records, failures } = await readRecords(nodeServing([w1]), PATIENT, keys);
    expect(failures).toEqual([]);
    expect(records).toEqual([expect.objectContaining({ id: "w1", version: 3, height: 13 })]);
  });

  it("a grantee opens what its scope keys open, without the naming key, and fetches nothing else", async () => {
    const visit = await seal(encounter, { labels: ["scope/clinical/1"] });
    const w1 = await seal(weight("w1", 80));
    const asked = new Set<string>();
    const { records, failures } = await readRecords(nodeServing([visit, w1], asked), PATIENT, grantee, "TREAT");
    expect(records.map((r) => r.id)).toEqual(["w1"]);
    expect(failures).toEqual([expect.objectContaining({ name: visit.rec.record, kind: "no-key" })]);
    expect([...asked]).toEqual([w1.rec.latest!.blob_hash]); // the Encounter was never asked for
  });

  it("tries each of the reader's keys for the anchor's recipients in order", async () => {
    // Wrapped to clinical and diagnostics; the reader's clinical key is wrong, its
    // diagnostics key right: the second wrap opens it (reading.py `_data_key`).
    const w1 = await seal(weight("w1", 80), { labels: ["scope/clinical/1", LABEL] });
    const wrongFirst: KeySource = {
      scopeKey: async (_patient, scope, epoch) => (scope === "clinical" ? ring.scopeKey("sensitive", 9) : ring.scopeKey(scope, epoch)),
      namingKey: keys.namingKey,
    };
    const { records, failures } = await readRecords(nodeServing([w1]), PATIENT, wrongFirst);
    expect(failures).toEqual([]);
    expect(records.map((r) => r.id)).toEqual(["w1"]);
  });

  it("does not wipe the keys its KeySource hands out (a grantee's are cached)", async () => {
    const cached = ring.scopeKey("diagnostics", 1);
    const caching: KeySource = { scopeKey: async () => cached, namingKey: async () => null };
    const stored = [await seal(weight("w1", 80)), await seal(weight("w2", 81))];
    const first = await readRecords(nodeServing(stored), PATIENT, caching);
    const again = await readRecords(nodeServing(stored), PATIENT, caching);
    expect(first.records.length + again.records.length).toBe(4);
    expect(hex(cached)).toBe(hex(ring.scopeKey("diagnostics", 1)));
  });

  it("reports an altered blob as an integrity failure and still opens the others", async () => {
    const good = await seal(weight("w1", 80));
    const bad = await seal(weight("w2", 81));
    bad.blob = bad.blob.slice();
    bad.blob[bad.blob.length - 1]! ^= 1;
    const { records, failures } = await readRecords(nodeServing([good, bad]), PATIENT, keys);
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
    const { records, failures } = await readRecords(nodeServing([w2]), PATIENT, keys);
    expect(records).toEqual([]);
    expect(failures).toEqual([expect.objectContaining({ kind: "integrity", reason: expect.stringMatching(/names another record/) })]);
  });

  it("refuses content that does not open the anchored commitment", async () => {
    const w1 = await seal(weight("w1", 80));
    w1.rec.latest = { ...w1.rec.latest!, commitment: hex(sha256(new Uint8Array([1]))) };
    const { records, failures } = await readRecords(nodeServing([w1]), PATIENT, keys);
    expect(records).toEqual([]);
    expect(failures).toEqual([expect.objectContaining({ kind: "integrity", reason: expect.stringMatching(/commitment/) })]);
  });

  it("refuses a wrapped key copied from another record (the anchor matching the new blob)", async () => {
    // Wrap v2 binds the record's name: w1's wrap does not unwrap in w2's blob.
    const w1 = await seal(weight("w1", 80));
    const w2 = await seal(weight("w2", 81));
    anchorOn(w2, packBlob({ patient: PATIENT, record: w2.rec.record }, parseBlob(w1.blob).wrapped, parseBlob(w2.blob).ciphertext));
    const { records, failures } = await readRecords(nodeServing([w1, w2]), PATIENT, keys);
    expect(records.map((r) => r.id)).toEqual(["w1"]);
    expect(failures).toEqual([expect.objectContaining({ name: w2.rec.record, kind: "decryption" })]);
  });

  it("refuses a record whose name is not the HMAC of its type and id (with the naming key)", async () => {
    // A writer files w2 under w1's name (the chain cannot tell: names are keyed). The patient
    // holds the naming key and refuses it; a grantee without it has only the wrap to go by.
    const misnamed = await seal(weight("w2", 81), { name: recordName(ring.namingKey, "Observation", "w1") });
    const byPatient = await readRecords(nodeServing([misnamed]), PATIENT, keys);
    expect(byPatient.records).toEqual([]);
    expect(byPatient.failures).toEqual([expect.objectContaining({ kind: "integrity", reason: expect.stringMatching(/name is not that of its type and id/) })]);
    const byGrantee = await readRecords(nodeServing([misnamed]), PATIENT, grantee);
    expect(byGrantee.records.map((r) => r.id)).toEqual(["w2"]);
  });

  it("refuses a record whose type or version is not the chain's", async () => {
    const asCondition = await seal(weight("w1", 80));
    asCondition.rec.resource_type = "Condition";
    const asVersion2 = await seal(weight("w2", 81));
    asVersion2.rec.latest = { ...asVersion2.rec.latest!, version: 2 };
    const { records, failures } = await readRecords(nodeServing([asCondition, asVersion2]), PATIENT, keys);
    expect(records).toEqual([]);
    expect(failures.map((f) => [f.kind, /wrapped for Observation version 1/.test(f.reason)])).toEqual([
      ["integrity", true],
      ["integrity", true],
    ]);
  });

  it("says which records are erased, deleted, refused, not openable or damaged, fetching only what it can open", async () => {
    const erased = await seal(weight("e", 1));
    erased.rec.erased_at = 40;
    const deleted = await seal(weight("d", 2));
    deleted.rec.latest = { ...deleted.rec.latest!, tombstone: true, version: 2 };
    const refused = await seal(weight("r", 3));
    refused.status = 403;
    const gone = await seal(weight("g", 4));
    gone.status = 410;
    const locked = await seal(weight("l", 5), { labels: ["scope/sensitive/1"] });
    const corrupted = await seal(weight("c", 6));
    corrupted.status = 500;
    corrupted.blob = new TextEncoder().encode(`corrupted: blob ${corrupted.rec.latest!.blob_hash} no longer matches its hash`);
    const stored = [erased, deleted, refused, gone, locked, corrupted];
    const asked = new Set<string>();
    const { records, failures } = await readRecords(nodeServing(stored, asked), PATIENT, grantee);
    expect(records).toEqual([]);
    const kinds = Object.fromEntries(failures.map((f) => [f.name, f.kind]));
    expect(kinds).toEqual({
      [erased.rec.record]: "erased",
      [deleted.rec.record]: "deleted",
      [refused.rec.record]: "denied",
      [gone.rec.record]: "erased",
      [locked.rec.record]: "no-key",
      [corrupted.rec.record]: "integrity",
    });
    // A fetch is a read in the patient's access log: only what can be opened is asked for.
    expect([...asked].sort()).toEqual([refused, gone, corrupted].map((s) => s.rec.latest!.blob_hash).sort());
  });

  it("reports a record the reader's key does not open", async () => {
    const w1 = await seal(weight("w1", 80));
    const wrongKey: KeySource = { scopeKey: async () => ring.scopeKey("sensitive", 9), namingKey: async () => null };
    const { failures } = await readRecords(nodeServing([w1]), PATIENT, wrongKey);
    expect(failures).toEqual([expect.objectContaining({ kind: "decryption" })]);
  });
});
