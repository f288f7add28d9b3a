// Signed node API requests (docs/node-api.md, port of crypto/requestsig.py):
//   Authorization: CareLedger did=<did>, ts=<unix ms>, nonce=<22 base64url>, sig=<base64url>
// sig is Ed25519 over
//   "careledger-http-v3" LF chain_id LF node_id LF did LF METHOD LF target LF ts LF nonce LF
//   hex(SHA-256(body))
// target is the request target as sent: the percent-encoded path, then "?query" if any.
import { sha256 } from "@noble/hashes/sha2.js";
import { b64, b64url, hex, randomBytes, utf8 } from "./bytes";
import type { Identity } from "./identity";

export const SCHEME = "CareLedger";
export const LABEL = "careledger-http-v3";
export const NONCE_BYTES = 16;
const NODE_ID = /^[0-9a-f]{32}$/;

export class RequestSigningError extends Error {
  override name = "RequestSigningError";
}

/** The one node a request is for: its chain and node id, both from its public GET /status. */
export interface Audience {
  chainId: string;
  nodeId: string;
}

export function checkAudience(audience: Audience): void {
  if (!audience.chainId || audience.chainId.includes("\n")) {
    throw new RequestSigningError(`not a chain id: ${JSON.stringify(audience.chainId.slice(0, 80))}`);
  }
  if (!NODE_ID.test(audience.nodeId)) {
    throw new RequestSigningError(`a node id is 32 lowercase hex characters, not ${JSON.stringify(audience.nodeId)}`);
  }
}

export function newNonce(): string {
  return b64url(randomBytes(NONCE_BYTES));
}

/** The signed bytes; bodyHash is SHA-256 of the body (of the empty string when none). */
export function requestMessage(
  audience: Audience,
  did: string,
  method: string,
  target: string,
  tsMs: number,
  nonce: string,
  bodyHash: Uint8Array,
): Uint8Array {
  checkAudience(audience);
  if (did.includes("\n")) throw new RequestSigningError("a did has no line feed");
  if (!Number.isSafeInteger(tsMs) || tsMs < 0) throw new RequestSigningError("ts is unix milliseconds");
  const lines = [
    LABEL,
    audience.chainId,
    audience.nodeId,
    did,
    method.toUpperCase(),
    target,
    String(tsMs),
    nonce,
    hex(bodyHash),
  ];
  return utf8(lines.join("\n"));
}

export interface SignOptions {
  /** Unix milliseconds; Date.now() unless given (tests). */
  tsMs?: number;
  /** A fresh nonce unless given (tests). */
  nonce?: string;
}

/** The Authorization header value of one request. body: the exact bytes sent (or none). */
export function authorizationHeader(
  identity: Identity,
  did: string,
  audience: Audience,
  method: string,
  target: string,
  body: Uint8Array | string = new Uint8Array(),
  options: SignOptions = {},
): string {
  const tsMs = options.tsMs ?? Date.now();
  const nonce = options.nonce ?? newNonce();
  const raw = typeof body === "string" ? utf8(body) : body;
  const message = requestMessage(audience, did, method, target, tsMs, nonce, sha256(raw));
  // Python writes urlsafe_b64encode with its "==" padding; the node accepts both.
  const sig = b64(identity.sign(message)).replace(/\+/g, "-").replace(/\//g, "_");
  return `${SCHEME} did=${did}, ts=${tsMs}, nonce=${nonce}, sig=${sig}`;
}

/** The body hash alone, for callers that build the message themselves. */
export function bodyHash(body: Uint8Array | string): Uint8Array {
  return sha256(typeof body === "string" ? utf8(body) : body);
}

