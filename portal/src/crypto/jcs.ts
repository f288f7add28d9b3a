// RFC 8785 (JSON Canonicalization Scheme), as crypto/canonical.py: keys sorted by UTF-16 code
// units, no whitespace, ES number formatting (which *is* JCS's), minimal escaping, UTF-8.
// Refused (NotCanonicalisable): non-finite numbers, integral numbers beyond 2^53-1 (a JSON
// integer that large has already lost its value in JS), lone surrogates (no UTF-8 form),
// anything that is not JSON (undefined, functions, bigint, class instances), and nesting
// deeper than 32 levels (crypto/canonical.py MAX_DEPTH).
import { utf8 } from "./bytes";

export class NotCanonicalisable extends Error {
  override name = "NotCanonicalisable";
}

export const MAX_DEPTH = 32;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function canonicalString(value: unknown): string {
  return serialise(value, 0);
}

export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalString(value));
}

function serialise(value: unknown, depth: number): string {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "string") return serialiseString(value);
  if (typeof value === "number") return serialiseNumber(value);
  if (Array.isArray(value)) {
    checkDepth(depth);
    return "[" + value.map((item) => serialise(item, depth + 1)).join(",") + "]";
  }
  if (typeof value === "object" && isPlainObject(value)) {
    checkDepth(depth);
    const entries = Object.entries(value as Record<string, unknown>);
    // Default sort compares UTF-16 code units: exactly JCS's order.
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const members = entries.map(([k, v]) => {
      if (v === undefined) throw new NotCanonicalisable(`member ${JSON.stringify(k)} is undefined`);
      return serialiseString(k) + ":" + serialise(v, depth + 1);
    });
    return "{" + members.join(",") + "}";
  }
  throw new NotCanonicalisable(`value of type ${typeof value} has no JSON form`);
}

function checkDepth(depth: number): void {
  if (depth >= MAX_DEPTH) throw new NotCanonicalisable(`value is nested deeper than ${MAX_DEPTH} levels`);
}

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function serialiseString(text: string): string {
  if (LONE_SURROGATE.test(text)) throw new NotCanonicalisable("string holds a lone surrogate");
  return JSON.stringify(text);
}

function serialiseNumber(n: number): string {
  if (!Number.isFinite(n)) throw new NotCanonicalisable(`${n} has no JSON form`);
  if (Number.isInteger(n) && !Number.isSafeInteger(n)) {
    throw new NotCanonicalisable(`${n} is an integer beyond 2^53-1`);
  }
  return JSON.stringify(n); // ES2015 Number-to-String; -0 gives "0" as JCS says
}
