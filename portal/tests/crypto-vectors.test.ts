// Every value of tests/vectors/crypto_vectors.json (and what applies of escrow_vectors.json)
// recomputed by the portal's crypto (portal/src/crypto), plus attacks that must fail.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { x25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { describe, expect, it } from "vitest";
import { b64, concat, equalBytes, fromB64, fromHex, hex, lp, u16, u32, utf8 } from "../src/crypto/bytes";
import { Identity, KeyError, deriveSecret, didFromEd25519, ed25519FromDid, verify } from "../src/crypto/identity";
import { NotCanonicalisable, canonicalBytes, canonicalString } from "../src/crypto/jcs";
import { authorizationHeader, requestMessage } from "../src/crypto/requestsig";
import { TxError, signTx, txBody, txHash } from "../src/crypto/tx";

const VECTORS_DIR = fileURLToPath(new URL("../../tests/vectors/", import.meta.url));
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
export const V: Json = JSON.parse(readFileSync(VECTORS_DIR + "crypto_vectors.json", "utf8"));
export const E: Json = JSON.parse(readFileSync(VECTORS_DIR + "escrow_vectors.json", "utf8"));

const master = fromHex(V.identity.master_secret);

describe("bytes", () => {
  it("encodes hex, base64, lp, u16, u32", () => {
    expect(hex(fromHex("00ff10"))).toBe("00ff10");
    for (const n of [0, 1, 2, 3, 4, 5, 31, 32, 33]) {
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 37) & 255);
      expect(b64(data)).toBe(Buffer.from(data).toString("base64"));
      expect(equalBytes(fromB64(b64(data)), data)).toBe(true);
    }
    expect(hex(lp("é"))).toBe("0002c3a9");
    expect(hex(u16(258))).toBe("0102");
    expect(hex(u32(0xfffffffe))).toBe("fffffffe");
    expect(() => fromB64("AAA")).toThrow(/base64/);
    expect(() => fromB64("AA A")).toThrow(/base64/);
    expect(() => u32(2 ** 32)).toThrow();
    expect(() => fromHex("0g")).toThrow();
  });
});

describe("identity (docs/crypto.md 0)", () => {
  const identity = Identity.fromMaster(master);
  it("derives the vector keys and did", () => {
    expect(hex(deriveSecret(master, "careledger/v1/ed25519"))).toBe(V.identity.ed25519_seed);
    expect(hex(identity.signingPublic)).toBe(V.identity.ed25519_public_key);
    expect(identity.did).toBe(V.identity.did);
    expect(hex(identity.encryptionPrivate)).toBe(V.identity.x25519_private_key);
    expect(hex(identity.encryptionPublic)).toBe(V.identity.x25519_public_key);
    expect(hex(identity.secret(V.scope_key.secret_label))).toBe(V.scope_key.scope_root);
  });
  it("HKDF is RFC 5869 (test case 1)", () => {
    const okm = hkdf(sha256, fromHex("0b".repeat(22)), fromHex("000102030405060708090a0b0c"), fromHex("f0f1f2f3f4f5f6f7f8f9"), 42);
    expect(hex(okm)).toBe("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  });
  it("X25519 is RFC 7748 (section 6.1)", () => {
    const alice = fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    expect(hex(x25519.getPublicKey(alice))).toBe("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  });
  it("round-trips did:key and refuses other dids", () => {
    expect(didFromEd25519(ed25519FromDid(V.identity.did))).toBe(V.identity.did);
    expect(() => ed25519FromDid("did:web:example.org")).toThrow(KeyError);
    expect(() => ed25519FromDid("did:key:z6Mk0OIl")).toThrow(KeyError);
    expect(() => ed25519FromDid(V.scope_key_grant.grantee)).toThrow(KeyError);
  });
  it("secret labels stay apart from key seeds", () => {
    expect(() => identity.secret("../ed25519")).toThrow(KeyError);
    expect(() => identity.secret("Scope")).toThrow(KeyError);
    expect(() => Identity.fromMaster(new Uint8Array(31))).toThrow(/32 bytes/);
  });
  it("never shows the master in its string or JSON", () => {
    const shown = String(identity) + JSON.stringify(identity) + JSON.stringify(Object.entries(identity));
    expect(shown).not.toContain(V.identity.master_secret);
    expect(shown).not.toContain(b64(master));
    expect(shown).toContain(V.identity.did);
  });
  it("signs RFC 8032 and verifies strictly", () => {
    const msg = utf8("message");
    const sig = identity.sign(msg);
    expect(verify(identity.signingPublic, sig, msg)).toBe(true);
    expect(verify(identity.signingPublic, sig, utf8("massage"))).toBe(false);
    // S + L: the same signature made non-canonical (libsodium refuses it; so do we).
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!);
    s += L;
    const malleated = sig.slice();
    for (let i = 0; i < 32; i++) malleated[32 + i] = Number((s >> BigInt(8 * i)) & 0xffn);
    expect(verify(identity.signingPublic, malleated, msg)).toBe(false);
    // A small-order public key (the identity point) with R of small order: a universal forgery.
    const identityPoint = fromHex("0100000000000000000000000000000000000000000000000000000000000000");
    expect(verify(identityPoint, concat(identityPoint, new Uint8Array(32)), msg)).toBe(false);
    // RFC 8032 test 1.
    const pk = fromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    const sig1 = fromHex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
    expect(verify(pk, sig1, new Uint8Array())).toBe(true);
  });
});

describe("RFC 8785 (docs/crypto.md 2)", () => {
  it("reproduces the record's canonical bytes", () => {
    expect(hex(canonicalBytes(V.record.resource))).toBe(V.record.canonical);
    expect(canonicalString(V.record.resource)).toBe(V.record.canonical_utf8);
  });
  it("formats numbers and strings as RFC 8785", () => {
    expect(canonicalString({ b: 1.0, a: -0, c: 1.5e-300, d: 1e-7, e: 37.5, f: "\u0001\u001f\"\\/\u007f" })).toBe(
      '{"a":0,"b":1,"c":1.5e-300,"d":1e-7,"e":37.5,"f":"\\u0001\\u001f\\"\\\\/\u007f"}',
    );
    // Keys sorted by UTF-16 code units: U+1F600 (d83d...) sorts before U+FB01.
    expect(canonicalString({ "\ufb01": 1, "\u{1f600}": 2, "\u00e9": 3 })).toBe('{"é":3,"😀":2,"ﬁ":1}');
  });
  it("refuses what has no canonical form", () => {
    expect(() => canonicalBytes({ a: NaN })).toThrow(NotCanonicalisable);
    expect(() => canonicalBytes([Infinity])).toThrow(NotCanonicalisable);
    expect(() => canonicalBytes({ a: 2 ** 53 })).toThrow(NotCanonicalisable);
    expect(() => canonicalBytes({ a: 1e21 })).toThrow(NotCanonicalisable); // integral in JS
    expect(() => canonicalBytes({ a: undefined })).toThrow(NotCanonicalisable);
    expect(() => canonicalBytes({ a: 1n })).toThrow(NotCanonicalisable);
    expect(() => canonicalBytes({ a: new Date() })).toThrow(NotCanonicalisable);
    expect(() => canonicalBytes("\ud800")).toThrow(NotCanonicalisable);
    let deep: unknown = 1;
    for (let i = 0; i < 33; i++) deep = [deep];
    expect(() => canonicalBytes(deep)).toThrow(/deeper/);
  });
});

// Pinned outputs of Python (crypto/requestsig.authorization and chain/tx.Tx.sign) for the
// vector identity: Ed25519 is deterministic, so the page must produce the very same bytes.
const PY_AUTHORIZATION =
  "CareLedger did=did:key:z6Mkrei6gJX7UMauVT4CCJxg2Fqf48eRW4f8TvZ49WuQpAxG, ts=1700000000123, " +
  "nonce=AAECAwQFBgcICQoLDA0ODw, sig=zwWu0rwRvSrm-vwwxdjHowrJ_QyfgyltHf1UOuRhYr8PHKbmnRPmN4kMmUaeE62Tx_emdq8WDJfXbQkqL9SUAQ==";
const PY_TX =
  "7b22636861696e5f6964223a22636172656c65646765722d74657374222c226e6f6e6365223a372c227061796c6f6164223a7b2261223a7b2279223a747275652c227a223a6e756c6c7d2c2262223a5b312c22c3a9e29c93225d7d2c2273656e646572223a226469643a6b65793a7a364d6b72656936674a5837554d617556543443434a786732467166343865525734663854765a343957755170417847222c2274797065223a22636f6e73656e742f6772616e74227d4a2c6d86dc3fa636d047080899abe1b269c95c8813039c728be108f5e23eb7eceada40521377034400ed0b620eb03e90a6190c67638a67167e87b637b49c1707";
const PY_TX_HASH = "4855e4dd7d44c4e57400482fb179878162f94f68262b56d1209fc53b6b810a7e";
const AUDIENCE = { chainId: "careledger-test", nodeId: "0123456789abcdef0123456789abcdef" };

describe("signed requests (docs/node-api.md)", () => {
  const identity = Identity.fromMaster(master);
  const sign = (audience = AUDIENCE, did = identity.did) =>
    authorizationHeader(identity, did, audience, "post", "/blobs/fetch?purpose=TREAT", utf8('{"hashes":[]}'), {
      tsMs: 1700000000123,
      nonce: "AAECAwQFBgcICQoLDA0ODw",
    });
  it("writes Python's header byte for byte", () => {
    expect(sign()).toBe(PY_AUTHORIZATION);
  });
  it("a request signed for another node, chain or did does not verify as this one", () => {
    const sigOf = (header: string) => fromB64(header.split("sig=")[1]!.replace(/-/g, "+").replace(/_/g, "/"));
    const message = requestMessage(AUDIENCE, identity.did, "POST", "/blobs/fetch?purpose=TREAT", 1700000000123, "AAECAwQFBgcICQoLDA0ODw", sha256(utf8('{"hashes":[]}')));
    expect(verify(identity.signingPublic, sigOf(sign()), message)).toBe(true);
    const otherNode = sign({ ...AUDIENCE, nodeId: "f".repeat(32) });
    expect(verify(identity.signingPublic, sigOf(otherNode), message)).toBe(false);
    const otherChain = sign({ ...AUDIENCE, chainId: "another-chain" });
    expect(verify(identity.signingPublic, sigOf(otherChain), message)).toBe(false);
    const otherDid = sign(AUDIENCE, V.scope_key_grant.grantee);
    expect(verify(identity.signingPublic, sigOf(otherDid), message)).toBe(false);
  });
  it("refuses a malformed audience", () => {
    expect(() => authorizationHeader(identity, identity.did, { chainId: "c", nodeId: "XYZ" }, "GET", "/status")).toThrow(/node id/);
    expect(() => authorizationHeader(identity, identity.did, { chainId: "a\nb", nodeId: "0".repeat(32) }, "GET", "/status")).toThrow(/chain id/);
  });
  it("draws a fresh 22-character nonce each time", () => {
    const a = authorizationHeader(identity, identity.did, AUDIENCE, "GET", "/status");
    const b = authorizationHeader(identity, identity.did, AUDIENCE, "GET", "/status");
    expect(a).toMatch(/nonce=[A-Za-z0-9_-]{22}, /);
    expect(a).not.toBe(b);
  });
});

describe("transactions (chain/tx.py)", () => {
  const identity = Identity.fromMaster(master);
  const tx = { chainId: "careledger-test", type: "consent/grant", sender: identity.did, nonce: 7, payload: { b: [1, "é✓"], a: { z: null, y: true } } };
  it("signs Python's wire bytes and hash", () => {
    const wire = signTx(identity, tx);
    expect(hex(wire)).toBe(PY_TX);
    expect(hex(txHash(wire))).toBe(PY_TX_HASH);
    expect(verify(identity.signingPublic, wire.subarray(wire.length - 64), txBody(tx))).toBe(true);
  });
  it("refuses what the chain would refuse as malformed", () => {
    expect(() => signTx(identity, { ...tx, nonce: 0 })).toThrow(TxError);
    expect(() => signTx(identity, { ...tx, nonce: 1.5 })).toThrow(TxError);
    expect(() => signTx(identity, { ...tx, payload: { weight: 72.5 } })).toThrow(/floating/);
    expect(() => signTx(identity, { ...tx, payload: { blob: "x".repeat(70000) } })).toThrow(/limit/);
  });
});
