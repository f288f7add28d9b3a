// How a patient gets keys into the page (port of wallet/custody.py and the patient side of
// wallet/enrolment.py): create an identity (keys made here, registered with a member's
// voucher), restore one from its recovery phrase, open a key file, or claim the identity a
// clinic enrolled. Every key, phrase and claim code stays in the page: requests carry only
// public keys, signatures and signed transactions.
import { UserError } from "../app/errors";
import { setSession } from "../app/session";
import { fromHex, hex } from "../crypto/bytes";
import { Identity } from "../crypto/identity";
import { KeyFileError, KeyRing, parseKeyFile, serialiseKeyFile } from "../crypto/keyfile";
import { PhraseError, masterFromPhraseAsync, newRecoveryPhrase } from "../crypto/phrase";
import { SCOPES, wrapNamingKey } from "../crypto/scopekeys";
import { rotationPayload, scopeKeyPayload } from "../crypto/statements";
import { BadClaimCode, ClaimLocked, ClaimTampered, NotAClaimPackage, WrongClaimCode, openClaimPackage, type ClaimContents } from "../crypto/claim";
import { storeKeyFile, unlockKeyFile } from "./keystore";
import { NodeClient, NodeError } from "./node";
import { PatientWallet } from "./patient";

export const FIRST_EPOCH = 1;
const WRITE_CONSENT_SECONDS = 10 * 365 * 24 * 3600; // about ten years, as enrolment.py
export const CHECKED_WORDS = 3;

// --- the recovery phrase and its check ----------------------------------------------------

/** A patient's keys in memory (crypto/keyfile.ts): did, name, current and previous masters. */
export type PatientKeys = KeyRing;

/** A new identity's phrase and keys: shown once, then only the keys are kept (encrypted). */
export async function newPatientKeys(name: string): Promise<{ phrase: string; keys: PatientKeys }> {
  const phrase = newRecoveryPhrase();
  return { phrase, keys: await keysFromPhrase(phrase, name) };
}

/** The keys a phrase gives (a patient who never rotated); a UserError for a bad phrase. */
export async function keysFromPhrase(phrase: string, name: string): Promise<PatientKeys> {
  let master: Uint8Array;
  try {
    master = await masterFromPhraseAsync(phrase);
  } catch (error) {
    if (error instanceof PhraseError) {
      throw new UserError(`This recovery phrase is not right: ${error.message}. Check each word against what you wrote down.`);
    }
    throw error;
  }
  return KeyRing.fromIdentity(Identity.fromMaster(master), "patient", name.trim());
}

/** A patient's key file (the CLI's `keys new` / `claim` output, version 1 or 2). */
export function keysFromFile(text: string): PatientKeys {
  let ring: KeyRing;
  try {
    ring = parseKeyFile(text);
  } catch (error) {
    if (error instanceof KeyFileError || error instanceof SyntaxError) {
      throw new UserError(`This is not a CareLedger key file (${error.message}). Choose the .json file CareLedger saved for you.`);
    }
    throw error;
  }
  if (ring.kind !== "patient") {
    throw new UserError(`This is ${ring.kind === "organisation" ? "an organisation's" : `a ${ring.kind}'s`} key file, not a patient's. Clinicians sign in on the clinician page.`);
  }
  return ring;
}

export function keyFileText(keys: PatientKeys): string {
  return serialiseKeyFile(keys);
}

/** `count` distinct word positions (1-based, ascending) to ask back. */
export function pickCheckPositions(words = 24, count = CHECKED_WORDS): number[] {
  const chosen = new Set<number>();
  const random = new Uint32Array(1);
  while (chosen.size < Math.min(count, words)) {
    crypto.getRandomValues(random);
    chosen.add((random[0]! % words) + 1);
  }
  return [...chosen].sort((a, b) => a - b);
}

/** The positions whose answer is not the phrase's word (case and spaces ignored). */
export function wrongWords(phrase: string, answers: Record<number, string>): number[] {
  const words = phrase.trim().split(/\s+/);
  return Object.entries(answers)
    .filter(([position, answer]) => words[Number(position) - 1] !== answer.trim().toLowerCase())
    .map(([position]) => Number(position))
    .sort((a, b) => a - b);
}

// --- vouchers -----------------------------------------------------------------------------

export interface Voucher {
  org: string;
  expires_at: number;
  signature: string;
}

/** This node's organisation does not vouch for new patients on its own (no open enrolment). */
export class EnrolmentClosed extends UserError {
  override name = "EnrolmentClosed";
  constructor() {
    super(
      "This node does not register new patients by itself. Ask your clinic for an enrolment voucher for your identity and paste it below.",
    );
  }
}

/** Ask the node's organisation to vouch for `did` (POST /portal/voucher, open enrolment). */
export async function requestVoucher(did: string, base = ""): Promise<Voucher> {
  let response: Response;
  try {
    response = await fetch(`${base}/portal/voucher`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ did }),
      cache: "no-store",
    });
  } catch {
    throw new UserError("The CareLedger node cannot be reached. Check your connection, or try again in a moment.");
  }
  const body = (await response.json().catch(() => null)) as { voucher?: unknown; error?: { code?: string; message?: string } } | null;
  if (response.status === 403 && body?.error?.code === "enrolment_closed") throw new EnrolmentClosed();
  if (response.status === 404 || response.status === 405) throw new EnrolmentClosed(); // a node without the route
  if (response.status === 429) {
    const wait = Number(response.headers.get("retry-after")) || 60;
    throw new UserError(`Too many new identities were made here in the last minute. Try again in ${wait} seconds.`);
  }
  if (!response.ok || !body?.voucher) {
    const reason = body?.error?.message ? `: ${body.error.message}` : ` (HTTP ${response.status})`;
    throw new UserError(`The node could not vouch for your identity${reason}.`);
  }
  return checkVoucher(body.voucher);
}

/** A voucher the patient pasted (the JSON their clinic gave them, bare or as {"voucher": ...}). */
export function parseVoucher(text: string): Voucher {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UserError("The voucher is not valid JSON. Paste the whole text your clinic gave you, from { to }.");
  }
  if (value && typeof value === "object" && "voucher" in value) value = (value as { voucher: unknown }).voucher;
  return checkVoucher(value);
}

function checkVoucher(value: unknown): Voucher {
  const v = value as Partial<Voucher> | null;
  const ok =
    !!v &&
    typeof v.org === "string" &&
    v.org.startsWith("did:key:") &&
    Number.isSafeInteger(v.expires_at) &&
    typeof v.signature === "string" &&
    /^[0-9a-f]{128}$/.test(v.signature);
  if (!ok) throw new UserError("This is not an enrolment voucher: it needs an organisation (org), an expiry (expires_at) and a signature.");
  return { org: v.org!, expires_at: v.expires_at!, signature: v.signature! };
}

// --- registering a new identity -------------------------------------------------------------

/** Register `keys` on the chain (port of enrolment._register, from the patient's device):
 * `identity/register_patient` with the voucher (alone: the did may sign requests only once it
 * is registered), then its first scope keys, signed, and write consent to the vouching
 * organisation with the naming key wrapped to it (the clinic writes the patient's records). */
export async function registerPatient(keys: PatientKeys, voucher: Voucher, base = ""): Promise<NodeClient> {
  const identity = keys.current;
  const node = new NodeClient(identity, keys.did, base);
  const status = await node.status();
  node.setLastNonce(0); // an unregistered did may not ask its nonce: it has none
  try {
    await node.submit("identity/register_patient", { encryption_key: hex(identity.encryptionPublic), voucher });
  } catch (error) {
    throw registrationError(error);
  }
  const orgKey = await organisationEncryptionKey(node, voucher.org);
  const txs = firstScopeKeys(keys, status.chain_id);
  txs.push({ type: "consent/grant", payload: await writeConsent(keys, voucher.org, orgKey, status) });
  await node.submitMany(txs);
  return node;
}

function registrationError(error: unknown): unknown {
  if (!(error instanceof NodeError)) return error;
  if (error.code === "unauthorised" || error.code === "unknown_sender" || error.code === "invalid_payload") {
    return new UserError(
      `The ledger did not accept the voucher (${error.message.replace(/\.$/, "")}). A voucher is for one identity, is used once and expires: ask for a new one.`,
    );
  }
  if (error.code === "conflict") return new UserError("This identity is already registered. Use “Restore from recovery phrase” instead.");
  return error;
}

async function organisationEncryptionKey(node: NodeClient, org: string): Promise<Uint8Array> {
  const found = await node.query<{ encryption_key?: string; kind?: string }>("identity", "identity", { did: org });
  if (!found.encryption_key || found.kind !== "organisation") {
    throw new UserError("The organisation that vouched for you is not a member of this ledger.");
  }
  return fromHex(found.encryption_key);
}

type TxItem = { type: string; payload: Record<string, unknown> };

function firstScopeKeys(keys: PatientKeys, chainId: string): TxItem[] {
  return SCOPES.map((scope) => ({
    type: "records/publish_scope_key",
    payload: scopeKeyPayload(keys.current, chainId, scope, FIRST_EPOCH, hex(keys.scopePublicKey(scope, FIRST_EPOCH)), keys.did),
  }));
}

/** The write grant to the enrolling organisation (enrolment.write_consent): every scope, from
 * the node's latest block time for about ten years, with the naming key wrapped to it. */
async function writeConsent(
  keys: PatientKeys,
  org: string,
  orgKey: Uint8Array,
  status: { height: number; [k: string]: unknown },
): Promise<Record<string, unknown>> {
  const latest = status["latest_block_time"];
  const start = typeof latest === "string" && status.height > 0 ? unixSeconds(latest) : 0;
  const id = hex(crypto.getRandomValues(new Uint8Array(16)));
  return {
    id,
    patient: keys.did,
    grantee: org,
    action: "write",
    scopes: [...SCOPES],
    start,
    end: Math.max(start, Math.floor(Date.now() / 1000)) + WRITE_CONSENT_SECONDS,
    naming_key: hex(await wrapNamingKey(keys.namingKey, keys.did, org, orgKey)),
  };
}

/** An RFC 3339 time (nanoseconds allowed) as unix seconds. */
export function unixSeconds(rfc3339: string): number {
  const trimmed = rfc3339.replace(/\.\d+/, "");
  const ms = Date.parse(trimmed);
  if (Number.isNaN(ms)) throw new UserError(`The node sent a time that is not a date: ${rfc3339.slice(0, 40)}`);
  return Math.floor(ms / 1000);
}

// --- restoring ----------------------------------------------------------------------------

/** The identity a recovery phrase gives, checked on the chain (the node answers only a
 * registered did's requests). */
export async function restoreFromPhrase(phrase: string, name: string, base = ""): Promise<{ keys: PatientKeys; node: NodeClient }> {
  const keys = await keysFromPhrase(phrase, name);
  const node = new NodeClient(keys.current, keys.did, base);
  await requireActivePatient(node, keys.did, () =>
    new UserError(
      "No identity on this ledger uses this recovery phrase. Check the words. If you claimed your records from a clinic, your earlier records also need the key file saved at the claim: use “Open a key file”.",
    ),
  );
  return { keys, node };
}

/** A key file's identity (the CLI's `keys new` / `claim` output, version 1 or 2). */
export async function openKeyFile(text: string, base = ""): Promise<{ keys: PatientKeys; node: NodeClient }> {
  const keys = keysFromFile(text);
  const node = new NodeClient(keys.current, keys.did, base);
  await requireActivePatient(node, keys.did, () =>
    new UserError("The ledger does not accept this key file's keys: the identity is not registered here, or its keys were changed since (a newer key file replaces it)."),
  );
  return { keys, node };
}

async function requireActivePatient(node: NodeClient, did: string, unknown: () => Error): Promise<void> {
  let found: { kind?: string; active?: boolean };
  try {
    found = await node.query("identity", "identity", { did });
  } catch (error) {
    if (error instanceof NodeError && (error.status === 401 || error.code === "not_found")) throw unknown();
    throw error;
  }
  if (found.kind !== "patient") throw new UserError("This identity is not a patient's. Clinicians sign in on the clinician page.");
  if (!found.active) throw new UserError("This patient identity is no longer active on the ledger.");
}

// --- claiming -------------------------------------------------------------------------------

export interface ClaimProgress {
  (step: string): void;
}

/** Claim a clinic's package (port of wallet/custody.claim): open it with its code, check it
 * is for this chain and unclaimed, make a new phrase and master, keep the new key file
 * (encrypted, `save`) before the chain is touched, rotate the identity's key (certified by
 * the package's key, proven by the new one), then finish: publish every scope at E + 1 and
 * revoke the grants made with the package's key but the clinic's write consent. */
export async function claimPackage(
  packageText: string,
  code: string,
  save: (keys: PatientKeys) => Promise<void>,
  progress: ClaimProgress = () => undefined,
  base = "",
): Promise<{ keys: PatientKeys; phrase: string; node: NodeClient; revoked: string[] }> {
  progress("Opening the claim package (this takes a few seconds)");
  const contents = await openPackage(packageText, code);
  const old = Identity.fromMaster(contents.masterSecret);
  const oldNode = new NodeClient(old, contents.did, base);
  const status = await oldNode.status();
  if (status.chain_id !== contents.chainId) {
    throw new UserError(`This claim package is for another ledger (${contents.chainId}); this node serves ${status.chain_id}.`);
  }
  await requireUnclaimed(oldNode, contents.did, old);
  const epoch = (await highestEpoch(oldNode, contents.did)) + 1;
  const phrase = newRecoveryPhrase();
  const fresh = Identity.fromMaster(await masterFromPhraseAsync(phrase));
  const keys = new KeyRing(contents.did, "patient", old, contents.name).rotated(fresh, epoch);
  progress("Saving your new keys on this device");
  await save(keys); // before the chain knows the new key: no failure can lose it
  progress("Moving your identity to your new keys");
  try {
    await oldNode.submit("identity/rotate_key", rotationPayload(old, fresh, status.chain_id, contents.did));
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UserError(`The ledger refused the key change: ${reason}`);
  }
  progress("Publishing your new keys");
  const node = new NodeClient(fresh, keys.did, base);
  const revoked = await finishClaim(node, keys, status.chain_id);
  return { keys, phrase, node, revoked };
}

/** custody.finish_claim: after the rotation, every scope at the new epoch (skipping those
 * published already) and the stale grants revoked. Safe to call again. */
export async function finishClaim(node: NodeClient, keys: PatientKeys, chainId: string): Promise<string[]> {
  const epoch = keys.previous[keys.previous.length - 1]?.belowEpoch;
  if (epoch === undefined) throw new UserError("These keys were never rotated: there is no claim to finish.");
  const published = new Set((await scopeKeys(node, keys.did)).map((k) => `${k.scope}/${k.epoch}`));
  const txs: TxItem[] = SCOPES.filter((scope) => !published.has(`${scope}/${epoch}`)).map((scope) => ({
    type: "records/publish_scope_key",
    payload: scopeKeyPayload(keys.current, chainId, scope, epoch, hex(keys.scopePublicKey(scope, epoch)), keys.did),
  }));
  const stale = await grantsMadeWithThePackage(node, keys.did);
  for (const id of stale) txs.push({ type: "consent/revoke", payload: { id } });
  try {
    await node.submitMany(txs);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new UserError(
      `Your identity now uses your new keys, but finishing the claim failed (${reason.replace(/\.$/, "")}). Sign out and unlock your wallet on this device: that finishes the claim.`,
    );
  }
  return stale;
}

interface GrantRow {
  id: string;
  revoked_at: number | null;
  height: number;
  action: string;
  grantee: string;
}

/** The active grants made before the last key rotation (the claim), but the write consent to
 * the clinic that enrolled the patient (custody._made_with_the_package). */
async function grantsMadeWithThePackage(node: NodeClient, did: string): Promise<string[]> {
  const ident = await node.query<{ keys: { since: number }[]; enrolled_by?: string }>("identity", "identity", { did });
  const rotated = Number(ident.keys[ident.keys.length - 1]?.since ?? 0);
  const clinic = ident.enrolled_by ?? "";
  const grants = await node.query<GrantRow[]>("consent", "grants", { patient: did });
  return grants
    .filter((g) => !g.revoked_at && g.height < rotated && !(g.action === "write" && g.grantee === clinic))
    .map((g) => String(g.id));
}

/** The package opened with the code, its refusals as sentences for the patient. The page
 * cannot count wrong codes (the file is the patient's own copy): it says the code is wrong. */
async function openPackage(packageText: string, code: string): Promise<ClaimContents> {
  try {
    return await openClaimPackage(packageText, code);
  } catch (error) {
    if (error instanceof BadClaimCode) {
      throw new UserError(`This is not a claim code: ${error.message}. A claim code is six words from the letter your clinic gave you.`);
    }
    if (error instanceof WrongClaimCode) {
      throw new UserError("The claim code is wrong. Check each of the six words against the letter from your clinic and try again.");
    }
    if (error instanceof NotAClaimPackage) {
      throw new UserError(`This file is not a claim package (${error.message}). Choose the claim package file your clinic gave you.`);
    }
    if (error instanceof ClaimLocked) {
      throw new UserError("This claim package is locked after too many wrong codes. Ask your clinic for a new package.");
    }
    if (error instanceof ClaimTampered) {
      throw new UserError("The claim code is right, but the package file was changed since the clinic made it. Ask your clinic for a new package.");
    }
    throw error;
  }
}

async function requireUnclaimed(node: NodeClient, did: string, old: Identity): Promise<void> {
  let ident: { kind?: string; active?: boolean; signing_key?: string };
  try {
    ident = await node.query("identity", "identity", { did });
  } catch (error) {
    if (error instanceof NodeError && error.status === 401) {
      throw new UserError("This claim package was already claimed: its keys no longer act for the identity. If you claimed it, unlock your wallet or open the key file saved then.");
    }
    if (error instanceof NodeError) throw new UserError(`The ledger does not know this package's identity: ${error.message}`);
    throw error;
  }
  if (ident.kind !== "patient" || !ident.active) throw new UserError("This package's identity is not an active patient on this ledger.");
  if (ident.signing_key !== hex(old.signingPublic)) {
    throw new UserError("This claim package was already claimed: the identity's keys changed since it was made.");
  }
}

async function scopeKeys(node: NodeClient, did: string): Promise<{ scope: string; epoch: number }[]> {
  return node.query("records", "scope_keys", { patient: did });
}

async function highestEpoch(node: NodeClient, did: string): Promise<number> {
  return (await scopeKeys(node, did)).reduce((high, k) => Math.max(high, Number(k.epoch)), 0);
}

// --- the session ---------------------------------------------------------------------------

/** Keep `keys` on this device under `passphrase` (encrypted). */
export async function keepOnDevice(keys: PatientKeys, passphrase: string): Promise<void> {
  await storeKeyFile(keys.did, keys.name, keyFileText(keys), passphrase);
}

/** Sign in as `keys` in this tab. */
export function startSession(keys: PatientKeys, node?: NodeClient, base = ""): PatientWallet {
  const wallet = new PatientWallet(keys.did, keys.name, keys, node ?? new NodeClient(keys.current, keys.did, base));
  setSession({ kind: "patient", wallet });
  return wallet;
}

/** Open the wallet of `did` stored on this device (WrongPassphrase if it does not open). */
export async function unlock(did: string, passphrase: string, base = ""): Promise<PatientWallet> {
  const keys = keysFromFile(await unlockKeyFile(did, passphrase));
  const wallet = startSession(keys, undefined, base);
  await finishInterruptedClaim(wallet).catch(() => undefined); // best effort: again next time
  return wallet;
}

/** A claim whose last step failed (the node went down after the rotation) is finished the
 * next time the wallet is unlocked: the new epoch is published only when missing. */
async function finishInterruptedClaim(wallet: PatientWallet): Promise<void> {
  const last = wallet.keys.previous[wallet.keys.previous.length - 1];
  if (!last) return;
  const published = await scopeKeys(wallet.node, wallet.did);
  const done = SCOPES.every((scope) => published.some((k) => k.scope === scope && k.epoch >= last.belowEpoch));
  if (done) return;
  const status = await wallet.node.status();
  await finishClaim(wallet.node, wallet.keys, status.chain_id);
}
