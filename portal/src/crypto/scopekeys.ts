// The patient's key hierarchy (docs/crypto.md 5 and 6; port of crypto/scopekeys.py): scope
// keys derived from the scope root, a record's data key wrapped to a scope key (6.1), a scope
// key granted to a grantee (6.2), the naming key granted (6.3). All wraps are HPKE (hpke.ts)
// with the binding in `info`.
import { x25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, lp, u32, utf8 } from "./bytes";
import { type RecordBinding, encodeBinding } from "./binding";
import { HpkeError, hpkeOpen, hpkeSeal } from "./hpke";

export const SCOPES = ["clinical", "diagnostics", "medications", "administrative", "financial", "sensitive"] as const;
export type Scope = (typeof SCOPES)[number];
/** What "all" means in a grant: every scope but `sensitive`, which a grant must name. */
export const BROAD_SCOPES: readonly Scope[] = SCOPES.slice(0, 5);

export const DATA_KEY_SIZE = 32;
export const NAMING_KEY_SIZE = 32;
const SCOPE_KEY_LABEL = utf8("careledger-scope-key-v1");
const DATA_KEY_WRAP_LABEL = utf8("careledger-datakey-wrap-v1");
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

// --- 6.1 a record's data key ----------------------------------------------------------------

/** label || lp(patient) || lp(type) || lp(id) || u32(version) || lp(recipient). */
export function dataKeyInfo(b: RecordBinding, recipient: string): Uint8Array {
  return concat(DATA_KEY_WRAP_LABEL, encodeBinding(b), lp(recipient));
}

export async function wrapDataKey(
  dataKey: Uint8Array,
  b: RecordBinding,
  recipient: string,
  publicKey: Uint8Array,
  ephemeralPrivate?: Uint8Array,
): Promise<Uint8Array> {
  if (dataKey.length !== DATA_KEY_SIZE) throw new ScopeKeyError(`a data key is ${DATA_KEY_SIZE} bytes`);
  return hpkeSeal(publicKey, dataKeyInfo(b, recipient), dataKey, ephemeralPrivate);
}

export async function unwrapDataKey(
  wrapped: Uint8Array,
  b: RecordBinding,
  recipient: string,
  privateKey: Uint8Array,
): Promise<Uint8Array> {
  return open(privateKey, dataKeyInfo(b, recipient), wrapped, "data key", DATA_KEY_SIZE);
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
