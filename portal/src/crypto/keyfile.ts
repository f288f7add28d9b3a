// Key files (docs/crypto.md 10; port of crypto/keyfile.py), version 2:
//   {"version": 2, "did", "kind", "name", "master_secret": b64 (32), "naming_key": b64 (32),
//    "previous": [{"master_secret": b64 (32), "below_epoch": n}, ...]}      oldest first
// Version 1 (no naming_key, no previous) still loads: its naming key derives from its master.
// A KeyRing is a key file in memory: the scope key of (scope, epoch) derives from the first
// previous master whose below_epoch is above epoch, else from the current master.
import { b64, fromB64 } from "./bytes";
import { Identity } from "./identity";
import { NAMING_KEY_LABEL } from "./naming";
import { scopePrivate, scopePublic } from "./scopekeys";

export const KEYFILE_VERSION = 2;
export const KINDS = ["organisation", "practitioner", "patient", "node"] as const;
export type KeyKind = (typeof KINDS)[number];
export const SCOPE_ROOT_LABEL = "scope-keys";
const MAX_EPOCH = 0xffffffff;

export class KeyFileError extends Error {
  override name = "KeyFileError";
}

export interface PreviousMaster {
  readonly master: Uint8Array;
  readonly belowEpoch: number;
}

export interface KeyFileJson {
  version: number;
  did: string;
  kind: string;
  name: string;
  master_secret: string;
  naming_key: string;
  previous: { master_secret: string; below_epoch: number }[];
}

/** The naming key of a patient whose first master secret is `identity`'s. */
export function namingKeyOf(identity: Identity): Uint8Array {
  return identity.secret(NAMING_KEY_LABEL);
}

/** The scope private key (scope, epoch) one master secret derives. */
export function scopeKeyOf(identity: Identity, scope: string, epoch: number): Uint8Array {
  return scopePrivate(identity.secret(SCOPE_ROOT_LABEL), scope, epoch);
}

/** An identity's keys: `did` stays its name across rotations; `current` holds the current
 * keys. toString() and JSON.stringify() show no secret (serialise with toKeyFile()). */
export class KeyRing {
  readonly did: string;
  readonly kind: KeyKind;
  readonly name: string;
  readonly current: Identity;
  readonly #namingKey: Uint8Array;
  readonly #previous: readonly PreviousMaster[];

  constructor(
    did: string,
    kind: KeyKind,
    current: Identity,
    name = "",
    namingKey?: Uint8Array,
    previous: readonly PreviousMaster[] = [],
  ) {
    if (!KINDS.includes(kind)) throw new KeyFileError(`unknown key kind ${JSON.stringify(kind)}`);
    const naming = namingKey ?? namingKeyOf(current);
    if (naming.length !== 32) throw new KeyFileError("a naming key is 32 bytes");
    for (const [i, p] of previous.entries()) {
      if (p.master.length !== 32) throw new KeyFileError("a previous master secret is 32 bytes");
      if (!Number.isInteger(p.belowEpoch) || p.belowEpoch < 1 || p.belowEpoch > MAX_EPOCH) {
        throw new KeyFileError(`below_epoch is an integer from 1 to ${MAX_EPOCH}`);
      }
      if (i > 0 && p.belowEpoch <= previous[i - 1]!.belowEpoch) {
        throw new KeyFileError("previous masters must come with increasing below_epoch");
      }
    }
    this.did = did;
    this.kind = kind;
    this.name = name;
    this.current = current;
    this.#namingKey = naming.slice();
    this.#previous = previous.map((p) => Object.freeze({ master: p.master.slice(), belowEpoch: p.belowEpoch }));
  }

  /** A new identity's ring (never rotated: its naming key derives from its master). */
  static fromIdentity(identity: Identity, kind: KeyKind = "patient", name = ""): KeyRing {
    return new KeyRing(identity.did, kind, identity, name);
  }

  get namingKey(): Uint8Array {
    return this.#namingKey.slice();
  }

  get previous(): readonly PreviousMaster[] {
    return this.#previous;
  }

  /** The identity whose master derives the scope keys of `epoch`. */
  masterForEpoch(epoch: number): Identity {
    for (const p of this.#previous) {
      if (epoch < p.belowEpoch) return Identity.fromMaster(p.master);
    }
    return this.current;
  }

  /** The scope private key (scope, epoch), from whichever master that epoch belongs to. */
  scopeKey(scope: string, epoch: number): Uint8Array {
    return scopeKeyOf(this.masterForEpoch(epoch), scope, epoch);
  }

  scopePublicKey(scope: string, epoch: number): Uint8Array {
    return scopePublic(this.scopeKey(scope, epoch));
  }

  /** This ring after a rotation to `identity`, whose scope keys start at `firstEpoch`: the
   * current master joins `previous`; the did and the naming key stay. */
  rotated(identity: Identity, firstEpoch: number): KeyRing {
    const last = this.#previous[this.#previous.length - 1];
    if (last && firstEpoch <= last.belowEpoch) {
      throw new KeyFileError("a rotation's first epoch must be above the previous rotation's");
    }
    const kept = { master: this.current.master, belowEpoch: firstEpoch };
    return new KeyRing(this.did, this.kind, identity, this.name, this.#namingKey, [...this.#previous, kept]);
  }

  /** The key file's JSON object (version 2). It holds every secret: never log it. */
  toKeyFile(): KeyFileJson {
    return {
      version: KEYFILE_VERSION,
      did: this.did,
      kind: this.kind,
      name: this.name,
      master_secret: b64(this.current.master),
      naming_key: b64(this.#namingKey),
      previous: this.#previous.map((p) => ({ master_secret: b64(p.master), below_epoch: p.belowEpoch })),
    };
  }

  toString(): string {
    return `KeyRing(did=${this.did}, kind=${this.kind}, previous_masters=${this.#previous.length})`;
  }

  toJSON(): { did: string; kind: string } {
    return { did: this.did, kind: this.kind };
  }
}

/** The key file's text as Python writes it (indent 2, final newline). */
export function serialiseKeyFile(ring: KeyRing): string {
  return JSON.stringify(ring.toKeyFile(), null, 2) + "\n";
}

/** A key file (its JSON text or parsed value) as a KeyRing; KeyFileError naming what is wrong
 * (never a secret's value). */
export function parseKeyFile(input: string | unknown): KeyRing {
  let data: unknown = input;
  if (typeof input === "string") {
    try {
      data = JSON.parse(input);
    } catch {
      throw new KeyFileError("this is not a key file (not JSON)");
    }
  }
  if (!isObject(data) || (data.version !== 1 && data.version !== 2)) {
    throw new KeyFileError("not a CareLedger key file of version 1 or 2");
  }
  const kind = data.kind;
  if (typeof kind !== "string" || !(KINDS as readonly string[]).includes(kind)) {
    throw new KeyFileError(`unknown key kind ${JSON.stringify(kind)}`);
  }
  if (typeof data.did !== "string" || !data.did) throw new KeyFileError("key file is malformed: no did");
  const current = Identity.fromMaster(secret(data.master_secret, "master_secret"));
  let namingKey: Uint8Array | undefined;
  let previous: PreviousMaster[] = [];
  if (data.version === 2) {
    namingKey = secret(data.naming_key, "naming_key");
    if (!Array.isArray(data.previous)) throw new KeyFileError("previous is a list");
    previous = data.previous.map(previousMaster);
  }
  const name = data.name === undefined || data.name === null ? "" : String(data.name);
  return new KeyRing(data.did, kind as KeyKind, current, name, namingKey, previous);
}

function previousMaster(entry: unknown): PreviousMaster {
  if (!isObject(entry)) throw new KeyFileError("a previous master is an object");
  if (!Number.isInteger(entry.below_epoch)) throw new KeyFileError("below_epoch is an integer");
  return { master: secret(entry.master_secret, "previous master_secret"), belowEpoch: entry.below_epoch as number };
}

function secret(text: unknown, what: string): Uint8Array {
  let raw: Uint8Array;
  try {
    raw = fromB64(text as string);
  } catch {
    throw new KeyFileError(`bad ${what}: not base64`);
  }
  if (raw.length !== 32) throw new KeyFileError(`bad ${what}: not 32 bytes`);
  return raw;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
