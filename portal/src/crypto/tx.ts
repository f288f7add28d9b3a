// Signed transactions (port of chain/tx.py): the wire form is the RFC 8785 bytes of
// {chain_id, type, sender, nonce, payload} followed by the 64-byte Ed25519 signature over
// exactly those bytes; a transaction's name (hash) is SHA-256 of the whole wire form.
import { sha256 } from "@noble/hashes/sha2.js";
import { concat } from "./bytes";
import type { Identity } from "./identity";
import { canonicalBytes } from "./jcs";

export const SIGNATURE_BYTES = 64;
export const MAX_TX_BYTES = 64 * 1024;
export const MAX_NONCE = Number.MAX_SAFE_INTEGER; // 2^53 - 1

export class TxError extends Error {
  override name = "TxError";
}

export interface TxFields {
  chainId: string;
  type: string;
  sender: string;
  nonce: number;
  payload: Record<string, unknown>;
}

/** The signed body: RFC 8785 of the envelope. Refuses what the chain refuses as MALFORMED
 * (nonce outside 1..2^53-1, a float anywhere in the payload) or OVERSIZED. */
export function txBody(tx: TxFields): Uint8Array {
  if (!Number.isSafeInteger(tx.nonce) || tx.nonce < 1) {
    throw new TxError(`nonce must be an integer in 1..${MAX_NONCE}`);
  }
  if (typeof tx.payload !== "object" || tx.payload === null || Array.isArray(tx.payload)) {
    throw new TxError("payload must be an object");
  }
  if (containsNonInteger(tx.payload)) {
    throw new TxError("payload must not contain floating-point numbers");
  }
  return canonicalBytes({
    chain_id: tx.chainId,
    type: tx.type,
    sender: tx.sender,
    nonce: tx.nonce,
    payload: tx.payload,
  });
}

/** The wire bytes of the transaction signed by the signer's current key. */
export function signTx(identity: Identity, tx: TxFields): Uint8Array {
  const body = txBody(tx);
  const wire = concat(body, identity.sign(body));
  if (wire.length > MAX_TX_BYTES) {
    throw new TxError(`transaction is ${wire.length} bytes, limit ${MAX_TX_BYTES}`);
  }
  return wire;
}

export function txHash(wire: Uint8Array): Uint8Array {
  return sha256(wire);
}

// In JS every number is a float; the chain refuses a payload with a JSON number that is not an
// integer (Python reads "1.5" as float). An integral number is written without a fraction by
// JCS, so the chain reads it as an int.
function containsNonInteger(value: unknown): boolean {
  if (typeof value === "number") return !Number.isInteger(value);
  if (Array.isArray(value)) return value.some(containsNonInteger);
  if (value !== null && typeof value === "object") return Object.values(value).some(containsNonInteger);
  return false;
}
