// Reading every record of a patient in the page, knowing only the names the chain lists (port
// of wallet/reading.py `Reader.read_all`, design change 28): list them (`records/records`),
// leave out the erased and deleted ones and those no key of this reader opens (before any
// fetch: a fetch is a read, in the patient's access log), fetch the rest in signed
// `POST /blobs/fetch` requests and open each by name (crypto/envelope.ts `openRecordByName`):
// the blob's SHA-256 must be the anchored hash, its header must name this patient and record,
// the data key's wrap names type, id and version (type and version checked against the
// chain), the ciphertext's associated data confirms them, the salted commitment must be the
// anchored one, the record's name must be HMAC(naming key, type, id) when the reader holds the
// patient's naming key, and the resource must call itself that type and id. One bad record is a
// failure in the answer, never an exception: the others are still shown.
import { DecryptionError, IntegrityError, openRecordByName } from "../crypto/envelope";
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
  /** The FHIR id, as the record's wrapped data key names it (checked: see above). */
  id: string;
  resource: Record<string, unknown>;
  author: string;
  height: number;
  blobHash: string;
  erased: boolean;
}

/** Why a record is not shown. `integrity`: what the node served does not match the chain
 * (a warning: someone altered it); `decryption`: the reader's key does not open it;
 * `no-key`: the reader holds no key for any of its recipients (for a grantee: not shared with
 * it; nothing was fetched); `erased`: the patient erased it; `deleted`: its latest version is a
 * deletion (tombstone); `denied`: the node refused the read (403: no consent now);
 * `unavailable`: the node could not serve it now. */
export type FailureKind = "integrity" | "decryption" | "no-key" | "erased" | "deleted" | "denied" | "unavailable";

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

export interface ReadOptions {
  /** Called with how many records are open so far and how many will be fetched. */
  progress?: (opened: number, total: number) => void;
}

/** Records per `POST /blobs/fetch` round (reading.py READ_CHUNK): the progress line moves. */
const READ_CHUNK = 250;

/** A scope key the reader holds for one of an anchor's recipient labels. */
interface Candidate {
  label: string;
  key: Uint8Array;
}

interface Openable {
  rec: ChainRecord;
  anchor: Anchor;
  candidates: Candidate[];
}

/** The latest version of every record of `patient` that `keys` opens, decrypted and checked,
 * and every record that could not be shown, with why. `purpose` goes with each fetch (the
 * node logs it). Throws only when the chain cannot be asked at all. */
export async function readRecords(
  node: NodeClient,
  patient: string,
  keys: KeySource,
  purpose?: string,
  options: ReadOptions = {},
): Promise<ReadResult> {
  const listed = await node.query<ChainRecord[]>("records", "records", { patient });
  const failures: RecordFailure[] = [];
  const openable: Openable[] = [];
  for (const rec of listed) {
    const gone = goneReason(rec);
    if (gone) {
      failures.push(gone);
      continue;
    }
    const anchor = rec.latest!;
    const candidates = await candidatesFor(anchor, patient, keys);
    if (candidates.length) openable.push({ rec, anchor, candidates });
    else failures.push(failure(rec, "no-key", "None of the keys this page holds opens this record."));
  }
  const namingKey = (await keys.namingKey(patient)) ?? undefined;
  const records: DecryptedRecord[] = [];
  let done = 0;
  options.progress?.(0, openable.length);
  for (let start = 0; start < openable.length; start += READ_CHUNK) {
    const chunk = openable.slice(start, start + READ_CHUNK);
    const blobs = await node.fetchBlobs(
      chunk.map((item) => item.anchor.blob_hash),
      purpose,
    );
    for (const item of chunk) {
      const opened = await openOne(item, patient, namingKey, blobs.get(item.anchor.blob_hash));
      if ("kind" in opened) failures.push(opened);
      else records.push(opened);
      options.progress?.(++done, openable.length);
    }
  }
  return { records, failures };
}

function failure(rec: ChainRecord, kind: FailureKind, reason: string): RecordFailure {
  return { name: rec.record, resourceType: rec.resource_type, kind, reason };
}

function goneReason(rec: ChainRecord): RecordFailure | null {
  if (rec.erased_at) return failure(rec, "erased", `You erased this record (block ${rec.erased_at}).`);
  if (!rec.latest) return failure(rec, "unavailable", "The ledger lists this record without a version.");
  if (rec.latest.tombstone) return failure(rec, "deleted", `Version ${rec.latest.version} deleted this record.`);
  return null;
}

/** The reader's scope keys for the anchor's recipients, in the anchor's order (reading.py
 * `_candidates`). The keys belong to the KeySource (it may cache them): not wiped here. */
async function candidatesFor(anchor: Anchor, patient: string, keys: KeySource): Promise<Candidate[]> {
  const found: Candidate[] = [];
  for (const label of anchor.recipients) {
    const scope = /^scope\/([a-z]{1,64})\/([0-9]{1,10})$/.exec(label);
    if (!scope) continue; // wrapped to an identity (the writer, its organisation): not ours here
    const key = await keys.scopeKey(patient, scope[1]!, Number(scope[2]));
    if (key) found.push({ label, key });
  }
  return found;
}

/** Check one fetched blob against its anchor and open it by name (reading.py `read_all` for
 * one row, then `open_named`): the first candidate key whose wrap opens decides. */
async function openOne(
  item: Openable,
  patient: string,
  namingKey: Uint8Array | undefined,
  fetched: { status: number; body: Uint8Array } | undefined,
): Promise<DecryptedRecord | RecordFailure> {
  const { rec, anchor } = item;
  if (!fetched) return failure(rec, "unavailable", "The node did not answer for this record.");
  if (fetched.status !== 200) return fetchFailure(rec, fetched);
  const owner = { patient, record: rec.record };
  const expected = { blobHash: anchor.blob_hash, commitment: anchor.commitment, resourceType: rec.resource_type, version: anchor.version };
  let last: unknown = null;
  for (const { label, key } of item.candidates) {
    try {
      const opened = await openRecordByName(fetched.body, owner, label, key, expected, namingKey);
      return {
        name: rec.record,
        version: anchor.version,
        resourceType: opened.binding.resourceType,
        id: opened.binding.resourceId,
        resource: opened.resource,
        author: anchor.author,
        height: anchor.height,
        blobHash: anchor.blob_hash,
        erased: false,
      };
    } catch (error) {
      last = error;
      if (!(error instanceof DecryptionError)) break; // an integrity failure: no other key helps
    }
  }
  return failure(rec, last instanceof DecryptionError ? "decryption" : "integrity", integrityReason(last));
}

/** A sentence for a person, with the check that failed. */
function integrityReason(error: unknown): string {
  const said = error instanceof Error ? error.message : String(error);
  if (error instanceof DecryptionError) return `Your key does not open it: ${said}.`;
  if (error instanceof IntegrityError && /anchor's hash/.test(said)) {
    return "The copy the node served does not match the fingerprint recorded on the ledger.";
  }
  return `It does not match what the ledger recorded: ${said}.`;
}

function fetchFailure(rec: ChainRecord, fetched: { status: number; body: Uint8Array }): RecordFailure {
  const said = new TextDecoder().decode(fetched.body).slice(0, 300);
  if (fetched.status === 410) return failure(rec, "erased", "This record was erased.");
  if (fetched.status === 403) return failure(rec, "denied", `The node refused to serve it: ${said}`);
  if (fetched.status === 404) return failure(rec, "unavailable", "The node does not hold this record yet; try again in a moment.");
  if (fetched.status === 500 && said.startsWith("corrupted")) {
    return failure(rec, "integrity", "The node's copy is damaged: it no longer matches the fingerprint recorded on the ledger.");
  }
  return failure(rec, "unavailable", `The node could not serve it (HTTP ${fetched.status}): ${said}`);
}
