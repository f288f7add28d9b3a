// The signed-in practitioner (SPEC-11.md), in one of two ways:
// - "smart": the organisation's SMART backend client key (wallet/gateway.ts). The page signs
//   the client's assertion, gets a token from /auth/token and works through the FHIR gateway,
//   which acts with the practitioner key the client is bound to (design change 25): search,
//   $everything, creates and $break-glass.
// - "key": a practitioner key file (and, to open what patients granted, its organisation's
//   key file: grants wrap keys to the organisation). The page signs node requests as the
//   practitioner, lists the patients that granted it, and reads their records itself.
// The keys live in memory only while the tab is open; nothing here is sent anywhere.
import { UserError } from "../app/errors";
import { type KeyRing, parseKeyFile } from "../crypto/keyfile";
import { grantedKeySource, type GrantedKeys } from "./consent";
import { type ClientKey, GatewayClient, loadClientKey } from "./gateway";
import { NodeClient } from "./node";
import { Listings } from "./records";

export class SmartPractitioner {
  readonly mode = "smart" as const;
  constructor(
    readonly gateway: GatewayClient,
    readonly displayName: string,
  ) {}
}

export class KeyPractitioner {
  readonly mode = "key" as const;
  /** The records each patient's listing last showed (records.ts `Listings`). */
  readonly listings = new Listings();
  constructor(
    readonly did: string,
    readonly displayName: string,
    readonly keys: KeyRing,
    readonly node: NodeClient,
    /** The organisation's key ring, when the practitioner gave its key file. */
    readonly organisation: KeyRing | null,
    /** Opens what patients granted to the practitioner and its organisation. */
    readonly keySource: GrantedKeys,
  ) {}

  toString(): string {
    return `KeyPractitioner(${this.did})`; // never the keys
  }

  toJSON(): { did: string; displayName: string } {
    return { did: this.did, displayName: this.displayName }; // never the keys
  }
}

export type PractitionerSession = SmartPractitioner | KeyPractitioner;

/** Sign in with a SMART backend client key file (its text): the first token is asked for at
 * once, so that a key the gateway does not know is said here, not on the next page. */
export async function signInWithClientKey(text: string, base = ""): Promise<SmartPractitioner> {
  const key: ClientKey = await loadClientKey(text);
  const gateway = new GatewayClient(key, base);
  await gateway.accessToken();
  return new SmartPractitioner(gateway, smartDisplayName(gateway.actingAs));
}

/** The header's name for a client key's session: the practitioner the gateway says the
 * client acts as ("Dr. Demo (Demo Hospital)"), else the organisation, else plain words. */
export function smartDisplayName(actingAs: { practitioner: string; organization: string }): string {
  const { practitioner, organization } = actingAs;
  if (practitioner) return organization ? `${practitioner} (${organization})` : practitioner;
  return organization ? `${organization} (organisation account)` : "Clinician";
}

interface IdentityRow {
  did: string;
  kind: string;
  name?: string;
  org?: string;
  active?: boolean;
}

/** Sign in with a practitioner key file, and optionally its organisation's key file (both
 * texts). Checks with the ledger that the practitioner is registered and active, and that the
 * organisation file is its organisation's. */
export async function signInWithKey(practitionerText: string, organisationText: string | null, base = ""): Promise<KeyPractitioner> {
  const keys = parseAs(practitionerText, "practitioner", "Practitioner key file");
  const node = new NodeClient(keys.current, keys.did, base);
  const ident = await node.query<IdentityRow>("identity", "identity", { did: keys.did });
  if (ident.kind !== "practitioner" || ident.active === false) {
    throw new UserError("The ledger does not list this key as an active practitioner: ask your organisation.");
  }
  let organisation: KeyRing | null = null;
  if (organisationText) {
    organisation = parseAs(organisationText, "organisation", "Organisation key file");
    if (organisation.did !== ident.org) {
      throw new UserError("This organisation key file is not the one of the practitioner's organisation.");
    }
  }
  const keySource = grantedKeySource(
    node,
    { did: keys.did, ring: keys },
    organisation ? { did: organisation.did, ring: organisation } : undefined,
  );
  const name = ident.name || keys.name || "Practitioner";
  return new KeyPractitioner(keys.did, name, keys, node, organisation, keySource);
}

function parseAs(text: string, kind: "practitioner" | "organisation", what: string): KeyRing {
  let keys: KeyRing;
  try {
    keys = parseKeyFile(text);
  } catch (error) {
    throw new UserError(`${what}: this is not a CareLedger key file (${error instanceof Error ? error.message : String(error)}).`);
  }
  if (keys.kind !== kind) {
    const hint = keys.kind === "patient" ? ' Patients sign in under "I am a patient".' : "";
    throw new UserError(`${what}: this is the key file of ${article(keys.kind)} ${keys.kind}, not of ${article(kind)} ${kind}.${hint}`);
  }
  return keys;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? "an" : "a";
}

/** A patient that granted this practitioner (or its organisation) access, for the list. */
export interface GrantingPatient {
  did: string;
  name: string;
}

/** The patients whose active grants name this practitioner or its organisation, with the
 * name the ledger knows them by (if any). */
export async function grantingPatients(session: KeyPractitioner): Promise<GrantingPatient[]> {
  const dids = await session.keySource.patients();
  const rows = await Promise.all(
    dids.map((did) => session.node.query<IdentityRow>("identity", "identity", { did }).catch(() => null)),
  );
  return dids.map((did, i) => ({ did, name: rows[i]?.name || "" }));
}
