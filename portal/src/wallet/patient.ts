// The signed-in patient: did, display name, the unlocked keys (in memory only, while the tab
// is open) and a node client that signs as the patient. Made by wallet/onboarding.ts (create,
// restore, key file, claim) or by unlocking a stored wallet (wallet/keystore.ts).
import type { KeyRing } from "../crypto/keyfile";
import type { NodeClient } from "./node";

/** What the records reader asks for a scope's private key (SPEC-11, records). */
export interface KeySource {
  scopeKey(patient: string, scope: string, epoch: number): Promise<Uint8Array | null>;
  /** The patient's naming key when the reader holds it (its own, or one a grant carried): a
   * record opened by name is then checked to be named HMAC(naming key, type, id). */
  namingKey(patient: string): Promise<Uint8Array | null>;
}

export class PatientWallet implements KeySource {
  constructor(
    readonly did: string,
    readonly name: string,
    readonly keys: KeyRing,
    readonly node: NodeClient,
  ) {}

  /** The patient's own scope keys, derived from its key ring (any epoch it held, including
   * those below a key rotation, through the ring's `previous` masters). */
  async scopeKey(patient: string, scope: string, epoch: number): Promise<Uint8Array | null> {
    if (patient !== this.did) return null;
    return this.keys.scopeKey(scope, epoch);
  }

  async namingKey(patient: string): Promise<Uint8Array | null> {
    return patient === this.did ? this.keys.namingKey : null;
  }

  toString(): string {
    return `PatientWallet(${this.did})`; // never the keys
  }
}
