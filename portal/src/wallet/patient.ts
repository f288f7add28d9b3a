// The signed-in patient: did, display name, and the unlocked keys (in memory only).
// Owned by the wallet stream (SPEC-11.md); this is the shape the pages build against.
export interface PatientWallet {
  readonly did: string;
  readonly name: string;
}
