// The patient's access log, each entry's proof checked in the page, and break-glass alerts: a
// port of wallet/audit.py (AuditClient.access_log, _Proofs.prove) and of the decoding half of
// chain/modules/audit/entries.py.
//
// A proof of an entry (docs/chain.md, "Proof of an entry"): the log row names the
// `audit/record_batch` transaction that carried the entry and its index there. The page fetches
// that transaction's evidence (`GET /txs/{tx}`), checks it (wallet/evidence.ts: in its block,
// succeeded, the block's header hash), then that it is a batch signed by the node the log names
// with the seq the log names, and that the batch's entry at `index`, decoded, has the same leaf
// as the log's entry. One proof per batch, however many entries it carries.
//
// Trust: as `careledger audit` without a trust anchor, the block's hash is asked of the same
// node (`GET /blocks/{h}`). The entry is then as good as that node's word on its blocks, but
// every entry is still checked against the transaction the block commits to: a node that alters
// an entry in its answer, or points at another batch, is caught.
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { canonicalBytes } from "../crypto/jcs";
import type { NodeClient } from "./node";
import { checkTransactionEvidence, type VerifiedTx } from "./evidence";
import { ProofError, type Check } from "./proof-checks";

export const RECORD_BATCH = "audit/record_batch";
const PAGE = 500; // entries per audit/log query (the chain's maximum)
const MAX_PAGES = 20; // 10,000 entries: the page shows the newest; the CLI lists all

export const OUTCOMES = [
  "patient", "author", "grant", "delegate", "emergency", // allowed: the basis of the decision
  "denied", "not_found", "erased", "malformed", "unavailable",
] as const;
export const ALLOWED_OUTCOMES: readonly string[] = OUTCOMES.slice(0, 5);
const PURPOSES = ["TREAT", "ETREAT", "HPAYMT", "HOPERAT", "HRESCH", "PUBHLTH", "PATRQT", "COVERAGE", "HLEGAL"];
export const PURPOSE_CODES: readonly string[] = ["", ...PURPOSES];
const LEAF_DOMAIN = utf8ToBytes("careledger-access-entry-v1");
const RECORD_PREFIX_HEX = 32;
const MAX_DT = 3600;
const BATCH_FIELDS = ["entries", "node", "parties", "records", "seq", "time"];
const DID = /^did:key:z[1-9A-HJ-NP-Za-km-z]{1,119}$/;
const PREFIX = /^[0-9a-f]{32}$/;

export interface AccessEntry {
  patient: string; // "" when the blob anchors no record
  record: string; // the record name's 32-hex prefix on chain
  version: number;
  reader: string;
  org: string; // "" for a patient
  purpose: string; // "" or a PurposeOfUse code
  outcome: string; // one of OUTCOMES
  at: number; // unix seconds, the serving node's clock
}

export interface LoggedAccess {
  entry: AccessEntry;
  height: number;
  tx: string;
  node: string; // the node that served the read and signed its batch
  seq: number;
  index: number; // the entry's position in its batch
}

/** A break-glass as `consent/break_glasses` answers it (or an alert of `audit/log`). */
export interface BreakGlassAlert {
  id: string;
  requester: string;
  org: string;
  reason: string;
  scopes: string[];
  start: number;
  until: number;
  height: number;
}

export interface AccessLog {
  alerts: BreakGlassAlert[]; // newest first: shown before the entries
  entries: LoggedAccess[]; // newest first
  truncated: boolean; // more entries than the page loads
}

export type ProofStatus = "valid" | "pending" | "invalid";

export interface ProofResult {
  status: ProofStatus;
  checks: string[]; // what passed, in words
  problem: string; // why not valid ("" when valid)
  blockHash: string;
}

export function isAllowed(outcome: string): boolean {
  return ALLOWED_OUTCOMES.includes(outcome);
}

// --- entries and batches (chain/modules/audit/entries.py) ------------------------------------

/** Raised for a log row or batch that is not in the one format (the message says why). */
export class BadBatch extends Error {
  override name = "BadBatch";
}

function compact(entry: AccessEntry): AccessEntry {
  return { ...entry, record: entry.record.slice(0, RECORD_PREFIX_HEX) };
}

/** An entry's Merkle leaf: SHA-256 of the domain and the RFC 8785 bytes of its compact form. */
export function entryLeaf(entry: AccessEntry): Uint8Array {
  const e = compact(entry);
  const json = {
    patient: e.patient, record: e.record, version: e.version, reader: e.reader,
    org: e.org, purpose: e.purpose, outcome: e.outcome, at: e.at,
  };
  return sha256(concatBytes(LEAF_DOMAIN, canonicalBytes(json)));
}

function checkAnchor(hasPatient: boolean, hasRecord: boolean, version: number, outcome: string): void {
  if (hasPatient !== hasRecord) throw new BadBatch("an entry names a patient and a record together, or neither");
  if (hasRecord && !(version >= 1 && version <= 2 ** 32 - 1)) throw new BadBatch("version must be 1.. for an entry with a record");
  if (!hasRecord && version !== 0) throw new BadBatch("version must be 0 for an entry without a record");
  if (isAllowed(outcome) && !hasRecord) throw new BadBatch(`an allowed read (${outcome}) names its patient and record`);
}

/** An entry from its JSON form (the log's `entry`); BadBatch for any other shape. */
export function entryFromJson(data: unknown): AccessEntry {
  const names = ["at", "org", "outcome", "patient", "purpose", "reader", "record", "version"];
  if (!data || typeof data !== "object" || Object.keys(data).sort().join() !== names.join()) {
    throw new BadBatch(`an access entry has exactly the fields ${names.join(", ")}`);
  }
  const d = data as Record<string, unknown>;
  const texts = ["patient", "record", "reader", "org", "purpose", "outcome"].map((n) => d[n]);
  if (!texts.every((t) => typeof t === "string") || !Number.isSafeInteger(d.version) || !Number.isSafeInteger(d.at)) {
    throw new BadBatch("an access entry's fields are strings, 'version' and 'at' integers");
  }
  const entry = d as unknown as AccessEntry;
  if (!DID.test(entry.reader)) throw new BadBatch("the reader is not a did:key");
  if (!OUTCOMES.includes(entry.outcome as (typeof OUTCOMES)[number])) throw new BadBatch(`unknown outcome ${entry.outcome}`);
  if (!PURPOSE_CODES.includes(entry.purpose)) throw new BadBatch(`unknown purpose ${entry.purpose}`);
  checkAnchor(Boolean(entry.patient), Boolean(entry.record), entry.version, entry.outcome);
  return { ...entry };
}

function table(name: string, values: unknown, bound: number, valid: RegExp): string[] {
  if (!Array.isArray(values) || values.length > bound) throw new BadBatch(`'${name}' must be a list of at most ${bound} items`);
  if (!values.every((v) => typeof v === "string" && valid.test(v))) throw new BadBatch(`'${name}' holds an item of the wrong shape`);
  if (new Set(values).size !== values.length) throw new BadBatch(`'${name}' names one item twice`);
  return values as string[];
}

function pick(items: readonly string[], index: number, name: string, none: boolean): string {
  if (none && index === -1) return "";
  if (!(index >= 0 && index < items.length)) throw new BadBatch(`${name} index ${index} is out of range`);
  return items[index] as string;
}

/** The entries of an `audit/record_batch` payload, in order, each compact; BadBatch for any
 * payload the chain's encoder would not have written. */
export function decodeBatch(payload: Record<string, unknown>): AccessEntry[] {
  if (Object.keys(payload).sort().join() !== BATCH_FIELDS.join()) throw new BadBatch("the batch's fields are not node, seq, time, parties, records, entries");
  const { node, seq, time } = payload;
  if (typeof node !== "string" || !DID.test(node)) throw new BadBatch("'node' must be a did:key");
  if (!Number.isSafeInteger(seq) || (seq as number) < 1) throw new BadBatch("'seq' must be 1..");
  if (!Number.isSafeInteger(time) || (time as number) < 0) throw new BadBatch("'time' must be unix seconds");
  const parties = table("parties", payload.parties, 4000, DID);
  const records = table("records", payload.records, 2000, PREFIX);
  const rows = payload.entries;
  if (!Array.isArray(rows) || rows.length < 1 || rows.length > 2000) throw new BadBatch("'entries' must be a list of 1 to 2000 entries");
  const entries = rows.map((row, i) => {
    if (!Array.isArray(row) || row.length !== 8 || !row.every((v) => Number.isSafeInteger(v))) {
      throw new BadBatch(`entry ${i} must be a list of 8 integers`);
    }
    const [patientI, readerI, orgI, recordI, version, dt, purposeI, outcomeI] = row as number[];
    try {
      const entry: AccessEntry = {
        patient: pick(parties, patientI as number, "patient", true),
        reader: pick(parties, readerI as number, "reader", false),
        org: pick(parties, orgI as number, "org", true),
        record: pick(records, recordI as number, "record", true),
        version: version as number,
        purpose: pick(PURPOSE_CODES, purposeI as number, "purpose", false),
        outcome: pick(OUTCOMES, outcomeI as number, "outcome", false),
        at: (time as number) + (dt as number),
      };
      if (!((dt as number) >= 0 && (dt as number) <= MAX_DT)) throw new BadBatch(`dt must be 0..${MAX_DT}`);
      checkAnchor(Boolean(entry.patient), Boolean(entry.record), entry.version, entry.outcome);
      return entry;
    } catch (error) {
      throw new BadBatch(`entry ${i}: ${messageOf(error)}`);
    }
  });
  const usedParties = new Set(entries.flatMap((e) => [e.patient, e.reader, e.org]));
  const usedRecords = new Set(entries.map((e) => e.record));
  if (parties.some((p) => !usedParties.has(p))) throw new BadBatch("'parties' has an item no entry uses");
  if (records.some((r) => !usedRecords.has(r))) throw new BadBatch("'records' has an item no entry uses");
  return entries;
}

// --- the log ---------------------------------------------------------------------------------

function logged(row: unknown, patient: string): LoggedAccess {
  const r = row as Record<string, unknown>;
  let access: LoggedAccess;
  try {
    access = {
      entry: entryFromJson(r.entry),
      height: Number(r.height),
      tx: String(r.tx),
      node: String(r.node),
      seq: Number(r.seq),
      index: Number(r.index),
    };
  } catch (error) {
    throw new BadBatch(`the node's log holds an entry that is not one: ${messageOf(error)}`);
  }
  if (![access.height, access.seq, access.index].every(Number.isSafeInteger)) {
    throw new BadBatch("the node's log holds an entry without its place on chain");
  }
  if (access.entry.patient !== patient) {
    throw new BadBatch(`the node's log of ${patient} holds an entry of ${access.entry.patient}`);
  }
  return access;
}

interface LogPage {
  alerts?: { alert: Partial<BreakGlassAlert>; height: number; tx: string }[];
  entries?: unknown[];
  next?: string;
}

/** Break-glass alerts and the newest access entries of the patient (up to MAX_PAGES pages),
 * newest first; proofs are checked apart (`ProofChecker`), entry by entry, so the page shows
 * the log at once and each badge when its check ends. */
export async function loadAccessLog(node: NodeClient, patient: string): Promise<AccessLog> {
  const entries: LoggedAccess[] = [];
  const alerts = new Map<string, BreakGlassAlert>();
  let before = "";
  let pages = 0;
  for (;;) {
    const params: Record<string, string> = { patient, limit: String(PAGE) };
    if (before) params.before = before;
    const page = await node.query<LogPage>("audit", "log", params);
    for (const row of page.alerts ?? []) {
      const alert = { ...(row.alert as BreakGlassAlert), height: row.height };
      if (alert.id && !alerts.has(alert.id)) alerts.set(alert.id, alert);
    }
    entries.push(...(page.entries ?? []).map((row) => logged(row, patient)));
    before = String(page.next ?? "");
    pages += 1;
    if (!before || pages >= MAX_PAGES) break;
  }
  for (const glass of await breakGlasses(node, patient)) alerts.set(glass.id, glass); // the fuller rows
  const sorted = [...alerts.values()].sort((a, b) => b.height - a.height || b.start - a.start);
  return { alerts: sorted, entries, truncated: Boolean(before) };
}

/** The patient's latest break-glasses, newest first (`consent/break_glasses`). */
export async function breakGlasses(node: NodeClient, patient: string): Promise<BreakGlassAlert[]> {
  return node.query<BreakGlassAlert[]>("consent", "break_glasses", { patient });
}

// --- proofs ----------------------------------------------------------------------------------

interface TxAnswer {
  evidence?: unknown;
}

/** One batch's proven transaction and its decoded entries, or why it is not proven. */
type BatchProof =
  | { kind: "proven"; verified: VerifiedTx; checks: string[]; entries: AccessEntry[] }
  | { kind: "pending" | "invalid"; problem: string };

/** Checks log entries against their batches; each batch once (its proof is cached). */
export class ProofChecker {
  private readonly batches = new Map<string, Promise<BatchProof>>();

  constructor(private readonly node: NodeClient) {}

  /** The entry's proof: "valid" with the checks that passed, "pending" while the node has no
   * evidence of its batch yet, else "invalid" with the first check that failed. Never throws. */
  async prove(access: LoggedAccess): Promise<ProofResult> {
    const batch = await this.batch(access.tx, access.height);
    if (batch.kind !== "proven") return { status: batch.kind, checks: [], problem: batch.problem, blockHash: "" };
    try {
      const checks = [...batch.checks, ...proveEntry(access, batch.verified, batch.entries)];
      return { status: "valid", checks, problem: "", blockHash: batch.verified.block.blockHash };
    } catch (error) {
      return { status: "invalid", checks: batch.checks, problem: messageOf(error), blockHash: "" };
    }
  }

  /** Forget a batch's answer, so that the next `prove` asks the node again (after "pending"). */
  forget(tx: string): void {
    this.batches.delete(tx);
  }

  private batch(tx: string, height: number): Promise<BatchProof> {
    let found = this.batches.get(tx);
    if (!found) {
      found = this.checkBatch(tx, height);
      this.batches.set(tx, found);
    }
    return found;
  }

  private async checkBatch(tx: string, height: number): Promise<BatchProof> {
    if (!/^[0-9a-fA-F]{64}$/.test(tx)) return { kind: "invalid", problem: `the log names no transaction (${tx})` };
    let answer: TxAnswer;
    let blockHash: string;
    try {
      answer = await this.node.get<TxAnswer>(`/txs/${tx.toLowerCase()}`);
      if (!answer.evidence) return { kind: "pending", problem: "the block after the batch is not committed yet" };
      blockHash = String((await this.node.get<{ hash: string }>(`/blocks/${height}`)).hash ?? "");
    } catch (error) {
      const status = (error as { status?: number }).status;
      if (status === 404) return { kind: "pending", problem: "the node has not committed this batch yet" };
      return { kind: "pending", problem: `the node did not answer: ${messageOf(error)}` };
    }
    let verified: VerifiedTx;
    let checks: string[];
    try {
      const checked = checkTransactionEvidence(answer.evidence, new Map([[height, blockHash]]));
      verified = checked.verified;
      checks = passed(checked.checks);
    } catch (error) {
      return { kind: "invalid", problem: messageOf(error) };
    }
    try {
      return { kind: "proven", verified, checks, entries: batchEntries(verified, tx, height) };
    } catch (error) {
      return { kind: "invalid", problem: messageOf(error) };
    }
  }
}

/** The batch checks of `_Proofs._check`: the right transaction, block and type, sent by the
 * node it names; then its entries decoded. */
function batchEntries(verified: VerifiedTx, tx: string, height: number): AccessEntry[] {
  if (verified.tx.hash !== tx.toLowerCase()) throw new ProofError(`the node's evidence for ${tx} is of another transaction`, "batch", []);
  if (verified.block.height !== height) throw new ProofError(`transaction ${tx} is in block ${verified.block.height}, not ${height}`, "batch", []);
  if (verified.tx.type !== RECORD_BATCH) throw new ProofError(`transaction ${tx} is a ${verified.tx.type}, not an ${RECORD_BATCH}`, "batch", []);
  if (verified.tx.payload.node !== verified.tx.sender) throw new ProofError(`batch ${tx} names another node than the one that signed it`, "batch", []);
  try {
    return decodeBatch(verified.tx.payload);
  } catch (error) {
    throw new ProofError(`batch ${tx} does not decode: ${messageOf(error)}`, "batch", []);
  }
}

/** `_Proofs.prove`: the batch is the one the log names and its entry `index` IS the log's. */
export function proveEntry(access: LoggedAccess, verified: VerifiedTx, entries: AccessEntry[]): string[] {
  const fail = (message: string): never => {
    throw new ProofError(message, "entry", []);
  };
  const payload = verified.tx.payload;
  if (verified.tx.sender !== access.node || payload.seq !== access.seq) {
    fail(`transaction ${access.tx} is batch ${String(payload.seq)} of ${verified.tx.sender}, not batch ${access.seq} of ${access.node}`);
  }
  const found = entries[access.index];
  if (!found) return fail(`batch ${access.tx} has no entry ${access.index}`);
  const [a, b] = [entryLeaf(found), entryLeaf(access.entry)];
  if (a.length !== b.length || a.some((byte, i) => byte !== b[i])) {
    fail(`entry ${access.index} of batch ${access.tx} is not the entry the log shows (altered)`);
  }
  return [
    `It is batch ${access.seq} of the node that served the read, signed by that node`,
    `Its entry ${access.index} is exactly this entry`,
  ];
}

function passed(checks: Check[]): string[] {
  return checks.filter((c) => c.ok).map((c) => c.label);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// --- reads a person understands ---------------------------------------------------------------

/** Why a read was allowed or refused, as the page words it: the chain's outcome, except that
 * an allowed read stating emergency treatment (ETREAT, what every read under a break-glass
 * states) is "emergency", whatever rule let it through: a patient who sees "they wrote this
 * record" for a read made under a break-glass is misled about why their records were opened. */
export function basisOf(entry: AccessEntry): string {
  if (isAllowed(entry.outcome) && entry.outcome !== "patient" && entry.purpose === "ETREAT") return "emergency";
  return entry.outcome;
}

/** The reads of one reader for one organisation, on one day, for one purpose, with one basis. */
export interface AccessGroup {
  key: string;
  reader: string;
  org: string;
  day: string; // YYYY-MM-DD in the page's time zone
  purpose: string;
  basis: string; // basisOf its entries
  allowed: boolean;
  own: boolean; // the patient's own reads (the page opening their records)
  entries: LoggedAccess[]; // newest first
  records: number; // distinct records read
  first: number; // unix seconds of the oldest and the newest entry
  last: number;
}

/** The local calendar day of a unix time, YYYY-MM-DD. */
export function localDay(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** The log's entries (newest first) grouped by reader, organisation, day, purpose and basis;
 * the groups newest first, the patient's own after everyone else's (a page that opens all
 * their records adds a read per record, and those must not bury who else looked). */
export function groupAccesses(entries: LoggedAccess[], patient: string, dayOf: (at: number) => string = localDay): AccessGroup[] {
  const groups = new Map<string, AccessGroup>();
  for (const access of entries) {
    const e = access.entry;
    const day = dayOf(e.at);
    const basis = basisOf(e);
    const key = [e.reader, e.org, day, e.purpose, basis].join("|");
    let group = groups.get(key);
    if (!group) {
      group = {
        key, reader: e.reader, org: e.org, day, purpose: e.purpose, basis,
        allowed: isAllowed(e.outcome), own: e.reader === patient, entries: [], records: 0, first: e.at, last: e.at,
      };
      groups.set(key, group);
    }
    group.entries.push(access);
    group.first = Math.min(group.first, e.at);
    group.last = Math.max(group.last, e.at);
  }
  const all = [...groups.values()];
  for (const group of all) {
    group.entries.sort((a, b) => b.entry.at - a.entry.at || b.height - a.height || b.index - a.index);
    group.records = new Set(group.entries.map((a) => `${a.entry.record}/${a.entry.version}`)).size;
  }
  return all.sort((a, b) => Number(a.own) - Number(b.own) || b.last - a.last || a.key.localeCompare(b.key));
}

/** Each log row's own proof, keyed by the row itself. A node can list a genuine entry and an
 * altered copy under the same batch and index: keyed by (tx, index) the genuine row's "valid"
 * overwrote the copy's "invalid", and the copy was shown as proven. */
export async function proveEach(checker: ProofChecker, accesses: LoggedAccess[]): Promise<Map<LoggedAccess, ProofResult>> {
  const results = await Promise.all(accesses.map((access) => checker.prove(access)));
  return new Map(accesses.map((access, i) => [access, results[i]!]));
}

/** One verdict for a group's proofs: valid only when every entry's proof is. */
export function groupProofStatus(results: (ProofResult | undefined)[]): ProofStatus | "checking" {
  if (results.some((r) => r?.status === "invalid")) return "invalid";
  if (results.some((r) => !r)) return "checking";
  if (results.some((r) => r?.status === "pending")) return "pending";
  return "valid";
}
