// Pure parts of onboarding: the phrase check, vouchers, times, which file is which.
import { describe, expect, it } from "vitest";
import { UserError } from "../src/app/errors";
import { Identity } from "../src/crypto/identity";
import { KeyRing, serialiseKeyFile } from "../src/crypto/keyfile";
import { keysFromFile, keysFromPhrase, parseVoucher, pickCheckPositions, unixSeconds, wrongWords } from "../src/wallet/onboarding";

const PHRASE = Array.from({ length: 23 }, () => "abandon").join(" ") + " art";

describe("the phrase check", () => {
  it("asks three distinct positions within the phrase", () => {
    for (let i = 0; i < 50; i++) {
      const positions = pickCheckPositions();
      expect(new Set(positions).size).toBe(3);
      for (const p of positions) expect(p >= 1 && p <= 24).toBe(true);
      expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    }
  });

  it("names the wrong words, ignoring case and spaces", () => {
    expect(wrongWords(PHRASE, { 1: " Abandon ", 24: "art", 5: "abandon" })).toEqual([]);
    expect(wrongWords(PHRASE, { 24: "abandon", 2: "zoo", 3: "abandon" })).toEqual([2, 24]);
  });

  it("turns a bad phrase into a sentence, and restores a good one", async () => {
    await expect(keysFromPhrase("abandon abandon", "")).rejects.toThrow(/has 24 words; you typed 2/);
    await expect(keysFromPhrase(PHRASE.replace(/art$/, "zoo"), "")).rejects.toThrow(UserError);
    const keys = await keysFromPhrase(PHRASE.toUpperCase(), " Ada ");
    expect(keys.did).toMatch(/^did:key:z6Mk/);
    expect(keys.name).toBe("Ada");
    expect(keys.kind).toBe("patient");
  });
});

describe("files", () => {
  it("opens a patient's key file and names the right button for others", () => {
    const ring = KeyRing.fromIdentity(Identity.fromMaster(new Uint8Array(32).fill(3)), "patient", "Ada");
    expect(keysFromFile(serialiseKeyFile(ring)).did).toBe(ring.did);
    const practitioner = KeyRing.fromIdentity(Identity.fromMaster(new Uint8Array(32).fill(4)), "practitioner");
    expect(() => keysFromFile(serialiseKeyFile(practitioner))).toThrow(/practitioner's key file, not a patient's/);
    expect(() => keysFromFile(JSON.stringify({ kind: "careledger-claim", version: 1 }))).toThrow(/Claim my records/);
    expect(() => keysFromFile("my notes")).toThrow(/not a CareLedger key file/);
  });
});

describe("vouchers", () => {
  const voucher = { org: "did:key:z6MkOrg", expires_at: 1003, signature: "ab".repeat(64) };
  it("takes the voucher bare or as the node answers it", () => {
    expect(parseVoucher(JSON.stringify(voucher))).toEqual(voucher);
    expect(parseVoucher(JSON.stringify({ voucher, chain_id: "c" }))).toEqual(voucher);
  });
  it("refuses what is not one, in a sentence", () => {
    expect(() => parseVoucher("{org")).toThrow(/not valid JSON/);
    expect(() => parseVoucher(JSON.stringify({ ...voucher, signature: "xyz" }))).toThrow(/not an enrolment voucher/);
    expect(() => parseVoucher(JSON.stringify({ ...voucher, expires_at: 1.5 }))).toThrow(UserError);
  });
});

describe("times", () => {
  it("reads the node's RFC 3339 block time with nanoseconds", () => {
    expect(unixSeconds("2026-11-24T17:30:00.123456789Z")).toBe(Date.UTC(2026, 10, 24, 17, 30, 0) / 1000);
    expect(() => unixSeconds("yesterday")).toThrow(UserError);
  });
});
