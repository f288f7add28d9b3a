// The practitioner's side in the page: the SMART client key loaded and the private_key_jwt
// assertion signed for each algorithm the gateway takes (verified here with the public key),
// refusals turned into sentences, and the forms' checks before anything is sent.
import { ed25519 } from "@noble/curves/ed25519.js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { b64url, bufferOf, fromB64url, fromUtf8, utf8 } from "../src/crypto/bytes";
import { ClientKeyError, loadClientKey, outcomeMessage, signAssertion } from "../src/wallet/gateway";
import { signInWithClientKey, smartDisplayName } from "../src/wallet/practitioner";
import { buildCondition, buildMedicationRequest, buildObservation, reasonError } from "../src/pages/practitioner/forms";

const TOKEN_URL = "http://127.0.0.1:8000/auth/token";

function keyFile(key: Record<string, unknown>): string {
  return JSON.stringify({ client_id: "client-123", token_url: TOKEN_URL, key });
}

function parts(jwt: string) {
  const [header, claims, signature] = jwt.split(".") as [string, string, string];
  return {
    header: JSON.parse(fromUtf8(fromB64url(header))) as Record<string, unknown>,
    claims: JSON.parse(fromUtf8(fromB64url(claims))) as Record<string, unknown>,
    input: utf8(`${header}.${claims}`),
    signature: fromB64url(signature),
  };
}

describe("client key and assertion", () => {
  it("signs EdDSA assertions that verify with the client's public key", async () => {
    const seed = ed25519.utils.randomSecretKey();
    const jwk = { kty: "OKP", crv: "Ed25519", d: b64url(seed), x: b64url(ed25519.getPublicKey(seed)), kid: "k1", alg: "EdDSA", key_ops: ["sign"] };
    const key = await loadClientKey(keyFile(jwk));
    const jwt = parts(await signAssertion(key, TOKEN_URL, 1_000_000));
    expect(jwt.header).toEqual({ alg: "EdDSA", typ: "JWT", kid: "k1" });
    expect(jwt.claims).toMatchObject({ iss: "client-123", sub: "client-123", aud: TOKEN_URL, exp: 1_000_240 });
    expect(String(jwt.claims.jti)).toMatch(/^[0-9a-f]{32}$/);
    expect(ed25519.verify(jwt.signature, jwt.input, ed25519.getPublicKey(seed))).toBe(true);
    const other = parts(await signAssertion(key, TOKEN_URL, 1_000_000));
    expect(other.claims.jti).not.toEqual(jwt.claims.jti); // a fresh jti every time
  });

  for (const [alg, algorithm, verifyWith] of [
    ["ES384", { name: "ECDSA", namedCurve: "P-384" }, { name: "ECDSA", hash: "SHA-384" }],
    ["RS384", { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-384" }, { name: "RSASSA-PKCS1-v1_5" }],
  ] as const) {
    it(`signs ${alg} assertions that verify with the client's public key`, async () => {
      const pair = (await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"])) as CryptoKeyPair;
      const jwk = { ...(await crypto.subtle.exportKey("jwk", pair.privateKey)), alg, kid: "k2", use: "sig", key_ops: ["sign"] };
      const key = await loadClientKey(keyFile(jwk));
      const jwt = parts(await signAssertion(key, TOKEN_URL));
      expect(jwt.header.alg).toBe(alg);
      expect(await crypto.subtle.verify(verifyWith, pair.publicKey, bufferOf(jwt.signature), bufferOf(jwt.input))).toBe(true);
    });
  }

  it("refuses files that are not a usable client key, in words", async () => {
    const seed = ed25519.utils.randomSecretKey();
    const publicOnly = { kty: "OKP", crv: "Ed25519", x: b64url(ed25519.getPublicKey(seed)) };
    const cases: [string, RegExp][] = [
      ["not json", /not JSON/],
      [JSON.stringify({ did: "did:key:x" }), /client_id/],
      [keyFile(publicOnly), /public key only/],
      [keyFile({ ...publicOnly, d: b64url(seed), alg: "ES384" }), /says alg ES384/],
      [keyFile({ kty: "oct", k: "AAAA" }), /takes Ed25519/],
      [keyFile({ kty: "OKP", crv: "Ed25519", d: "AAAA", x: "AAAA" }), /cannot be used/],
    ];
    for (const [text, message] of cases) {
      await expect(loadClientKey(text)).rejects.toThrow(ClientKeyError);
      await expect(loadClientKey(text)).rejects.toThrow(message);
    }
  });

  it("turns an OperationOutcome or a token error into a sentence", () => {
    const outcome = { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "forbidden", diagnostics: "this patient has not opened their records" }] };
    expect(outcomeMessage(outcome, 403)).toBe("This patient has not opened their records.");
    expect(outcomeMessage({ error: "invalid_client", error_description: "unknown client" }, 401)).toBe("The sign-in was refused (invalid_client): unknown client.");
    expect(outcomeMessage(null, 503)).toMatch(/busy/);
  });
});

describe("forms check before sending", () => {
  const now = new Date(2026, 10, 24, 12, 0, 0);
  const observation = { category: "vital-signs", code: "29463-7", display: "Body weight", value: "72,5", unit: "kg", date: "2026-11-24" };

  it("builds an Observation with value, unit and date", () => {
    const built = buildObservation(observation, "p1", now);
    expect(built.ok).toBe(true);
    if (!built.ok) return;
    expect(built.resource).toMatchObject({
      resourceType: "Observation",
      status: "final",
      subject: { reference: "Patient/p1" },
      code: { coding: [{ system: "http://loinc.org", code: "29463-7", display: "Body weight" }] },
      valueQuantity: { value: 72.5, unit: "kg" },
      effectiveDateTime: "2026-11-24",
    });
  });

  it("names every problem of an Observation by field", () => {
    const built = buildObservation({ category: "x", code: "weight", display: " ", value: "heavy", unit: "", date: "2026-11-25" }, "p1", now);
    expect(built.ok).toBe(false);
    if (built.ok) return;
    expect(Object.keys(built.errors).sort()).toEqual(["category", "code", "date", "display", "unit", "value"]);
    expect(built.errors.date).toMatch(/future/);
    expect(built.errors.code).toMatch(/LOINC/);
    expect(buildObservation({ ...observation, value: "" }, "p1", now)).toMatchObject({ ok: false, errors: { value: "Enter the value." } });
  });

  it("builds a Condition and a MedicationRequest, refusing future dates and bad codes", () => {
    const condition = buildCondition({ code: "44054006", display: "Diabetes", clinicalStatus: "active", onset: "" }, "p1", now);
    expect(condition).toMatchObject({ ok: true, resource: { resourceType: "Condition", code: { coding: [{ code: "44054006" }] } } });
    expect(buildCondition({ code: "123", display: "", clinicalStatus: "maybe", onset: "2030-01-01" }, "p1", now)).toMatchObject({
      ok: false,
      errors: { code: expect.stringMatching(/SNOMED/), display: expect.any(String), clinicalStatus: expect.any(String), onset: expect.stringMatching(/future/) },
    });
    const medication = buildMedicationRequest({ code: "860975", display: "Metformin", dosage: "twice a day", authoredOn: "2026-11-01" }, "p1", now);
    expect(medication).toMatchObject({ ok: true, resource: { intent: "order", dosageInstruction: [{ text: "twice a day" }] } });
    expect(buildMedicationRequest({ code: "x", display: "M", dosage: "", authoredOn: "" }, "p1", now)).toMatchObject({
      ok: false,
      errors: { code: expect.any(String), authoredOn: "Enter the date." },
    });
  });

  it("asks for a break-glass reason of 1 to 500 characters", () => {
    expect(reasonError("  ")).toMatch(/why/);
    expect(reasonError("x".repeat(501))).toMatch(/500/);
    expect(reasonError("unconscious, allergies unknown")).toBeNull();
  });
});

describe("the signed-in clinician's name", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("is the practitioner the token endpoint says the client acts as", async () => {
    const seed = ed25519.utils.randomSecretKey();
    const jwk = { kty: "OKP", crv: "Ed25519", d: b64url(seed), x: b64url(ed25519.getPublicKey(seed)), alg: "EdDSA" };
    const answers: Record<string, unknown> = {
      "/fhir/.well-known/smart-configuration": { token_endpoint: TOKEN_URL },
      "/auth/token": {
        access_token: "t", token_type: "bearer", expires_in: 300, scope: "system/*.cruds",
        practitioner: "did:key:z6MkDoctor", practitioner_name: "Dr. Demo", organization: "did:key:z6MkOrg", organization_name: "Demo Hospital",
      },
    };
    vi.stubGlobal("fetch", async (url: string) => new Response(JSON.stringify(answers[url]), { status: 200 }));
    const session = await signInWithClientKey(keyFile(jwk));
    expect(session.displayName).toBe("Dr. Demo (Demo Hospital)");
  });

  it("keeps its bearer token out of the session's JSON and string", async () => {
    const seed = ed25519.utils.randomSecretKey();
    const jwk = { kty: "OKP", crv: "Ed25519", d: b64url(seed), x: b64url(ed25519.getPublicKey(seed)), alg: "EdDSA" };
    const token = "bearer-secret-3f9c2a7e";
    const answers: Record<string, unknown> = {
      "/fhir/.well-known/smart-configuration": { token_endpoint: TOKEN_URL },
      "/auth/token": { access_token: token, token_type: "bearer", expires_in: 300, scope: "system/*.cruds" },
    };
    vi.stubGlobal("fetch", async (url: string) => new Response(JSON.stringify(answers[url]), { status: 200 }));
    const session = await signInWithClientKey(keyFile(jwk));
    expect(await session.gateway.accessToken()).toBe(token); // the token is held
    for (const shown of [JSON.stringify(session), JSON.stringify(session.gateway), String(session.gateway)]) {
      expect(shown).not.toContain(token);
      expect(shown).not.toContain(jwk.d);
    }
  });

  it("falls back to the organisation, then to plain words, never a client id", () => {
    expect(smartDisplayName({ practitioner: "", organization: "Demo Hospital" })).toBe("Demo Hospital (organisation account)");
    expect(smartDisplayName({ practitioner: "", organization: "" })).toBe("Clinician");
    expect(smartDisplayName({ practitioner: "Dr. Demo", organization: "" })).toBe("Dr. Demo");
  });
});
