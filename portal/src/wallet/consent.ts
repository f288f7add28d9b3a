// Consent as the patient gives it, in the page: list, grant, revoke (a port of
// wallet/consent.py), the parties one may grant to, and the grantee's side: a KeySource that
// unwraps the scope keys patients granted to an organisation (or to a practitioner's
// organisation), as wallet/keyring.py GrantedKeys.
//
// A grant is enforced twice. By keys: a read grant wraps the granted scopes' private keys (every
// epoch published so far) and the patient's naming key to the grantee organisation's
// encryption key (for a practitioner, its organisation's: the cryptographic boundary; a
// practitioner-level limit is policy, enforced by the nodes). By policy: the nodes serve a blob
// only to a caller the committed grants allow, for the purpose it states.
//
// A revocation ends the policy at the next block. The revoked party still holds the old epochs'
// keys, so the revoke also starts a new epoch of every scope it covered and, once those are
// committed, wraps the new keys to the remaining grantees of that scope: records written
// afterwards go to the new epoch, which the revoked party cannot open.
import { UserError } from "../app/errors";
import { fromHex, hex, randomBytes } from "../crypto/bytes";
import { Identity } from "../crypto/identity";
import type { KeyRing } from "../crypto/keyfile";
import { scopePublic, unwrapNamingKey, unwrapScopeKey, wrapNamingKey, wrapScopeKey } from "../crypto/scopekeys";
import { scopeKeyPayload } from "../crypto/statements";
import type { NodeClient } from "./node";
import type { KeySource } from "./patient";
import { endOfDay, type GrantRow } from "./sharing-text";

export type { GrantRow } from "./sharing-text";

const YEAR = 365 * 24 * 3600;

/** What a grant's wrapped keys are for: the grantee's organisation (or the grantee itself). */
interface Recipient {
  grantee: string;
  holder: string;
  holderKey: Uint8Array;
}

interface IdentityRow {
  did: string;
  kind: string;
  name?: string;
  org?: string;
  encryption_key?: string;
  active?: boolean;
}

interface ScopeKeyRow {
  scope: string;
  epoch: number;
  public_key: string;
}

/** A grant with its key wraps (`consent/grant`, `consent/granted`). */
export interface GrantWithKeys extends GrantRow {
  keys: { scope: string; epoch: number; wrapped: string }[];
  naming_key: string;
}

/** What the patient's side needs: who signs, with which keys, through which node. */
export interface Grantor {
  did: string;
  keys: KeyRing;
  node: NodeClient;
}

export interface GrantRequest {
  grantee: string;
  action: "read" | "write";
  scopes: string[];
  purposes: string[];
  until: string; // YYYY-MM-DD: the grant ends at the end of that day, UTC
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}

// --- reading -------------------------------------------------------------------------------

/** The patient's grants, newest first (revoked and ended ones too). */
export async function listGrants(node: NodeClient, patient: string): Promise<GrantRow[]> {
  return node.query<GrantRow[]>("consent", "grants", { patient });
}

/** The scopes' published epochs, each list sorted (`records/scope_keys`). */
export async function publishedEpochs(node: NodeClient, patient: string): Promise<Map<string, number[]>> {
  const rows = await node.query<ScopeKeyRow[]>("records", "scope_keys", { patient });
  const epochs = new Map<string, number[]>();
  for (const row of rows) epochs.set(row.scope, [...(epochs.get(row.scope) ?? []), Number(row.epoch)]);
  for (const list of epochs.values()) list.sort((a, b) => a - b);
  return epochs;
}

/** Whose key the grant's wrapped keys are for (ConsentClient.recipient): the organisation, for
 * a practitioner its organisation. */
export async function recipientOf(node: NodeClient, grantee: string): Promise<Recipient> {
  let ident = await node.query<IdentityRow>("identity", "identity", { did: grantee });
  let holder = grantee;
  if (ident.kind === "practitioner") {
    holder = String(ident.org);
    ident = await node.query<IdentityRow>("identity", "identity", { did: holder });
  }
  if (!ident.encryption_key) throw new UserError(`${holder} has no encryption key on the ledger: nothing can be shared with it.`);
  return { grantee, holder, holderKey: fromHex(ident.encryption_key) };
}

// --- granting ------------------------------------------------------------------------------

async function wrappedScopeKeys(
  grantor: Grantor,
  recipient: Recipient,
  scopes: string[],
  epochs: Map<string, number[]>,
): Promise<{ scope: string; epoch: number; wrapped: string }[]> {
  const keys = [];
  for (const scope of scopes) {
    for (const epoch of epochs.get(scope) ?? []) {
      const sk = grantor.keys.scopeKey(scope, epoch);
      const wrapped = await wrapScopeKey(sk, grantor.did, scope, epoch, recipient.holder, recipient.holderKey);
      keys.push({ scope, epoch, wrapped: hex(wrapped) });
    }
  }
  return keys;
}

/** The `consent/grant` payload, exactly as ConsentClient.grant builds it: a fresh id, the
 * period from now to the end of `until`, purposes (required for reads), the naming key wrapped
 * to the holder, and for a read every published epoch of each scope. */
export async function grantPayload(grantor: Grantor, request: GrantRequest, start = now()): Promise<Record<string, unknown>> {
  const end = endOfDay(request.until) ?? start + YEAR;
  const payload: Record<string, unknown> = {
    id: hex(randomBytes(16)),
    patient: grantor.did,
    grantee: request.grantee,
    action: request.action,
    scopes: [...request.scopes],
    start,
    end,
  };
  if (request.action === "read" || request.purposes.length) payload.purposes = [...request.purposes];
  const recipient = await recipientOf(grantor.node, request.grantee);
  payload.naming_key = hex(await wrapNamingKey(grantor.keys.namingKey, grantor.did, recipient.holder, recipient.holderKey));
  if (request.action !== "write") {
    // a writer names records; only readers open them
    const keys = await wrappedScopeKeys(grantor, recipient, request.scopes, await publishedEpochs(grantor.node, grantor.did));
    if (keys.length) payload.keys = keys;
  }
  return payload;
}

/** Sign and submit the grant; its id once committed (NodeError if the chain refuses it). */
export async function grant(grantor: Grantor, request: GrantRequest): Promise<string> {
  const payload = await grantPayload(grantor, request);
  await grantor.node.submit("consent/grant", payload);
  return String(payload.id);
}

// --- revoking ------------------------------------------------------------------------------

/** The new epochs' `records/publish_scope_key` payloads, and the epochs they start. */
async function newEpochs(grantor: Grantor, scopes: string[]): Promise<{ epochs: Map<string, number>; publish: Record<string, unknown>[] }> {
  const { chain_id } = await grantor.node.status();
  const published = await publishedEpochs(grantor.node, grantor.did);
  const epochs = new Map<string, number>();
  for (const scope of scopes) epochs.set(scope, Math.max(0, ...(published.get(scope) ?? [])) + 1);
  const publish = [...epochs].map(([scope, epoch]) =>
    scopeKeyPayload(grantor.keys.current, chain_id, scope, epoch, hex(scopePublic(grantor.keys.scopeKey(scope, epoch))), grantor.did),
  );
  return { epochs, publish };
}

/** The `consent/share_keys` payloads giving the new epochs to every remaining active read grant
 * of those scopes (not the revoked one, nor grants a delegate made under it). */
async function shares(grantor: Grantor, epochs: Map<string, number>, exclude: string): Promise<Record<string, unknown>[]> {
  const at = now();
  const payloads = [];
  for (const g of await listGrants(grantor.node, grantor.did)) {
    const active = !g.revoked_at && g.end > at;
    const revoked = exclude && (g.id === exclude || g.delegation === exclude);
    if (!active || revoked || g.action === "write") continue;
    const shared = g.scopes.filter((s) => epochs.has(s));
    if (!shared.length) continue;
    const recipient = await recipientOf(grantor.node, g.grantee);
    const only = new Map(shared.map((s) => [s, [epochs.get(s) as number]]));
    payloads.push({ id: g.id, keys: await wrappedScopeKeys(grantor, recipient, shared, only) });
  }
  return payloads;
}

/** Revoke a grant; if it held keys (a read or delegate grant), start a new epoch of each scope
 * it covered and share the new keys with the remaining grantees of that scope: the revocation
 * and the new epochs in one submission, the shares in the next (a share names a published
 * epoch). Returns the scopes that moved to a new epoch. */
export async function revoke(grantor: Grantor, grantId: string): Promise<string[]> {
  const found = await grantor.node.query<GrantWithKeys>("consent", "grant", { id: grantId });
  const txs: { type: string; payload: Record<string, unknown> }[] = [{ type: "consent/revoke", payload: { id: grantId } }];
  if (found.action === "write") {
    await grantor.node.submitMany(txs);
    return [];
  }
  const rotated = [...found.scopes];
  const { epochs, publish } = await newEpochs(grantor, rotated);
  txs.push(...publish.map((payload) => ({ type: "records/publish_scope_key", payload })));
  await grantor.node.submitMany(txs);
  const shared = await shares(grantor, epochs, grantId);
  if (shared.length) await grantor.node.submitMany(shared.map((payload) => ({ type: "consent/share_keys", payload })));
  return rotated;
}

// --- who one can grant to ------------------------------------------------------------------

export interface Party {
  did: string;
  name: string;
  kind: "organisation" | "practitioner";
  org: string; // the organisation (itself for an organisation)
  orgName: string;
}

/** Every member organisation and its active practitioners, with their names, organisations
 * first then each one's practitioners, by name. */
export async function grantableParties(node: NodeClient): Promise<Party[]> {
  const members = await node.query<{ did: string; name?: string }[]>("identity", "members");
  const parties: Party[] = [];
  const sorted = [...members].sort((a, b) => (a.name ?? a.did).localeCompare(b.name ?? b.did));
  const staff = await Promise.all(
    sorted.map((m) => node.query<IdentityRow[]>("identity", "practitioners", { org: m.did }).catch(() => [] as IdentityRow[])),
  );
  sorted.forEach((member, i) => {
    const orgName = member.name || shortDid(member.did);
    parties.push({ did: member.did, name: orgName, kind: "organisation", org: member.did, orgName });
    const people = (staff[i] ?? []).filter((p) => p.active !== false && p.kind === "practitioner");
    people.sort((a, b) => (a.name ?? a.did).localeCompare(b.name ?? b.did));
    for (const p of people) parties.push({ did: p.did, name: p.name || shortDid(p.did), kind: "practitioner", org: member.did, orgName });
  });
  return parties;
}

export function partyLabel(party: Party): string {
  return party.kind === "practitioner" ? `${party.name} (${party.orgName})` : party.name;
}

export function shortDid(did: string): string {
  return did.length > 20 ? `…${did.slice(-8)}` : did;
}

/** Names of identities by did, asked once each (members, practitioners, nodes, patients). */
export class Directory {
  private readonly names = new Map<string, Promise<string>>();

  constructor(private readonly node: NodeClient, known: Party[] = []) {
    for (const party of known) this.names.set(party.did, Promise.resolve(party.name));
  }

  name(did: string): Promise<string> {
    if (!did) return Promise.resolve("");
    let found = this.names.get(did);
    if (!found) {
      found = this.node
        .query<IdentityRow>("identity", "identity", { did })
        .then((ident) => ident.name || describeKind(ident.kind, did))
        .catch(() => shortDid(did));
      this.names.set(did, found);
    }
    return found;
  }
}

function describeKind(kind: string, did: string): string {
  const words: Record<string, string> = { node: "A ledger node", organisation: "An organisation", practitioner: "A practitioner", patient: "A patient" };
  return `${words[kind] ?? "Someone"} (${shortDid(did)})`;
}

// --- the grantee's side --------------------------------------------------------------------

/** Every encryption key of a key ring, newest first: what was wrapped to it before a key
 * rotation still opens with the key it was wrapped to (keyring.encryption_keys). */
export function encryptionKeysOf(ring: KeyRing): Uint8Array[] {
  const previous = [...ring.previous].reverse().map((p) => Identity.fromMaster(p.master).encryptionPrivate);
  return [ring.current.encryptionPrivate, ...previous];
}

/** The keys patients wrapped to `holder` in the grants that name `reader` (wallet/keyring.py
 * GrantedKeys). For an organisation both are its did; for a practitioner, `reader` is the
 * practitioner (grants to it and to its organisation) and `holder` its organisation, whose
 * key the patient wrapped to: a practitioner signed in with its own key file alone holds no
 * key that opens them, its organisation's key file does. Each unwrapped scope key is checked
 * against the key the patient published. One `consent/granted` query, asked again once when a
 * key is not found (a grant or a new epoch shared since). */
export class GrantedKeys implements KeySource {
  private grants: Promise<GrantWithKeys[]> | null = null;
  private readonly published = new Map<string, Promise<Map<string, string>>>();
  // Private fields (#), not TypeScript's `private`: JSON.stringify of the session (an error
  // report, a log) must not carry the holder's private keys or the scope keys they opened.
  readonly #found = new Map<string, Uint8Array | null>();
  readonly #privateKeys: Uint8Array[];

  constructor(
    private readonly node: NodeClient,
    readonly reader: string,
    readonly holder: string,
    privateKeys: Uint8Array[],
  ) {
    this.#privateKeys = privateKeys;
  }

  toString(): string {
    return `GrantedKeys(${this.reader} via ${this.holder})`; // never the keys
  }

  toJSON(): { reader: string; holder: string } {
    return { reader: this.reader, holder: this.holder };
  }

  async scopeKey(patient: string, scope: string, epoch: number): Promise<Uint8Array | null> {
    const cacheKey = `${patient}\n${scope}\n${epoch}`;
    if (this.#found.has(cacheKey)) return this.#found.get(cacheKey) ?? null;
    let sk = await this.unwrap(patient, scope, epoch);
    if (sk === null) {
      this.refresh(patient); // shared since we last asked? Ask once more.
      sk = await this.unwrap(patient, scope, epoch);
    }
    this.#found.set(cacheKey, sk);
    return sk;
  }

  /** The patient's naming key, or null when no grant to this holder carries it. */
  async namingKey(patient: string): Promise<Uint8Array | null> {
    for (const g of await this.grantsOf(patient)) {
      if (!g.naming_key) continue;
      for (const key of this.#privateKeys) {
        try {
          return await unwrapNamingKey(fromHex(g.naming_key), patient, this.holder, key);
        } catch {
          // wrapped to another of our keys, or not ours: try the next
        }
      }
    }
    return null;
  }

  /** The patients whose grants name this reader (active now), newest grant first. */
  async patients(): Promise<string[]> {
    return [...new Set((await this.allGrants()).map((g) => g.patient))];
  }

  private refresh(patient: string): void {
    this.grants = null;
    this.published.delete(patient);
  }

  private allGrants(): Promise<GrantWithKeys[]> {
    if (!this.grants) {
      this.grants = this.node.query<GrantWithKeys[]>("consent", "granted", { grantee: this.reader });
      this.grants.catch(() => (this.grants = null));
    }
    return this.grants;
  }

  private async grantsOf(patient: string): Promise<GrantWithKeys[]> {
    return (await this.allGrants()).filter((g) => g.patient === patient);
  }

  private publishedOf(patient: string): Promise<Map<string, string>> {
    let found = this.published.get(patient);
    if (!found) {
      found = this.node
        .query<ScopeKeyRow[]>("records", "scope_keys", { patient })
        .then((rows) => new Map(rows.map((r) => [`${r.scope}/${r.epoch}`, r.public_key])));
      this.published.set(patient, found);
    }
    return found;
  }

  private async unwrap(patient: string, scope: string, epoch: number): Promise<Uint8Array | null> {
    const published = (await this.publishedOf(patient)).get(`${scope}/${epoch}`);
    if (!published) return null;
    for (const g of await this.grantsOf(patient)) {
      for (const k of g.keys ?? []) {
        if (k.scope !== scope || k.epoch !== epoch) continue;
        for (const key of this.#privateKeys) {
          try {
            return await unwrapScopeKey(fromHex(k.wrapped), patient, scope, epoch, fromHex(published), this.holder, key);
          } catch {
            // another of our keys, or a key that does not match the published one: not trusted
          }
        }
      }
    }
    return null;
  }
}

/** The KeySource of an identity signed in with a key file: an organisation's own keys, or a
 * practitioner's organisation's (`organisation`, its key ring) when the page has it. */
export function grantedKeySource(
  node: NodeClient,
  reader: { did: string; ring: KeyRing },
  organisation?: { did: string; ring: KeyRing },
): GrantedKeys {
  const holder = organisation ?? reader;
  return new GrantedKeys(node, reader.did, holder.did, encryptionKeysOf(holder.ring));
}
