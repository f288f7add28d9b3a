// Record envelope and record blob (docs/crypto.md 1-4 and 7; port of crypto/envelope.py and of
// the checks of wallet/reading.py). In short:
//   canonical  = RFC 8785 of the resource
//   commitment = SHA-256("careledger-commitment-v1" || salt || canonical)
//   ciphertext = 0x01 || nonce (12) || AES-256-GCM(data_key, nonce, salt || zstd(canonical),
//                                                  aad = "careledger-record-v1" || binding)
//   blob       = "CLB" 0x03 || lp(patient) || lp(record) || u8(n)
//                || n x (lp(recipient) || u16(len) || wrapped) || ciphertext
//   wrapped    = HPKE(scope_pk, info = label || lp(patient) || lp(record) || lp(recipient),
//                     data_key || lp(type) || lp(id) || u32(version))        (wrap v2, 6.1)
import { sha256 } from "@noble/hashes/sha2.js";
import { bufferOf, concat, equalBytes, fromHex, fromUtf8, hex, lp, randomBytes, u16, utf8 } from "./bytes";
import { type RecordBinding, InvalidBinding, binding, encodeBinding, validPatient } from "./binding";
import { canonicalBytes } from "./jcs";
import { DATA_KEY_SIZE, UnwrapError, type UnwrappedDataKey, unwrapDataKey, wrapDataKey } from "./scopekeys";
import { recordName } from "./naming";
import { ZstdFrameError, rawFrame, readFrame } from "./zstd";

export { type RecordBinding, InvalidBinding, binding, encodeBinding } from "./binding";

export const NONCE_SIZE = 12;
export const SALT_SIZE = 32;
export const TAG_SIZE = 16;
export const CIPHERTEXT_FORMAT = 0x01;
const AAD_LABEL = utf8("careledger-record-v1");
const COMMITMENT_LABEL = utf8("careledger-commitment-v1");
const BLOB_MAGIC = new Uint8Array([0x43, 0x4c, 0x42, 0x03]); // "CLB" 3
const OLD_FORMATS: Record<number, string> = {
  1: "its header does not name its record",
  2: "its data keys are wrapped to the record's FHIR id (wrap v1), so only a reader that already knows the id can open it",
};
const MIN_CIPHERTEXT = 1 + NONCE_SIZE + SALT_SIZE + TAG_SIZE;
const RECORD_NAME = /^[0-9a-f]{64}$/;

export class EnvelopeError extends Error {
  override name = "EnvelopeError";
}
/** The resource's own resourceType, id or meta.versionId disagree with its binding. */
export class BindingMismatch extends EnvelopeError {
  override name = "BindingMismatch";
}
/** Bytes that are not what their anchor says: another hash, another owner, another content,
 * or a blob that cannot be parsed. */
export class IntegrityError extends EnvelopeError {
  override name = "IntegrityError";
}
export class MalformedBlob extends IntegrityError {
  override name = "MalformedBlob";
}
/** Wrong key, wrong record binding, or a ciphertext altered in any byte. */
export class DecryptionError extends EnvelopeError {
  override name = "DecryptionError";
}

// --- commitment and ciphertext --------------------------------------------------------------

export function commit(canonical: Uint8Array, salt: Uint8Array): Uint8Array {
  if (salt.length !== SALT_SIZE) throw new EnvelopeError(`a commitment salt is ${SALT_SIZE} bytes`);
  return sha256(concat(COMMITMENT_LABEL, salt, canonical));
}

export function recordAad(b: RecordBinding): Uint8Array {
  return concat(AAD_LABEL, encodeBinding(b));
}

async function aesKey(key: Uint8Array, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", bufferOf(key), { name: "AES-GCM" }, false, [usage]);
}

/** 0x01 || nonce || AES-256-GCM(dataKey, nonce, salt || frame, aad): the deterministic core
 * (the vectors give every input). */
export async function sealFrame(
  frame: Uint8Array,
  b: RecordBinding,
  dataKey: Uint8Array,
  nonce: Uint8Array,
  salt: Uint8Array,
): Promise<Uint8Array> {
  if (dataKey.length !== DATA_KEY_SIZE || nonce.length !== NONCE_SIZE || salt.length !== SALT_SIZE) {
    throw new EnvelopeError("data key, nonce or salt of the wrong size");
  }
  const params = { name: "AES-GCM", iv: bufferOf(nonce), additionalData: bufferOf(recordAad(b)), tagLength: 128 };
  const sealed = await crypto.subtle.encrypt(params, await aesKey(dataKey, "encrypt"), bufferOf(concat(salt, frame)));
  return concat(new Uint8Array([CIPHERTEXT_FORMAT]), nonce, new Uint8Array(sealed));
}

export interface OpenedCiphertext {
  canonical: Uint8Array;
  salt: Uint8Array;
}

/** Decrypt and decompress; DecryptionError for a wrong key, binding or altered byte. */
export async function openCiphertext(ciphertext: Uint8Array, dataKey: Uint8Array, b: RecordBinding): Promise<OpenedCiphertext> {
  if (dataKey.length !== DATA_KEY_SIZE) throw new DecryptionError(`a data key is ${DATA_KEY_SIZE} bytes`);
  if (ciphertext.length < MIN_CIPHERTEXT || ciphertext[0] !== CIPHERTEXT_FORMAT) {
    throw new DecryptionError("not a CareLedger v1 record ciphertext");
  }
  const params = {
    name: "AES-GCM",
    iv: bufferOf(ciphertext.subarray(1, 1 + NONCE_SIZE)),
    additionalData: bufferOf(recordAad(b)),
    tagLength: 128,
  };
  let plaintext: Uint8Array;
  try {
    const key = await aesKey(dataKey, "decrypt");
    plaintext = new Uint8Array(await crypto.subtle.decrypt(params, key, bufferOf(ciphertext.subarray(1 + NONCE_SIZE))));
  } catch {
    throw new DecryptionError("record ciphertext does not decrypt: wrong key, wrong record, or altered bytes");
  }
  const salt = plaintext.slice(0, SALT_SIZE);
  try {
    return { canonical: readFrame(plaintext.subarray(SALT_SIZE)), salt };
  } catch (cause) {
    if (cause instanceof ZstdFrameError) throw new DecryptionError(`record plaintext: ${cause.message}`);
    throw cause;
  }
}

/** The resource must describe itself as the record it is sealed as. */
export function checkResourceMatches(resource: Record<string, unknown>, b: RecordBinding): void {
  if (resource.resourceType !== b.resourceType) {
    throw new BindingMismatch(`resourceType ${JSON.stringify(resource.resourceType)} != ${JSON.stringify(b.resourceType)}`);
  }
  if ("id" in resource && resource.id !== b.resourceId) {
    throw new BindingMismatch(`id ${JSON.stringify(resource.id)} != ${JSON.stringify(b.resourceId)}`);
  }
  const meta = resource.meta;
  const versionId = meta && typeof meta === "object" ? (meta as Record<string, unknown>).versionId : undefined;
  if (versionId !== undefined && versionId !== null && versionId !== String(b.version)) {
    throw new BindingMismatch(`meta.versionId ${JSON.stringify(versionId)} != ${JSON.stringify(String(b.version))}`);
  }
}

// --- record blob ----------------------------------------------------------------------------

export interface BlobOwner {
  patient: string;
  record: string;
}

export interface WrappedKey {
  label: string;
  wrapped: Uint8Array;
}

export interface ParsedBlob extends BlobOwner {
  wrapped: WrappedKey[];
  ciphertext: Uint8Array;
}

function checkOwner(owner: BlobOwner): void {
  if (!validPatient(owner.patient)) throw new InvalidBinding("a blob's patient is 1 to 255 UTF-8 bytes, without NUL");
  if (!RECORD_NAME.test(owner.record)) throw new InvalidBinding(`not a record name (64 hex): ${JSON.stringify(owner.record.slice(0, 80))}`);
}

export function packBlob(owner: BlobOwner, wrapped: WrappedKey[], ciphertext: Uint8Array): Uint8Array {
  checkOwner(owner);
  if (wrapped.length < 1 || wrapped.length > 255) throw new EnvelopeError("a record blob carries 1 to 255 wrapped keys");
  const parts = [BLOB_MAGIC, lp(owner.patient), lp(owner.record), new Uint8Array([wrapped.length])];
  for (const key of wrapped) parts.push(lp(key.label), u16(key.wrapped.length), key.wrapped);
  parts.push(ciphertext);
  return concat(...parts);
}

class Reader {
  offset = 0;
  constructor(readonly blob: Uint8Array) {}
  lp(): Uint8Array {
    if (this.offset + 2 > this.blob.length) throw new MalformedBlob("record blob header is truncated");
    const length = (this.blob[this.offset]! << 8) | this.blob[this.offset + 1]!;
    const end = this.offset + 2 + length;
    if (end > this.blob.length) throw new MalformedBlob("record blob header is truncated");
    const out = this.blob.subarray(this.offset + 2, end);
    this.offset = end;
    return out;
  }
  text(what: string): string {
    try {
      return fromUtf8(this.lp());
    } catch (e) {
      if (e instanceof MalformedBlob) throw e;
      throw new MalformedBlob(`record blob ${what} is not UTF-8`);
    }
  }
}

function readOwner(blob: Uint8Array): [BlobOwner, Reader] {
  if (!(blob instanceof Uint8Array)) throw new MalformedBlob("a record blob is bytes");
  const sameFamily = blob[0] === 0x43 && blob[1] === 0x4c && blob[2] === 0x42;
  if (sameFamily && blob.length > 3 && blob[3] !== BLOB_MAGIC[3]) {
    const why = OLD_FORMATS[blob[3]!] ?? "unknown format";
    throw new MalformedBlob(`record blob format ${blob[3]} is not read (${why}); only format ${BLOB_MAGIC[3]}`);
  }
  if (!sameFamily || blob.length < 4) throw new MalformedBlob("not a CareLedger record blob");
  const reader = new Reader(blob);
  reader.offset = BLOB_MAGIC.length;
  const owner = { patient: reader.text("patient"), record: reader.text("record name") };
  try {
    checkOwner(owner);
  } catch (e) {
    throw new MalformedBlob(`record blob header: ${(e as Error).message}`);
  }
  return [owner, reader];
}

/** The record a blob names in its header, without unwrapping anything. */
export function blobOwner(blob: Uint8Array): BlobOwner {
  return readOwner(blob)[0];
}

/** The blob's header (owner, wrapped keys) and ciphertext; MalformedBlob otherwise. */
export function parseBlob(blob: Uint8Array): ParsedBlob {
  const [owner, reader] = readOwner(blob);
  if (reader.offset >= blob.length) throw new MalformedBlob("record blob header is truncated");
  const count = blob[reader.offset++]!;
  const wrapped: WrappedKey[] = [];
  for (let i = 0; i < count; i++) {
    const label = reader.text("wrapped-key recipient");
    wrapped.push({ label, wrapped: reader.lp() });
  }
  if (count === 0 || reader.offset >= blob.length) throw new MalformedBlob("record blob has no wrapped key or no ciphertext");
  return { ...owner, wrapped, ciphertext: blob.subarray(reader.offset) };
}

export function blobHash(blob: Uint8Array): string {
  return hex(sha256(blob));
}

// --- sealing and opening a record -----------------------------------------------------------

export interface Recipient {
  /** scope/<scope>/<epoch>, or a did:key for a key wrapped straight to an organisation. */
  label: string;
  publicKey: Uint8Array;
}

export interface SealedRecord {
  blob: Uint8Array;
  blobHash: string;
  commitment: string;
  labels: string[];
}

/** Canonicalise, frame and encrypt one resource under a fresh data key, wrap the data key to
 * every recipient and pack the blob for its owner (patient did, record name). */
export async function sealRecord(
  resource: Record<string, unknown>,
  b: RecordBinding,
  recipients: Recipient[],
  owner: BlobOwner,
): Promise<SealedRecord> {
  checkResourceMatches(resource, b);
  if (owner.patient !== b.patient) throw new BindingMismatch("the blob's owner is another patient than the binding's");
  const canonical = canonicalBytes(resource);
  const dataKey = randomBytes(DATA_KEY_SIZE);
  const salt = randomBytes(SALT_SIZE);
  const ciphertext = await sealFrame(rawFrame(canonical), b, dataKey, randomBytes(NONCE_SIZE), salt);
  const wrapped = await Promise.all(
    recipients.map(async (r) => ({ label: r.label, wrapped: await wrapDataKey(dataKey, b, owner.record, r.label, r.publicKey) })),
  );
  dataKey.fill(0);
  const blob = packBlob(owner, wrapped, ciphertext);
  return { blob, blobHash: blobHash(blob), commitment: hex(commit(canonical, salt)), labels: recipients.map((r) => r.label) };
}

/** What the chain's anchor says of a record version; each given value is checked. */
export interface AnchorCheck {
  blobHash?: string;
  commitment?: string;
  /** The on-chain record name the blob must belong to. */
  record?: string;
}

export interface OpenedRecord {
  resource: Record<string, unknown>;
  canonical: Uint8Array;
  commitment: string;
}

/** Open a record blob with the private key of one of its recipients (`label`), knowing its
 * binding, checking it against its anchor: IntegrityError (another hash, owner or content; a
 * wrap naming another record; MalformedBlob), DecryptionError (a key that does not open it, a
 * blob moved to another binding, a flipped byte). */
export async function openRecordDetailed(
  blob: Uint8Array,
  b: RecordBinding,
  label: string,
  privateKey: Uint8Array,
  anchor: AnchorCheck = {},
): Promise<OpenedRecord> {
  checkHash(blob, anchor.blobHash);
  const parsed = parseBlob(blob);
  if (parsed.patient !== b.patient || (anchor.record !== undefined && parsed.record !== anchor.record)) {
    throw new IntegrityError("the blob's header names another record");
  }
  const unwrapped = await unwrapFrom(parsed, label, privateKey);
  const w = unwrapped.binding;
  if (w.resourceType !== b.resourceType || w.resourceId !== b.resourceId || w.version !== b.version) {
    throw new IntegrityError(`its data key is wrapped for ${w.resourceType}/${w.resourceId} version ${w.version}`);
  }
  return openWith(parsed, unwrapped.dataKey, b, anchor.commitment);
}

/** What the chain says of a record version when the reader knows only the record's name. */
export interface NamedAnchor {
  blobHash: string;
  commitment: string;
  /** The record's type on chain (`records/records`: resource_type). */
  resourceType: string;
  /** The anchored version. */
  version: number;
}

export interface OpenedNamedRecord extends OpenedRecord {
  /** The record's binding, as its wrap names it and its ciphertext's aad confirms. */
  binding: RecordBinding;
}

/** Open a record knowing only its owner (patient, on-chain name) and a label it is wrapped to
 * (docs/crypto.md 6.1): the wrap gives type, id and version, checked against the anchor;
 * the ciphertext's aad confirms the id; with the patient's naming key, the name must be the
 * HMAC of that type and id; the resource must call itself that. IntegrityError or
 * DecryptionError otherwise. */
export async function openRecordByName(
  blob: Uint8Array,
  owner: BlobOwner,
  label: string,
  privateKey: Uint8Array,
  anchor: NamedAnchor,
  namingKey?: Uint8Array,
): Promise<OpenedNamedRecord> {
  checkHash(blob, anchor.blobHash);
  const parsed = parseBlob(blob);
  if (parsed.patient !== owner.patient || parsed.record !== owner.record) {
    throw new IntegrityError("the blob's header names another record");
  }
  const { dataKey, binding: b } = await unwrapFrom(parsed, label, privateKey);
  if (b.resourceType !== anchor.resourceType || b.version !== anchor.version) {
    throw new IntegrityError(`its data key is wrapped for ${b.resourceType} version ${b.version}, not version ${anchor.version}`);
  }
  const opened = await openWith(parsed, dataKey, b, anchor.commitment);
  if (namingKey !== undefined && recordName(namingKey, b.resourceType, b.resourceId) !== owner.record) {
    throw new IntegrityError("the record's name is not that of its type and id");
  }
  if (opened.resource.resourceType !== b.resourceType || opened.resource.id !== b.resourceId) {
    throw new IntegrityError("the resource calls itself something else");
  }
  return { ...opened, binding: b };
}

function checkHash(blob: Uint8Array, expected: string | undefined): void {
  if (expected !== undefined && blobHash(blob) !== expected) {
    throw new IntegrityError("the blob served does not match its anchor's hash");
  }
}

async function unwrapFrom(parsed: ParsedBlob, label: string, privateKey: Uint8Array): Promise<UnwrappedDataKey> {
  const entry = parsed.wrapped.find((w) => w.label === label);
  if (!entry) throw new DecryptionError(`no data key wrapped to ${JSON.stringify(label)} in this record blob`);
  try {
    return await unwrapDataKey(entry.wrapped, parsed, label, privateKey);
  } catch (e) {
    if (e instanceof UnwrapError) throw new DecryptionError(`${e.message}`);
    throw e;
  }
}

async function openWith(parsed: ParsedBlob, dataKey: Uint8Array, b: RecordBinding, commitment?: string): Promise<OpenedRecord> {
  const opened = await openCiphertext(parsed.ciphertext, dataKey, b);
  dataKey.fill(0);
  const made = hex(commit(opened.canonical, opened.salt));
  if (commitment !== undefined && !equalBytes(fromHex(made), fromHex(commitment))) {
    throw new IntegrityError("content does not match the anchored commitment");
  }
  const resource = JSON.parse(fromUtf8(opened.canonical)) as Record<string, unknown>;
  return { resource, canonical: opened.canonical, commitment: made };
}

export async function openRecord(
  blob: Uint8Array,
  b: RecordBinding,
  label: string,
  privateKey: Uint8Array,
  anchor: AnchorCheck = {},
): Promise<Record<string, unknown>> {
  return (await openRecordDetailed(blob, b, label, privateKey, anchor)).resource;
}

export { binding as recordBinding };
