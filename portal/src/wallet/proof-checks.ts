// The checklist a proof is checked by (wallet/proofs.ts, wallet/evidence.ts): every check
// is reported by name, and the first that fails throws ProofError naming it; and the
// readers of the proof's JSON, which fail such a check with the reason.
import { fromHex } from "../crypto/bytes";
import { LightClientError } from "./lightclient";

/** One check of a proof: `id` is stable (tests, data attributes), `label` says it in words. */
export interface Check {
  id: string;
  label: string;
  ok: boolean;
  detail: string;
}

/** A proof that does not hold: `check` is the id of the first check that failed, `checks`
 * those that passed before it and the failed one last. */
export class ProofError extends Error {
  override name = "ProofError";
  constructor(
    message: string,
    readonly check: string,
    readonly checks: Check[],
  ) {
    super(message);
  }
}

/** Thrown inside a check with the reason; the checklist turns it into a ProofError. */
class Failed extends Error {}

export function fail(reason: string): never {
  throw new Failed(reason);
}

export class Checklist {
  readonly checks: Check[] = [];

  /** Runs one check: its return value is the detail shown when it passes. */
  run<T>(id: string, label: string, body: () => T, detail: (value: T) => string = () => ""): T {
    let value: T;
    try {
      value = body();
    } catch (error) {
      const reason = error instanceof Failed || error instanceof LightClientError ? error.message : `${error}`;
      this.checks.push({ id, label, ok: false, detail: reason });
      throw new ProofError(`${label}: ${reason}`, id, [...this.checks]);
    }
    this.checks.push({ id, label, ok: true, detail: detail(value) });
    return value;
  }
}

// --- JSON shapes ---------------------------------------------------------------------------

export type Json = Record<string, unknown>;

export function fieldOf(container: unknown, name: string): unknown {
  if (typeof container !== "object" || container === null || Array.isArray(container) || !(name in container)) {
    fail(`the proof has no ${JSON.stringify(name)}`);
  }
  return (container as Json)[name];
}

export function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function bytesOf(value: unknown, what: string): Uint8Array {
  if (typeof value !== "string") fail(`${what} is not hex`);
  try {
    return fromHex(value);
  } catch {
    fail(`${what} is not hex`);
  }
}

export function intOf(value: unknown, what: string): number {
  if (typeof value === "number" && Number.isSafeInteger(value)) return value;
  if (typeof value === "string" && /^[0-9]{1,15}$/.test(value)) return Number(value);
  fail(`${what} is not an integer`);
}

