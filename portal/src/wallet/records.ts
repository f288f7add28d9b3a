// Reading a patient's records in the page (port of wallet/reading.py): list them on the chain
// (`records/records`), fetch their blobs in one signed `POST /blobs/fetch`, and open each one:
// the blob's SHA-256 must be the anchored hash, its header must name this patient and record,
// the data key is unwrapped with the scope key of the anchor's recipient label, the ciphertext
// decrypted (its associated data binds patient, type, id and version) and the salted
// commitment checked against the anchor. One bad record is a failure in the answer, never an
// exception: the others are still shown.
import { sha256 } from "@noble/hashes/sha2.js";
import { hex } from "../crypto/bytes";
import { binding, IntegrityError, openRecord, parseBlob } from "../crypto/envelope";
import { recordName } from "../crypto/naming";
import type { NodeClient } from "./node";
import type { KeySource } from "./patient";

export type { KeySource } from "./patient";

/** One version's anchor as `records/records` and `records/versions` answer it. */
export interface Anchor {
  version: number;
  blob_hash: string;
  commitment: string;
  recipients: string[];
  scope: string;
  author: string;
  org: string;
  tombstone: boolean;
  height: number;
}

/** A record as `records/records` lists it: its latest anchor, erased or not. */
export interface ChainRecord {
  record: string;
  resource_type: string;
  versions: number;
  erased_at: number;
  scope: string;
  org: string;
  latest: Anchor | null;
}

export interface DecryptedRecord {
  name: string;
  version: number;
  resourceType: string;
  id: string;
  resource: Record<string, unknown>;
  author: string;
  height: number;
  blobHash: string;
  erased: boolean;
}

/** Why a record is not shown. `integrity`: what the node served does not match the chain
 * (a warning: someone altered it); `decryption`: no key this reader holds opens it;
 * `erased`: the patient erased it; `deleted`: its latest version is a deletion (tombstone);
 * `denied`: the node refused the read (403); `unavailable`: the node could not serve it now;
 * `unnamed`: the page does not know the record's FHIR id, which opening needs (below). */
export type FailureKind = "integrity" | "decryption" | "erased" | "deleted" | "denied" | "unavailable" | "unnamed";

export interface RecordFailure {
  name: string;
  resourceType: string;
  kind: FailureKind;
  reason: string;
}

export interface ReadResult {
  records: DecryptedRecord[];
  failures: RecordFailure[];
}

/** A FHIR type and logical id the reader knows belongs to the patient. */
export interface KnownId {
  resourceType: string;
  id: string;
}

export interface ReadOptions {
  /** Where the records' FHIR ids come from. A record is bound to its id (the ciphertext's
   * associated data and the data key's wrapping name it: docs/crypto.md 1 and 6.1) and the
   * chain names it only by HMAC(naming key, type, id), so a reader must know the id to open
   * it. Each id given is matched to its record by computing that name. */
  knownIds?: KnownId[];
  /** The patient's naming key (docs/crypto.md 7.1): the patient's own, or one a grant
   * carried. Without it no id can be matched to a record. */
  namingKey?: Uint8Array | null;
  /** Follow references (`Type/id`) of the records opened to find more ids (default true). */
  followReferences?: boolean;
  /** Called with how many records are open so far (for a progress line). */
  progress?: (opened: number, total: number) => void;
}

const DISCOVERY_ROUNDS = 8;

/** The patient's records, latest version of each, decrypted and checked; and every record
 * that could not be shown, with why. Throws only when the chain cannot be asked at all. */
export async function readRecords(
  node: NodeClient,
  patient: string,
  keys: KeySource,
  purpose?: string,
  options: ReadOptions = {},
): Promise<ReadResult> {
  const listed = await node.query<ChainRecord[]>("records", "records", { patient });
  const failures: RecordFailure[] = [];
  const live: ChainRecord[] = [];
  for (const rec of listed) {
    const gone = goneReason(rec);
    if (gone) failures.push(gone);
    else live.push(rec);
  }
  const names = new Names(options.namingKey ?? null);
  for (const known of options.knownIds ?? []) names.add(known);
  const records: DecryptedRecord[] = [];
  let pending = live;
  // Only the records this reader can name are fetched (a fetch is a read, in the patient's
  // access log); each round's references may name more for the next.
  for (let round = 0; round < DISCOVERY_ROUNDS && pending.length; round++) {
    const named = pending.flatMap((rec) => {
      const id = names.idOf(rec);
      return id === null ? [] : [{ rec, id }];
    });
    if (!named.length) break;
    pending = pending.filter((rec) => names.idOf(rec) === null);
    const blobs = await node.fetchBlobs(
      named.map(({ rec }) => rec.latest!.blob_hash),
      purpose,
    );
    for (const { rec, id } of named) {
      const opened = await openOne(rec, id, patient, keys, blobs.get(rec.latest!.blob_hash));
      if ("kind" in opened) failures.push(opened);
      else {
        records.push(opened);
        if (options.followReferences !== false) for (const ref of referencesIn(opened.resource)) names.add(ref);
      }
      options.progress?.(records.length, live.length);
    }
  }
  for (const rec of pending) failures.push(unnamed(rec, names.hasKey()));
  return { records, failures };
}

function goneReason(rec: ChainRecord): RecordFailure | null {
  const base = { name: rec.record, resourceType: rec.resource_type };
  if (rec.erased_at) return { ...base, kind: "erased", reason: `You erased this record (block ${rec.erased_at}).` };
  if (!rec.latest) return { ...base, kind: "unavailable", reason: "The ledger lists this record without a version." };
  if (rec.latest.tombstone) return { ...base, kind: "deleted", reason: `Version ${rec.latest.version} deleted this record.` };
  return null;
}

function unnamed(rec: ChainRecord, hasKey: boolean): RecordFailure {
  return {
    name: rec.record,
    resourceType: rec.resource_type,
    kind: "unnamed",
    reason: hasKey
      ? "This page does not know the record's identifier, which opening it needs."
      : "This page holds no naming key for the patient, so it cannot tell which record is which.",
  };
}

/** Record name -> FHIR type and id, for the ids this reader knows (names are keyed). */
class Names {
  private readonly byName = new Map<string, KnownId>();
  private readonly tried = new Set<string>();

  constructor(private readonly namingKey: Uint8Array | null) {}

  hasKey(): boolean {
    return this.namingKey !== null;
  }

  add(known: KnownId): void {
    const key = `${known.resourceType}/${known.id}`;
    if (!this.namingKey || this.tried.has(key) || !VALID_TYPE.test(known.resourceType) || !VALID_ID.test(known.id)) return;
    this.tried.add(key);
    this.byName.set(recordName(this.namingKey, known.resourceType, known.id), known);
  }

  idOf(rec: ChainRecord): string | null {
    const known = this.byName.get(rec.record);
    return known && known.resourceType === rec.resource_type ? known.id : null;
  }
}

const VALID_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
const VALID_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** Every relative reference (`Type/id`) in a resource, at any depth. */
export function referencesIn(resource: unknown): KnownId[] {
  const found: KnownId[] = [];
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value !== null && typeof value === "object") {
      for (const [key, inner] of Object.entries(value)) {
        if (key === "reference" && typeof inner === "string") {
          const match = /^([A-Z][A-Za-z]{0,63})\/([A-Za-z0-9\-.]{1,64})$/.exec(inner);
          if (match) found.push({ resourceType: match[1]!, id: match[2]! });
        } else walk(inner);
      }
    }
  };
  walk(resource);
  return found;
}

/** Check one fetched blob against its anchor and open it (reading.py `open_blob`). */
async function openOne(
  rec: ChainRecord,
  id: string,
  patient: string,
  keys: KeySource,
  fetched: { status: number; body: Uint8Array } | undefined,
): Promise<DecryptedRecord | RecordFailure> {
  const anchor = rec.latest!;
  const fail = (kind: FailureKind, reason: string): RecordFailure => ({
    name: rec.record,
    resourceType: rec.resource_type,
    kind,
    reason,
  });
  if (!fetched) return fail("unavailable", "The node did not answer for this record.");
  if (fetched.status !== 200) return fetchFailure(fetched, fail);
  const blob = fetched.body;
  if (hex(sha256(blob)) !== anchor.blob_hash) {
    return fail("integrity", "The copy the node served does not match the fingerprint recorded on the ledger.");
  }
  let label: string;
  let scopeKey: Uint8Array | null = null;
  try {
    const parsed = parseBlob(blob);
    if (parsed.patient !== patient || parsed.record !== rec.record) {
      return fail("integrity", "The stored copy names another record than the ledger's.");
    }
    [label, scopeKey] = await keyFor(anchor, patient, keys);
  } catch (error) {
    return fail("integrity", `The stored copy is malformed: ${messageOf(error)}`);
  }
  if (!scopeKey) return fail("decryption", "None of your keys opens this record.");
  try {
    const bound = binding(patient, rec.resource_type, id, anchor.version);
    const resource = await openRecord(blob, bound, label, scopeKey, {
      blobHash: anchor.blob_hash,
      commitment: anchor.commitment,
      record: rec.record,
    });
    return {
      name: rec.record,
      version: anchor.version,
      resourceType: rec.resource_type,
      id,
      resource,
      author: anchor.author,
      height: anchor.height,
      blobHash: anchor.blob_hash,
      erased: false,
    };
  } catch (error) {
    return fail(error instanceof IntegrityError ? "integrity" : "decryption", `It could not be opened: ${messageOf(error)}`);
  } finally {
    scopeKey.fill(0);
  }
}

/** The anchor's scope label and the reader's private key for it (null when it holds none). */
async function keyFor(anchor: Anchor, patient: string, keys: KeySource): Promise<[string, Uint8Array | null]> {
  for (const label of anchor.recipients) {
    const scope = /^scope\/([a-z]{1,64})\/([0-9]{1,10})$/.exec(label);
    if (scope) return [label, await keys.scopeKey(patient, scope[1]!, Number(scope[2]))];
  }
  throw new Error("its anchor names no scope key");
}

function fetchFailure(
  fetched: { status: number; body: Uint8Array },
  fail: (kind: FailureKind, reason: string) => RecordFailure,
): RecordFailure {
  const said = new TextDecoder().decode(fetched.body).slice(0, 300);
  if (fetched.status === 410) return fail("erased", "This record was erased.");
  if (fetched.status === 403) return fail("denied", `The node refused to serve it: ${said}`);
  if (fetched.status === 404) return fail("unavailable", "The node does not hold this record yet; try again in a moment.");
  if (fetched.status === 500 && said.startsWith("corrupted")) {
    return fail("integrity", "The node's copy is damaged: it no longer matches the fingerprint recorded on the ledger.");
  }
  return fail("unavailable", `The node could not serve it (HTTP ${fetched.status}): ${said}`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
