// Pure logic of the node client: frames, the chain's refusals as sentences, the signed target,
// nonce counting as Python's Signer. (The real thing runs against `careledger up` in
// tests/portal/test_onboarding.py.)
import { afterEach, describe, expect, it, vi } from "vitest";
import { Identity } from "../src/crypto/identity";
import { MalformedFrames, packFrames, packResults, unpackResults } from "../src/wallet/frames";
import { NodeClient, NodeError, chainError, requestTarget, txResultOf } from "../src/wallet/node";

describe("frames", () => {
  it("round-trips result frames as Python's pack_results writes them", () => {
    const blob = new Uint8Array([1, 2, 3]);
    const reason = new TextEncoder().encode("no purpose stated");
    const body = packResults([
      { status: 200, body: blob },
      { status: 403, body: reason },
      { status: 404, body: new Uint8Array() },
    ]);
    // u16 status || u32 length || data, big-endian
    expect([...body.slice(0, 9)]).toEqual([0, 200, 0, 0, 0, 3, 1, 2, 3]);
    const results = unpackResults(body);
    expect(results.map((r) => r.status)).toEqual([200, 403, 404]);
    expect(new TextDecoder().decode(results[1]!.body)).toBe("no purpose stated");
    expect(results[2]!.body.length).toBe(0);
  });

  it("refuses truncated frames", () => {
    const body = packResults([{ status: 200, body: new Uint8Array(10) }]);
    expect(() => unpackResults(body.slice(0, 4))).toThrow(MalformedFrames);
    expect(() => unpackResults(body.slice(0, 12))).toThrow(/runs past the body/);
  });

  it("packs upload frames and refuses an empty blob", () => {
    expect([...packFrames([new Uint8Array([9])])]).toEqual([0, 0, 0, 1, 9]);
    expect(() => packFrames([new Uint8Array()])).toThrow(MalformedFrames);
  });
});

describe("refusals", () => {
  it("turns a chain code and log into a sentence with the code's name", () => {
    const error = chainError(8, "voucher already used");
    expect(error).toBeInstanceOf(NodeError);
    expect(error.code).toBe("unauthorised");
    expect(error.message).toBe("The ledger refused: you are not allowed to do this: voucher already used.");
    expect(chainError(42, "").code).toBe("code_42");
  });

  it("reads a mempool refusal, a block refusal and a success", () => {
    expect(() => txResultOf({ hash: "h", check_code: 6, check_log: "nonce 3 is not above 5", height: null, code: null })).toThrow(
      /already sent/,
    );
    expect(() => txResultOf({ hash: "h", check_code: 0, height: 4, code: 10, log: "exists" })).toThrow(/conflicts/);
    expect(txResultOf({ hash: "h", check_code: 0, height: 4, code: 0, log: "" })).toMatchObject({ hash: "h", height: 4, code: 0 });
  });
});

describe("request target", () => {
  it("is what the browser sends: percent-encoded path and query", () => {
    expect(requestTarget("/query/identity/identity?did=did%3Akey%3Az6Mk")).toBe("/query/identity/identity?did=did%3Akey%3Az6Mk");
    expect(requestTarget("/a b?x=1 2")).toBe("/a%20b?x=1%202");
  });
});

describe("nonces", () => {
  afterEach(() => vi.unstubAllGlobals());

  function fakeNode(lastNonce: number): string[] {
    const seen: string[] = [];
    vi.stubGlobal("fetch", async (url: string, init?: RequestInit) => {
      seen.push(`${init?.method ?? "GET"} ${url}`);
      if (url.endsWith("/status")) {
        return new Response(JSON.stringify({ chain_id: "test-chain", node_id: "0".repeat(32), height: 1 }));
      }
      if (url.includes("/query/auth/nonce")) {
        expect((init?.headers as Record<string, string>).authorization).toMatch(/^CareLedger did=did:key:z/);
        return new Response(JSON.stringify({ last_nonce: lastNonce }));
      }
      return new Response(JSON.stringify({ error: { code: "not_found", message: "no such route" } }), { status: 404 });
    });
    return seen;
  }

  it("asks the chain once, then counts up", async () => {
    const seen = fakeNode(41);
    const node = new NodeClient(Identity.fromMaster(new Uint8Array(32).fill(7)), null);
    expect(await node.nextNonce()).toBe(42);
    expect(await node.nextNonce()).toBe(43);
    expect(seen.filter((s) => s.includes("auth/nonce")).length).toBe(1);
    node.resetNonce();
    expect(await node.nextNonce()).toBe(42);
  });

  it("starts a new identity at 1 without asking", async () => {
    const seen = fakeNode(99);
    const node = new NodeClient(Identity.fromMaster(new Uint8Array(32).fill(8)), null);
    node.setLastNonce(0);
    expect(await node.nextNonce()).toBe(1);
    expect(seen.length).toBe(0);
  });

  it("says the node is down in a sentence", async () => {
    vi.stubGlobal("fetch", async () => {
      throw new TypeError("Failed to fetch");
    });
    await expect(new NodeClient(null, null).status()).rejects.toThrow(/cannot be reached/);
  });

  it("passes on the API's error as a sentence", async () => {
    fakeNode(0);
    const node = new NodeClient(Identity.fromMaster(new Uint8Array(32).fill(9)), null);
    await expect(node.get("/nowhere")).rejects.toMatchObject({ status: 404, code: "not_found", message: "No such route." });
  });
});
