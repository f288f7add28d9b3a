// Byte helpers shared by every crypto module: hex, base64, UTF-8 and the length-prefixed
// encodings of docs/crypto.md ("Notation"). Pure functions, Uint8Array in and out.

export class EncodingError extends Error {
  override name = "EncodingError";
}

const HEX_DIGITS = "0123456789abcdef";
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += HEX_DIGITS[b >> 4]! + HEX_DIGITS[b & 15]!;
  return out;
}

export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new EncodingError("not a hexadecimal string of whole bytes");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

/** Standard base64 with padding (Python's base64.b64encode). */
export function b64(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i]!;
    const b = bytes[i + 1];
    const c = bytes[i + 2];
    out += B64[a >> 2]! + B64[((a & 3) << 4) | ((b ?? 0) >> 4)]!;
    out += b === undefined ? "=" : B64[((b & 15) << 2) | ((c ?? 0) >> 6)]!;
    out += c === undefined ? "=" : B64[c & 63]!;
  }
  return out;
}

/** Strict standard base64 (as Python's b64decode(validate=True)): padding required, no
 * whitespace, no other alphabet; EncodingError otherwise. */
export function fromB64(text: string): Uint8Array {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new EncodingError("not base64");
  }
  const body = text.replace(/=+$/, "");
  const out = new Uint8Array(Math.floor((body.length * 3) / 4));
  let bits = 0;
  let value = 0;
  let o = 0;
  for (const ch of body) {
    value = (value << 6) | B64_INDEX.get(ch)!;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (value >> bits) & 0xff;
    }
  }
  return out;
}

/** base64url without padding (the request signature's nonce; its sig keeps Python's "==",
 * see requestsig.ts). */
export function b64url(bytes: Uint8Array): string {
  return b64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromB64url(text: string): Uint8Array {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  return fromB64(padded + "=".repeat((4 - (padded.length % 4)) % 4));
}

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Strict UTF-8 decoding: EncodingError for invalid bytes (never U+FFFD). */
export function fromUtf8(bytes: Uint8Array): string {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    throw new EncodingError("not UTF-8");
  }
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function u16(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) {
    throw new EncodingError(`${n} does not fit in an unsigned 16-bit integer`);
  }
  return new Uint8Array([n >> 8, n & 0xff]);
}

export function u32(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new EncodingError(`${n} does not fit in an unsigned 32-bit integer`);
  }
  return new Uint8Array([(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** lp(s) = u16(len(utf8(s))) || utf8(s): every variable-length string of the scheme. */
export function lp(text: string): Uint8Array {
  const raw = utf8(text);
  if (raw.length > 0xffff) throw new EncodingError(`string of ${raw.length} bytes is too long to encode`);
  return concat(u16(raw.length), raw);
}

/** Constant-time equality of two byte strings (lengths are not secret). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** A fresh random byte string from the platform's CSPRNG (WebCrypto). */
export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** A copy whose buffer is exactly its bytes (WebCrypto takes BufferSource views, but some
 * TypeScript lib versions want a plain ArrayBuffer-backed Uint8Array). */
export function bufferOf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(bytes.length));
  out.set(bytes);
  return out;
}
