// The keystore's cryptography (IndexedDB itself is exercised in the browser tests).
import { describe, expect, it } from "vitest";
import { KeystoreError, WrongPassphrase, openWallet, passphraseProblem, sealWallet } from "../src/wallet/keystore";

const KEYFILE = JSON.stringify({ version: 2, did: "did:key:z6MkTest", kind: "patient", name: "Ada" });

describe("keystore", () => {
  it("opens with the passphrase it was sealed with, and hides the key file", async () => {
    const stored = await sealWallet("did:key:z6MkTest", "Ada", KEYFILE, "correct horse battery");
    expect(stored.did).toBe("did:key:z6MkTest");
    expect(stored.name).toBe("Ada");
    expect(stored.kdf).toMatchObject({ name: "PBKDF2-SHA256", iterations: 600000 });
    expect(JSON.stringify(stored)).not.toContain("patient");
    expect(await openWallet(stored, "correct horse battery")).toBe(KEYFILE);
  });

  it("says Wrong passphrase for a wrong one", async () => {
    const stored = await sealWallet("did:key:z6MkTest", "Ada", KEYFILE, "correct horse battery");
    await expect(openWallet(stored, "correct horse battery!")).rejects.toThrow(WrongPassphrase);
    await expect(openWallet(stored, "correct horse battery!")).rejects.toThrow(/^Wrong passphrase/);
  });

  it("uses a fresh salt and nonce each time", async () => {
    const a = await sealWallet("did:key:z6MkTest", "Ada", KEYFILE, "correct horse battery");
    const b = await sealWallet("did:key:z6MkTest", "Ada", KEYFILE, "correct horse battery");
    expect(a.kdf.salt).not.toBe(b.kdf.salt);
    expect(a.nonce).not.toBe(b.nonce);
    expect(a.ciphertext).not.toBe(b.ciphertext);
  });

  it("does not open when the clear did or name was changed (they are bound to the ciphertext)", async () => {
    const stored = await sealWallet("did:key:z6MkTest", "Ada", KEYFILE, "correct horse battery");
    await expect(openWallet({ ...stored, name: "Eve" }, "correct horse battery")).rejects.toThrow(WrongPassphrase);
    await expect(openWallet({ ...stored, did: "did:key:z6MkOther" }, "correct horse battery")).rejects.toThrow(WrongPassphrase);
  });

  it("refuses a record that lowers the key derivation's cost", async () => {
    const stored = await sealWallet("did:key:z6MkTest", "Ada", KEYFILE, "correct horse battery");
    await expect(openWallet({ ...stored, kdf: { ...stored.kdf, iterations: 1000 } }, "correct horse battery")).rejects.toThrow(
      KeystoreError,
    );
    await expect(sealWallet("d", "n", KEYFILE, "correct horse battery", 1000)).rejects.toThrow(KeystoreError);
  });

  it("checks the two passphrases", () => {
    expect(passphraseProblem("short", "short")).toMatch(/at least 8/);
    expect(passphraseProblem("long enough", "long enough ")).toMatch(/not the same/);
    expect(passphraseProblem("long enough", "long enough")).toBeNull();
  });
});
