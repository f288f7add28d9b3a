// The page's record reader (wallet/records.ts) against a real node, under Node.js:
// tests/portal/test_records_read.py runs
//   node tools/run.mjs tools/read-records.ts NODE_URL KEYFILE KNOWN_IDS.json OUT.json
// and checks what it opened and what it reported. It signs as the key file's patient with the
// page's own request signing, and opens with the page's own crypto: nothing of Python's.
import { readFileSync, writeFileSync } from "node:fs";
import { parseKeyFile } from "../src/crypto/keyfile";
import { NodeClient } from "../src/wallet/node";
import { PatientWallet } from "../src/wallet/patient";
import { readRecords, type KnownId } from "../src/wallet/records";

export async function main(args: string[]): Promise<void> {
  const [url, keyPath, idsPath, outPath] = args;
  if (!url || !keyPath || !idsPath || !outPath) throw new Error("usage: read-records.ts NODE_URL KEYFILE KNOWN_IDS.json OUT.json");
  const ring = parseKeyFile(readFileSync(keyPath, "utf8"));
  const wallet = new PatientWallet(ring.did, ring.name, ring, new NodeClient(ring.current, ring.did, url));
  const knownIds = JSON.parse(readFileSync(idsPath, "utf8")) as KnownId[];
  const result = await readRecords(wallet.node, wallet.did, wallet, undefined, { namingKey: ring.namingKey, knownIds });
  writeFileSync(outPath, JSON.stringify(result));
}
