// Transactions and their results as a proof carries them: the chain's result codes, the
// result leaf the results root commits to (chain/results.py) and the signed envelope read
// back from its wire bytes (chain/tx.py; crypto/tx.ts writes it).
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes, hex } from "../crypto/bytes";
import { verify } from "../crypto/identity";
import { canonicalBytes } from "../crypto/jcs";
import { MAX_TX_BYTES, SIGNATURE_BYTES } from "../crypto/tx";
import { bytesOf, fail, fieldOf, isObject, type Json } from "./proof-checks";
import { bytesField, varintField } from "./protobuf";

/** The chain's result codes (chain/codes.py), for messages. */
export const CODE_NAMES: Record<number, string> = {
  0: "OK", 1: "MALFORMED", 2: "OVERSIZED", 3: "WRONG_CHAIN", 4: "UNKNOWN_TYPE", 5: "BAD_SIGNATURE",
  6: "REPLAY", 7: "INVALID_PAYLOAD", 8: "UNAUTHORISED", 9: "NOT_FOUND", 10: "CONFLICT",
  11: "NONCE_TOO_FAR", 12: "ERASED", 13: "UNKNOWN_SENDER", 14: "NO_CONSENT", 15: "BAD_BATCH",
  16: "BATCH_REPLAYED", 17: "BATCH_GAP", 99: "INTERNAL",
};

export function codeName(code: number): string {
  return CODE_NAMES[code] ?? "unknown code";
}

// --- results as headers commit to them (chain/results.py) ----------------------------------

export interface TxOutcome {
  code: number;
  data: Uint8Array;
  gasWanted: bigint;
  gasUsed: bigint;
}

export function outcomeOf(value: unknown): TxOutcome {
  const code = fieldOf(value, "code");
  const wanted = fieldOf(value, "gas_wanted");
  const used = fieldOf(value, "gas_used");
  if (![code, wanted, used].every((v) => typeof v === "number" && Number.isSafeInteger(v))) {
    fail("result code and gas must be integers");
  }
  if (!((code as number) >= 0 && (code as number) <= 0xffffffff)) fail(`result code ${code} is not a uint32`);
  return { code: code as number, data: bytesOf(fieldOf(value, "data"), "result data"), gasWanted: BigInt(wanted as number), gasUsed: BigInt(used as number) };
}

/** The protobuf ExecTxResult with only code, data, gas_wanted, gas_used (CometBFT's
 * `types.NewResults`): the leaf the results root commits to. */
export function encodeOutcome(outcome: TxOutcome): Uint8Array {
  return concat(
    varintField(1, BigInt(outcome.code)),
    bytesField(2, outcome.data),
    varintField(5, outcome.gasWanted),
    varintField(6, outcome.gasUsed),
  );
}

// --- transactions (chain/tx.py) ------------------------------------------------------------

export interface DecodedTx {
  chainId: string;
  type: string;
  sender: string;
  nonce: number;
  payload: Json;
  body: Uint8Array; // the canonical JSON the signature covers
  signature: Uint8Array;
  hash: string; // hex SHA-256 of the wire bytes
}

export class TxDecodeError extends Error {
  override name = "TxDecodeError";
}

/** The signed envelope `RFC 8785 body || 64-byte Ed25519 signature`; refuses what the chain
 * calls MALFORMED: a body that is not canonical JSON, missing or extra fields, wrong types. */
export function decodeTx(raw: Uint8Array): DecodedTx {
  if (raw.length > MAX_TX_BYTES) throw new TxDecodeError(`the transaction is ${raw.length} bytes, over ${MAX_TX_BYTES}`);
  if (raw.length <= SIGNATURE_BYTES) throw new TxDecodeError("the transaction is too short to hold a signature");
  const body = raw.slice(0, raw.length - SIGNATURE_BYTES);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    if (!equalBytes(canonicalBytes(value), body)) throw new Error("not canonical");
  } catch {
    throw new TxDecodeError("the transaction's body is not canonical JSON");
  }
  const fields = ["chain_id", "nonce", "payload", "sender", "type"];
  if (!isObject(value) || Object.keys(value).sort().join() !== fields.join()) {
    throw new TxDecodeError(`an envelope has exactly the fields ${fields.join(", ")}`);
  }
  const { chain_id: chainId, type, sender, nonce, payload } = value;
  if (typeof chainId !== "string" || typeof type !== "string" || typeof sender !== "string") {
    throw new TxDecodeError("chain_id, type and sender must be strings");
  }
  if (typeof nonce !== "number" || !Number.isSafeInteger(nonce) || nonce < 1) throw new TxDecodeError("the nonce is not a positive integer");
  if (!isObject(payload)) throw new TxDecodeError("the payload must be an object");
  return { chainId, type, sender, nonce, payload, body, signature: raw.slice(raw.length - SIGNATURE_BYTES), hash: hex(sha256(raw)) };
}

export function signedBy(tx: DecodedTx, key: Uint8Array): boolean {
  return key.length === 32 && verify(key, tx.signature, tx.body);
}

