// Sign-out: nothing read with the patient's keys outlives them in the tab.
import { beforeEach, describe, expect, it, vi } from "vitest";

const reads = vi.hoisted(() => ({ count: 0 }));
vi.mock("../src/wallet/records", () => ({
  readRecords: async (_node: unknown, patient: string) => {
    reads.count += 1;
    return { records: [{ id: `secret-of-${patient}` }], failures: [] };
  },
}));

import { setSession, signOut } from "../src/app/session";
import { myRecords } from "../src/pages/patient/my-records";
import type { PatientWallet } from "../src/wallet/patient";

const wallet = { did: "did:key:zPatient", node: {} } as unknown as PatientWallet;

describe("sign out", () => {
  beforeEach(() => {
    reads.count = 0;
  });

  it("drops the records read in this tab, so that the next sign-in must read (and decrypt) again", async () => {
    setSession({ kind: "patient", wallet });
    const first = await myRecords(wallet);
    expect(first.records).toEqual([{ id: "secret-of-did:key:zPatient" }]);
    expect(await myRecords(wallet)).toBe(first); // read once per tab while signed in
    expect(reads.count).toBe(1);

    signOut();

    // the tab no longer holds the decrypted records: asking again reads again
    const after = await myRecords(wallet);
    expect(after).not.toBe(first);
    expect(reads.count).toBe(2);
  });
});
