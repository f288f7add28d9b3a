// What a wallet signs outside a transaction body, or checks that others signed (ports of
// crypto/statements.py, chain/modules/identity/messages.rotation_payload,
// records/messages.scope_key_payload, identity/vouchers.py, wallet/keyring.py's checks and
// protocol/receipts.py). Every statement is RFC 8785 of a flat object with its own domain, so
// a signature over one kind is never a signature over another.
import { sha256 } from "@noble/hashes/sha2.js";
import { fromB64url, fromHex, hex } from "./bytes";
import { type Identity, KeyError, ed25519FromDid, verify } from "./identity";
import { canonicalBytes } from "./jcs";

export const SCOPE_KEY_DOMAIN = "careledger/scope-key/v1";
export const ROTATION_DOMAIN = "careledger/rotate-key/v1";
export const STATEMENT_DOMAIN = "careledger-statement-v1";
export const RECEIPT_DOMAIN = "careledger/audit-receipt/v1";
const MAX_HEIGHT = Number.MAX_SAFE_INTEGER;

/** A key or signature that the patient's (or node's) signatures do not vouch for. */
export class UntrustedKey extends Error {
  override name = "UntrustedKey";
}

// --- scope keys and rotations ---------------------------------------------------------------

/** What a patient signs when publishing a scope public key (hex, 32 bytes). */
export function scopeKeyStatement(chainId: string, patient: string, scope: string, epoch: number, publicKeyHex: string): Uint8Array {
  return canonicalBytes({ domain: SCOPE_KEY_DOMAIN, chain_id: chainId, patient, scope, epoch, public_key: publicKeyHex });
}

/** What the old key (certificate) and the new key (proof) sign when `did` rotates. */
export function rotationStatement(chainId: string, did: string, signingKeyHex: string, encryptionKeyHex: string): Uint8Array {
  return canonicalBytes({ domain: ROTATION_DOMAIN, chain_id: chainId, did, signing_key: signingKeyHex, encryption_key: encryptionKeyHex });
}

/** The `identity/rotate_key` payload moving `did` (default old.did) from `old` to `next`. */
export function rotationPayload(old: Identity, next: Identity, chainId: string, did = "", encryptionKey = ""): Record<string, string> {
  const signingKey = hex(next.signingPublic);
  const encryption = encryptionKey || hex(next.encryptionPublic);
  const statement = rotationStatement(chainId, did || old.did, signingKey, encryption);
  return {
    signing_key: signingKey,
    encryption_key: encryption,
    certificate: hex(old.sign(statement)),
    proof: hex(next.sign(statement)),
  };
}

/** The `records/publish_scope_key` payload, signed by the patient's current key. */
export function scopeKeyPayload(
  patient: Identity,
  chainId: string,
  scope: string,
  epoch: number,
  publicKeyHex: string,
  patientDid = "",
): { scope: string; epoch: number; public_key: string; signature: string } {
  const statement = scopeKeyStatement(chainId, patientDid || patient.did, scope, epoch, publicKeyHex);
  return { scope, epoch, public_key: publicKeyHex, signature: hex(patient.sign(statement)) };
}

// --- checking what a node says about an identity's keys (wallet/keyring.py) -----------------

export interface IdentityKeyLink {
  signing_key: string;
  encryption_key?: string;
  certificate?: string;
  proof?: string;
  since?: number;
}

export interface IdentityRow {
  did: string;
  signing_key: string;
  keys: IdentityKeyLink[];
}

function hexOrEmpty(text: unknown): Uint8Array {
  try {
    return fromHex(String(text ?? ""));
  } catch {
    return new Uint8Array();
  }
}

/** The identity's current signing key, checked link by link from the did's own key (every
 * rotation certified by the old key and proven by the new one); UntrustedKey otherwise. */
export function currentSigningKey(identity: IdentityRow, chainId: string): Uint8Array {
  const did = identity.did;
  let key: Uint8Array;
  try {
    key = ed25519FromDid(did);
  } catch (e) {
    if (e instanceof KeyError) throw new UntrustedKey(`${did} is not a did:key`);
    throw e;
  }
  const history = identity.keys ?? [];
  if (!history.length || history[0]!.signing_key !== hex(key)) {
    throw new UntrustedKey(`${did}'s key history does not start at the did's own key`);
  }
  for (const link of history.slice(1)) {
    const next = hexOrEmpty(link.signing_key);
    const statement = rotationStatement(chainId, did, link.signing_key, String(link.encryption_key ?? ""));
    if (!(verify(key, hexOrEmpty(link.certificate), statement) && verify(next, hexOrEmpty(link.proof), statement))) {
      throw new UntrustedKey(`${did}'s key rotation at height ${link.since} is not signed`);
    }
    key = next;
  }
  if (hex(key) !== identity.signing_key) throw new UntrustedKey(`${did}'s current key is not the end of its rotation chain`);
  return key;
}

export interface ScopeKeyRow {
  scope: string;
  epoch: number;
  public_key: string;
  signature: string;
}

/** The current (highest-epoch) scope public key of each scope, each checked against the
 * patient's signature by its current key (records/scope_keys rows). */
export function verifiedScopeKeys(identity: IdentityRow, rows: ScopeKeyRow[], chainId: string): Map<string, { epoch: number; publicKey: Uint8Array }> {
  const signer = currentSigningKey(identity, chainId);
  const current = new Map<string, ScopeKeyRow>();
  for (const row of rows) {
    const seen = current.get(row.scope);
    if (!seen || row.epoch > seen.epoch) current.set(row.scope, row);
  }
  const verified = new Map<string, { epoch: number; publicKey: Uint8Array }>();
  for (const [scope, row] of current) {
    const statement = scopeKeyStatement(chainId, identity.did, scope, row.epoch, row.public_key);
    if (!verify(signer, hexOrEmpty(row.signature), statement)) {
      throw new UntrustedKey(`${identity.did}'s ${scope} key (epoch ${row.epoch}) is not signed by the patient's current key: refusing to encrypt to it`);
    }
    verified.set(scope, { epoch: row.epoch, publicKey: fromHex(row.public_key) });
  }
  return verified;
}

// --- vouchers and consents (chain/modules/identity/vouchers.py) -----------------------------

export function statementBytes(chainId: string, purpose: string, subject: string, org: string, expiresAt: number, encryptionKey = ""): Uint8Array {
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 1 || expiresAt > MAX_HEIGHT) {
    throw new RangeError(`expires_at must be a height in 1..${MAX_HEIGHT}`);
  }
  return canonicalBytes({
    domain: STATEMENT_DOMAIN,
    chain_id: chainId,
    purpose,
    subject,
    org,
    expires_at: expiresAt,
    encryption_key: encryptionKey,
  });
}

export interface Voucher {
  org: string;
  expires_at: number;
  signature: string;
}

/** The `voucher` payload field: `org` vouches for `subject` to `purpose` until a height. */
export function signVoucher(org: Identity, chainId: string, purpose: "register_patient" | "apply_membership", subject: string, expiresAt: number, orgDid = ""): Voucher {
  const did = orgDid || org.did;
  return { org: did, expires_at: expiresAt, signature: hex(org.sign(statementBytes(chainId, purpose, subject, did, expiresAt))) };
}

/** Whether a voucher (say, pasted by the patient) is signed by `orgKey` for this subject and
 * purpose; the chain decides the rest (membership, expiry, single use). */
export function voucherSignedBy(orgKey: Uint8Array, voucher: Voucher, chainId: string, purpose: string, subject: string): boolean {
  try {
    return verify(orgKey, fromHex(voucher.signature), statementBytes(chainId, purpose, subject, voucher.org, voucher.expires_at));
  } catch {
    return false;
  }
}

/** The `consent` payload field of a practitioner (or node) registered by `org`. */
export function signConsent(practitioner: Identity, chainId: string, org: string, encryptionKey: string, expiresAt: number, practitionerDid = "", purpose: "register_practitioner" | "register_node" = "register_practitioner") {
  const did = practitionerDid || practitioner.did;
  const statement = statementBytes(chainId, purpose, did, org, expiresAt, encryptionKey);
  return { expires_at: expiresAt, signature: hex(practitioner.sign(statement)) };
}

// --- audit receipts (protocol/receipts.py) --------------------------------------------------

export interface AuditReceipt {
  node: string;
  entries: number;
  first: number;
  digest: string;
  signature: Uint8Array;
}

const RECEIPT = /^node=(did:key:z[1-9A-HJ-NP-Za-km-z]{1,100}), entries=([0-9]{1,9}), first=([0-9]{1,18}), digest=([0-9a-f]{64}), sig=([0-9a-f]{128})$/;

export function receiptStatement(chainId: string, node: string, request: string, entries: number, first: number, digest: string): Uint8Array {
  return canonicalBytes({ domain: RECEIPT_DOMAIN, chain_id: chainId, node, request, entries, first, digest });
}

/** The CareLedger-Audit header of a read response; UntrustedKey if missing or malformed. */
export function parseReceipt(header: string | null): AuditReceipt {
  const match = RECEIPT.exec((header ?? "").trim());
  if (!match) throw new UntrustedKey("the response carries no well-formed CareLedger-Audit receipt");
  return { node: match[1]!, entries: Number(match[2]), first: Number(match[3]), digest: match[4]!, signature: fromHex(match[5]!) };
}

/** hex SHA-256 of the request's signature bytes: what a receipt names as `request`. */
export function requestDigest(authorization: string): string {
  const found = /sig=([A-Za-z0-9_-]{86}(?:==)?)/.exec(authorization);
  if (!found) throw new UntrustedKey("the request has no CareLedger signature to be receipted");
  return hex(sha256(fromB64url(found[1]!)));
}

/** UntrustedKey unless the node's key signed this receipt for this request. */
export function checkReceipt(receipt: AuditReceipt, chainId: string, request: string, signingKey?: Uint8Array): void {
  const key = signingKey ?? ed25519FromDid(receipt.node);
  const statement = receiptStatement(chainId, receipt.node, request, receipt.entries, receipt.first, receipt.digest);
  if (!verify(key, receipt.signature, statement)) {
    throw new UntrustedKey(`the receipt is not signed by node ${receipt.node} for this request and these entries`);
  }
}
