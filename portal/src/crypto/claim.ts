// Claim packages (docs/crypto.md 9; port of crypto/claim.py), opened in the page:
//   key || check = Argon2id(normalised code, salt, t, m, p, 48 bytes)     (hash-wasm)
//   ciphertext   = check (16) || AES-256-GCM(key, nonce, plaintext, aad = RFC 8785(header))
//   header       = every field of the package but "ciphertext" and "attempts"
// The attempts counter lives in the package file: Python's opener counts a wrong code by
// rewriting the file. The page holds a copy it cannot write back anywhere that counts, so it
// does not count (and cannot): WrongClaimCode here says the code is wrong, not how many tries
// are left. Against guessing on a copy, the defence is the code's 66 bits times Argon2id's cost.
import { argon2id } from "hash-wasm";
import { b64, bufferOf, equalBytes, fromB64, fromUtf8, randomBytes, utf8 } from "./bytes";
import { Identity } from "./identity";
import { canonicalBytes } from "./jcs";
import { PHRASE_WORDLIST } from "./phrase";

export const CLAIM_KIND = "careledger-claim";
export const CLAIM_VERSION = 1;
export const CODE_WORDS = 6;
export const MAX_PACKAGE_BYTES = 64 * 1024;
const CHECK_SIZE = 16;
const KEY_SIZE = 32;
const NONCE_SIZE = 12;
export const MIN_MEMORY_KIB = 64 * 1024;
export const MAX_MEMORY_KIB = 1024 * 1024;
const MAX_ITERATIONS = 16;
const MAX_LANES = 16;
const MAX_ATTEMPTS_LIMIT = 100;
const SEPARATORS = /[\s,.;:_\-]+/;
const HEADER_FIELDS = ["kind", "version", "did", "chain_id", "kdf", "nonce", "max_attempts"] as const;
const ALL_FIELDS = new Set<string>([...HEADER_FIELDS, "ciphertext", "attempts"]);
const KDF_FIELDS = new Set(["name", "memory_kib", "iterations", "lanes", "salt"]);
const WORDS = new Set(PHRASE_WORDLIST);

export class ClaimError extends Error {
  override name = "ClaimError";
}
/** Not a claim code (a word missing or not in the list): a typo, not a guess. */
export class BadClaimCode extends ClaimError {
  override name = "BadClaimCode";
}
export class NotAClaimPackage extends ClaimError {
  override name = "NotAClaimPackage";
}
export class ClaimLocked extends ClaimError {
  override name = "ClaimLocked";
}
export class WrongClaimCode extends ClaimError {
  override name = "WrongClaimCode";
}
/** The code is right but the header or the ciphertext was altered. */
export class ClaimTampered extends ClaimError {
  override name = "ClaimTampered";
}

export interface ClaimContents {
  did: string;
  chainId: string;
  masterSecret: Uint8Array;
  name: string;
}

export interface KdfParams {
  memoryKib: number;
  iterations: number;
  lanes: number;
  salt: Uint8Array;
}

/** Lower case, words split at whitespace and , . ; : _ -, joined by one space; BadClaimCode
 * (naming the word's position, never the word) unless six list words. */
export function normaliseClaimCode(code: string): string {
  const words = code.trim().toLowerCase().split(SEPARATORS).filter((w) => w.length > 0);
  if (words.length !== CODE_WORDS) {
    throw new BadClaimCode(`a claim code is ${CODE_WORDS} words; this one has ${words.length}`);
  }
  const unknown = words.findIndex((w) => !WORDS.has(w));
  if (unknown >= 0) {
    throw new BadClaimCode(`word ${unknown + 1} of the claim code is not in the claim code list (BIP-39 English): check its spelling`);
  }
  return words.join(" ");
}

export async function deriveClaimKey(params: KdfParams, normalisedCode: string): Promise<[Uint8Array, Uint8Array]> {
  const out = await argon2id({
    password: utf8(normalisedCode),
    salt: params.salt,
    iterations: params.iterations,
    parallelism: params.lanes,
    memorySize: params.memoryKib,
    hashLength: KEY_SIZE + CHECK_SIZE,
    outputType: "binary",
  });
  return [out.slice(0, KEY_SIZE), out.slice(KEY_SIZE)];
}

/** What a package says before any code is tried (did, chain, attempts...): no secret. */
export function claimPackageInfo(input: string | unknown): Record<string, unknown> {
  const pkg = parsePackage(input);
  return Object.fromEntries(Object.entries(pkg).filter(([k]) => k !== "ciphertext"));
}

/** Open a package (its JSON text or parsed value) with its code. Throws BadClaimCode,
 * NotAClaimPackage, ClaimLocked (no attempts left: nothing tried), WrongClaimCode or
 * ClaimTampered; never counts (see the module comment). */
export async function openClaimPackage(input: string | unknown, code: string): Promise<ClaimContents> {
  const normalised = normaliseClaimCode(code);
  const pkg = parsePackage(input);
  const attempts = pkg.attempts as number;
  if (attempts >= (pkg.max_attempts as number)) {
    throw new ClaimLocked(`locked: ${attempts} wrong codes were tried; ask the clinic for a new package`);
  }
  const kdf = parseKdf(pkg.kdf);
  const sealed = unb64(pkg.ciphertext, "ciphertext");
  const [key, check] = await deriveClaimKey(kdf, normalised);
  if (!equalBytes(check, sealed.subarray(0, CHECK_SIZE))) {
    throw new WrongClaimCode("wrong claim code: check it with the letter from your clinic and try again");
  }
  return decrypt(pkg, key, sealed.subarray(CHECK_SIZE));
}

async function decrypt(pkg: Record<string, unknown>, key: Uint8Array, sealed: Uint8Array): Promise<ClaimContents> {
  const header = Object.fromEntries(HEADER_FIELDS.map((f) => [f, pkg[f]]));
  const nonce = unb64(pkg.nonce, "nonce");
  let plaintext: Uint8Array;
  try {
    const aes = await crypto.subtle.importKey("raw", bufferOf(key), { name: "AES-GCM" }, false, ["decrypt"]);
    const params = { name: "AES-GCM", iv: bufferOf(nonce), additionalData: bufferOf(canonicalBytes(header)), tagLength: 128 };
    plaintext = new Uint8Array(await crypto.subtle.decrypt(params, aes, bufferOf(sealed)));
  } catch {
    throw new ClaimTampered(
      "the claim code is right but the package was altered (its header or its ciphertext): ask the clinic for a new package",
    );
  }
  let contents: ClaimContents;
  try {
    const inner = JSON.parse(fromUtf8(plaintext)) as Record<string, unknown>;
    const masterSecret = fromB64(inner.master_secret as string);
    contents = { did: String(pkg.did), chainId: String(pkg.chain_id), masterSecret, name: String(inner.name ?? "") };
    if (Identity.fromMaster(masterSecret).did === contents.did) return contents;
  } catch {
    throw new NotAClaimPackage("the package opened but does not hold a master secret");
  }
  throw new ClaimTampered("the package's keys are not those of the identity it names");
}

function parsePackage(input: string | unknown): Record<string, unknown> {
  let pkg: unknown = input;
  if (typeof input === "string") {
    if (utf8(input).length > MAX_PACKAGE_BYTES) throw new NotAClaimPackage("this file is too large for a claim package");
    try {
      pkg = JSON.parse(input);
    } catch {
      throw new NotAClaimPackage("this file is not a claim package (not JSON)");
    }
  }
  checkPackage(pkg);
  return pkg;
}

function checkPackage(pkg: unknown): asserts pkg is Record<string, unknown> {
  const fail = (why: string) => new NotAClaimPackage(`this file is not a claim package: ${why}`);
  if (typeof pkg !== "object" || pkg === null || Array.isArray(pkg)) throw fail(`"kind" is not "${CLAIM_KIND}"`);
  const p = pkg as Record<string, unknown>;
  if (p.kind !== CLAIM_KIND) throw fail(`"kind" is not "${CLAIM_KIND}"`);
  if (p.version !== CLAIM_VERSION) throw fail(`version ${JSON.stringify(p.version)}; this page reads ${CLAIM_VERSION}`);
  const keys = Object.keys(p);
  const odd = [...keys.filter((k) => !ALL_FIELDS.has(k)), ...[...ALL_FIELDS].filter((k) => !(k in p))];
  if (odd.length) throw fail(`fields ${JSON.stringify(odd.sort())} missing or unknown`);
  for (const name of ["did", "chain_id", "nonce", "ciphertext"]) {
    if (typeof p[name] !== "string" || !p[name]) throw fail(`"${name}" is not a non-empty string`);
  }
  if (!isInt(p.max_attempts, 1, MAX_ATTEMPTS_LIMIT)) throw fail(`"max_attempts" is not an integer from 1 to ${MAX_ATTEMPTS_LIMIT}`);
  if (!isInt(p.attempts, 0, p.max_attempts as number)) throw fail('"attempts" is not an integer from 0 to "max_attempts"');
  if (unb64(p.nonce, "nonce").length !== NONCE_SIZE) throw fail(`"nonce" is not ${NONCE_SIZE} bytes`);
  if (unb64(p.ciphertext, "ciphertext").length < CHECK_SIZE + 16) throw fail('"ciphertext" is too short');
  parseKdf(p.kdf);
}

function parseKdf(kdf: unknown): KdfParams {
  const k = kdf as Record<string, unknown>;
  const keys = typeof kdf === "object" && kdf !== null && !Array.isArray(kdf) ? Object.keys(k) : [];
  if (keys.length !== KDF_FIELDS.size || !keys.every((f) => KDF_FIELDS.has(f)) || k.name !== "argon2id") {
    throw new NotAClaimPackage('not a claim package: "kdf" is not an argon2id parameter set');
  }
  const params = { memoryKib: k.memory_kib as number, iterations: k.iterations as number, lanes: k.lanes as number, salt: unb64(k.salt, "kdf.salt") };
  checkKdf(params);
  return params;
}

function checkKdf(p: KdfParams): void {
  if (!isInt(p.memoryKib, MIN_MEMORY_KIB, MAX_MEMORY_KIB)) {
    throw new NotAClaimPackage(`not a claim package: Argon2id memory must be ${MIN_MEMORY_KIB} to ${MAX_MEMORY_KIB} KiB`);
  }
  if (!isInt(p.iterations, 1, MAX_ITERATIONS) || !isInt(p.lanes, 1, MAX_LANES)) {
    throw new NotAClaimPackage(`not a claim package: Argon2id iterations and lanes must be 1 to ${MAX_ITERATIONS} and 1 to ${MAX_LANES}`);
  }
  if (p.salt.length < 16 || p.salt.length > 64) throw new NotAClaimPackage("not a claim package: the salt must be 16 to 64 bytes");
}

function isInt(value: unknown, low: number, high: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= low && value <= high;
}

function unb64(text: unknown, what: string): Uint8Array {
  try {
    return fromB64(text as string);
  } catch {
    throw new NotAClaimPackage(`not a claim package: "${what}" is not base64`);
  }
}

/** A package as Python's seal_claim_package writes it (for tests and interop; a clinic seals
 * packages server-side, never the page). */
export async function sealClaimPackage(
  contents: ClaimContents,
  code: string,
  kdf: Omit<KdfParams, "salt"> = { memoryKib: MIN_MEMORY_KIB, iterations: 3, lanes: 4 },
  maxAttempts = 5,
): Promise<string> {
  if (Identity.fromMaster(contents.masterSecret).did !== contents.did) throw new ClaimError("the master secret is not the did's");
  const params = { ...kdf, salt: randomBytes(16) };
  checkKdf(params);
  const nonce = randomBytes(NONCE_SIZE);
  const header = {
    kind: CLAIM_KIND,
    version: CLAIM_VERSION,
    did: contents.did,
    chain_id: contents.chainId,
    kdf: { name: "argon2id", memory_kib: params.memoryKib, iterations: params.iterations, lanes: params.lanes, salt: b64(params.salt) },
    nonce: b64(nonce),
    max_attempts: maxAttempts,
  };
  const [key, check] = await deriveClaimKey(params, normaliseClaimCode(code));
  const plaintext = canonicalBytes({ master_secret: b64(contents.masterSecret), name: contents.name });
  const aes = await crypto.subtle.importKey("raw", bufferOf(key), { name: "AES-GCM" }, false, ["encrypt"]);
  const algo = { name: "AES-GCM", iv: bufferOf(nonce), additionalData: bufferOf(canonicalBytes(header)), tagLength: 128 };
  const sealed = new Uint8Array(await crypto.subtle.encrypt(algo, aes, bufferOf(plaintext)));
  const ciphertext = new Uint8Array(check.length + sealed.length);
  ciphertext.set(check);
  ciphertext.set(sealed, check.length);
  return JSON.stringify({ ...header, ciphertext: b64(ciphertext), attempts: 0 }, null, 2) + "\n";
}
