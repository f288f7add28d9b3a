// A SMART Backend Services client in the page (port of gateway/smart/backend_client.py): the
// client key file `careledger clients add --new-key` writes ({"client_id", "token_url", "key":
// the private JWK}), a private_key_jwt assertion signed here (EdDSA with @noble/curves, ES384
// and RS384 with WebCrypto, the key imported non-extractable), a bearer token from
// `/auth/token`, and FHIR JSON requests to `/fhir` with it. The private key stays in the page:
// only the signed assertion leaves it.
import { ed25519 } from "@noble/curves/ed25519.js";
import { UserError } from "../app/errors";
import { b64url, bufferOf, fromB64url, hex, randomBytes, utf8 } from "../crypto/bytes";

export const ASSERTION_LIFETIME = 240; // seconds: under the five minutes the gateway allows
const RENEW_BEFORE = 30; // seconds before a token expires, ask for a new one
const JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
export const ALGORITHMS = ["EdDSA", "ES384", "RS384"] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** A client key file that cannot be used, said for a person. */
export class ClientKeyError extends UserError {
  override name = "ClientKeyError";
}

/** A refusal of the gateway: the HTTP status and what its OperationOutcome (or token error)
 * says, as a sentence. */
export class GatewayError extends Error {
  override name = "GatewayError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

type Jwk = Record<string, unknown>;

/** A loaded client key: who the client is, where it gets tokens, and how it signs. The JWK
 * itself is not kept: only a signing function over a non-extractable key (or, for Ed25519,
 * the seed inside a closure). */
export interface ClientKey {
  readonly clientId: string;
  readonly tokenUrl: string;
  readonly alg: Algorithm;
  readonly kid: string | null;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** Parse and import a client key file (its text). ClientKeyError says what is wrong. */
export async function loadClientKey(text: string): Promise<ClientKey> {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new ClientKeyError("This file is not a client key file: it is not JSON.");
  }
  if (!isObject(document) || typeof document.client_id !== "string" || !isObject(document.key)) {
    throw new ClientKeyError(
      'This file is not a client key file: it needs "client_id" and "key" (what careledger clients add --new-key writes).',
    );
  }
  const key = document.key;
  if (key.kty === "RSA" || key.kty === "EC" || key.kty === "OKP") {
    if (typeof key.d !== "string") {
      throw new ClientKeyError("This client key file holds a public key only: the private key is needed to sign in.");
    }
  }
  const alg = algorithmOf(key);
  const tokenUrl = typeof document.token_url === "string" ? document.token_url : "";
  const kid = typeof key.kid === "string" ? key.kid : null;
  const sign = await signerFor(alg, key);
  return { clientId: document.client_id, tokenUrl, alg, kid, sign };
}

function algorithmOf(key: Jwk): Algorithm {
  const given = typeof key.alg === "string" ? key.alg : null;
  const implied = key.kty === "OKP" && key.crv === "Ed25519" ? "EdDSA" : key.kty === "EC" && key.crv === "P-384" ? "ES384" : key.kty === "RSA" ? "RS384" : null;
  if (!implied) {
    throw new ClientKeyError(`This client key is a ${String(key.kty)} ${String(key.crv ?? "")} key: the gateway takes Ed25519 (EdDSA), P-384 (ES384) or RSA (RS384).`);
  }
  if (given && given !== implied) {
    throw new ClientKeyError(`This client key says alg ${given} but is a key for ${implied}.`);
  }
  return implied;
}

async function signerFor(alg: Algorithm, key: Jwk): Promise<(data: Uint8Array) => Promise<Uint8Array>> {
  try {
    if (alg === "EdDSA") {
      const seed = fromB64url(String(key.d));
      if (seed.length !== 32) throw new Error("an Ed25519 private key is 32 bytes");
      return async (data) => ed25519.sign(data, seed);
    }
    const members = alg === "ES384" ? ["kty", "crv", "x", "y", "d"] : ["kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"];
    const jwk = Object.fromEntries(members.filter((m) => key[m] !== undefined).map((m) => [m, key[m]])) as JsonWebKey;
    const algorithm = alg === "ES384" ? { name: "ECDSA", namedCurve: "P-384" } : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-384" };
    const imported = await crypto.subtle.importKey("jwk", jwk, algorithm, false, ["sign"]);
    const params = alg === "ES384" ? { name: "ECDSA", hash: "SHA-384" } : { name: "RSASSA-PKCS1-v1_5" };
    // WebCrypto's ECDSA signature is r || s, which is JWS's ES384 form as it is.
    return async (data) => new Uint8Array(await crypto.subtle.sign(params, imported, bufferOf(data)));
  } catch (error) {
    if (error instanceof ClientKeyError) throw error;
    throw new ClientKeyError(`This client key cannot be used: ${error instanceof Error ? error.message : String(error)}.`);
  }
}

/** A private_key_jwt assertion: iss = sub = the client id, aud = the token URL, a fresh jti,
 * expiring `lifetime` seconds after `now` (unix seconds). */
export async function signAssertion(key: ClientKey, audience: string, now = Math.floor(Date.now() / 1000), lifetime = ASSERTION_LIFETIME): Promise<string> {
  const header: Record<string, string> = { alg: key.alg, typ: "JWT" };
  if (key.kid) header.kid = key.kid;
  const claims = { iss: key.clientId, sub: key.clientId, aud: audience, exp: now + lifetime, jti: hex(randomBytes(16)) };
  const signingInput = `${b64url(utf8(JSON.stringify(header)))}.${b64url(utf8(JSON.stringify(claims)))}`;
  const signature = await key.sign(utf8(signingInput));
  return `${signingInput}.${b64url(signature)}`;
}

/** What an OperationOutcome (or an RFC 6749 token error) says, as one sentence. */
export function outcomeMessage(body: unknown, status: number): string {
  if (isObject(body) && body.resourceType === "OperationOutcome" && Array.isArray(body.issue)) {
    const said = body.issue
      .filter(isObject)
      .map((issue) => (typeof issue.diagnostics === "string" ? issue.diagnostics : textOf(issue.details)))
      .filter((text): text is string => Boolean(text));
    if (said.length) return sentence(said.join("; "));
  }
  if (isObject(body) && typeof body.error === "string") {
    const description = typeof body.error_description === "string" ? body.error_description : body.error;
    return sentence(`The sign-in was refused (${body.error}): ${description}`);
  }
  return STATUS_TEXT[status] ?? `The FHIR gateway answered ${status}.`;
}

const STATUS_TEXT: Record<number, string> = {
  401: "Your sign-in has expired: sign in again.",
  403: "You may not do this.",
  404: "Not found.",
  500: "The FHIR gateway failed; try again in a moment.",
  502: "The FHIR gateway could not reach the ledger; try again in a moment.",
  503: "The FHIR gateway is busy; try again in a moment.",
};

function textOf(value: unknown): string | null {
  return isObject(value) && typeof value.text === "string" ? value.text : null;
}

function sentence(text: string): string {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export type FhirResource = Record<string, unknown> & { resourceType: string; id?: string };

export interface Bundle {
  resourceType: "Bundle";
  total?: number;
  entry?: { resource?: FhirResource; search?: { mode?: string } }[];
  link?: { relation: string; url: string }[];
}

/** A break-glass the gateway made: its id, when it ends (ISO instant), the scopes it opened. */
export interface BreakGlass {
  id: string;
  until: string;
  scopes: string[];
}

/** The organisation's FHIR gateway, as this client. `base` "" is the page's own origin. */
export class GatewayClient {
  // A private field (#), not TypeScript's `private`: JSON.stringify of the session (an error
  // report, a log) must not carry the bearer token.
  #token: { value: string; expires: number } | null = null;
  private audience: string | null = null;
  /** Who the token acts as, by name, as the token endpoint says (its `practitioner_name` and
   * `organization_name`; "" when it does not say). */
  actingAs: { practitioner: string; organization: string } = { practitioner: "", organization: "" };

  constructor(
    readonly key: ClientKey,
    readonly base = "",
  ) {}

  /** The token endpoint's URL as the gateway names it (the assertion's `aud` must be exactly
   * that); the request itself goes to this page's origin (the CSP allows nothing else). */
  private async tokenAudience(): Promise<string> {
    if (!this.audience) {
      const response = await this.send(`${this.base}/fhir/.well-known/smart-configuration`, { headers: { accept: "application/json" } });
      const body: unknown = await response.json().catch(() => null);
      if (!response.ok || !isObject(body) || typeof body.token_endpoint !== "string") {
        throw new GatewayError(response.status, "This server does not offer SMART sign-in: is it a CareLedger gateway?");
      }
      this.audience = body.token_endpoint;
    }
    return this.audience;
  }

  /** A bearer token, asked for again shortly before it expires. */
  async accessToken(): Promise<string> {
    const now = Date.now() / 1000;
    if (this.#token && now < this.#token.expires - RENEW_BEFORE) return this.#token.value;
    const assertion = await signAssertion(this.key, await this.tokenAudience());
    const form = new URLSearchParams({ grant_type: "client_credentials", client_assertion_type: JWT_BEARER, client_assertion: assertion });
    const response = await this.send(`${this.base}/auth/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form.toString(),
    });
    const body: unknown = await response.json().catch(() => null);
    if (!response.ok || !isObject(body) || typeof body.access_token !== "string") {
      throw new GatewayError(response.status, outcomeMessage(body, response.status));
    }
    const lifetime = typeof body.expires_in === "number" ? body.expires_in : 300;
    this.#token = { value: body.access_token, expires: now + lifetime };
    const named = (field: unknown) => (typeof field === "string" ? field.trim().slice(0, 200) : "");
    this.actingAs = { practitioner: named(body.practitioner_name), organization: named(body.organization_name) };
    return body.access_token;
  }

  /** A FHIR request (path under /fhir, e.g. "Patient?name=x"); the JSON answer. Refusals throw
   * GatewayError with the OperationOutcome's words. A 401 gets one new token and one retry
   * (a restarted gateway forgets its tokens). */
  async fhir<T = FhirResource>(method: string, path: string, body?: unknown): Promise<T> {
    let response = await this.fhirOnce(method, path, body);
    if (response.status === 401) {
      this.#token = null;
      response = await this.fhirOnce(method, path, body);
    }
    const answer: unknown = await response.json().catch(() => null);
    if (!response.ok) throw new GatewayError(response.status, outcomeMessage(answer, response.status));
    return answer as T;
  }

  private async fhirOnce(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { accept: "application/fhir+json", authorization: `Bearer ${await this.accessToken()}` };
    const init: RequestInit = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/fhir+json";
      init.body = JSON.stringify(body);
    }
    return this.send(`${this.base}/fhir/${path.replace(/^\//, "")}`, init);
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch {
      throw new GatewayError(0, "The FHIR gateway cannot be reached. Check your connection, or try again in a moment.");
    }
  }

  /** Patients whose name matches (every patient the organisation knows when `name` is ""). */
  async searchPatients(name: string, count = 50): Promise<FhirResource[]> {
    const query = new URLSearchParams({ _count: String(count) });
    if (name.trim()) query.set("name", name.trim());
    const bundle = await this.fhir<Bundle>("GET", `Patient?${query.toString()}`);
    return resourcesOf(bundle);
  }

  /** The patient and every record of theirs this client may read (`$everything`, every page). */
  async everything(patientId: string): Promise<FhirResource[]> {
    const found: FhirResource[] = [];
    let path: string | null = `Patient/${encodeURIComponent(patientId)}/$everything`;
    for (let page = 0; path && page < 50; page++) {
      const bundle: Bundle = await this.fhir<Bundle>("GET", path);
      found.push(...resourcesOf(bundle, "match"));
      const next = bundle.link?.find((link) => link.relation === "next")?.url ?? null;
      path = next ? next.slice(next.indexOf("/fhir/") + "/fhir/".length) : null;
    }
    return found;
  }

  /** Create a resource (POST /fhir/{type}); the stored resource. */
  create(resource: FhirResource): Promise<FhirResource> {
    return this.fhir("POST", resource.resourceType, resource);
  }

  /** Break the glass for a patient, with a stated reason (`$break-glass`). */
  async breakGlass(patientId: string, reason: string, scopes: string[] = []): Promise<BreakGlass> {
    const parameter = [{ name: "reason", valueString: reason }, ...scopes.map((scope) => ({ name: "scope", valueCode: scope }))];
    const answer = await this.fhir<{ parameter?: Record<string, unknown>[] }>("POST", `Patient/${encodeURIComponent(patientId)}/$break-glass`, {
      resourceType: "Parameters",
      parameter,
    });
    const params = answer.parameter ?? [];
    const value = (name: string, key: string) => params.find((p) => p.name === name)?.[key];
    return {
      id: String(value("id", "valueString") ?? ""),
      until: String(value("until", "valueInstant") ?? ""),
      scopes: params.filter((p) => p.name === "scope").map((p) => String(p.valueCode)),
    };
  }

  toString(): string {
    return `GatewayClient(${this.key.clientId})`; // never the key
  }

  toJSON(): { clientId: string; actingAs: { practitioner: string; organization: string } } {
    return { clientId: this.key.clientId, actingAs: this.actingAs }; // never the key or token
  }
}

/** The resources of a Bundle (only those of `mode`, when given). */
export function resourcesOf(bundle: Bundle, mode?: string): FhirResource[] {
  return (bundle.entry ?? [])
    .filter((entry) => !mode || !entry.search?.mode || entry.search.mode === mode)
    .map((entry) => entry.resource)
    .filter((resource): resource is FhirResource => Boolean(resource && typeof resource.resourceType === "string"));
}
