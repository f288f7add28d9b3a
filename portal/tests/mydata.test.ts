// My data's pure parts: the export Bundle and the erase transactions' payloads.
import { describe, expect, it } from "vitest";
import { eraseRecords, EraseError, MAX_ERASE_RECORDS } from "../src/wallet/erase";
import { exportBundle, exportFileName } from "../src/wallet/export";
import type { NodeClient } from "../src/wallet/node";
import type { DecryptedRecord } from "../src/wallet/records";

const record = (n: number, height: number): DecryptedRecord => ({
  name: n.toString(16).padStart(64, "0"),
  version: 1,
  resourceType: "Observation",
  id: `o${n}`,
  resource: { resourceType: "Observation", id: `o${n}`, meta: { versionId: "1" } },
  author: "did:key:zA",
  height,
  blobHash: "",
  erased: false,
});

describe("exportBundle", () => {
  it("is a FHIR collection Bundle of every resource, in the order written", () => {
    const now = new Date("2026-11-24T10:00:00Z");
    const bundle = exportBundle([record(2, 9), record(1, 3)], now);
    expect(bundle).toEqual({
      resourceType: "Bundle",
      type: "collection",
      timestamp: "2026-11-24T10:00:00.000Z",
      entry: [{ resource: record(1, 3).resource }, { resource: record(2, 9).resource }],
    });
    expect(exportFileName(now)).toBe("careledger-records-2026-11-24.json");
  });
});

describe("eraseRecords", () => {
  function recordingNode() {
    const sent: [string, Record<string, unknown>][] = [];
    const node = {
      async submit(type: string, payload: Record<string, unknown>) {
        sent.push([type, payload]);
        return { hash: "h", code: 0, log: "", height: sent.length, events: [] };
      },
    };
    return { node: node as unknown as NodeClient, sent };
  }

  it("names the records in records/erase transactions of at most 1,000", async () => {
    const { node, sent } = recordingNode();
    const names = Array.from({ length: MAX_ERASE_RECORDS + 1 }, (_, i) => record(i, 1).name);
    await eraseRecords(node, [...names, names[0]!]);
    expect(sent.map(([type, payload]) => [type, (payload.records as string[]).length])).toEqual([
      ["records/erase", 1000],
      ["records/erase", 1],
    ]);
    expect(sent.flatMap(([, payload]) => payload.records as string[])).toEqual(names);
  });

  it("signs nothing for an empty choice or a name that is not a record name", async () => {
    const { node, sent } = recordingNode();
    await expect(eraseRecords(node, [])).rejects.toThrow(EraseError);
    await expect(eraseRecords(node, ["Observation/o1"])).rejects.toThrow(/not a record name/);
    expect(sent).toEqual([]);
  });
});
