// Identity keys (docs/crypto.md 0; port of crypto/keys.py): one 32-byte master secret gives
// an Ed25519 signing key, an X25519 encryption key and labelled secrets, all by
// HKDF-SHA256(ikm = master, salt = "careledger/keys/v1", info = label, L = 32).
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, utf8 } from "./bytes";

export class KeyError extends Error {
  override name = "KeyError";
}

const KDF_SALT = utf8("careledger/keys/v1");
export const SIGNING_LABEL = "careledger/v1/ed25519";
export const ENCRYPTION_LABEL = "careledger/v1/x25519";
export const SECRET_LABEL_PREFIX = "careledger/v1/secret/";
const SECRET_LABEL = /^[a-z0-9][a-z0-9._/-]{0,63}$/;

/** HKDF-SHA256 of the master under one label (32 bytes unless told). */
export function deriveSecret(master: Uint8Array, label: string, length = 32): Uint8Array {
  return hkdf(sha256, master, KDF_SALT, utf8(label), length);
}

// --- did:key --------------------------------------------------------------------------------

const ED25519_PUB = new Uint8Array([0xed, 0x01]); // multicodec ed25519-pub, unsigned varint
const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const DID_PREFIX = "did:key:z";

function b58encode(data: Uint8Array): string {
  let n = 0n;
  for (const b of data) n = (n << 8n) | BigInt(b);
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)]! + out;
    n /= 58n;
  }
  let zeros = 0;
  while (zeros < data.length && data[zeros] === 0) zeros++;
  return "1".repeat(zeros) + out;
}

function b58decode(text: string): Uint8Array {
  let n = 0n;
  for (const c of text) {
    const digit = B58.indexOf(c);
    if (digit < 0) throw new KeyError(`invalid base58 character ${JSON.stringify(c)}`);
    n = n * 58n + BigInt(digit);
  }
  const body: number[] = [];
  while (n > 0n) {
    body.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  let zeros = 0;
  while (zeros < text.length && text[zeros] === "1") zeros++;
  return new Uint8Array([...new Array<number>(zeros).fill(0), ...body]);
}

export function didFromEd25519(publicKey: Uint8Array): string {
  if (publicKey.length !== 32) throw new KeyError("an Ed25519 public key is 32 bytes");
  return DID_PREFIX + b58encode(concat(ED25519_PUB, publicKey));
}

/** The raw Ed25519 public key a did:key names; KeyError for anything else. */
export function ed25519FromDid(did: string): Uint8Array {
  const bad = () => new KeyError(`not an Ed25519 did:key: ${JSON.stringify(String(did).slice(0, 80))}`);
  if (typeof did !== "string" || !did.startsWith(DID_PREFIX) || did.length > 128) throw bad();
  const raw = b58decode(did.slice(DID_PREFIX.length));
  if (raw.length !== 34 || raw[0] !== 0xed || raw[1] !== 0x01) throw bad();
  return raw.slice(2);
}

// --- signatures -----------------------------------------------------------------------------

/** Ed25519 verification exactly as the chain's (libsodium's crypto_sign_verify_detached):
 * canonical encodings (RFC 8032 decoding, not ZIP-215), S < L, neither the public key nor R of
 * small order, and the cofactorless equation R == [S]B - [k]A compared as bytes. (Noble's own
 * verify checks the cofactored equation, which accepts signatures libsodium refuses when a key
 * carries a torsion component.) Public data only: variable time is fine. */
export function verify(publicKey: Uint8Array, signature: Uint8Array, message: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const Point = ed25519.Point;
    const a = Point.fromBytes(publicKey, false);
    const rBytes = signature.subarray(0, 32);
    const r = Point.fromBytes(rBytes, false);
    const s = bytesToNumberLE(signature.subarray(32));
    const L = Point.Fn.ORDER;
    if (s >= L || a.isSmallOrder() || r.isSmallOrder()) return false;
    const k = bytesToNumberLE(sha512(concat(rBytes, publicKey, message))) % L;
    const check = Point.BASE.multiplyUnsafe(s).subtract(a.multiplyUnsafe(k));
    return equalBytes(check.toBytes(), rBytes);
  } catch {
    return false;
  }
}

// --- identities -----------------------------------------------------------------------------

/** A person's or organisation's keys, derived from one master secret. Neither the master nor
 * a derived key shows in toString(), JSON or the console's view of the object's fields. */
export class Identity {
  readonly #master: Uint8Array;
  readonly #signingSeed: Uint8Array;
  readonly #encryptionPrivate: Uint8Array;
  readonly signingPublic: Uint8Array;
  readonly encryptionPublic: Uint8Array;
  readonly did: string;

  private constructor(master: Uint8Array) {
    if (!(master instanceof Uint8Array) || master.length !== 32) {
      throw new KeyError("a master secret is 32 bytes");
    }
    this.#master = master.slice();
    this.#signingSeed = deriveSecret(master, SIGNING_LABEL);
    this.#encryptionPrivate = deriveSecret(master, ENCRYPTION_LABEL);
    this.signingPublic = ed25519.getPublicKey(this.#signingSeed);
    this.encryptionPublic = x25519.getPublicKey(this.#encryptionPrivate);
    this.did = didFromEd25519(this.signingPublic);
  }

  static fromMaster(master: Uint8Array): Identity {
    return new Identity(master);
  }

  static generate(): Identity {
    return new Identity(crypto.getRandomValues(new Uint8Array(32)));
  }

  /** The master secret (a copy): only a key file or the keystore should ask for it. */
  get master(): Uint8Array {
    return this.#master.slice();
  }

  /** The X25519 private key (raw 32 bytes, a copy), for unwrapping what is sent to us. */
  get encryptionPrivate(): Uint8Array {
    return this.#encryptionPrivate.slice();
  }

  sign(message: Uint8Array): Uint8Array {
    return ed25519.sign(message, this.#signingSeed);
  }

  /** A secret for one purpose, under "careledger/v1/secret/<label>" (never a key seed). */
  secret(label: string): Uint8Array {
    if (typeof label !== "string" || !SECRET_LABEL.test(label)) {
      throw new KeyError(`not a secret label: ${JSON.stringify(String(label).slice(0, 80))}`);
    }
    return deriveSecret(this.#master, SECRET_LABEL_PREFIX + label);
  }

  toString(): string {
    return `Identity(did=${this.did})`;
  }

  toJSON(): { did: string } {
    return { did: this.did };
  }
}
