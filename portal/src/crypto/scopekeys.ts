// The patient's key hierarchy (docs/crypto.md 5 and 6; port of crypto/scopekeys.py): scope
// keys derived from the scope root, a record's data key wrapped to a scope key (6.1), a scope
// key granted to a grantee (6.2), the naming key granted (6.3). All wraps are HPKE (hpke.ts)
// with the binding in `info`; a data key's wrap (v2) also carries the record's type, id and
// version inside, so a reader that knows only the record's name opens it.
import { x25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, lp, u32, utf8 } from "./bytes";
import { type RecordBinding, binding, encodeBinding } from "./binding";
import { HpkeError, hpkeOpen, hpkeSeal } from "./hpke";

export const SCOPES = ["clinical", "diagnostics", "medications", "administrative", "financial", "sensitive"] as const;
export type Scope = (typeof SCOPES)[number];
/** What "all" means in a grant: every scope but `sensitive`, which a grant must name. */
export const BROAD_SCOPES: readonly Scope[] = SCOPES.slice(0, 5);

export const DATA_KEY_SIZE = 32;
export const NAMING_KEY_SIZE = 32;
const SCOPE_KEY_LABEL = utf8("careledger-scope-key-v1");
const DATA_KEY_WRAP_LABEL = utf8("careledger-datakey-wrap-v2");
const SCOPE_KEY_GRANT_LABEL = utf8("careledger-scopekey-grant-v1");
const NAMING_KEY_GRANT_LABEL = utf8("careledger-naming-key-grant-v1");

export class ScopeKeyError extends Error {
  override name = "ScopeKeyError";
}

/** A wrapped key that does not open: wrong private key, wrong binding, or altered bytes. */
export class UnwrapError extends ScopeKeyError {
  override name = "UnwrapError";
}

export function checkScope(scope: string, epoch: number): void {
  if (!scope || !/^[\x00-\x7f]*$/.test(scope) || scope.includes("/") || scope.length > 64) {
    throw new ScopeKeyError(`not a scope name: ${JSON.stringify(scope)}`);
  }
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) {
    throw new ScopeKeyError(`an epoch is an integer from 0 to 2**32-1: ${epoch}`);
  }
}

/** The name of a scope key in a record blob and an HPKE info string: scope/<scope>/<epoch>. */
export function recipientLabel(scope: string, epoch: number): string {
  checkScope(scope, epoch);
  return `scope/${scope}/${epoch}`;
}

/** sk = HKDF-Expand(HKDF-Extract(label, scope_root), label || lp(scope) || u32(epoch), 32). */
export function scopePrivate(scopeRoot: Uint8Array, scope: string, epoch: number): Uint8Array {
  if (scopeRoot.length !== 32) throw new ScopeKeyError("a scope root secret is 32 bytes");
  checkScope(scope, epoch);
  return hkdf(sha256, scopeRoot, SCOPE_KEY_LABEL, concat(SCOPE_KEY_LABEL, lp(scope), u32(epoch)), 32);
}

export function scopePublic(scopeSk: Uint8Array): Uint8Array {
  return x25519.getPublicKey(scopeSk);
}

async function open(privateKey: Uint8Array, info: Uint8Array, wrapped: Uint8Array, what: string, size: number) {
  let opened: Uint8Array;
  try {
    opened = await hpkeOpen(privateKey, info, wrapped);
  } catch (cause) {
    if (!(cause instanceof HpkeError)) throw cause;
    throw new UnwrapError(`${what} does not unwrap: wrong private key, wrong record or grant, or altered bytes`, { cause });
  }
  if (opened.length !== size) throw new UnwrapError(`wrapped value is not a ${what}`);
  return opened;
}

// --- 6.1 a record's data key (wrap v2) -----------------------------------------------------

/** Who a record belongs to, as its blob header and the chain name it: the patient's did and
 * the record's on-chain name (64 hex). */
export interface RecordOwner {
  patient: string;
  record: string;
}

/** label || lp(patient) || lp(record name) || lp(recipient): what a reader knows from the
 * chain and the blob header alone, before it learns the record's type and id. */
export function dataKeyInfo(owner: RecordOwner, recipient: string): Uint8Array {
  return concat(DATA_KEY_WRAP_LABEL, lp(owner.patient), lp(owner.record), lp(recipient));
}

/** data_key (32) || lp(type) || lp(id) || u32(version). */
export function dataKeyPlaintext(dataKey: Uint8Array, b: RecordBinding): Uint8Array {
  if (dataKey.length !== DATA_KEY_SIZE) throw new ScopeKeyError(`a data key is ${DATA_KEY_SIZE} bytes`);
  // encodeBinding checks the binding; the plaintext is the binding without the patient.
  const encoded = encodeBinding(b);
  return concat(dataKey, encoded.subarray(lp(b.patient).length));
}

/** HPKE-wrap a data key, with the record's type, id and version, to one recipient of the
 * record named `record`. */
export async function wrapDataKey(
  dataKey: Uint8Array,
  b: RecordBinding,
  record: string,
  recipient: string,
  publicKey: Uint8Array,
  ephemeralPrivate?: Uint8Array,
): Promise<Uint8Array> {
  const info = dataKeyInfo({ patient: b.patient, record }, recipient);
  return hpkeSeal(publicKey, info, dataKeyPlaintext(dataKey, b), ephemeralPrivate);
}

export interface UnwrappedDataKey {
  dataKey: Uint8Array;
  /** What the wrap says: check type and version against the anchor; the AES-GCM aad confirms
   * the id when the ciphertext opens under it. */
  binding: RecordBinding;
}

/** Recover a data key and the (type, id, version) it was wrapped with, knowing only the
 * record's owner and the recipient label; UnwrapError for a wrong key, record, label or byte. */
export async function unwrapDataKey(
  wrapped: Uint8Array,
  owner: RecordOwner,
  recipient: string,
  privateKey: Uint8Array,
): Promise<UnwrappedDataKey> {
  let plaintext: Uint8Array;
  try {
    plaintext = await hpkeOpen(privateKey, dataKeyInfo(owner, recipient), wrapped);
  } catch (cause) {
    if (!(cause instanceof HpkeError)) throw cause;
    throw new UnwrapError("data key does not unwrap: wrong private key, wrong record or grant, or altered bytes", { cause });
  }
  return { dataKey: plaintext.slice(0, DATA_KEY_SIZE), binding: wrappedBinding(owner.patient, plaintext) };
}

function wrappedBinding(patient: string, plaintext: Uint8Array): RecordBinding {
  const refuse = () => new UnwrapError("wrapped value is not a data key with its record's type, id and version");
  let offset = DATA_KEY_SIZE;
  const text = (): string => {
    if (offset + 2 > plaintext.length) throw refuse();
    const end = offset + 2 + ((plaintext[offset]! << 8) | plaintext[offset + 1]!);
    if (end > plaintext.length) throw refuse();
    const out = plaintext.subarray(offset + 2, end);
    offset = end;
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(out);
    } catch {
      throw refuse();
    }
  };
  if (plaintext.length < DATA_KEY_SIZE) throw refuse();
  const resourceType = text();
  const resourceId = text();
  if (plaintext.length !== offset + 4) throw refuse();
  const version = new DataView(plaintext.buffer, plaintext.byteOffset + offset, 4).getUint32(0);
  try {
    return binding(patient, resourceType, resourceId, version);
  } catch {
    throw refuse();
  }
}

// --- 6.2 granting a scope key ---------------------------------------------------------------

/** label || lp(patient) || lp(scope) || u32(epoch) || lp(grantee). */
export function grantInfo(patient: string, scope: string, epoch: number, grantee: string): Uint8Array {
  checkScope(scope, epoch);
  return concat(SCOPE_KEY_GRANT_LABEL, lp(patient), lp(scope), u32(epoch), lp(grantee));
}

export async function wrapScopeKey(
  scopeSk: Uint8Array,
  patient: string,
  scope: string,
  epoch: number,
  grantee: string,
  granteePublic: Uint8Array,
  ephemeralPrivate?: Uint8Array,
): Promise<Uint8Array> {
  if (scopeSk.length !== 32) throw new ScopeKeyError("a scope key is 32 bytes");
  return hpkeSeal(granteePublic, grantInfo(patient, scope, epoch, grantee), scopeSk, ephemeralPrivate);
}

/** A granted scope key, checked against the scope's published public key (UnwrapError if it
 * does not match: a grant cannot slip in a key of its own). */
export async function unwrapScopeKey(
  wrapped: Uint8Array,
  patient: string,
  scope: string,
  epoch: number,
  publishedPublic: Uint8Array,
  grantee: string,
  granteePrivate: Uint8Array,
): Promise<Uint8Array> {
  const sk = await open(granteePrivate, grantInfo(patient, scope, epoch, grantee), wrapped, "scope key", 32);
  if (!equalBytes(scopePublic(sk), publishedPublic)) {
    throw new UnwrapError("granted scope key does not match the scope's public key");
  }
  return sk;
}

// --- 6.3 granting the naming key ------------------------------------------------------------

export function namingGrantInfo(patient: string, grantee: string): Uint8Array {
  return concat(NAMING_KEY_GRANT_LABEL, lp(patient), lp(grantee));
}

export async function wrapNamingKey(
  namingKey: Uint8Array,
  patient: string,
  grantee: string,
  granteePublic: Uint8Array,
  ephemeralPrivate?: Uint8Array,
): Promise<Uint8Array> {
  if (namingKey.length !== NAMING_KEY_SIZE) throw new ScopeKeyError(`a naming key is ${NAMING_KEY_SIZE} bytes`);
  return hpkeSeal(granteePublic, namingGrantInfo(patient, grantee), namingKey, ephemeralPrivate);
}

export async function unwrapNamingKey(
  wrapped: Uint8Array,
  patient: string,
  grantee: string,
  granteePrivate: Uint8Array,
): Promise<Uint8Array> {
  return open(granteePrivate, namingGrantInfo(patient, grantee), wrapped, "naming key", NAMING_KEY_SIZE);
}
